import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from minhos.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_ERROR: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATUS_UNSPECIFIED: _ClassVar[HealthStatus]
    HEALTH_STATUS_HEALTHY: _ClassVar[HealthStatus]
    HEALTH_STATUS_DEGRADED: _ClassVar[HealthStatus]
    HEALTH_STATUS_UNHEALTHY: _ClassVar[HealthStatus]
    HEALTH_STATUS_UNKNOWN: _ClassVar[HealthStatus]

class AlertKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_KIND_UNSPECIFIED: _ClassVar[AlertKind]
    ALERT_KIND_LOW_ACCURACY: _ClassVar[AlertKind]
    ALERT_KIND_LOW_CONFIDENCE: _ClassVar[AlertKind]
    ALERT_KIND_LOW_AGREEMENT: _ClassVar[AlertKind]
    ALERT_KIND_HIGH_ERROR_RATE: _ClassVar[AlertKind]
    ALERT_KIND_LATENCY_ANOMALY: _ClassVar[AlertKind]
    ALERT_KIND_DEGRADATION: _ClassVar[AlertKind]
    ALERT_KIND_MISCALIBRATION: _ClassVar[AlertKind]
    ALERT_KIND_RETRAIN: _ClassVar[AlertKind]
    ALERT_KIND_ROLLBACK: _ClassVar[AlertKind]
    ALERT_KIND_LOW_HEALTH_SCORE: _ClassVar[AlertKind]

class TrendDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TREND_DIRECTION_UNSPECIFIED: _ClassVar[TrendDirection]
    TREND_DIRECTION_IMPROVING: _ClassVar[TrendDirection]
    TREND_DIRECTION_STABLE: _ClassVar[TrendDirection]
    TREND_DIRECTION_DEGRADING: _ClassVar[TrendDirection]
SEVERITY_UNSPECIFIED: Severity
SEVERITY_INFO: Severity
SEVERITY_WARNING: Severity
SEVERITY_ERROR: Severity
SEVERITY_CRITICAL: Severity
HEALTH_STATUS_UNSPECIFIED: HealthStatus
HEALTH_STATUS_HEALTHY: HealthStatus
HEALTH_STATUS_DEGRADED: HealthStatus
HEALTH_STATUS_UNHEALTHY: HealthStatus
HEALTH_STATUS_UNKNOWN: HealthStatus
ALERT_KIND_UNSPECIFIED: AlertKind
ALERT_KIND_LOW_ACCURACY: AlertKind
ALERT_KIND_LOW_CONFIDENCE: AlertKind
ALERT_KIND_LOW_AGREEMENT: AlertKind
ALERT_KIND_HIGH_ERROR_RATE: AlertKind
ALERT_KIND_LATENCY_ANOMALY: AlertKind
ALERT_KIND_DEGRADATION: AlertKind
ALERT_KIND_MISCALIBRATION: AlertKind
ALERT_KIND_RETRAIN: AlertKind
ALERT_KIND_ROLLBACK: AlertKind
ALERT_KIND_LOW_HEALTH_SCORE: AlertKind
TREND_DIRECTION_UNSPECIFIED: TrendDirection
TREND_DIRECTION_IMPROVING: TrendDirection
TREND_DIRECTION_STABLE: TrendDirection
TREND_DIRECTION_DEGRADING: TrendDirection

class GetHealthRequest(_message.Message):
    __slots__ = ("window", "last_n")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LAST_N_FIELD_NUMBER: _ClassVar[int]
    window: _duration_pb2.Duration
    last_n: int
    def __init__(self, window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., last_n: _Optional[int] = ...) -> None: ...

class WindowMetrics(_message.Message):
    __slots__ = ("start", "end", "predictions", "resolved", "accuracy", "mean_confidence", "agreement_rate", "error_rate", "latency_p50_ms", "latency_p99_ms")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_RATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    predictions: int
    resolved: int
    accuracy: float
    mean_confidence: float
    agreement_rate: float
    error_rate: float
    latency_p50_ms: float
    latency_p99_ms: float
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., predictions: _Optional[int] = ..., resolved: _Optional[int] = ..., accuracy: _Optional[float] = ..., mean_confidence: _Optional[float] = ..., agreement_rate: _Optional[float] = ..., error_rate: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ...) -> None: ...

class ComponentHealth(_message.Message):
    __slots__ = ("component", "status", "score", "metrics", "detail")
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    component: _common_pb2.Component
    status: HealthStatus
    score: float
    metrics: WindowMetrics
    detail: str
    def __init__(self, component: _Optional[_Union[_common_pb2.Component, str]] = ..., status: _Optional[_Union[HealthStatus, str]] = ..., score: _Optional[float] = ..., metrics: _Optional[_Union[WindowMetrics, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...

class Trend(_message.Message):
    __slots__ = ("metric", "component", "slope", "current", "direction")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    SLOPE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    metric: str
    component: _common_pb2.Component
    slope: float
    current: float
    direction: TrendDirection
    def __init__(self, metric: _Optional[str] = ..., component: _Optional[_Union[_common_pb2.Component, str]] = ..., slope: _Optional[float] = ..., current: _Optional[float] = ..., direction: _Optional[_Union[TrendDirection, str]] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("id", "kind", "severity", "component", "message", "value", "threshold", "raised_at", "acknowledged", "acknowledged_at", "acknowledged_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    RAISED_AT_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_AT_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: AlertKind
    severity: Severity
    component: _common_pb2.Component
    message: str
    value: float
    threshold: float
    raised_at: _timestamp_pb2.Timestamp
    acknowledged: bool
    acknowledged_at: _timestamp_pb2.Timestamp
    acknowledged_by: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[AlertKind, str]] = ..., severity: _Optional[_Union[Severity, str]] = ..., component: _Optional[_Union[_common_pb2.Component, str]] = ..., message: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., raised_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., acknowledged: bool = ..., acknowledged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., acknowledged_by: _Optional[str] = ...) -> None: ...

class GetHealthResponse(_message.Message):
    __slots__ = ("health_score", "status", "components", "window_metrics", "last_n_metrics", "active_alerts", "trends", "as_of")
    HEALTH_SCORE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_METRICS_FIELD_NUMBER: _ClassVar[int]
    LAST_N_METRICS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ALERTS_FIELD_NUMBER: _ClassVar[int]
    TRENDS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    health_score: float
    status: HealthStatus
    components: _containers.RepeatedCompositeFieldContainer[ComponentHealth]
    window_metrics: WindowMetrics
    last_n_metrics: WindowMetrics
    active_alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    trends: _containers.RepeatedCompositeFieldContainer[Trend]
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, health_score: _Optional[float] = ..., status: _Optional[_Union[HealthStatus, str]] = ..., components: _Optional[_Iterable[_Union[ComponentHealth, _Mapping]]] = ..., window_metrics: _Optional[_Union[WindowMetrics, _Mapping]] = ..., last_n_metrics: _Optional[_Union[WindowMetrics, _Mapping]] = ..., active_alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ..., trends: _Optional[_Iterable[_Union[Trend, _Mapping]]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("include_acknowledged", "min_severity", "limit")
    INCLUDE_ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    include_acknowledged: bool
    min_severity: Severity
    limit: int
    def __init__(self, include_acknowledged: bool = ..., min_severity: _Optional[_Union[Severity, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...

class AcknowledgeAlertRequest(_message.Message):
    __slots__ = ("alert_id", "acknowledged_by")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_BY_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    acknowledged_by: str
    def __init__(self, alert_id: _Optional[str] = ..., acknowledged_by: _Optional[str] = ...) -> None: ...
