"""The health report as a pure function of samples: per component a score (health_score.py), its
window metrics and its degradation state (CUSUM over the current version's hits), and an overall
score and status."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from server.core.config import MonitoringConfig
from server.core.records import Alert, Severity
from server.monitoring import degradation as deg
from server.monitoring import health_score as hs
from server.monitoring import trends as tr
from server.monitoring.sample import (
    MODEL_COMPONENTS,
    RequestCounts,
    Sample,
    WindowMetrics,
    mean,
    window_metrics,
)

_DEGRADATION_STATUS: dict[Severity, hs.Status] = {
    "info": "healthy",
    "warning": "degraded",
    "error": "unhealthy",
    "critical": "unhealthy",
}


@dataclass(frozen=True)
class DegradationState:
    profile: str
    #: CUSUM statistic ("relative") or rolling accuracy ("fixed").
    statistic: float
    #: h ("relative") or the accuracy threshold ("fixed").
    threshold: float
    severity: Severity | None
    outcomes: int
    p0: float = math.nan
    p1: float = math.nan


@dataclass(frozen=True)
class ComponentHealth:
    component: str
    status: hs.Status
    score: float
    metrics: WindowMetrics
    detail: str
    subscores: dict[str, float] = field(default_factory=dict)
    degradation: DegradationState | None = None
    #: Metrics of the window the score was computed on (time or last-N, whichever had more data).
    scored: WindowMetrics | None = None

    @property
    def scored_metrics(self) -> WindowMetrics:
        return self.scored or self.metrics


@dataclass(frozen=True)
class HealthReport:
    score: float
    status: hs.Status
    components: list[ComponentHealth]
    window_metrics: WindowMetrics
    last_n_metrics: WindowMetrics
    trends: list[tr.Trend]
    as_of: datetime
    active_alerts: list[Alert] = field(default_factory=list)

    def component(self, name: str) -> ComponentHealth:
        return next(c for c in self.components if c.component == name)


def degradation_state(
    config: MonitoringConfig, reference: Mapping[str, float], component: str, history: Sample
) -> DegradationState | None:
    """The chart over ``history`` (resolved outcomes in bar_time order) for the component's
    current version."""
    if not len(history):
        return None
    hits = history.correct(component)[history.current_version_tail(component) :].astype(np.float64)
    if config.profile == "fixed":
        window = hits[-config.last_n :]
        if window.size < config.min_resolved_for_health:
            return None
        acc = float(window.mean())
        return DegradationState(
            "fixed",
            acc,
            config.fixed_min_accuracy,
            deg.fixed_severity(acc, config.fixed_min_accuracy),
            int(window.size),
        )
    p0 = reference.get(component)
    if p0 is None:
        return None
    params = deg.CusumParams.for_model(p0, config.cusum_drop, config.cusum_arl0)
    stat = float(deg.cusum_path(hits, params)[-1]) if hits.size else 0.0
    return DegradationState(
        "relative",
        stat,
        params.h,
        deg.severity_of(stat, params),
        int(hits.size),
        params.p0,
        params.p1,
    )


def trends(config: MonitoringConfig, recent: Sample, resolved: Sample) -> list[tr.Trend]:
    """Slopes of accuracy (per model component), confidence, agreement and latency."""
    t = config.trend_t
    out = [
        tr.fit_trend(resolved.correct(c).astype(np.float64), "accuracy", c, t_crit=t)
        for c in MODEL_COMPONENTS
    ]
    out.append(tr.fit_trend(recent.confidence, "mean_confidence", "fusion", t_crit=t))
    out.append(
        tr.fit_trend(recent.agree().astype(np.float64), "agreement_rate", "fusion", t_crit=t)
    )
    out.append(tr.fit_trend(recent.latency_ms, "latency_ms", "server", t_crit=t))
    return out


def build(
    config: MonitoringConfig,
    reference: Mapping[str, float],
    now: datetime,
    window: tuple[Sample, RequestCounts],
    last_n: tuple[Sample, RequestCounts],
    history: Sample,
    trend_list: list[tr.Trend],
    active_alerts: list[Alert],
) -> HealthReport:
    """Scores each component on whichever of the two windows holds more resolved outcomes (a 24 h
    window holds one daily bar, which says nothing)."""
    win, win_req = window
    lastn, lastn_req = last_n
    scored, scored_req = (
        (lastn, lastn_req) if lastn.resolved.sum() >= win.resolved.sum() else (win, win_req)
    )
    if win_req.count > scored_req.count:
        scored_req = win_req
    scores: dict[str, float] = {}
    components: list[ComponentHealth] = []
    for name in (*MODEL_COMPONENTS, "server"):
        m = window_metrics(scored, name, scored_req)
        if name == "server":
            cs = hs.score_component(
                config, requests=scored_req.count, error_rate=scored_req.error_rate
            )
        else:
            cs = hs.score_component(
                config,
                resolved=m.resolved,
                accuracy=m.accuracy,
                expected_accuracy=reference.get(name, math.nan),
                mean_confidence=mean(scored.confidence_of(name)[scored.resolved]),
                predictions=m.predictions if name == "fusion" else 0,
                agreement_rate=m.agreement_rate,
                expected_agreement=reference.get("agreement"),
            )
        status, detail = cs.status, cs.detail
        state = (
            degradation_state(config, reference, name, history)
            if name in MODEL_COMPONENTS
            else None
        )
        if state is not None and state.severity is not None:
            status = hs.worse(status, _DEGRADATION_STATUS[state.severity])
            detail += (
                f"; degradation {state.severity} ({state.statistic:.2f} vs {state.threshold:.2f})"
            )
        which = "last-N" if scored is lastn else "time"
        components.append(
            ComponentHealth(
                component=name,
                status=status,
                score=cs.score,
                metrics=window_metrics(win, name, win_req),
                detail=f"scored on the {which} window: {detail}",
                subscores=cs.subscores,
                degradation=state,
                scored=m,
            )
        )
        scores[name] = cs.score
    overall = hs.overall_score(scores)
    status = hs.status_for(overall, config.warn_health_score, config.critical_health_score)
    if any(c.status == "unhealthy" for c in components):
        status = hs.worse(status, "degraded")
    return HealthReport(
        score=overall,
        status=status,
        components=components,
        window_metrics=window_metrics(win, None, win_req),
        last_n_metrics=window_metrics(lastn, None, lastn_req),
        trends=trend_list,
        as_of=now,
        active_alerts=active_alerts,
    )
