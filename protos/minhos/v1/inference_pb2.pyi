import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from minhos.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("symbol", "bars")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BARS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    bars: _containers.RepeatedCompositeFieldContainer[_common_pb2.Bar]
    def __init__(self, symbol: _Optional[str] = ..., bars: _Optional[_Iterable[_Union[_common_pb2.Bar, _Mapping]]] = ...) -> None: ...

class ModelOutput(_message.Message):
    __slots__ = ("kind", "version", "probability_up")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_UP_FIELD_NUMBER: _ClassVar[int]
    kind: _common_pb2.ModelKind
    version: str
    probability_up: float
    def __init__(self, kind: _Optional[_Union[_common_pb2.ModelKind, str]] = ..., version: _Optional[str] = ..., probability_up: _Optional[float] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("prediction_id", "symbol", "bar_time", "direction", "probability_up", "confidence", "lstm", "ensemble", "agreement", "kelly_fraction", "kelly_version", "server_latency")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BAR_TIME_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_UP_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LSTM_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLE_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    KELLY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    KELLY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_LATENCY_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    symbol: str
    bar_time: _timestamp_pb2.Timestamp
    direction: _common_pb2.Direction
    probability_up: float
    confidence: float
    lstm: ModelOutput
    ensemble: ModelOutput
    agreement: float
    kelly_fraction: float
    kelly_version: str
    server_latency: _duration_pb2.Duration
    def __init__(self, prediction_id: _Optional[str] = ..., symbol: _Optional[str] = ..., bar_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., direction: _Optional[_Union[_common_pb2.Direction, str]] = ..., probability_up: _Optional[float] = ..., confidence: _Optional[float] = ..., lstm: _Optional[_Union[ModelOutput, _Mapping]] = ..., ensemble: _Optional[_Union[ModelOutput, _Mapping]] = ..., agreement: _Optional[float] = ..., kelly_fraction: _Optional[float] = ..., kelly_version: _Optional[str] = ..., server_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("symbol", "bar")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BAR_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    bar: _common_pb2.Bar
    def __init__(self, symbol: _Optional[str] = ..., bar: _Optional[_Union[_common_pb2.Bar, _Mapping]] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("symbol", "bar_time", "prediction", "bars_needed", "resolved")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BAR_TIME_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    BARS_NEEDED_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    bar_time: _timestamp_pb2.Timestamp
    prediction: PredictResponse
    bars_needed: int
    resolved: Outcome
    def __init__(self, symbol: _Optional[str] = ..., bar_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., prediction: _Optional[_Union[PredictResponse, _Mapping]] = ..., bars_needed: _Optional[int] = ..., resolved: _Optional[_Union[Outcome, _Mapping]] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("prediction_id", "realized_return", "actual_direction", "hit", "position_return", "resolved_at")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    REALIZED_RETURN_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_DIRECTION_FIELD_NUMBER: _ClassVar[int]
    HIT_FIELD_NUMBER: _ClassVar[int]
    POSITION_RETURN_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    realized_return: float
    actual_direction: _common_pb2.Direction
    hit: bool
    position_return: float
    resolved_at: _timestamp_pb2.Timestamp
    def __init__(self, prediction_id: _Optional[str] = ..., realized_return: _Optional[float] = ..., actual_direction: _Optional[_Union[_common_pb2.Direction, str]] = ..., hit: bool = ..., position_return: _Optional[float] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordOutcomeRequest(_message.Message):
    __slots__ = ("prediction_id", "realized_return", "resolved_at")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    REALIZED_RETURN_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    realized_return: float
    resolved_at: _timestamp_pb2.Timestamp
    def __init__(self, prediction_id: _Optional[str] = ..., realized_return: _Optional[float] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordOutcomeResponse(_message.Message):
    __slots__ = ("outcome", "already_recorded")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ALREADY_RECORDED_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    already_recorded: bool
    def __init__(self, outcome: _Optional[_Union[Outcome, _Mapping]] = ..., already_recorded: bool = ...) -> None: ...

class GetServingInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServingInfoResponse(_message.Message):
    __slots__ = ("bars_required", "feature_names", "deployed", "server_version")
    BARS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    bars_required: int
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    deployed: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelVersion]
    server_version: str
    def __init__(self, bars_required: _Optional[int] = ..., feature_names: _Optional[_Iterable[str]] = ..., deployed: _Optional[_Iterable[_Union[_common_pb2.ModelVersion, _Mapping]]] = ..., server_version: _Optional[str] = ...) -> None: ...
