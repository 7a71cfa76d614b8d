import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_UP: _ClassVar[Direction]
    DIRECTION_DOWN: _ClassVar[Direction]

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_LSTM: _ClassVar[ModelKind]
    MODEL_KIND_ENSEMBLE: _ClassVar[ModelKind]
    MODEL_KIND_KELLY: _ClassVar[ModelKind]

class Component(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPONENT_UNSPECIFIED: _ClassVar[Component]
    COMPONENT_LSTM: _ClassVar[Component]
    COMPONENT_ENSEMBLE: _ClassVar[Component]
    COMPONENT_FUSION: _ClassVar[Component]
    COMPONENT_KELLY: _ClassVar[Component]
    COMPONENT_DATABASE: _ClassVar[Component]
    COMPONENT_SERVER: _ClassVar[Component]

class ModelStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STAGE_UNSPECIFIED: _ClassVar[ModelStage]
    MODEL_STAGE_CANDIDATE: _ClassVar[ModelStage]
    MODEL_STAGE_DEPLOYED: _ClassVar[ModelStage]
    MODEL_STAGE_BACKUP: _ClassVar[ModelStage]
    MODEL_STAGE_REJECTED: _ClassVar[ModelStage]
    MODEL_STAGE_RETIRED: _ClassVar[ModelStage]
DIRECTION_UNSPECIFIED: Direction
DIRECTION_UP: Direction
DIRECTION_DOWN: Direction
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_LSTM: ModelKind
MODEL_KIND_ENSEMBLE: ModelKind
MODEL_KIND_KELLY: ModelKind
COMPONENT_UNSPECIFIED: Component
COMPONENT_LSTM: Component
COMPONENT_ENSEMBLE: Component
COMPONENT_FUSION: Component
COMPONENT_KELLY: Component
COMPONENT_DATABASE: Component
COMPONENT_SERVER: Component
MODEL_STAGE_UNSPECIFIED: ModelStage
MODEL_STAGE_CANDIDATE: ModelStage
MODEL_STAGE_DEPLOYED: ModelStage
MODEL_STAGE_BACKUP: ModelStage
MODEL_STAGE_REJECTED: ModelStage
MODEL_STAGE_RETIRED: ModelStage

class Bar(_message.Message):
    __slots__ = ("time", "open", "high", "low", "close", "volume")
    TIME_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    open: float
    high: float
    low: float
    close: float
    volume: float
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., open: _Optional[float] = ..., high: _Optional[float] = ..., low: _Optional[float] = ..., close: _Optional[float] = ..., volume: _Optional[float] = ...) -> None: ...

class FeatureSpec(_message.Message):
    __slots__ = ("feature_names", "window", "bars_required", "train_start", "train_end")
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    BARS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    TRAIN_START_FIELD_NUMBER: _ClassVar[int]
    TRAIN_END_FIELD_NUMBER: _ClassVar[int]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    window: int
    bars_required: int
    train_start: _timestamp_pb2.Timestamp
    train_end: _timestamp_pb2.Timestamp
    def __init__(self, feature_names: _Optional[_Iterable[str]] = ..., window: _Optional[int] = ..., bars_required: _Optional[int] = ..., train_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., train_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("kind", "version", "sha256", "stage", "created_at", "deployed_at", "metrics", "feature_spec", "path")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_AT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SPEC_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    kind: ModelKind
    version: str
    sha256: str
    stage: ModelStage
    created_at: _timestamp_pb2.Timestamp
    deployed_at: _timestamp_pb2.Timestamp
    metrics: _containers.ScalarMap[str, float]
    feature_spec: FeatureSpec
    path: str
    def __init__(self, kind: _Optional[_Union[ModelKind, str]] = ..., version: _Optional[str] = ..., sha256: _Optional[str] = ..., stage: _Optional[_Union[ModelStage, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deployed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., feature_spec: _Optional[_Union[FeatureSpec, _Mapping]] = ..., path: _Optional[str] = ...) -> None: ...
