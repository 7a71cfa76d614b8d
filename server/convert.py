"""Protobuf <-> domain conversions: the only place that knows both sides."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from minhos.v1 import common_pb2, inference_pb2
from server.dataplane import FloatArray, IntArray, Outcome, Prediction, PredictionRecord
from server.db import ModelVersionRow
from server.registry import FeatureSpec, Manifest

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


def timestamp(value: dt.datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)  # naive datetimes are read as UTC, our convention
    return stamp


def from_timestamp(stamp: Timestamp) -> dt.datetime | None:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    return stamp.ToDatetime()


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def bars_in(bars: Sequence[common_pb2.Bar]) -> tuple[IntArray, FloatArray]:
    times = np.fromiter((b.time.seconds for b in bars), dtype=np.int64, count=len(bars))
    ohlcv = np.array([(b.open, b.high, b.low, b.close, b.volume) for b in bars], dtype=np.float64)
    return times, ohlcv.reshape(len(bars), 5)


def bar_in(bar: common_pb2.Bar) -> tuple[int, FloatArray]:
    return bar.time.seconds, np.array((bar.open, bar.high, bar.low, bar.close, bar.volume))


def prediction_out(p: Prediction) -> inference_pb2.PredictResponse:
    return inference_pb2.PredictResponse(
        prediction_id=p.id,
        symbol=p.symbol,
        bar_time=timestamp(p.bar_time),
        direction=common_pb2.DIRECTION_UP if p.direction > 0 else common_pb2.DIRECTION_DOWN,
        probability_up=p.probability_up,
        confidence=p.confidence,
        lstm=inference_pb2.ModelOutput(
            kind=common_pb2.MODEL_KIND_LSTM,
            version=p.versions["lstm"],
            probability_up=p.lstm_probability,
        ),
        ensemble=inference_pb2.ModelOutput(
            kind=common_pb2.MODEL_KIND_ENSEMBLE,
            version=p.versions["ensemble"],
            probability_up=p.ensemble_probability,
        ),
        agreement=p.agreement,
        kelly_fraction=p.kelly_fraction,
        kelly_version=p.versions["kelly"],
        server_latency=duration(p.latency_s),
    )


def outcome_out(o: Outcome) -> inference_pb2.Outcome:
    return inference_pb2.Outcome(
        prediction_id=o.prediction_id,
        realized_return=o.realized_return,
        actual_direction=common_pb2.DIRECTION_UP if o.actual_up else common_pb2.DIRECTION_DOWN,
        hit=o.hit,
        position_return=o.position_return,
        resolved_at=timestamp(o.resolved_at),
    )


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


def model_version_out(row: ModelVersionRow) -> common_pb2.ModelVersion:
    manifest = Manifest.from_json(row.manifest)
    return common_pb2.ModelVersion(
        kind=KIND[row.kind],
        version=row.version,
        sha256=row.sha256,
        stage=STAGE.get(row.stage, common_pb2.MODEL_STAGE_UNSPECIFIED),
        created_at=timestamp(row.created_at),
        deployed_at=timestamp(row.deployed_at),
        metrics={k: float(v) for k, v in manifest.metrics.items()},
        feature_spec=feature_spec_out(manifest.feature_spec),
        path=row.path,
    )
