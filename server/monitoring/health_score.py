"""Health sub-scores (0-100) per component and the overall score. Pure functions.

Daily direction accuracy of ~0.52 is normal, and a few dozen outcomes say little, so in the
"relative" profile (default) every statistical sub-score is a linear ramp on a one-sided z:

    S(z) = 100 * clip(1 + z / Z, 0, 1)            (Z = ``health_z_floor``, default 3)

i.e. 100 while the metric is at or above its expectation, 67 at z = -1, 33 at z = -2, 0 at z = -3.

- accuracy:   z = (acc - p0) / sqrt(p0 (1 - p0) / n), p0 = the model's validation accuracy,
              n = resolved outcomes. 20 outcomes at 0.45 against p0 = 0.52 give z = -0.63, S = 79;
              500 outcomes at 0.45 give z = -3.1, S = 0.
- confidence: overconfidence in the large, z = (acc - conf) / sqrt(conf (1 - conf) / n), capped at 0, so only
              stated confidence above the observed accuracy costs points.
- agreement:  z = (rate - a0) / sqrt(a0 (1 - a0) / n), a0 = the reference agreement rate
              (``fixed_min_agreement`` when none is known), n = predictions.
- error rate: 100 at 0, falling linearly to ``warn_health_score`` at ``warn_error_rate``, to
              ``critical_health_score`` at ``critical_error_rate`` and to 0 at twice that.

In the "fixed" profile the accuracy, confidence and agreement sub-scores are absolute ramps instead:
100 * clip((v - floor) / (threshold - floor), 0, 1), with floor 0.5 for accuracy and confidence
(a coin flip) and 0 for agreement, and thresholds ``fixed_min_*``.

A sub-score is computed only with enough data (``min_resolved_for_health`` resolved outcomes for
accuracy and confidence, the same number of predictions for agreement, any requests for the error
rate). A component's score is the weighted mean of its available sub-scores (accuracy 2, others 1);
with none it is NaN and its status "unknown". The overall score is the weighted mean of the known
component scores (fusion 0.4, lstm 0.2, ensemble 0.2, server 0.2). Status: score >=
``warn_health_score`` healthy, >= ``critical_health_score`` degraded, else unhealthy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from server.core.config import MonitoringConfig

Status = Literal["healthy", "degraded", "unhealthy", "unknown"]
STATUS_ORDER: dict[Status, int] = {"unknown": 0, "healthy": 1, "degraded": 2, "unhealthy": 3}
SUBSCORE_WEIGHTS: dict[str, float] = {
    "accuracy": 2.0,
    "confidence": 1.0,
    "agreement": 1.0,
    "error_rate": 1.0,
}
COMPONENT_WEIGHTS: dict[str, float] = {"fusion": 0.4, "lstm": 0.2, "ensemble": 0.2, "server": 0.2}


@dataclass(frozen=True)
class ComponentScore:
    score: float
    status: Status
    subscores: dict[str, float] = field(default_factory=dict)
    #: z statistics behind the sub-scores, for the detail line and the alerts.
    z: dict[str, float] = field(default_factory=dict)
    detail: str = ""


def ramp(z: float, z_floor: float) -> float:
    """100 at z >= 0 falling linearly to 0 at z = -z_floor."""
    return 100.0 * min(1.0, max(0.0, 1.0 + z / z_floor))


def absolute_ramp(value: float, threshold: float, floor: float) -> float:
    if threshold <= floor:
        return 100.0 if value >= threshold else 0.0
    return 100.0 * min(1.0, max(0.0, (value - floor) / (threshold - floor)))


def proportion_z(observed: float, expected: float, n: int) -> float:
    """One-sample z of an observed proportion against its expectation."""
    expected = min(max(expected, 1e-6), 1 - 1e-6)
    return (observed - expected) / math.sqrt(expected * (1 - expected) / max(n, 1))


def error_rate_score(rate: float, cfg: MonitoringConfig) -> float:
    warn, crit = cfg.warn_error_rate, cfg.critical_error_rate
    ws, cs = cfg.warn_health_score, cfg.critical_health_score
    if rate <= warn:
        return 100.0 - (100.0 - ws) * rate / warn if warn > 0 else 100.0
    if rate <= crit:
        return ws - (ws - cs) * (rate - warn) / (crit - warn)
    return max(0.0, cs * (1.0 - (rate - crit) / crit))


def status_for(score: float, warn: float, critical: float) -> Status:
    if math.isnan(score):
        return "unknown"
    if score >= warn:
        return "healthy"
    if score >= critical:
        return "degraded"
    return "unhealthy"


def worse(a: Status, b: Status) -> Status:
    return a if STATUS_ORDER[a] >= STATUS_ORDER[b] else b


def weighted_mean(values: Mapping[str, float], weights: Mapping[str, float]) -> float:
    known = {k: v for k, v in values.items() if not math.isnan(v)}
    total = sum(weights.get(k, 1.0) for k in known)
    if not known or total <= 0:
        return math.nan
    return sum(v * weights.get(k, 1.0) for k, v in known.items()) / total


def score_component(
    cfg: MonitoringConfig,
    *,
    resolved: int = 0,
    accuracy: float = math.nan,
    expected_accuracy: float = math.nan,
    mean_confidence: float = math.nan,
    predictions: int = 0,
    agreement_rate: float = math.nan,
    expected_agreement: float | None = None,
    requests: int = 0,
    error_rate: float = math.nan,
) -> ComponentScore:
    """Score whichever metrics are given (NaN / zero counts mean "not applicable")."""
    subs: dict[str, float] = {}
    zs: dict[str, float] = {}
    notes: list[str] = []
    fixed = cfg.profile == "fixed"
    enough = resolved >= cfg.min_resolved_for_health
    if not math.isnan(accuracy):
        if not enough:
            notes.append(f"{resolved} resolved outcomes (< {cfg.min_resolved_for_health})")
        elif fixed:
            subs["accuracy"] = absolute_ramp(accuracy, cfg.fixed_min_accuracy, 0.5)
            notes.append(f"accuracy {accuracy:.3f} vs {cfg.fixed_min_accuracy:.3f} (n={resolved})")
        elif not math.isnan(expected_accuracy):
            z = proportion_z(accuracy, expected_accuracy, resolved)
            zs["accuracy"] = z
            subs["accuracy"] = ramp(z, cfg.health_z_floor)
            notes.append(
                f"accuracy {accuracy:.3f} vs expected {expected_accuracy:.3f} "
                f"(n={resolved}, z={z:+.2f})"
            )
    if not math.isnan(mean_confidence) and not math.isnan(accuracy) and enough:
        if fixed:
            subs["confidence"] = absolute_ramp(mean_confidence, cfg.fixed_min_confidence, 0.5)
        else:
            z = proportion_z(accuracy, mean_confidence, resolved)
            zs["confidence"] = z
            subs["confidence"] = ramp(min(z, 0.0), cfg.health_z_floor)
            if z < -1:
                notes.append(f"confidence {mean_confidence:.3f} above accuracy (z={z:+.2f})")
    if not math.isnan(agreement_rate) and predictions >= cfg.min_resolved_for_health:
        a0 = cfg.fixed_min_agreement if expected_agreement is None else expected_agreement
        if fixed:
            subs["agreement"] = absolute_ramp(agreement_rate, cfg.fixed_min_agreement, 0.0)
        else:
            z = proportion_z(agreement_rate, a0, predictions)
            zs["agreement"] = z
            subs["agreement"] = ramp(z, cfg.health_z_floor)
        notes.append(f"agreement {agreement_rate:.3f} vs {a0:.3f}")
    if requests > 0 and not math.isnan(error_rate):
        subs["error_rate"] = error_rate_score(error_rate, cfg)
        notes.append(f"error rate {error_rate:.4f} over {requests} requests")
    score = weighted_mean(subs, SUBSCORE_WEIGHTS)
    status = status_for(score, cfg.warn_health_score, cfg.critical_health_score)
    detail = "; ".join(notes) if notes else "no data"
    return ComponentScore(score=score, status=status, subscores=subs, z=zs, detail=detail)


def overall_score(component_scores: Mapping[str, float]) -> float:
    return weighted_mean(component_scores, COMPONENT_WEIGHTS)
