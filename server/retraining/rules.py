"""Retraining decisions as pure functions: is a schedule due, does a degradation trigger a job, does a new version
pass its probation, what a finished job alerts (the gate and job merging are core rules: server.core.scoring, server.core.jobs). Times are passed in (market time in a replay, wall time live). Numpy only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from server.core.manifest import COMPONENT_OF_KIND
from server.core.records import Job, Severity
from server.monitoring.alerts import AlertCandidate
from server.monitoring.degradation import CusumParams, first_alarms


def schedule_due(now: datetime, last: datetime | None, every_days: float) -> bool:
    """True when ``every_days`` have passed since ``last`` (the kind's previous job, or the
    moment the coordinator started watching). Off when ``every_days <= 0``; a clock that went
    backwards (a replay restarted earlier) is never due."""
    if every_days <= 0 or last is None or now < last:
        return False
    return now - last >= timedelta(days=every_days)


def degradation_due(
    degraded: bool, now: datetime, last_trigger: datetime | None, cooldown_days: float
) -> bool:
    """A degraded kind queues a job unless its previous degradation job is within the cooldown."""
    if not degraded:
        return False
    if last_trigger is None or now < last_trigger:
        return True
    return now - last_trigger >= timedelta(days=cooldown_days)


@dataclass(frozen=True)
class ProbationVerdict:
    state: Literal["pending", "passed", "failed"]
    reason: str
    outcomes: int
    accuracy: float


def probation_verdict(
    hits: ArrayLike,
    reference_accuracy: float,
    needed: int,
    z_threshold: float,
    params: CusumParams,
) -> ProbationVerdict:
    """Hits (oldest first) of predictions made with a newly deployed version, against its
    champion's validation accuracy. It fails as soon as the CUSUM reaches "warning" within the
    first ``needed`` outcomes, or when, at ``needed`` outcomes, the accuracy is below the reference
    by more than ``z_threshold`` binomial standard errors (one test, so one false-alarm rate)."""
    x = np.asarray(hits, dtype=np.float64)[: max(needed, 0)]
    n = int(x.size)
    accuracy = float(x.mean()) if n else math.nan
    if n:
        alarm = first_alarms(x, params)["warning"]
        if alarm is not None:
            return ProbationVerdict(
                "failed",
                f"CUSUM reached warning after {alarm + 1} outcomes (accuracy {accuracy:.3f}, "
                f"reference {reference_accuracy:.3f})",
                n,
                accuracy,
            )
    if n < needed or n == 0:
        return ProbationVerdict("pending", f"{n} of {needed} outcomes resolved", n, accuracy)
    p0 = min(max(reference_accuracy, 0.01), 0.99)
    z = (accuracy - p0) / math.sqrt(p0 * (1 - p0) / n)
    if z < -z_threshold:
        return ProbationVerdict(
            "failed",
            f"accuracy {accuracy:.3f} over {n} outcomes is significantly below the champion's "
            f"{p0:.3f} (z {z:.2f} < -{z_threshold:g})",
            n,
            accuracy,
        )
    return ProbationVerdict(
        "passed", f"accuracy {accuracy:.3f} over {n} outcomes (z {z:.2f})", n, accuracy
    )


def job_alert(row: Job, severity: Severity | None = None) -> AlertCandidate:
    """The alert a finished job raises. A rejected challenger is the gate working (the champion
    serves on): info. A job that crashed, hung or lost its worker is an error someone should read."""
    if severity is None:
        severity = "info" if row.state in ("deployed", "rejected") else "error"
    detail = row.failure_reason or row.challenger_version
    return AlertCandidate(
        kind="retrain",
        severity=severity,
        component=COMPONENT_OF_KIND.get(row.kind, row.kind),
        message=f"{row.kind} retrain job {row.id[:8]} {row.state}: {detail}"[:500],
        value=0.0,
        threshold=0.0,
    )
