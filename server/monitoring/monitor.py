"""The monitor: reads predictions, outcomes and requests from the database, scores health, detects
degradation, raises alerts (stored, cooled down, routed to sinks) and reports calibration.

Time is market time: ``now`` defaults to the latest ``bar_time`` stored, so a replay of years of
daily bars behaves like live trading. An outcome counts only once ``resolved_at <= now``, so a
report computed "as of" a past bar never sees later outcomes. Wall time is used only for
``raised_at`` / ``acknowledged_at`` and comes from an injectable clock.

Scores are computed on whichever of the two windows (time window, last N predictions) holds more
resolved outcomes: a 24 h window holds one daily bar, which says nothing. Degradation runs the
CUSUM of :mod:`server.monitoring.degradation` over all resolved outcomes of the component's current version(s)
in ``bar_time`` order.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import peewee as pw
from numpy.typing import NDArray

from server.core import calibration as cal
from server.core.config import MonitoringConfig
from server.monitoring import degradation as deg
from server.monitoring import health_score as hs
from server.monitoring import trends as tr
from server.monitoring.alerts import (
    RANK_SEVERITY,
    SEVERITY_RANK,
    Alert,
    AlertCandidate,
    Severity,
    Sink,
    default_sinks,
    in_cooldown,
    route,
)
from server.storage.schema import (
    AlertRow,
    MetricRow,
    OutcomeRow,
    PredictionRow,
    RequestRow,
    database,
    utcnow,
)

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
Source = Literal["fused", "lstm", "ensemble"]
MODEL_COMPONENTS = ("lstm", "ensemble", "fusion")
#: The manifest metric each model kind's accuracy is expected to match: the monitor's reference
#: and the retraining probation's. The fused pair's lives in the Kelly component's manifest.
REFERENCE_METRIC = {
    "lstm": "val_accuracy",
    "ensemble": "val_accuracy",
    "kelly": "val_uncalibrated_accuracy",
}
#: gRPC codes that count as failed requests: the server's fault, not the caller's.
SERVER_ERROR_CODES = frozenset(
    {"UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS", "RESOURCE_EXHAUSTED"}
)
#: Most resolved outcomes the degradation chart reads back.
DEGRADATION_MAX_OUTCOMES = 20_000
#: Newest predictions of the health window an evaluation reads (a busy server makes many per
#: bar, and the window is in market time): metrics over 10,000 are within half a point.
WINDOW_MAX_PREDICTIONS = 10_000
_DEGRADATION_STATUS: dict[Severity, hs.Status] = {
    "info": "healthy",
    "warning": "degraded",
    "error": "unhealthy",
    "critical": "unhealthy",
}


class AlertNotFoundError(KeyError):
    """No alert has the given id."""


@dataclass(frozen=True)
class WindowMetrics:
    start: datetime | None
    end: datetime | None
    predictions: int
    resolved: int
    accuracy: float = math.nan
    mean_confidence: float = math.nan
    agreement_rate: float = math.nan
    error_rate: float = math.nan
    latency_p50_ms: float = math.nan
    latency_p99_ms: float = math.nan


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


def _raw_rows(query: pw.Select) -> list[list[Any]]:
    """The query's rows as the driver returns them, with datetimes (text in SQLite) parsed: an
    evaluation reads tens of thousands of rows, and peewee's per-field conversion cost four times
    the fetch itself, on the serving interpreter."""
    rows = [list(r) for r in database.execute(query).fetchall()]
    for r in rows:
        for i in _DATETIME_COLUMNS:
            if isinstance(r[i], str):
                r[i] = datetime.fromisoformat(r[i])
    return rows


#: Positions of bar_time and resolved_at in :meth:`Monitor._load`'s select.
_DATETIME_COLUMNS = (0, 11)


@dataclass(frozen=True)
class _Sample:
    """Predictions in bar_time order, with their outcome where resolved by ``now``."""

    bar_time: list[datetime]
    p_up: FloatArray
    confidence: FloatArray
    lstm_p: FloatArray
    ensemble_p: FloatArray
    latency_ms: FloatArray
    resolved: BoolArray
    up: BoolArray
    hit: BoolArray
    versions: list[tuple[str, str, str]]

    def __len__(self) -> int:
        return len(self.bar_time)

    def correct(self, component: str) -> BoolArray:
        """Per-prediction correctness (meaningful where resolved); up is P(up) >= 0.5, as served."""
        if component == "lstm":
            return np.asarray((self.lstm_p >= 0.5) == self.up)
        if component == "ensemble":
            return np.asarray((self.ensemble_p >= 0.5) == self.up)
        return self.hit

    def confidence_of(self, component: str) -> FloatArray:
        if component == "lstm":
            return np.maximum(self.lstm_p, 1 - self.lstm_p)
        if component == "ensemble":
            return np.maximum(self.ensemble_p, 1 - self.ensemble_p)
        return self.confidence

    def agree(self) -> BoolArray:
        return np.asarray((self.lstm_p >= 0.5) == (self.ensemble_p >= 0.5))

    def select(self, mask: BoolArray) -> _Sample:
        idx = np.flatnonzero(mask)
        return _Sample(
            bar_time=[self.bar_time[i] for i in idx],
            p_up=self.p_up[idx],
            confidence=self.confidence[idx],
            lstm_p=self.lstm_p[idx],
            ensemble_p=self.ensemble_p[idx],
            latency_ms=self.latency_ms[idx],
            resolved=self.resolved[idx],
            up=self.up[idx],
            hit=self.hit[idx],
            versions=[self.versions[i] for i in idx],
        )


@dataclass(frozen=True)
class _Requests:
    count: int
    errors: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.count if self.count else math.nan


def _mean(x: FloatArray | BoolArray) -> float:
    return float(np.mean(x)) if len(x) else math.nan


def _pct(x: FloatArray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else math.nan


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
        self.sinks = list(
            default_sinks(
                config.critical_webhook_url, config.webhook_retries, config.webhook_timeout_s
            )
            if sinks is None
            else sinks
        )
        self.wall_clock = wall_clock

    # ---- reading -------------------------------------------------------------------------------

    def latest_market_time(self) -> datetime:
        row = (
            PredictionRow.select(PredictionRow.bar_time)
            .order_by(PredictionRow.bar_time.desc())
            .first()
        )
        if row is not None and isinstance(row.bar_time, datetime):
            return row.bar_time
        return self.wall_clock()

    def _load(
        self,
        now: datetime,
        start: datetime | None = None,
        last_n: int | None = None,
        resolved_only: bool = False,
    ) -> _Sample:
        """Predictions up to ``now`` (after ``start``), the newest ``last_n`` of them if given."""
        query = (
            PredictionRow.select(
                PredictionRow.bar_time,
                PredictionRow.probability_up,
                PredictionRow.confidence,
                PredictionRow.lstm_probability,
                PredictionRow.ensemble_probability,
                PredictionRow.latency_ms,
                PredictionRow.lstm_version,
                PredictionRow.ensemble_version,
                PredictionRow.kelly_version,
                OutcomeRow.realized_return,
                OutcomeRow.hit,
                OutcomeRow.resolved_at,
            )
            .join(OutcomeRow, pw.JOIN.LEFT_OUTER, on=(OutcomeRow.prediction == PredictionRow.id))
            .where(PredictionRow.bar_time <= now)
        )
        if start is not None:
            query = query.where(PredictionRow.bar_time > start)
        if resolved_only:
            query = query.where(
                OutcomeRow.resolved_at.is_null(False) & (OutcomeRow.resolved_at <= now)
            )
        if last_n:
            rows = _raw_rows(query.order_by(PredictionRow.bar_time.desc()).limit(last_n))
            rows.reverse()
        else:
            rows = _raw_rows(query.order_by(PredictionRow.bar_time))
        resolved = [r[9] is not None and r[11] is not None and r[11] <= now for r in rows]
        return _Sample(
            bar_time=[r[0] for r in rows],
            p_up=np.array([r[1] for r in rows], dtype=np.float64),
            confidence=np.array([r[2] for r in rows], dtype=np.float64),
            lstm_p=np.array([r[3] for r in rows], dtype=np.float64),
            ensemble_p=np.array([r[4] for r in rows], dtype=np.float64),
            latency_ms=np.array([r[5] for r in rows], dtype=np.float64),
            resolved=np.array(resolved, dtype=np.bool_),
            up=np.array(
                [ok and r[9] > 0 for r, ok in zip(rows, resolved, strict=True)], dtype=bool
            ),
            hit=np.array(
                [ok and bool(r[10]) for r, ok in zip(rows, resolved, strict=True)], dtype=bool
            ),
            versions=[(r[6], r[7], r[8]) for r in rows],
        )

    def _requests(
        self, start: datetime | None, end: datetime, inclusive: bool = False
    ) -> _Requests:
        def within(col: Any) -> Any:
            cond = col <= end
            if start is not None:
                cond &= (col >= start) if inclusive else (col > start)
            return cond

        cond = (RequestRow.market_time.is_null(False) & within(RequestRow.market_time)) | (
            RequestRow.market_time.is_null() & within(RequestRow.created_at)
        )
        messages = pw.fn.SUM(pw.fn.COALESCE(RequestRow.messages, 1))
        total = RequestRow.select(messages).where(cond).scalar()
        errors = (
            RequestRow.select(messages)
            .where(cond & RequestRow.code.in_(sorted(SERVER_ERROR_CODES)))
            .scalar()
        )
        return _Requests(int(total or 0), int(errors or 0))

    # ---- metrics -------------------------------------------------------------------------------

    def _metrics(
        self, s: _Sample, component: str | None, requests: _Requests | None
    ) -> WindowMetrics:
        """``component`` None: overall (fused) metrics."""
        start = s.bar_time[0] if len(s) else None
        end = s.bar_time[-1] if len(s) else None
        name = component or "fusion"
        res = s.resolved
        base = WindowMetrics(start=start, end=end, predictions=len(s), resolved=int(res.sum()))
        if name in MODEL_COMPONENTS:
            base = replace(
                base,
                accuracy=_mean(s.correct(name)[res]),
                mean_confidence=_mean(s.confidence_of(name)),
            )
        if name == "fusion":
            base = replace(
                base,
                agreement_rate=_mean(s.agree()),
                latency_p50_ms=_pct(s.latency_ms, 50),
                latency_p99_ms=_pct(s.latency_ms, 99),
            )
        if component is None or name == "server":
            base = replace(
                base,
                error_rate=requests.error_rate if requests else math.nan,
                latency_p50_ms=_pct(s.latency_ms, 50),
                latency_p99_ms=_pct(s.latency_ms, 99),
            )
        return base

    def _degradation(self, component: str, s: _Sample) -> DegradationState | None:
        """Chart over ``s``: resolved outcomes in bar_time order."""
        if not len(s):
            return None
        # Only the current model version(s) count: a redeployed model starts a fresh chart.
        key = {"lstm": 0, "ensemble": 1}.get(component)
        tags = [v if key is None else v[key] for v in s.versions]
        current = tags[-1]
        first = len(tags)
        while first > 0 and tags[first - 1] == current:
            first -= 1
        hits = s.correct(component)[first:].astype(np.float64)
        cfg = self.config
        if cfg.profile == "fixed":
            window = hits[-cfg.last_n :]
            if window.size < cfg.min_resolved_for_health:
                return None
            acc = float(window.mean())
            return DegradationState(
                "fixed",
                acc,
                cfg.fixed_min_accuracy,
                deg.fixed_severity(acc, cfg.fixed_min_accuracy),
                int(window.size),
            )
        p0 = self.reference.get(component)
        if p0 is None:
            return None
        params = deg.CusumParams.for_model(p0, cfg.cusum_drop, cfg.cusum_arl0)
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

    def _trends(self, now: datetime) -> list[tr.Trend]:
        cfg = self.config
        recent = self._load(now, last_n=cfg.trend_last_n)
        resolved = self._load(now, resolved_only=True, last_n=cfg.trend_last_n)
        out = [
            tr.fit_trend(resolved.correct(c).astype(np.float64), "accuracy", c, t_crit=cfg.trend_t)
            for c in MODEL_COMPONENTS
        ]
        out.append(tr.fit_trend(recent.confidence, "mean_confidence", "fusion", t_crit=cfg.trend_t))
        out.append(
            tr.fit_trend(
                recent.agree().astype(np.float64), "agreement_rate", "fusion", t_crit=cfg.trend_t
            )
        )
        out.append(tr.fit_trend(recent.latency_ms, "latency_ms", "server", t_crit=cfg.trend_t))
        return out

    def _latency_anomaly(self, now: datetime) -> tr.Anomaly:
        size = max(self.config.anomaly_chunk, 1)
        s = self._load(now, last_n=size * 21)
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
        last_n = last_n or cfg.last_n
        win = self._load(now, start=now - window, last_n=WINDOW_MAX_PREDICTIONS)
        lastn = self._load(now, last_n=last_n)
        win_req = self._requests(now - window, now)
        lastn_req = self._requests(lastn.bar_time[0] if len(lastn) else None, now, inclusive=True)
        scored, scored_req = (
            (lastn, lastn_req) if lastn.resolved.sum() >= win.resolved.sum() else (win, win_req)
        )
        if win_req.count > scored_req.count:
            scored_req = win_req
        history = self._load(now, resolved_only=True, last_n=DEGRADATION_MAX_OUTCOMES)
        scores: dict[str, float] = {}
        components: list[ComponentHealth] = []
        for name in (*MODEL_COMPONENTS, "server"):
            m = self._metrics(scored, name, scored_req)
            if name == "server":
                cs = hs.score_component(
                    cfg, requests=scored_req.count, error_rate=scored_req.error_rate
                )
            else:
                cs = hs.score_component(
                    cfg,
                    resolved=m.resolved,
                    accuracy=m.accuracy,
                    expected_accuracy=self.reference.get(name, math.nan),
                    mean_confidence=_mean(scored.confidence_of(name)[scored.resolved]),
                    predictions=m.predictions if name == "fusion" else 0,
                    agreement_rate=m.agreement_rate,
                    expected_agreement=self.reference.get("agreement"),
                )
            status, detail = cs.status, cs.detail
            state = self._degradation(name, history) if name in MODEL_COMPONENTS else None
            if state is not None and state.severity is not None:
                status = hs.worse(status, _DEGRADATION_STATUS[state.severity])
                detail += f"; degradation {state.severity} ({state.statistic:.2f} vs {state.threshold:.2f})"
            which = "last-N" if scored is lastn else "time"
            components.append(
                ComponentHealth(
                    component=name,
                    status=status,
                    score=cs.score,
                    metrics=self._metrics(win, name, win_req),
                    detail=f"scored on the {which} window: {detail}",
                    subscores=cs.subscores,
                    degradation=state,
                    scored=m,
                )
            )
            scores[name] = cs.score
        overall = hs.overall_score(scores)
        status = hs.status_for(overall, cfg.warn_health_score, cfg.critical_health_score)
        if any(c.status == "unhealthy" for c in components):
            status = hs.worse(status, "degraded")
        return HealthReport(
            score=overall,
            status=status,
            components=components,
            window_metrics=self._metrics(win, None, win_req),
            last_n_metrics=self._metrics(lastn, None, lastn_req),
            trends=self._trends(now),
            as_of=now,
            active_alerts=self.alerts(limit=100),
        )

    # ---- alerts --------------------------------------------------------------------------------

    def _candidates(self, report: HealthReport, now: datetime) -> list[AlertCandidate]:
        cfg = self.config
        warn, crit = cfg.warn_health_score, cfg.critical_health_score
        out: list[AlertCandidate] = []

        def sm(c: ComponentHealth) -> WindowMetrics:
            return c.scored or c.metrics

        def ladder(score: float) -> Severity | None:
            if math.isnan(score) or score >= warn:
                return None
            if cfg.profile != "fixed":
                # A sliding-window z, re-tested at every evaluation, dips below any fixed level
                # by chance; in the relative profile it is information, and the CUSUM (below)
                # is the rule that warns.
                return "info"
            return "error" if score < crit else "warning"

        for c in report.components:
            sub = c.subscores
            if c.component in MODEL_COMPONENTS and (sev := ladder(sub.get("accuracy", math.nan))):
                expected = (
                    cfg.fixed_min_accuracy
                    if cfg.profile == "fixed"
                    else self.reference.get(c.component, math.nan)
                )
                out.append(
                    AlertCandidate(
                        "low_accuracy",
                        sev,
                        c.component,
                        f"{c.component} accuracy below expectation: {c.detail}",
                        sm(c).accuracy if sm(c).resolved else math.nan,
                        expected,
                    )
                )
            if c.component == "fusion" and (sev := ladder(sub.get("confidence", math.nan))):
                kind = "low_confidence" if cfg.profile == "fixed" else "miscalibration"
                threshold = cfg.fixed_min_confidence if cfg.profile == "fixed" else sm(c).accuracy
                out.append(
                    AlertCandidate(
                        kind,
                        sev,
                        "fusion",
                        f"fused confidence: {c.detail}",
                        sm(c).mean_confidence,
                        threshold,
                    )
                )
            if c.component == "fusion" and (sev := ladder(sub.get("agreement", math.nan))):
                a0 = self.reference.get("agreement", cfg.fixed_min_agreement)
                out.append(
                    AlertCandidate(
                        "low_agreement",
                        sev,
                        "fusion",
                        f"LSTM/ensemble agreement low: {c.detail}",
                        sm(c).agreement_rate,
                        a0,
                    )
                )
            state = c.degradation
            if state is not None and state.severity in ("warning", "error", "critical"):
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
        server = next(c for c in report.components if c.component == "server")
        err = sm(server).error_rate
        scored_err = server.subscores.get("error_rate")
        if scored_err is not None and not math.isnan(err):
            if err >= cfg.critical_error_rate:
                out.append(
                    AlertCandidate(
                        "high_error_rate",
                        "critical",
                        "server",
                        f"error rate {err:.3%} >= {cfg.critical_error_rate:.3%}",
                        err,
                        cfg.critical_error_rate,
                    )
                )
            elif err >= cfg.warn_error_rate:
                out.append(
                    AlertCandidate(
                        "high_error_rate",
                        "warning",
                        "server",
                        f"error rate {err:.3%} >= {cfg.warn_error_rate:.3%}",
                        err,
                        cfg.warn_error_rate,
                    )
                )
        anomaly = self._latency_anomaly(now)
        if anomaly.anomalous:
            out.append(
                AlertCandidate(
                    "latency_anomaly",
                    "warning",
                    "server",
                    f"median latency {anomaly.current:.2f} ms vs usual {anomaly.baseline:.2f} ms "
                    f"(robust z={anomaly.z:.1f})",
                    anomaly.current,
                    anomaly.baseline,
                )
            )
        if not math.isnan(report.score) and report.score < warn:
            sev = "critical" if report.score < crit else "warning"
            out.append(
                AlertCandidate(
                    "low_health_score",
                    sev,
                    "server",
                    f"health score {report.score:.1f} below {crit if sev == 'critical' else warn:.0f}",
                    report.score,
                    crit if sev == "critical" else warn,
                )
            )
        calib = self.calibration(
            "fused", now=now, last_n=max(cfg.calibration_alert_last_n, cfg.calibration_min_samples)
        )
        if calib.miscalibrations and not any(c.kind == "miscalibration" for c in out):
            worst = max(calib.miscalibrations, key=lambda m: abs(m.z))
            # One significant bin among repeated evaluations is a hint; it warns only when the
            # calibration error as a whole is out of tolerance too.
            level: Severity = "warning" if calib.ece > cfg.calibration_max_ece else "info"
            out.append(
                AlertCandidate(
                    "miscalibration",
                    level,
                    "fusion",
                    f"fused {worst.kind}: {worst.evidence}",
                    worst.gap,
                    0.0,
                )
            )
        return out

    def _cooled_down(self, c: AlertCandidate, now: datetime) -> bool:
        last = (
            AlertRow.select()
            .where((AlertRow.kind == c.kind) & (AlertRow.component == c.component))
            .order_by(AlertRow.raised_at.desc())
            .first()
        )
        if last is None:
            return False
        cooldown = timedelta(minutes=self.config.alert_cooldown_minutes)
        last_sev = RANK_SEVERITY.get(int(last.severity), "info")
        # Both clocks must have moved on: market time alone lets a replay of daily bars raise the
        # same alert every bar, and wall time alone would let a live feed's bars pile up silently.
        wall = in_cooldown(c.severity, self.wall_clock(), last_sev, last.raised_at, cooldown)
        if last.market_time is not None:
            return wall or in_cooldown(c.severity, now, last_sev, last.market_time, cooldown)
        return wall

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
                snapshots.append(("accuracy", c.component, (c.scored or c.metrics).accuracy))
        wall = self.wall_clock()
        rows = [
            {"name": n, "component": comp, "value": v, "market_time": now, "created_at": wall}
            for n, comp, v in snapshots
            if not math.isnan(v)
        ]
        if rows:
            MetricRow.insert_many(rows).execute()
        raised: list[Alert] = []
        for cand in self._candidates(report, now):
            alert = self.record(cand, now)
            if alert is not None:
                raised.append(alert)
        return raised

    def record(self, cand: AlertCandidate, now: datetime | None = None) -> Alert | None:
        """Stores and routes one alert unless its kind is cooling down; also used by other parts
        of the server (retraining, rollbacks)."""
        now = now or self.latest_market_time()
        if self._cooled_down(cand, now):
            return None
        row = AlertRow.create(
            id=uuid.uuid4().hex,
            kind=cand.kind,
            severity=SEVERITY_RANK[cand.severity],
            component=cand.component,
            message=cand.message,
            value=cand.value if math.isfinite(cand.value) else 0.0,
            threshold=cand.threshold if math.isfinite(cand.threshold) else 0.0,
            raised_at=self.wall_clock(),
            market_time=now,
        )
        alert = _alert_of(row)
        route(alert, self.sinks)
        return alert

    def alerts(
        self,
        include_acknowledged: bool = False,
        min_severity: Severity | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """Newest first; ``limit`` 0 means 100, at most 1000."""
        limit = min(limit or 100, 1000)
        query = AlertRow.select()
        if not include_acknowledged:
            query = query.where(AlertRow.acknowledged == False)  # noqa: E712 (peewee expression)
        if min_severity is not None:
            query = query.where(AlertRow.severity >= SEVERITY_RANK[min_severity])
        query = query.order_by(AlertRow.raised_at.desc(), AlertRow.market_time.desc()).limit(limit)
        return [_alert_of(row) for row in query]

    def acknowledge(self, alert_id: str, by: str = "") -> Alert:
        row = AlertRow.get_or_none(AlertRow.id == alert_id)
        if row is None:
            raise AlertNotFoundError(alert_id)
        if not row.acknowledged:
            row.acknowledged = True
            row.acknowledged_at = self.wall_clock()
            row.acknowledged_by = by
            row.save()
        return _alert_of(row)

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
        cfg = self.config
        now = now or self.latest_market_time()
        s = self._load(
            now, start=now - window if window else None, resolved_only=True, last_n=last_n or None
        )
        s = s.select(s.resolved)
        component = "fusion" if source == "fused" else source
        p = {"fused": s.p_up, "lstm": s.lstm_p, "ensemble": s.ensemble_p}[source]
        settings = cal.CalibrationSettings(
            min_samples=cfg.calibration_min_samples,
            max_ece=cfg.calibration_max_ece,
            min_bin_count=cfg.calibration_min_bin_count,
            z_threshold=cfg.calibration_z,
            zone_edges=(
                cfg.zone_low_from,
                cfg.zone_medium_from,
                cfg.zone_high_from,
                cfg.zone_very_high_from,
            ),
        )
        report = cal.calibration_report(
            source,
            p,
            s.up.astype(np.float64),
            confidence=s.confidence_of(component),
            n_bins=n_bins,
            strategy=strategy,
            correct=s.correct(component).astype(np.float64),
            settings=settings,
        )
        return replace(
            report,
            start=s.bar_time[0] if len(s) else None,
            end=s.bar_time[-1] if len(s) else None,
        )


def _alert_of(row: Any) -> Alert:
    return Alert(
        id=row.id,
        kind=row.kind,
        severity=RANK_SEVERITY.get(int(row.severity), "info"),
        component=row.component,
        message=row.message,
        value=float(row.value),
        threshold=float(row.threshold),
        raised_at=row.raised_at,
        market_time=row.market_time,
        acknowledged=bool(row.acknowledged),
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
    )
