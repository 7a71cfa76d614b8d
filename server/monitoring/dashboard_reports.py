"""The dashboard's aggregates, computed where the data is: each report reads the newest predictions
(server.storage.queries) and hands them to the pure functions of
server.monitoring.series and server.monitoring.performance, so a page receives a few hundred
points, never the predictions themselves."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from server.core.calibrator import KellyComponent
from server.core.config import KellyConfig, MonitoringConfig
from server.core.manifest import Manifest
from server.core.model_card import fitting_span
from server.monitoring import performance as perf
from server.monitoring import series as ser
from server.storage import queries


@dataclass(frozen=True)
class SeriesReport:
    series: list[ser.Series]
    #: Bar time of every prediction covered; a series point's time is ``bar_time[end]``.
    bar_time: list[dt.datetime]
    window: int


@dataclass(frozen=True)
class KellyReport:
    calibrator: str
    calibrator_detail: str
    payoff_ratio: float
    payoff_outcomes: int
    fraction: float
    cap: float
    fitted_on: str
    stakes: perf.StakeHistogram


@dataclass(frozen=True)
class PerformanceReport:
    symbol: str
    resolved: int
    hits: int
    by_agreement: tuple[perf.HitRate, perf.HitRate]
    equity: perf.Equity
    #: Bar times of the resolved predictions covered, oldest first.
    bar_time: list[dt.datetime]
    #: Indices of the equity points to send.
    sample: perf.IntArray

    @property
    def hit_rate(self) -> float:
        return self.hits / self.resolved if self.resolved else float("nan")


def series_report(
    cfg: MonitoringConfig, reference: Mapping[str, float], window: int, points: int, span: int
) -> SeriesReport:
    """Metric series over the newest ``span`` predictions, ``window`` predictions per point."""
    cols = queries.newest_predictions(span)
    series = ser.metric_series(
        cfg,
        dict(reference),
        lstm_p=cols.lstm_p,
        ensemble_p=cols.ensemble_p,
        confidence=cols.confidence,
        latency_ms=cols.latency_ms,
        resolved=cols.resolved,
        up=cols.up,
        hit=cols.hit,
        window=window,
        points=points,
    )
    return SeriesReport(series, cols.bar_time, window)


def calibrator_detail(component: KellyComponent) -> str:
    if component.method == "platt":
        return f"a = {component.a:.3f}, b = {component.b:.3f}"
    if component.method == "isotonic":
        return f"{len(component.knots_x)} knots"
    return "p unchanged"


def fitted_on(component: KellyComponent, manifest: Manifest) -> str:
    """What the component was fitted on, in words: its own record ("resolved outcomes", or a
    span of dates), else the span its manifest records."""
    value = component.info.get("fitted_on")
    if isinstance(value, list | tuple):
        return " .. ".join(str(v) for v in value)
    if value:
        return str(value)
    span = fitting_span(manifest)
    return " .. ".join(span) if span else ""


def kelly_report(
    component: KellyComponent, manifest: Manifest, config: KellyConfig, last_n: int, bins: int
) -> KellyReport:
    """The deployed component and the stakes of the newest ``last_n`` predictions it sized."""
    stakes = queries.newest_predictions(last_n, kelly_version=manifest.version).kelly_fraction
    return KellyReport(
        calibrator=component.method,
        calibrator_detail=calibrator_detail(component),
        payoff_ratio=component.payoff_ratio,
        payoff_outcomes=component.n_outcomes,
        fraction=config.fraction,
        cap=config.cap,
        fitted_on=fitted_on(component, manifest),
        stakes=perf.stake_histogram(stakes, config.cap, bins),
    )


def performance_report(
    symbol: str, high_agreement: float, points: int, last_n: int
) -> PerformanceReport:
    """Hit rates and equity over the newest ``last_n`` resolved predictions of ``symbol`` (the
    newest prediction's symbol if empty)."""
    symbol = symbol or queries.newest_symbol() or ""
    cols = queries.newest_predictions(last_n, symbol=symbol, resolved_only=True)
    return PerformanceReport(
        symbol=symbol if len(cols) else "",
        resolved=len(cols),
        hits=int(cols.hit.sum()),
        by_agreement=perf.agreement_hit_rates(cols.agreement, cols.hit, high_agreement),
        equity=perf.equity_curves(cols.position_return, cols.realized_return),
        bar_time=cols.bar_time,
        sample=perf.sample_indices(len(cols), points),
    )
