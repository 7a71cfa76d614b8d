"""The domain's records as plain, immutable types: what storage returns and the transport converts.
No ORM row leaves server.storage; these are what the rooms above it see."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from server.core.manifest import Manifest
from server.core.scoring import is_hit, went_up_one

#: Alert and degradation severities, lowest first.
Severity = Literal["info", "warning", "error", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "error", "critical")
SEVERITY_RANK: dict[Severity, int] = {s: i + 1 for i, s in enumerate(SEVERITIES)}
RANK_SEVERITY: dict[int, Severity] = {v: k for k, v in SEVERITY_RANK.items()}

# Prediction and Outcome are NamedTuples: immutable like frozen dataclasses, and built in a quarter
# of the time (a stream builds one of each per bar).


class Prediction(NamedTuple):
    id: str
    symbol: str
    #: Market time of the last bar of the window (naive UTC).
    bar_time: dt.datetime
    #: +1 up, -1 down.
    direction: int
    probability_up: float
    confidence: float
    lstm_probability: float
    ensemble_probability: float
    agreement: float
    kelly_fraction: float
    versions: dict[str, str]
    latency_s: float
    #: Close of the last bar, the base of the realized return (NaN when read back from storage).
    close: float


class Outcome(NamedTuple):
    prediction_id: str
    realized_return: float
    hit: bool
    position_return: float
    resolved_at: dt.datetime

    @property
    def actual_up(self) -> bool:
        return went_up_one(self.realized_return)


def outcome_of(prediction: Prediction, realized_return: float, resolved_at: dt.datetime) -> Outcome:
    return Outcome(
        prediction_id=prediction.id,
        realized_return=realized_return,
        hit=is_hit(prediction.direction, realized_return),
        position_return=prediction.kelly_fraction * prediction.direction * realized_return,
        resolved_at=resolved_at,
    )


@dataclass(frozen=True)
class PredictionRecord:
    prediction: Prediction
    outcome: Outcome | None


@dataclass(frozen=True)
class Alert:
    """A raised (stored) alert."""

    id: str
    kind: str
    severity: Severity
    component: str
    message: str
    value: float
    threshold: float
    raised_at: dt.datetime
    market_time: dt.datetime | None = None
    acknowledged: bool = False
    acknowledged_at: dt.datetime | None = None
    acknowledged_by: str = ""

    def to_json(self) -> dict[str, Any]:
        def iso(t: dt.datetime | None) -> str | None:
            return t.isoformat() + "Z" if t is not None else None

        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "component": self.component,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
            "raised_at": iso(self.raised_at),
            "market_time": iso(self.market_time),
            "acknowledged": self.acknowledged,
        }


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version and its manifest; ``stage`` says whether it serves."""

    kind: str
    version: str
    sha256: str
    stage: str
    created_at: dt.datetime
    deployed_at: dt.datetime | None
    stage_changed_at: dt.datetime
    path: str
    manifest: Manifest


@dataclass(frozen=True)
class GateMetric:
    name: str
    champion: float
    challenger: float


@dataclass(frozen=True)
class Job:
    """A retraining job as stored."""

    id: str
    kind: str
    state: str
    trigger: str
    note: str
    queued_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    champion_version: str
    challenger_version: str
    gate_metrics: list[GateMetric] = field(default_factory=list)
    failure_reason: str = ""
    log: list[str] = field(default_factory=list)
    #: Market time the job was queued at (None: live, wall time).
    market_time: dt.datetime | None = None
    #: The worker that claimed it, and its last heartbeat ("" / None before a claim).
    holder: str = ""
    heartbeat_at: dt.datetime | None = None
    #: The probation verdict on the version it deployed: "", "passed" or "failed".
    probation: str = ""

    @staticmethod
    def parse_gate_metrics(text: str) -> list[GateMetric]:
        try:
            raw = json.loads(text or "[]")
        except ValueError:
            return []
        return [
            GateMetric(str(g["name"]), float(g["champion"]), float(g["challenger"]))
            for g in raw
            if isinstance(g, dict)
        ]


@dataclass(frozen=True)
class Lease:
    """A duty held by one process until ``expires_at`` (server/storage/leases.py)."""

    name: str
    holder: str
    expires_at: dt.datetime
    acquired_at: dt.datetime
    #: Rises by one at each change of holder.
    generation: int
