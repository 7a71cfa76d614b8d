"""The monitor: a façade that reads samples through server.storage.queries and hands them to the
pure parts: health (health_report.py), alert rules (alert_rules.py), the alert store
(alert_store.py) and calibration reports (calibration_reports.py).

Time is market time: ``now`` defaults to the latest ``bar_time`` stored, so a replay of years of
daily bars behaves like live trading. An outcome counts only once ``resolved_at <= now``, so a
report computed "as of" a past bar never sees later outcomes. Wall time is used only for
``raised_at`` / ``acknowledged_at`` and comes from an injectable clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from server.core import calibration as cal
from server.core.config import MonitoringConfig
from server.core.manifest import COMPONENT_OF_KIND, REFERENCE_METRIC, Manifest
from server.core.records import Alert, Severity
from server.monitoring import alert_rules, calibration_reports, health_report
from server.monitoring import trends as tr
from server.monitoring.alert_store import AlertNotFoundError, AlertStore
from server.monitoring.alerts import AlertCandidate, Sink, default_sinks
from server.monitoring.calibration_reports import Source
from server.monitoring.health_report import HealthReport
from server.monitoring.sample import (
    MODEL_COMPONENTS,
    SERVER_ERROR_CODES,
    RequestCounts,
    Sample,
)
from server.storage import metrics, queries
from server.storage.schema import utcnow

__all__ = ["AlertNotFoundError", "HealthReport", "Monitor", "Source", "reference_of"]

#: Most resolved outcomes the degradation chart reads back.
DEGRADATION_MAX_OUTCOMES = 20_000
#: Newest predictions of the health window an evaluation reads (a busy server makes many per
#: bar, and the window is in market time): metrics over 10,000 are within half a point.
WINDOW_MAX_PREDICTIONS = 10_000


def reference_of(manifests: Mapping[str, Manifest]) -> dict[str, float]:
    """What the monitor expects of each component: its own validation metrics, from the deployed
    manifests (the fused prediction's live in the Kelly component's)."""
    reference = {
        COMPONENT_OF_KIND[kind]: manifests[kind].metrics.get(metric, 0.5)
        for kind, metric in REFERENCE_METRIC.items()
        if kind in manifests
    }
    kelly = manifests["kelly"].metrics if "kelly" in manifests else {}
    if "val_agreement_rate" in kelly:
        reference["agreement"] = kelly["val_agreement_rate"]
    return reference


class Monitor:
    """Health, degradation, alerts and calibration over the rows in the database."""

    def __init__(
        self,
        config: MonitoringConfig,
        reference: Mapping[str, float],
        sinks: Sequence[Sink] | None = None,
        wall_clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``reference``: expected (validation) accuracy per "lstm", "ensemble", "fusion"; an
        optional "agreement" entry gives the expected agreement rate. ``sinks`` default to the log
        plus the configured critical webhook."""
        self.config = config
        self.reference = dict(reference)
        self.wall_clock = wall_clock
        self.store = AlertStore(
            timedelta(minutes=config.alert_cooldown_minutes),
            default_sinks(
                config.critical_webhook_url, config.webhook_retries, config.webhook_timeout_s
            )
            if sinks is None
            else sinks,
            wall_clock,
        )

    @property
    def sinks(self) -> list[Sink]:
        return self.store.sinks

    # ---- reading -------------------------------------------------------------------------------

    def latest_market_time(self) -> datetime:
        return queries.latest_bar_time() or self.wall_clock()

    def _sample(
        self,
        now: datetime,
        start: datetime | None = None,
        newest: int | None = None,
        resolved_only: bool = False,
    ) -> Sample:
        return Sample.of(queries.prediction_outcomes(now, start, newest, resolved_only))

    def _requests(
        self, start: datetime | None, end: datetime, inclusive: bool = False
    ) -> RequestCounts:
        total, errors = queries.request_counts(start, end, sorted(SERVER_ERROR_CODES), inclusive)
        return RequestCounts(total, errors)

    def _latency_anomaly(self, now: datetime) -> tr.Anomaly:
        size = max(self.config.anomaly_chunk, 1)
        s = self._sample(now, newest=size * 21)
        medians = tr.chunk_stat(s.latency_ms, size, "median")
        current = float(medians[-1]) if medians.size else math.nan
        return tr.detect_anomaly(medians[:-1], current, "latency_p50_ms", self.config.anomaly_z)

    # ---- health --------------------------------------------------------------------------------

    def health(
        self,
        now: datetime | None = None,
        window: timedelta | None = None,
        last_n: int | None = None,
    ) -> HealthReport:
        cfg = self.config
        now = now or self.latest_market_time()
        window = window or timedelta(hours=cfg.window_hours)
        win = self._sample(now, start=now - window, newest=WINDOW_MAX_PREDICTIONS)
        lastn = self._sample(now, newest=last_n or cfg.last_n)
        first = lastn.bar_time[0] if len(lastn) else None
        return health_report.build(
            cfg,
            self.reference,
            now,
            (win, self._requests(now - window, now)),
            (lastn, self._requests(first, now, inclusive=True)),
            self._sample(now, resolved_only=True, newest=DEGRADATION_MAX_OUTCOMES),
            health_report.trends(
                cfg,
                self._sample(now, newest=cfg.trend_last_n),
                self._sample(now, resolved_only=True, newest=cfg.trend_last_n),
            ),
            self.alerts(limit=100),
        )

    # ---- alerts --------------------------------------------------------------------------------

    def candidates(self, report: HealthReport, now: datetime) -> list[AlertCandidate]:
        """What every registered rule would raise as of ``now``."""
        cfg = self.config
        ctx = alert_rules.RuleContext(
            config=cfg,
            reference=self.reference,
            report=report,
            latency=self._latency_anomaly(now),
            calibration=self.calibration(
                "fused",
                now=now,
                last_n=max(cfg.calibration_alert_last_n, cfg.calibration_min_samples),
            ),
        )
        return alert_rules.evaluate(ctx)

    def evaluate(
        self, now: datetime | None = None, report: HealthReport | None = None
    ) -> list[Alert]:
        """Computes health (or takes ``report``, computed as of ``now``), records metric
        snapshots, raises and routes new alerts."""
        now = now or (report.as_of if report is not None else self.latest_market_time())
        report = report or self.health(now)
        snapshots = [("health_score", "overall", report.score)]
        for c in report.components:
            snapshots.append(("health_score", c.component, c.score))
            if c.component in MODEL_COMPONENTS:
                snapshots.append(("accuracy", c.component, c.scored_metrics.accuracy))
        metrics.insert_snapshots(snapshots, now, self.wall_clock())
        raised = [self.store.record(c, now) for c in self.candidates(report, now)]
        return [a for a in raised if a is not None]

    def record(self, cand: AlertCandidate, now: datetime | None = None) -> Alert | None:
        """Stores and routes one alert unless its kind is cooling down; also used by other parts
        of the server (retraining, rollbacks)."""
        return self.store.record(cand, now or self.latest_market_time())

    def alerts(
        self,
        include_acknowledged: bool = False,
        min_severity: Severity | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        return self.store.list(include_acknowledged, min_severity, limit)

    def acknowledge(self, alert_id: str, by: str = "") -> Alert:
        return self.store.acknowledge(alert_id, by)

    # ---- calibration ---------------------------------------------------------------------------

    def calibration(
        self,
        source: Source = "fused",
        last_n: int | None = None,
        window: timedelta | None = None,
        n_bins: int = 10,
        strategy: cal.Strategy = "uniform",
        now: datetime | None = None,
    ) -> cal.CalibrationReport:
        """Report over resolved predictions in ``window`` (everything if None), last ``last_n``."""
        now = now or self.latest_market_time()
        s = self._sample(
            now, start=now - window if window else None, resolved_only=True, newest=last_n or None
        )
        return calibration_reports.report(self.config, s, source, n_bins, strategy)
