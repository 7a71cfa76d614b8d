"""Protobuf <-> domain conversions: the only place that knows both sides."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import cast

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from minhos.v1 import calibration_pb2, common_pb2, inference_pb2, monitoring_pb2, retrain_pb2
from server.core.bars import COLUMNS
from server.core.calibration import CalibrationReport
from server.core.errors import InvalidArgument
from server.core.manifest import FeatureSpec
from server.core.model_card import ModelCard
from server.core.records import (
    Alert,
    Job,
    ModelVersion,
    Outcome,
    Prediction,
    PredictionRecord,
    Severity,
)
from server.monitoring.dashboard_reports import KellyReport, PerformanceReport, SeriesReport
from server.monitoring.monitor import HealthReport, Source
from server.monitoring.sample import WindowMetrics
from server.serving.dataplane import EPOCH
from server.serving.stream import StreamBars, StreamStep
from server.serving.validation import FloatArray, IntArray

KIND = {
    "lstm": common_pb2.MODEL_KIND_LSTM,
    "ensemble": common_pb2.MODEL_KIND_ENSEMBLE,
    "kelly": common_pb2.MODEL_KIND_KELLY,
}
KIND_NAME = {v: k for k, v in KIND.items()}
STAGE = {
    "candidate": common_pb2.MODEL_STAGE_CANDIDATE,
    "deployed": common_pb2.MODEL_STAGE_DEPLOYED,
    "backup": common_pb2.MODEL_STAGE_BACKUP,
    "rejected": common_pb2.MODEL_STAGE_REJECTED,
    "retired": common_pb2.MODEL_STAGE_RETIRED,
}


def set_time(stamp: Timestamp, value: dt.datetime) -> None:
    """Fills ``stamp`` in place; naive datetimes are UTC, our convention. Arithmetic on the
    timedelta: Timestamp's own FromDatetime goes through time tuples and costs several times
    more, on every response."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    delta = value - EPOCH
    stamp.seconds = delta.days * 86_400 + delta.seconds
    stamp.nanos = delta.microseconds * 1000


