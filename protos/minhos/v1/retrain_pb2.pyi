import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from minhos.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_VALIDATING: _ClassVar[JobState]
    JOB_STATE_DEPLOYED: _ClassVar[JobState]
    JOB_STATE_REJECTED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_ROLLED_BACK: _ClassVar[JobState]

class TriggerReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIGGER_REASON_UNSPECIFIED: _ClassVar[TriggerReason]
    TRIGGER_REASON_SCHEDULE: _ClassVar[TriggerReason]
    TRIGGER_REASON_DEGRADATION: _ClassVar[TriggerReason]
    TRIGGER_REASON_MANUAL: _ClassVar[TriggerReason]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_VALIDATING: JobState
JOB_STATE_DEPLOYED: JobState
JOB_STATE_REJECTED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_ROLLED_BACK: JobState
TRIGGER_REASON_UNSPECIFIED: TriggerReason
TRIGGER_REASON_SCHEDULE: TriggerReason
TRIGGER_REASON_DEGRADATION: TriggerReason
TRIGGER_REASON_MANUAL: TriggerReason

class TriggerRetrainRequest(_message.Message):
    __slots__ = ("kind", "note")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    kind: _common_pb2.ModelKind
    note: str
    def __init__(self, kind: _Optional[_Union[_common_pb2.ModelKind, str]] = ..., note: _Optional[str] = ...) -> None: ...

class TriggerRetrainResponse(_message.Message):
    __slots__ = ("job", "merged")
    JOB_FIELD_NUMBER: _ClassVar[int]
    MERGED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    merged: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., merged: bool = ...) -> None: ...

class GateMetric(_message.Message):
    __slots__ = ("name", "champion", "challenger")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_FIELD_NUMBER: _ClassVar[int]
    name: str
    champion: float
    challenger: float
    def __init__(self, name: _Optional[str] = ..., champion: _Optional[float] = ..., challenger: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "kind", "state", "trigger", "note", "queued_at", "started_at", "finished_at", "champion_version", "challenger_version", "gate_metrics", "failure_reason", "log")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_VERSION_FIELD_NUMBER: _ClassVar[int]
    GATE_METRICS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: _common_pb2.ModelKind
    state: JobState
    trigger: TriggerReason
    note: str
    queued_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    champion_version: str
    challenger_version: str
    gate_metrics: _containers.RepeatedCompositeFieldContainer[GateMetric]
    failure_reason: str
    log: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.ModelKind, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., trigger: _Optional[_Union[TriggerReason, str]] = ..., note: _Optional[str] = ..., queued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., champion_version: _Optional[str] = ..., challenger_version: _Optional[str] = ..., gate_metrics: _Optional[_Iterable[_Union[GateMetric, _Mapping]]] = ..., failure_reason: _Optional[str] = ..., log: _Optional[_Iterable[str]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("kind", "state", "limit")
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    kind: _common_pb2.ModelKind
    state: JobState
    limit: int
    def __init__(self, kind: _Optional[_Union[_common_pb2.ModelKind, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ("kind", "stage")
    KIND_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    kind: _common_pb2.ModelKind
    stage: _common_pb2.ModelStage
    def __init__(self, kind: _Optional[_Union[_common_pb2.ModelKind, str]] = ..., stage: _Optional[_Union[_common_pb2.ModelStage, str]] = ...) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[_common_pb2.ModelVersion, _Mapping]]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("kind", "to_version", "reason")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    kind: _common_pb2.ModelKind
    to_version: str
    reason: str
    def __init__(self, kind: _Optional[_Union[_common_pb2.ModelKind, str]] = ..., to_version: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("deployed", "replaced")
    DEPLOYED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    deployed: _common_pb2.ModelVersion
    replaced: _common_pb2.ModelVersion
    def __init__(self, deployed: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ..., replaced: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ...) -> None: ...
