"""A sample of predictions with their outcomes, as numpy columns, and the window metrics computed
over it (accuracy, confidence, agreement, latency, error rate). Pure: built from what
server.storage.queries returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from server.core import scoring
from server.storage.queries import PredictionOutcomes

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
#: Components scored on their own hits: the two models and the fused prediction.
MODEL_COMPONENTS = ("lstm", "ensemble", "fusion")
#: gRPC codes that count as failed requests: the server's fault, not the caller's. Not
#: RESOURCE_EXHAUSTED: this server sends it only for a caller's excess (a message over
#: max_message_bytes, a stream over stream_max_symbols); it sets no concurrency cap of its own.
SERVER_ERROR_CODES = frozenset(
    {"UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS"}
)


@dataclass(frozen=True)
class Sample:
    """Predictions in bar_time order, with their outcome where resolved by the sample's ``now``."""

    bar_time: list[datetime]
    p_up: FloatArray
    confidence: FloatArray
    lstm_p: FloatArray
    ensemble_p: FloatArray
    latency_ms: FloatArray
    resolved: BoolArray
    realized_return: FloatArray
    versions: list[tuple[str, str, str]]

    @staticmethod
    def of(rows: PredictionOutcomes) -> Sample:
        return Sample(
            bar_time=rows.bar_time,
            p_up=rows.p_up,
            confidence=rows.confidence,
            lstm_p=rows.lstm_p,
            ensemble_p=rows.ensemble_p,
            latency_ms=rows.latency_ms,
            resolved=np.asarray(~np.isnan(rows.realized_return)),
            realized_return=rows.realized_return,
            versions=rows.versions,
        )

    def __len__(self) -> int:
        return len(self.bar_time)

    @property
    def up(self) -> BoolArray:
        """The label of each resolved prediction (False where unresolved)."""
        return scoring.went_up(np.nan_to_num(self.realized_return, nan=0.0)) & self.resolved

    def probability(self, component: str) -> FloatArray:
        if component == "lstm":
            return self.lstm_p
        if component == "ensemble":
            return self.ensemble_p
        return self.p_up

    def correct(self, component: str) -> BoolArray:
        """Per-prediction hits by the one rule (meaningful where resolved)."""
        called_up = scoring.predicts_up(self.probability(component))
        return scoring.hits(called_up, np.nan_to_num(self.realized_return, nan=0.0))

    def confidence_of(self, component: str) -> FloatArray:
        if component in ("lstm", "ensemble"):
            p = self.probability(component)
            return np.maximum(p, 1 - p)
        return self.confidence

    def agree(self) -> BoolArray:
        return np.asarray(scoring.predicts_up(self.lstm_p) == scoring.predicts_up(self.ensemble_p))

    def select(self, mask: BoolArray) -> Sample:
        idx = np.flatnonzero(mask)
        return Sample(
            bar_time=[self.bar_time[i] for i in idx],
            p_up=self.p_up[idx],
            confidence=self.confidence[idx],
            lstm_p=self.lstm_p[idx],
            ensemble_p=self.ensemble_p[idx],
            latency_ms=self.latency_ms[idx],
            resolved=self.resolved[idx],
            realized_return=self.realized_return[idx],
            versions=[self.versions[i] for i in idx],
        )

    def current_version_tail(self, component: str) -> int:
        """Index of the first prediction of the newest run of the component's current version:
        a redeployed model starts a fresh chart."""
        key = {"lstm": 0, "ensemble": 1}.get(component)
        tags = [v if key is None else v[key] for v in self.versions]
        if not tags:
            return 0
        first = len(tags)
        while first > 0 and tags[first - 1] == tags[-1]:
            first -= 1
        return first


@dataclass(frozen=True)
class RequestCounts:
    count: int
    errors: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.count if self.count else math.nan


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


def mean(x: FloatArray | BoolArray) -> float:
    return float(np.mean(x)) if x.size else math.nan


def percentile(x: FloatArray, q: float) -> float:
    return float(np.percentile(x, q)) if x.size else math.nan


def window_metrics(
    s: Sample, component: str | None, requests: RequestCounts | None
) -> WindowMetrics:
    """Metrics of one component over the sample; ``component`` None: overall (fused) metrics."""
    start = s.bar_time[0] if len(s) else None
    end = s.bar_time[-1] if len(s) else None
    name = component or "fusion"
    res = s.resolved
    base = WindowMetrics(start=start, end=end, predictions=len(s), resolved=int(res.sum()))
    if name in MODEL_COMPONENTS:
        base = replace(
            base,
            accuracy=mean(s.correct(name)[res]),
            mean_confidence=mean(s.confidence_of(name)),
        )
    if name == "fusion":
        base = replace(
            base,
            agreement_rate=mean(s.agree()),
            latency_p50_ms=percentile(s.latency_ms, 50),
            latency_p99_ms=percentile(s.latency_ms, 99),
        )
    if component is None or name == "server":
        base = replace(
            base,
            error_rate=requests.error_rate if requests else math.nan,
            latency_p50_ms=percentile(s.latency_ms, 50),
            latency_p99_ms=percentile(s.latency_ms, 99),
        )
    return base