def timestamp(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    set_time(out, value)
    return out


def from_timestamp(stamp: Timestamp, field: str = "resolved_at") -> dt.datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    try:
        return stamp.ToDatetime()
    except (ValueError, OverflowError):
        raise InvalidArgument(
            f"{stamp.seconds} s since the epoch is not a date in years 1-9999", field=field
        ) from None


def bars_in(bars: Sequence[common_pb2.Bar]) -> tuple[IntArray, FloatArray]:
    times = np.fromiter((b.time.seconds for b in bars), dtype=np.int64, count=len(bars))
    ohlcv = np.array([(b.open, b.high, b.low, b.close, b.volume) for b in bars], dtype=np.float64)
    return times, ohlcv.reshape(len(bars), 5)


def columns_in(columns: common_pb2.BarColumns) -> tuple[IntArray, FloatArray]:
    n = len(columns.time_seconds)
    for name in COLUMNS:
        if len(getattr(columns, name)) != n:
            raise InvalidArgument(
                f"{len(getattr(columns, name))} values for {n} times; every column needs one per bar",
                field=f"columns.{name}",
            )
    times = np.array(columns.time_seconds, dtype=np.int64)
    ohlcv = np.empty((n, 5))
    for j, name in enumerate(COLUMNS):
        ohlcv[:, j] = getattr(columns, name)
    return times, ohlcv


def raw_in(raw: common_pb2.RawBars) -> tuple[IntArray, FloatArray]:
    """Views of the two buffers (no copy); refused unless they hold n times and n x 5 prices."""
    size = len(raw.time_seconds)
    if size % 8:
        raise InvalidArgument(
            f"{size} bytes is not a whole number of int64 values", field="raw.time_seconds"
        )
    n = size // 8
    if len(raw.ohlcv) != n * 5 * 8:
        raise InvalidArgument(
            f"{len(raw.ohlcv)} bytes for {n} times; need {n * 5 * 8} (n x 5 float64 values)",
            field="raw.ohlcv",
        )
    times = np.frombuffer(raw.time_seconds, dtype="<i8").astype(np.int64, copy=False)
    ohlcv = np.frombuffer(raw.ohlcv, dtype="<f8").astype(np.float64, copy=False).reshape(n, 5)
    return times, ohlcv


def window_in(request: inference_pb2.PredictRequest) -> tuple[IntArray, FloatArray, str]:
    """A Predict request's bars, from whichever of ``bars``, ``columns`` and ``raw`` it carries,
    and which one it was."""
    forms = [
        name
        for name, present in (
            ("bars", len(request.bars) > 0),
            ("columns", request.HasField("columns")),
            ("raw", request.HasField("raw")),
        )
        if present
    ]
    if len(forms) > 1:
        raise InvalidArgument(
            f"set one of bars, columns and raw, not {' and '.join(forms)}", field=forms[-1]
        )
    if forms == ["columns"]:
        return (*columns_in(request.columns), "columns")
    if forms == ["raw"]:
        return (*raw_in(request.raw), "raw")
    return (*bars_in(request.bars), "bars")


def stream_bars(requests: Sequence[inference_pb2.StreamRequest], first_index: int) -> StreamBars:
    times, ohlcv = bars_in([r.bar for r in requests])
    return StreamBars([r.symbol for r in requests], times, ohlcv, first_index)


# Responses are filled field by field in place: a stream builds one per bar, and nested messages
# built from keyword arguments cost three times as much (each is built, then copied in).


def fill_prediction(out: inference_pb2.PredictResponse, p: Prediction) -> None:
    out.prediction_id = p.id
    out.symbol = p.symbol
    set_time(out.bar_time, p.bar_time)
    out.direction = common_pb2.DIRECTION_UP if p.direction > 0 else common_pb2.DIRECTION_DOWN
    out.probability_up = p.probability_up
    out.confidence = p.confidence
    lstm, ensemble = out.lstm, out.ensemble
    lstm.kind = common_pb2.MODEL_KIND_LSTM
    lstm.version = p.versions["lstm"]
    lstm.probability_up = p.lstm_probability
    ensemble.kind = common_pb2.MODEL_KIND_ENSEMBLE
    ensemble.version = p.versions["ensemble"]
    ensemble.probability_up = p.ensemble_probability
    out.agreement = p.agreement
    out.kelly_fraction = p.kelly_fraction
    out.kelly_version = p.versions["kelly"]
    out.server_latency.seconds, out.server_latency.nanos = divmod(int(p.latency_s * 1e9), 10**9)


def fill_outcome(out: inference_pb2.Outcome, o: Outcome) -> None:
    out.prediction_id = o.prediction_id
    out.realized_return = o.realized_return
    out.actual_direction = common_pb2.DIRECTION_UP if o.actual_up else common_pb2.DIRECTION_DOWN
    out.hit = o.hit
    out.position_return = o.position_return
    set_time(out.resolved_at, o.resolved_at)


def prediction_out(p: Prediction) -> inference_pb2.PredictResponse:
    out = inference_pb2.PredictResponse()
    fill_prediction(out, p)
    return out


def outcome_out(o: Outcome) -> inference_pb2.Outcome:
    out = inference_pb2.Outcome()
    fill_outcome(out, o)
    return out


def stream_response_out(step: StreamStep) -> inference_pb2.StreamResponse:
    out = inference_pb2.StreamResponse(symbol=step.symbol, bars_needed=step.bars_needed)
    set_time(out.bar_time, step.bar_time)
    if step.prediction is not None:
        fill_prediction(out.prediction, step.prediction)
    if step.resolved is not None:
        fill_outcome(out.resolved, step.resolved)
    return out


def record_out(r: PredictionRecord) -> inference_pb2.PredictionRecord:
    return inference_pb2.PredictionRecord(
        prediction=prediction_out(r.prediction),
        outcome=outcome_out(r.outcome) if r.outcome else None,
    )


def _date(text: str) -> Timestamp | None:
    try:
        return timestamp(dt.datetime.fromisoformat(text)) if text else None
    except ValueError:
        return None


def feature_spec_out(spec: FeatureSpec) -> common_pb2.FeatureSpec:
    return common_pb2.FeatureSpec(
        feature_names=list(spec.feature_names),
        window=spec.window,
        bars_required=spec.bars_required,
        train_start=_date(spec.train_start),
        train_end=_date(spec.train_end),
    )


def model_version_out(v: ModelVersion) -> common_pb2.ModelVersion:
    return common_pb2.ModelVersion(
        kind=KIND[v.kind],
        version=v.version,
        sha256=v.sha256,
        stage=STAGE.get(v.stage, common_pb2.MODEL_STAGE_UNSPECIFIED),
        created_at=timestamp(v.created_at),
        deployed_at=timestamp(v.deployed_at),
        metrics={k: float(x) for k, x in v.manifest.metrics.items()},
        feature_spec=feature_spec_out(v.manifest.feature_spec),
        path=v.path,
    )


# -- monitoring ---------------------------------------------------------------------------------

COMPONENT = {
    "lstm": common_pb2.COMPONENT_LSTM,
    "ensemble": common_pb2.COMPONENT_ENSEMBLE,
    "fusion": common_pb2.COMPONENT_FUSION,
    "kelly": common_pb2.COMPONENT_KELLY,
    "database": common_pb2.COMPONENT_DATABASE,
    "server": common_pb2.COMPONENT_SERVER,
}
SEVERITY = {
    "info": monitoring_pb2.SEVERITY_INFO,
    "warning": monitoring_pb2.SEVERITY_WARNING,
    "error": monitoring_pb2.SEVERITY_ERROR,
    "critical": monitoring_pb2.SEVERITY_CRITICAL,
}
SEVERITY_NAME: dict[int, Severity] = {v: k for k, v in SEVERITY.items()}  # type: ignore[misc]
STATUS = {
    "healthy": monitoring_pb2.HEALTH_STATUS_HEALTHY,
    "degraded": monitoring_pb2.HEALTH_STATUS_DEGRADED,
    "unhealthy": monitoring_pb2.HEALTH_STATUS_UNHEALTHY,
    "unknown": monitoring_pb2.HEALTH_STATUS_UNKNOWN,
}
TREND = {
    "improving": monitoring_pb2.TREND_DIRECTION_IMPROVING,
    "stable": monitoring_pb2.TREND_DIRECTION_STABLE,
    "degrading": monitoring_pb2.TREND_DIRECTION_DEGRADING,
}


def _alert_kind(kind: str) -> monitoring_pb2.AlertKind.ValueType:
    name = f"ALERT_KIND_{kind.upper()}"
    if name in monitoring_pb2.AlertKind.keys():  # noqa: SIM118 (an enum wrapper, not a dict)
        return monitoring_pb2.AlertKind.Value(name)
    return monitoring_pb2.ALERT_KIND_UNSPECIFIED


def window_out(m: WindowMetrics) -> monitoring_pb2.WindowMetrics:
    return monitoring_pb2.WindowMetrics(
        start=timestamp(m.start),
        end=timestamp(m.end),
        predictions=m.predictions,
        resolved=m.resolved,
        accuracy=m.accuracy,
        mean_confidence=m.mean_confidence,
        agreement_rate=m.agreement_rate,
        error_rate=m.error_rate,
        latency_p50_ms=m.latency_p50_ms,
        latency_p99_ms=m.latency_p99_ms,
    )


def alert_out(a: Alert) -> monitoring_pb2.Alert:
    return monitoring_pb2.Alert(
        id=a.id,
        kind=_alert_kind(a.kind),
        severity=SEVERITY[a.severity],
        component=COMPONENT.get(a.component, common_pb2.COMPONENT_UNSPECIFIED),
        message=a.message,
        value=a.value,
        threshold=a.threshold,
        raised_at=timestamp(a.raised_at),
        acknowledged=a.acknowledged,
        acknowledged_at=timestamp(a.acknowledged_at),
        acknowledged_by=a.acknowledged_by,
    )


def health_out(r: HealthReport) -> monitoring_pb2.GetHealthResponse:
    return monitoring_pb2.GetHealthResponse(
        health_score=r.score,
        status=STATUS[r.status],
        components=[
            monitoring_pb2.ComponentHealth(
                component=COMPONENT.get(c.component, common_pb2.COMPONENT_UNSPECIFIED),
                status=STATUS[c.status],
                score=c.score,
                metrics=window_out(c.metrics),
                detail=c.detail,
                subscores=c.subscores,
            )
            for c in r.components
        ],
        window_metrics=window_out(r.window_metrics),
        last_n_metrics=window_out(r.last_n_metrics),
        active_alerts=[alert_out(a) for a in r.active_alerts],
        trends=[
            monitoring_pb2.Trend(
                metric=t.metric,
                component=COMPONENT.get(t.component, common_pb2.COMPONENT_UNSPECIFIED),
                slope=t.slope,
                current=t.current,
                direction=TREND[t.direction],
            )
            for t in r.trends
        ],
        as_of=timestamp(r.as_of),
    )


SOURCE = {
    "fused": calibration_pb2.PROBABILITY_SOURCE_FUSED,
    "lstm": calibration_pb2.PROBABILITY_SOURCE_LSTM,
    "ensemble": calibration_pb2.PROBABILITY_SOURCE_ENSEMBLE,
}
SOURCE_NAME: dict[int, Source] = {v: k for k, v in SOURCE.items()}  # type: ignore[misc]
ZONE = {
    "very_low": calibration_pb2.CONFIDENCE_ZONE_VERY_LOW,
    "low": calibration_pb2.CONFIDENCE_ZONE_LOW,
    "medium": calibration_pb2.CONFIDENCE_ZONE_MEDIUM,
    "high": calibration_pb2.CONFIDENCE_ZONE_HIGH,
    "very_high": calibration_pb2.CONFIDENCE_ZONE_VERY_HIGH,
}
MISCALIBRATION = {
    "overconfident": calibration_pb2.MISCALIBRATION_KIND_OVERCONFIDENT,
    "underconfident": calibration_pb2.MISCALIBRATION_KIND_UNDERCONFIDENT,
}


def calibration_out(r: CalibrationReport) -> calibration_pb2.CalibrationReport:
    return calibration_pb2.CalibrationReport(
        source=SOURCE.get(r.source, calibration_pb2.PROBABILITY_SOURCE_UNSPECIFIED),
        count=r.count,
        start=timestamp(r.start),
        end=timestamp(r.end),
        ece=r.ece,
        mce=r.mce,
        ece_equal_mass=r.ece_equal_mass,
        mce_equal_mass=r.mce_equal_mass,
        brier=r.brier,
        brier_decomposition=calibration_pb2.BrierDecomposition(
            reliability=r.decomposition.reliability,
            resolution=r.decomposition.resolution,
            uncertainty=r.decomposition.uncertainty,
        ),
        bins=[
            calibration_pb2.ReliabilityBin(
                lower=b.lower,
                upper=b.upper,
                mean_confidence=b.mean_predicted,
                observed_frequency=b.observed_frequency,
                count=b.count,
            )
            for b in r.bins
        ],
        zones=[
            calibration_pb2.ZoneStats(
                zone=ZONE[z.zone],
                lower=z.lower,
                upper=z.upper,
                count=z.count,
                accuracy=z.accuracy,
                mean_confidence=z.mean_confidence,
            )
            for z in r.zones
        ],
        miscalibrations=[
            calibration_pb2.Miscalibration(
                kind=MISCALIBRATION[m.kind],
                lower=m.lower,
                upper=m.upper,
                gap=m.gap,
                count=m.count,
                evidence=m.evidence,
            )
            for m in r.miscalibrations
        ],
        recommendations=list(r.recommendations),
        accuracy=r.accuracy,
        mean_confidence=r.mean_confidence,
    )


# -- retraining ---------------------------------------------------------------------------------

JOB_STATE = {
    "queued": retrain_pb2.JOB_STATE_QUEUED,
    "running": retrain_pb2.JOB_STATE_RUNNING,
    "validating": retrain_pb2.JOB_STATE_VALIDATING,
    "deployed": retrain_pb2.JOB_STATE_DEPLOYED,
    "rejected": retrain_pb2.JOB_STATE_REJECTED,
    "failed": retrain_pb2.JOB_STATE_FAILED,
    "rolled_back": retrain_pb2.JOB_STATE_ROLLED_BACK,
}
JOB_STATE_NAME = {v: k for k, v in JOB_STATE.items()}
TRIGGER = {
    "schedule": retrain_pb2.TRIGGER_REASON_SCHEDULE,
    "degradation": retrain_pb2.TRIGGER_REASON_DEGRADATION,
    "manual": retrain_pb2.TRIGGER_REASON_MANUAL,
}
STAGE_NAME = {v: k for k, v in STAGE.items()}


def job_out(row: Job) -> retrain_pb2.Job:
    return retrain_pb2.Job(
        id=row.id,
        kind=KIND.get(row.kind, common_pb2.MODEL_KIND_UNSPECIFIED),
        state=JOB_STATE.get(row.state, retrain_pb2.JOB_STATE_UNSPECIFIED),
        trigger=TRIGGER.get(row.trigger, retrain_pb2.TRIGGER_REASON_UNSPECIFIED),
        note=row.note,
        queued_at=timestamp(row.queued_at),
        started_at=timestamp(row.started_at),
        finished_at=timestamp(row.finished_at),
        champion_version=row.champion_version,
        challenger_version=row.challenger_version,
        gate_metrics=[
            retrain_pb2.GateMetric(name=g.name, champion=g.champion, challenger=g.challenger)
            for g in row.gate_metrics
        ],
        failure_reason=row.failure_reason,
        log=row.log,
    )


# -- dashboard aggregates -------------------------------------------------------------------------


def _threshold_severity(name: str | None) -> monitoring_pb2.Severity.ValueType:
    return SEVERITY.get(name or "", monitoring_pb2.SEVERITY_UNSPECIFIED)


def metric_series_out(r: SeriesReport) -> monitoring_pb2.GetMetricSeriesResponse:
    out = monitoring_pb2.GetMetricSeriesResponse(window=r.window)
    if r.bar_time:
        set_time(out.as_of, r.bar_time[-1])
    for s in r.series:
        series = out.series.add(
            metric=s.metric, component=COMPONENT.get(s.component, common_pb2.COMPONENT_UNSPECIFIED)
        )
        for end, value, count in zip(
            s.ends.tolist(), s.values.tolist(), s.counts.tolist(), strict=True
        ):
            point = series.points.add(value=value, count=count)
            set_time(point.time, r.bar_time[end])
        for line in s.lines:
            series.thresholds.add(
                name=line.name,
                severity=_threshold_severity(line.severity),
                values=line.values.tolist(),
            )
    return out


def kelly_status_out(
    r: KellyReport, version: ModelVersion | None
) -> monitoring_pb2.GetKellyStatusResponse:
    stakes = r.stakes
    return monitoring_pb2.GetKellyStatusResponse(
        version=model_version_out(version) if version is not None else None,
        calibrator=r.calibrator,
        calibrator_detail=r.calibrator_detail,
        payoff_ratio=r.payoff_ratio,
        payoff_outcomes=r.payoff_outcomes,
        fraction=r.fraction,
        cap=r.cap,
        fitted_on=r.fitted_on,
        predictions=stakes.predictions,
        sized_share=stakes.sized_share,
        capped_share=stakes.capped_share,
        mean_stake=stakes.mean_stake,
        stakes=[
            monitoring_pb2.StakeBin(lower=lo, upper=hi, count=n)
            for lo, hi, n in zip(
                stakes.edges[:-1].tolist(),
                stakes.edges[1:].tolist(),
                stakes.counts.tolist(),
                strict=True,
            )
        ],
    )


def performance_out(r: PerformanceReport) -> monitoring_pb2.GetPerformanceResponse:
    e = r.equity
    out = monitoring_pb2.GetPerformanceResponse(
        symbol=r.symbol,
        resolved=r.resolved,
        hits=r.hits,
        hit_rate=r.hit_rate,
        by_agreement=[
            monitoring_pb2.AgreementHitRate(
                name=h.name,
                min_agreement=h.min_agreement,
                max_agreement=h.max_agreement,
                resolved=h.resolved,
                hits=h.hits,
                hit_rate=h.hit_rate,
            )
            for h in r.by_agreement
        ],
        kelly_return=e.kelly_return,
        buy_and_hold_return=e.buy_and_hold_return,
        kelly_max_drawdown=e.kelly_max_drawdown,
        buy_and_hold_max_drawdown=e.buy_and_hold_max_drawdown,
    )
    for i in r.sample.tolist():
        point = out.equity.add(
            kelly_equity=float(e.kelly[i]),
            buy_and_hold_equity=float(e.buy_and_hold[i]),
            kelly_drawdown=float(e.kelly_drawdown[i]),
            buy_and_hold_drawdown=float(e.buy_and_hold_drawdown[i]),
        )
        set_time(point.time, r.bar_time[i])
    return out


def _iso_date(text: str) -> Timestamp | None:
    try:
        return timestamp(dt.datetime.fromisoformat(text)) if text else None
    except ValueError:
        return None


def model_details_out(v: ModelVersion, card: ModelCard) -> retrain_pb2.ModelDetails:
    return retrain_pb2.ModelDetails(
        version=model_version_out(v),
        spans=[
            retrain_pb2.DataSpan(name=s.name, start=_iso_date(s.start), end=_iso_date(s.end))
            for s in card.spans
        ],
        comparisons=[
            retrain_pb2.MetricComparison(
                span=c.span,
                metric=c.metric,
                value=c.value,
                baseline=c.baseline,
                baseline_value=c.baseline_value,
            )
            for c in card.comparisons
        ],
        settings=[retrain_pb2.TrainingSetting(name=k, value=val) for k, val in card.settings],
        job_id=card.job_id,
    )


# -- enum values from callers ---------------------------------------------------------------------

_ENUM_FIELDS: dict[str, list[tuple[FieldDescriptor, bool]]] = {}


def _enum_fields(descriptor: Descriptor) -> list[tuple[FieldDescriptor, bool]]:
    """The message's fields that are enums (False) or messages holding enums somewhere (True),
    computed once per message type: a request type without any (Predict's) costs one lookup."""
    found = _ENUM_FIELDS.get(descriptor.full_name)
    if found is None:
        _ENUM_FIELDS[descriptor.full_name] = []  # a recursive type sees itself as enum-free
        found = []
        for f in descriptor.fields:
            if f.enum_type is not None:
                found.append((f, False))
            elif f.message_type is not None and _enum_fields(f.message_type):
                found.append((f, True))
        _ENUM_FIELDS[descriptor.full_name] = found
    return found


def unknown_enum(message: Message, path: str = "") -> tuple[str, str] | None:
    """(field, what the caller sent) of the first enum value this server does not know: proto3
    keeps unknown numbers, which would otherwise reach the core as values it cannot map."""
    for f, nested in _enum_fields(cast(Descriptor, message.DESCRIPTOR)):
        repeated = bool(f.is_repeated)
        values = list(getattr(message, f.name)) if repeated else [getattr(message, f.name)]
        if not repeated and nested and not message.HasField(f.name):
            continue
        for i, value in enumerate(values):
            name = f"{path}{f.name}" + (f"[{i}]" if repeated else "")
            if nested:
                found = unknown_enum(value, name + ".")
                if found is not None:
                    return found
            elif value not in f.enum_type.values_by_number:
                known = ", ".join(v.name for v in f.enum_type.values)
                return name, f"{value} is not a {f.enum_type.name} value ({known})"
    return None
