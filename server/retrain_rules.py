"""Retraining decisions as pure functions: is a schedule due, does a degradation trigger a job, does
a trigger merge into an existing job, does a challenger pass the gate, does a new version pass its
probation. Times are passed in (market time in a replay, wall time live). Numpy only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from server import calibration
from server.degradation import CusumParams, first_alarms

#: A job in one of these states absorbs new triggers of its kind.
ACTIVE_STATES = ("queued", "running", "validating")


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


def merge_target(jobs: Sequence[tuple[str, str]]) -> str | None:
    """Id of the job a new trigger merges into: the oldest active one of ``(id, state)`` pairs
    given oldest first; None when a new job must be queued."""
    for job_id, state in jobs:
        if state in ACTIVE_STATES:
            return job_id
    return None


@dataclass(frozen=True)
class GateScores:
    log_loss: float
    brier: float
    accuracy: float
    n: int


def gate_scores(p: ArrayLike, y: ArrayLike) -> GateScores:
    """Log-loss, Brier and accuracy of P(up) against labels (0/1)."""
    p_arr = np.asarray(p, dtype=np.float64)
    y_arr = np.asarray(y, dtype=np.float64)
    if p_arr.shape != y_arr.shape or p_arr.size == 0:
        raise ValueError("need equally long, non-empty probabilities and labels")
    return GateScores(
        log_loss=calibration.log_loss(p_arr, y_arr),
        brier=calibration.brier_score(p_arr, y_arr),
        accuracy=calibration.direction_accuracy(p_arr, y_arr),
        n=int(y_arr.size),
    )


def gate_decision(
    champion: GateScores | None,
    challenger: GateScores,
    min_log_loss_improvement: float,
    min_brier_improvement: float,
) -> tuple[bool, str]:
    """The challenger passes when it improves on the champion's log-loss *and* Brier score by more
    than the margins (proper scores, not accuracy). Without a champion it passes."""
    if not (math.isfinite(challenger.log_loss) and math.isfinite(challenger.brier)):
        return False, "challenger scores are not finite"
    if champion is None:
        return True, "no deployed champion"
    gain_ll = champion.log_loss - challenger.log_loss
    gain_brier = champion.brier - challenger.brier
    facts = (
        f"log-loss {challenger.log_loss:.5f} vs {champion.log_loss:.5f} "
        f"(gain {gain_ll:+.5f}, margin {min_log_loss_improvement:g}); "
        f"Brier {challenger.brier:.5f} vs {champion.brier:.5f} "
        f"(gain {gain_brier:+.5f}, margin {min_brier_improvement:g}) on {challenger.n} bars"
    )
    if not gain_ll > min_log_loss_improvement:
        return False, f"does not beat the champion on log-loss: {facts}"
    if not gain_brier > min_brier_improvement:
        return False, f"does not beat the champion on Brier: {facts}"
    return True, f"beats the champion: {facts}"


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
