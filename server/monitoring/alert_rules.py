"""Alert rules: small named functions, one a rule, registered in :data:`RULES` in the order they
are evaluated. Each reads a :class:`RuleContext` (the health report and what else the monitor
measured at that moment) and returns the alerts it would raise; the alert store decides what is
stored (cooldowns) and where it is routed."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from server.core.calibration import CalibrationReport
from server.core.config import MonitoringConfig
from server.core.records import Severity
from server.monitoring.alerts import AlertCandidate
from server.monitoring.health_report import ComponentHealth, HealthReport
from server.monitoring.sample import MODEL_COMPONENTS
from server.monitoring.trends import Anomaly


@dataclass(frozen=True)
class RuleContext:
    config: MonitoringConfig
    #: Expected (validation) accuracy per component, and optionally "agreement".
    reference: Mapping[str, float]
    report: HealthReport
    latency: Anomaly
    #: Calibration of the fused prediction over the recent resolved outcomes.
    calibration: CalibrationReport

    def ladder(self, score: float) -> Severity | None:
        """Severity of a sub-score below the health thresholds."""
        cfg = self.config
        if math.isnan(score) or score >= cfg.warn_health_score:
            return None
        if cfg.profile != "fixed":
            # A sliding-window z, re-tested at every evaluation, dips below any fixed level by
            # chance; in the relative profile it is information, and the CUSUM is the rule that
            # warns.
            return "info"
        return "error" if score < cfg.critical_health_score else "warning"

    def models(self) -> list[ComponentHealth]:
        return [c for c in self.report.components if c.component in MODEL_COMPONENTS]


Rule = Callable[[RuleContext], list[AlertCandidate]]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn

    return register


def evaluate(ctx: RuleContext) -> list[AlertCandidate]:
    return [candidate for fn in RULES.values() for candidate in fn(ctx)]


@rule("low_accuracy")
def low_accuracy(ctx: RuleContext) -> list[AlertCandidate]:
    out = []
    for c in ctx.models():
        severity = ctx.ladder(c.subscores.get("accuracy", math.nan))
        if severity is None:
            continue
        m = c.scored_metrics
        expected = (
            ctx.config.fixed_min_accuracy
            if ctx.config.profile == "fixed"
            else ctx.reference.get(c.component, math.nan)
        )
        out.append(
            AlertCandidate(
                "low_accuracy",
                severity,
                c.component,
                f"{c.component} accuracy below expectation: {c.detail}",
                m.accuracy if m.resolved else math.nan,
                expected,
            )
        )
    return out


def _confidence_severity(ctx: RuleContext) -> Severity | None:
    return ctx.ladder(ctx.report.component("fusion").subscores.get("confidence", math.nan))


@rule("fused_confidence")
def fused_confidence(ctx: RuleContext) -> list[AlertCandidate]:
    """Fused confidence out of line with accuracy: "low_confidence" against an absolute floor in
    the fixed profile, "miscalibration" against the observed accuracy in the relative one."""
    severity = _confidence_severity(ctx)
    if severity is None:
        return []
    fixed = ctx.config.profile == "fixed"
    c = ctx.report.component("fusion")
    m = c.scored_metrics
    return [
        AlertCandidate(
            "low_confidence" if fixed else "miscalibration",
            severity,
            "fusion",
            f"fused confidence: {c.detail}",
            m.mean_confidence,
            ctx.config.fixed_min_confidence if fixed else m.accuracy,
        )
    ]


@rule("low_agreement")
def low_agreement(ctx: RuleContext) -> list[AlertCandidate]:
    c = ctx.report.component("fusion")
    severity = ctx.ladder(c.subscores.get("agreement", math.nan))
    if severity is None:
        return []
    return [
        AlertCandidate(
            "low_agreement",
            severity,
            "fusion",
            f"LSTM/ensemble agreement low: {c.detail}",
            c.scored_metrics.agreement_rate,
            ctx.reference.get("agreement", ctx.config.fixed_min_agreement),
        )
    ]


@rule("degradation")
def degradation(ctx: RuleContext) -> list[AlertCandidate]:
    out = []
    for c in ctx.models():
        state = c.degradation
        if state is None or state.severity not in ("warning", "error", "critical"):
            continue
        what = (
            f"CUSUM {state.statistic:.2f} >= h={state.threshold:.2f} "
            f"(p0={state.p0:.3f} -> p1={state.p1:.3f}, {state.outcomes} outcomes)"
            if state.profile == "relative"
            else f"rolling accuracy {state.statistic:.3f} below {state.threshold:.3f}"
        )
        out.append(
            AlertCandidate(
                "degradation",
                state.severity,
                c.component,
                f"{c.component} degrading: {what}",
                state.statistic,
                state.threshold,
            )
        )
    return out


@rule("high_error_rate")
def high_error_rate(ctx: RuleContext) -> list[AlertCandidate]:
    server = ctx.report.component("server")
    err = server.scored_metrics.error_rate
    if server.subscores.get("error_rate") is None or math.isnan(err):
        return []
    cfg = ctx.config
    levels: tuple[tuple[Severity, float], ...] = (
        ("critical", cfg.critical_error_rate),
        ("warning", cfg.warn_error_rate),
    )
    for severity, limit in levels:
        if err >= limit:
            return [
                AlertCandidate(
                    "high_error_rate",
                    severity,
                    "server",
                    f"error rate {err:.3%} >= {limit:.3%}",
                    err,
                    limit,
                )
            ]
    return []


@rule("latency_anomaly")
def latency_anomaly(ctx: RuleContext) -> list[AlertCandidate]:
    a = ctx.latency
    if not a.anomalous:
        return []
    return [
        AlertCandidate(
            "latency_anomaly",
            "warning",
            "server",
            f"median latency {a.current:.2f} ms vs usual {a.baseline:.2f} ms (robust z={a.z:.1f})",
            a.current,
            a.baseline,
        )
    ]


@rule("low_health_score")
def low_health_score(ctx: RuleContext) -> list[AlertCandidate]:
    score = ctx.report.score
    warn, crit = ctx.config.warn_health_score, ctx.config.critical_health_score
    if math.isnan(score) or score >= warn:
        return []
    critical = score < crit
    limit = crit if critical else warn
    return [
        AlertCandidate(
            "low_health_score",
            "critical" if critical else "warning",
            "server",
            f"health score {score:.1f} below {limit:.0f}",
            score,
            limit,
        )
    ]


@rule("miscalibrated_bins")
def miscalibrated_bins(ctx: RuleContext) -> list[AlertCandidate]:
    """A confidence bin right significantly more or less often than it claims. Skipped when the
    fused-confidence rule already raised a miscalibration."""
    calib = ctx.calibration
    if not calib.miscalibrations:
        return []
    if ctx.config.profile != "fixed" and _confidence_severity(ctx) is not None:
        return []
    worst = max(calib.miscalibrations, key=lambda m: abs(m.z))
    # One significant bin among repeated evaluations is a hint; it warns only when the
    # calibration error as a whole is out of tolerance too.
    level: Severity = "warning" if calib.ece > ctx.config.calibration_max_ece else "info"
    return [
        AlertCandidate(
            "miscalibration",
            level,
            "fusion",
            f"fused {worst.kind}: {worst.evidence}",
            worst.gap,
            0.0,
        )
    ]
