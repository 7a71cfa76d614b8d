"""The monitor over a real SQLite file: health, degradation alerts, cooldown, acknowledge, calibration."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from server.core.config import MonitoringConfig
from server.core.records import Alert
from server.monitoring import trends as tr
from server.monitoring.monitor import AlertNotFoundError, Monitor
from server.storage.schema import (
    AlertRow,
    MetricRow,
    OutcomeRow,
    PredictionRow,
    RequestRow,
    close_database,
    open_database,
)

pytestmark = pytest.mark.serving

T0 = datetime(2020, 1, 1, 21, 0)
REFERENCE = {"lstm": 0.53, "ensemble": 0.53, "fusion": 0.53}


class _Collect:
    every_alert = True

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def send(self, alert: Alert) -> bool:
        self.alerts.append(alert)
        return True


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[None]:
    open_database(f"sqlite:///{tmp_path}/m.db")
    yield
    close_database()


def _insert(
    n: int,
    accuracy: float | list[float],
    seed: int = 0,
    start: datetime = T0,
    resolved: int | None = None,
    p_up: float | None = None,
) -> list[bool]:
    """n daily predictions; the fused direction is right with the given per-bar probability."""
    rng = np.random.default_rng(seed)
    acc = np.broadcast_to(np.asarray(accuracy, dtype=np.float64), (n,))
    resolved = n if resolved is None else resolved
    preds, outs, hits = [], [], []
    for i in range(n):
        t = start + timedelta(days=i)
        p = float(p_up) if p_up is not None else float(rng.uniform(0.35, 0.65))
        lstm_p = float(np.clip(p + rng.normal(0, 0.05), 0.01, 0.99))
        ens_p = float(np.clip(2 * p - lstm_p, 0.01, 0.99))
        direction = 1 if p > 0.5 else -1
        pid = uuid.uuid4().hex
        preds.append(
            {
                "id": pid,
                "symbol": "SPY",
                "bar_time": t,
                "direction": direction,
                "probability_up": p,
                "confidence": max(p, 1 - p),
                "lstm_probability": lstm_p,
                "ensemble_probability": ens_p,
                "agreement": 1.0 - abs(lstm_p - ens_p),
                "kelly_fraction": 0.1,
                "lstm_version": "l1",
                "ensemble_version": "e1",
                "kelly_version": "k1",
                "latency_ms": float(rng.uniform(1.0, 2.0)),
            }
        )
        if i < resolved:
            hit = bool(rng.random() < acc[i])
            up = (direction == 1) == hit
            ret = 0.01 if up else -0.01
            outs.append(
                {
                    "prediction": pid,
                    "realized_return": ret,
                    "hit": hit,
                    "position_return": 0.1 * direction * ret,
                    "resolved_at": t + timedelta(days=1),
                }
            )
            hits.append(hit)
    PredictionRow.insert_many(preds).execute()
    if outs:
        OutcomeRow.insert_many(outs).execute()
    return hits


def test_health_on_healthy_data(db: None) -> None:
    hits = _insert(300, 0.53)
    RequestRow.insert_many(
        [
            {
                "method": "Predict",
                "code": "OK",
                "latency_ms": 1.5,
                "market_time": T0 + timedelta(days=i),
            }
            for i in range(300)
        ]
    ).execute()
    monitor = Monitor(MonitoringConfig(), REFERENCE)
    report = monitor.health()
    assert report.as_of == T0 + timedelta(days=299)
    assert [c.component for c in report.components] == ["lstm", "ensemble", "fusion", "server"]
    # The 24h window holds one bar; its outcome resolves the next day, after `now`.
    assert report.window_metrics.predictions == 1 and report.window_metrics.resolved == 0
    last = report.last_n_metrics
    assert last.predictions == 100 and last.resolved == 99
    assert last.accuracy == pytest.approx(np.mean(hits[200:299]))
    assert last.error_rate == 0.0
    assert last.start == T0 + timedelta(days=200)
    assert report.status in ("healthy", "degraded")
    fusion = next(c for c in report.components if c.component == "fusion")
    assert fusion.degradation is not None and fusion.degradation.outcomes == 299
    assert "last-N" in fusion.detail
    assert {t.metric for t in report.trends} >= {"accuracy", "latency_ms"}


def test_now_is_injectable_and_hides_later_outcomes(db: None) -> None:
    _insert(200, 0.53)
    monitor = Monitor(MonitoringConfig(), REFERENCE)
    now = T0 + timedelta(days=49)
    report = monitor.health(now=now, last_n=1000)
    assert report.as_of == now
    assert report.last_n_metrics.predictions == 50
    assert report.last_n_metrics.resolved == 49  # bar 49 resolves on day 50
    wide = monitor.health(now=now, window=timedelta(days=10))
    assert wide.window_metrics.predictions == 10


def test_unknown_with_too_little_data(db: None) -> None:
    _insert(10, 0.53)
    report = Monitor(MonitoringConfig(), REFERENCE).health()
    assert report.status == "unknown" and math.isnan(report.score)


def test_degradation_alerts_cooldown_and_acknowledge(db: None) -> None:
    # 400 healthy bars then 500 bars at 38% accuracy.
    _insert(900, [0.53] * 400 + [0.38] * 500, seed=3)
    sink = _Collect()
    cfg = MonitoringConfig(alert_cooldown_minutes=60 * 24 * 3)
    wall = [datetime(2030, 1, 1)]
    monitor = Monitor(cfg, REFERENCE, sinks=[sink], wall_clock=lambda: wall[0])
    raised = monitor.evaluate()
    kinds = {(a.kind, a.component) for a in raised}
    assert ("degradation", "fusion") in kinds
    assert ("low_accuracy", "fusion") in kinds
    # The window statistic is information in the relative profile; the CUSUM is what warns.
    assert {a.severity for a in raised if a.kind == "low_accuracy"} == {"info"}
    assert [a.id for a in sink.alerts] == [a.id for a in raised]
    deg = next(a for a in raised if a.kind == "degradation" and a.component == "fusion")
    assert deg.severity in ("error", "critical") and "CUSUM" in deg.message
    assert AlertRow.get_by_id(deg.id).severity >= 3
    # Same market time and the next day: inside the 3-day cooldown, nothing new.
    assert monitor.evaluate() == []
    last = T0 + timedelta(days=899)
    assert monitor.evaluate(now=last) == []
    _insert(3, 0.38, seed=4, start=T0 + timedelta(days=900))
    assert monitor.evaluate(now=last + timedelta(days=2)) == []
    # Three market days later but at once in wall time (a replay): still cooling down.
    assert monitor.evaluate(now=last + timedelta(days=3)) == []
    wall[0] += timedelta(days=3)
    again = monitor.evaluate(now=last + timedelta(days=3))
    assert ("degradation", "fusion") in {(a.kind, a.component) for a in again}
    # Snapshots were recorded for the trends.
    assert MetricRow.select().where(MetricRow.name == "health_score").count() >= 3

    active = monitor.alerts()
    assert active and all(not a.acknowledged for a in active)
    assert active == sorted(active, key=lambda a: a.raised_at, reverse=True)
    first = monitor.acknowledge(deg.id, by="ops")
    assert first.acknowledged and first.acknowledged_by == "ops"
    second = monitor.acknowledge(deg.id, by="someone else")
    assert second == first
    assert deg.id not in {a.id for a in monitor.alerts()}
    assert deg.id in {a.id for a in monitor.alerts(include_acknowledged=True)}
    assert all(a.severity in ("error", "critical") for a in monitor.alerts(min_severity="error"))
    with pytest.raises(AlertNotFoundError):
        monitor.acknowledge("nope")
    with pytest.raises(KeyError):
        monitor.acknowledge("nope")


def test_healthy_data_raises_no_degradation(db: None) -> None:
    _insert(600, 0.53, seed=11)
    raised = Monitor(MonitoringConfig(), REFERENCE).evaluate()
    assert not [a for a in raised if a.severity in ("error", "critical")]


def test_error_rate_alert_is_critical(db: None) -> None:
    _insert(100, 0.53)
    RequestRow.insert_many(
        [
            {
                "method": "Predict",
                "code": "INTERNAL" if i % 10 == 0 else "OK",
                "latency_ms": 1.0,
                "market_time": T0 + timedelta(days=i),
            }
            for i in range(100)
        ]
        + [{"method": "Predict", "code": "INVALID_ARGUMENT", "latency_ms": 1.0, "market_time": T0}]
    ).execute()
    sink = _Collect()
    raised = Monitor(MonitoringConfig(), REFERENCE, sinks=[sink]).evaluate()
    err = [a for a in raised if a.kind == "high_error_rate"]
    assert len(err) == 1 and err[0].severity == "critical"
    assert err[0].value == pytest.approx(10 / 101)


def test_latency_anomaly(db: None) -> None:
    _insert(600, 0.53)
    slow = PredictionRow.select(PredictionRow.id).order_by(PredictionRow.bar_time.desc()).limit(50)
    PredictionRow.update(latency_ms=25.0).where(PredictionRow.id.in_(slow)).execute()
    raised = Monitor(MonitoringConfig(), REFERENCE).evaluate()
    assert [a.kind for a in raised if a.kind == "latency_anomaly"] == ["latency_anomaly"]


def test_calibration_on_known_data(db: None) -> None:
    # Fused P(up) = 0.8 and the bar closes up in exactly 80% of cases: calibrated, 80% right.
    rows = _insert(200, [1.0] * 160 + [0.0] * 40, p_up=0.8)
    assert sum(rows) == 160
    monitor = Monitor(MonitoringConfig(), REFERENCE)
    now = T0 + timedelta(days=200)
    assert monitor.calibration("fused").count == 199  # the last outcome resolves after its bar
    report = monitor.calibration("fused", now=now)
    assert report.count == 200
    assert report.ece == pytest.approx(0.0, abs=1e-9)
    assert report.brier == pytest.approx(0.8 * 0.04 + 0.2 * 0.64)
    assert report.accuracy == pytest.approx(0.8)
    assert report.start == T0 and report.end == T0 + timedelta(days=199)
    assert len(report.bins) == 1 and report.bins[0].count == 200
    recent = monitor.calibration("fused", last_n=40, now=now)
    assert recent.count == 40 and recent.accuracy == 0.0
    assert recent.start == T0 + timedelta(days=160)
    windowed = monitor.calibration("lstm", window=timedelta(days=30), strategy="quantile", now=now)
    # Window (now - 30 days, now]: bars 171..199 (no bar at `now` itself).
    assert windowed.count == 29 and windowed.source == "lstm"
    assert windowed.start == T0 + timedelta(days=171)


def test_redeployed_model_starts_a_fresh_chart(db: None) -> None:
    _insert(500, 0.40, seed=8)
    newest = (
        PredictionRow.select(PredictionRow.id).order_by(PredictionRow.bar_time.desc()).limit(60)
    )
    PredictionRow.update(lstm_version="l2").where(PredictionRow.id.in_(newest)).execute()
    report = Monitor(MonitoringConfig(), REFERENCE).health()
    by_name = {c.component: c for c in report.components}
    lstm, ensemble = by_name["lstm"].degradation, by_name["ensemble"].degradation
    assert lstm is not None and ensemble is not None
    assert lstm.outcomes == 59 and ensemble.outcomes == 499  # newest outcome not yet resolved
    assert ensemble.severity in ("error", "critical")


def test_trend_and_anomaly_functions() -> None:
    rng = np.random.default_rng(0)
    x = np.arange(300, dtype=np.float64)
    rising_latency = tr.fit_trend(2.0 + 0.01 * x + rng.normal(0, 0.2, 300), "latency_ms", "server")
    assert rising_latency.direction == "degrading" and rising_latency.t_stat > 2
    assert rising_latency.slope == pytest.approx(0.01, abs=0.002)
    improving = tr.fit_trend((rng.random(300) < 0.3 + x / 600).astype(float), "accuracy", "fusion")
    assert improving.direction == "improving"
    flat = tr.fit_trend(rng.normal(1.5, 0.1, 300), "latency_ms", "server")
    assert flat.direction == "stable"
    assert math.isnan(tr.slope_t([1.0, 2.0])[1])
    history = rng.normal(1.5, 0.05, 20)
    assert tr.detect_anomaly(history, 3.0, "latency_p50_ms").anomalous
    assert not tr.detect_anomaly(history, 0.5, "latency_p50_ms").anomalous  # faster is fine
    assert not tr.detect_anomaly(history[:3], 3.0, "latency_p50_ms").anomalous  # too little history
    assert tr.detect_anomaly(np.full(10, 0.9), 0.5, "accuracy").anomalous
    np.testing.assert_allclose(tr.chunk_stat(np.arange(7.0), 3, "mean"), [2.0, 5.0])
