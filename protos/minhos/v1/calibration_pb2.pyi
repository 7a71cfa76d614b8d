import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProbabilitySource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROBABILITY_SOURCE_UNSPECIFIED: _ClassVar[ProbabilitySource]
    PROBABILITY_SOURCE_FUSED: _ClassVar[ProbabilitySource]
    PROBABILITY_SOURCE_LSTM: _ClassVar[ProbabilitySource]
    PROBABILITY_SOURCE_ENSEMBLE: _ClassVar[ProbabilitySource]

class Binning(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BINNING_UNSPECIFIED: _ClassVar[Binning]
    BINNING_EQUAL_WIDTH: _ClassVar[Binning]
    BINNING_EQUAL_MASS: _ClassVar[Binning]

class ConfidenceZone(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONFIDENCE_ZONE_UNSPECIFIED: _ClassVar[ConfidenceZone]
    CONFIDENCE_ZONE_VERY_LOW: _ClassVar[ConfidenceZone]
    CONFIDENCE_ZONE_LOW: _ClassVar[ConfidenceZone]
    CONFIDENCE_ZONE_MEDIUM: _ClassVar[ConfidenceZone]
    CONFIDENCE_ZONE_HIGH: _ClassVar[ConfidenceZone]
    CONFIDENCE_ZONE_VERY_HIGH: _ClassVar[ConfidenceZone]

class MiscalibrationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MISCALIBRATION_KIND_UNSPECIFIED: _ClassVar[MiscalibrationKind]
    MISCALIBRATION_KIND_OVERCONFIDENT: _ClassVar[MiscalibrationKind]
    MISCALIBRATION_KIND_UNDERCONFIDENT: _ClassVar[MiscalibrationKind]
PROBABILITY_SOURCE_UNSPECIFIED: ProbabilitySource
PROBABILITY_SOURCE_FUSED: ProbabilitySource
PROBABILITY_SOURCE_LSTM: ProbabilitySource
PROBABILITY_SOURCE_ENSEMBLE: ProbabilitySource
BINNING_UNSPECIFIED: Binning
BINNING_EQUAL_WIDTH: Binning
BINNING_EQUAL_MASS: Binning
CONFIDENCE_ZONE_UNSPECIFIED: ConfidenceZone
CONFIDENCE_ZONE_VERY_LOW: ConfidenceZone
CONFIDENCE_ZONE_LOW: ConfidenceZone
CONFIDENCE_ZONE_MEDIUM: ConfidenceZone
CONFIDENCE_ZONE_HIGH: ConfidenceZone
CONFIDENCE_ZONE_VERY_HIGH: ConfidenceZone
MISCALIBRATION_KIND_UNSPECIFIED: MiscalibrationKind
MISCALIBRATION_KIND_OVERCONFIDENT: MiscalibrationKind
MISCALIBRATION_KIND_UNDERCONFIDENT: MiscalibrationKind

class GetCalibrationRequest(_message.Message):
    __slots__ = ("source", "last_n", "window", "bins", "binning")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LAST_N_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    BINNING_FIELD_NUMBER: _ClassVar[int]
    source: ProbabilitySource
    last_n: int
    window: _duration_pb2.Duration
    bins: int
    binning: Binning
    def __init__(self, source: _Optional[_Union[ProbabilitySource, str]] = ..., last_n: _Optional[int] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., bins: _Optional[int] = ..., binning: _Optional[_Union[Binning, str]] = ...) -> None: ...

class ReliabilityBin(_message.Message):
    __slots__ = ("lower", "upper", "mean_confidence", "observed_frequency", "count")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    lower: float
    upper: float
    mean_confidence: float
    observed_frequency: float
    count: int
    def __init__(self, lower: _Optional[float] = ..., upper: _Optional[float] = ..., mean_confidence: _Optional[float] = ..., observed_frequency: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class ZoneStats(_message.Message):
    __slots__ = ("zone", "lower", "upper", "count", "accuracy", "mean_confidence")
    ZONE_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    zone: ConfidenceZone
    lower: float
    upper: float
    count: int
    accuracy: float
    mean_confidence: float
    def __init__(self, zone: _Optional[_Union[ConfidenceZone, str]] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ..., count: _Optional[int] = ..., accuracy: _Optional[float] = ..., mean_confidence: _Optional[float] = ...) -> None: ...

class BrierDecomposition(_message.Message):
    __slots__ = ("reliability", "resolution", "uncertainty")
    RELIABILITY_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    reliability: float
    resolution: float
    uncertainty: float
    def __init__(self, reliability: _Optional[float] = ..., resolution: _Optional[float] = ..., uncertainty: _Optional[float] = ...) -> None: ...

class Miscalibration(_message.Message):
    __slots__ = ("kind", "lower", "upper", "gap", "count", "evidence")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    kind: MiscalibrationKind
    lower: float
    upper: float
    gap: float
    count: int
    evidence: str
    def __init__(self, kind: _Optional[_Union[MiscalibrationKind, str]] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ..., gap: _Optional[float] = ..., count: _Optional[int] = ..., evidence: _Optional[str] = ...) -> None: ...

class CalibrationReport(_message.Message):
    __slots__ = ("source", "count", "start", "end", "ece", "mce", "ece_equal_mass", "mce_equal_mass", "brier", "brier_decomposition", "bins", "zones", "miscalibrations", "recommendations", "accuracy", "mean_confidence")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ECE_FIELD_NUMBER: _ClassVar[int]
    MCE_FIELD_NUMBER: _ClassVar[int]
    ECE_EQUAL_MASS_FIELD_NUMBER: _ClassVar[int]
    MCE_EQUAL_MASS_FIELD_NUMBER: _ClassVar[int]
    BRIER_FIELD_NUMBER: _ClassVar[int]
    BRIER_DECOMPOSITION_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    ZONES_FIELD_NUMBER: _ClassVar[int]
    MISCALIBRATIONS_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    source: ProbabilitySource
    count: int
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    ece: float
    mce: float
    ece_equal_mass: float
    mce_equal_mass: float
    brier: float
    brier_decomposition: BrierDecomposition
    bins: _containers.RepeatedCompositeFieldContainer[ReliabilityBin]
    zones: _containers.RepeatedCompositeFieldContainer[ZoneStats]
    miscalibrations: _containers.RepeatedCompositeFieldContainer[Miscalibration]
    recommendations: _containers.RepeatedScalarFieldContainer[str]
    accuracy: float
    mean_confidence: float
    def __init__(self, source: _Optional[_Union[ProbabilitySource, str]] = ..., count: _Optional[int] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ece: _Optional[float] = ..., mce: _Optional[float] = ..., ece_equal_mass: _Optional[float] = ..., mce_equal_mass: _Optional[float] = ..., brier: _Optional[float] = ..., brier_decomposition: _Optional[_Union[BrierDecomposition, _Mapping]] = ..., bins: _Optional[_Iterable[_Union[ReliabilityBin, _Mapping]]] = ..., zones: _Optional[_Iterable[_Union[ZoneStats, _Mapping]]] = ..., miscalibrations: _Optional[_Iterable[_Union[Miscalibration, _Mapping]]] = ..., recommendations: _Optional[_Iterable[str]] = ..., accuracy: _Optional[float] = ..., mean_confidence: _Optional[float] = ...) -> None: ...

class GetCalibrationResponse(_message.Message):
    __slots__ = ("reports",)
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedCompositeFieldContainer[CalibrationReport]
    def __init__(self, reports: _Optional[_Iterable[_Union[CalibrationReport, _Mapping]]] = ...) -> None: ...
