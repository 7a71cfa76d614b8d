"""Trends (least-squares slopes with a t test) and anomalies (robust z) of metric series. Numpy only.

A trend is the OLS slope of a per-prediction series (hits for accuracy, confidences, latencies)
on its index, so the slope is "per prediction"; it is significant when |t| >= ``t_crit`` with
t = slope / se(slope). Serial correlation (latency bursts) makes t optimistic; the threshold is a
screen, not a test at an exact level.

An anomaly compares the latest chunk's value with the values of earlier chunks:
z = (current - median(history)) / (1.4826 * MAD(history)), with the MAD floored so that a flat
history does not turn every jitter into an infinite z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Direction = Literal["improving", "stable", "degrading"]
FloatArray = NDArray[np.float64]

#: Whether a higher value of each metric is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "mean_confidence": True,
    "agreement_rate": True,
    "health_score": True,
    "latency_p50_ms": False,
    "latency_ms": False,
    "error_rate": False,
}


@dataclass(frozen=True)
class Trend:
    metric: str
    component: str
    slope: float
    t_stat: float
    current: float
    direction: Direction
    count: int


@dataclass(frozen=True)
class Anomaly:
    metric: str
    current: float
    baseline: float
    z: float
    anomalous: bool


def slope_t(values: ArrayLike) -> tuple[float, float]:
    """(OLS slope on the index, its t statistic); NaN with fewer than 3 finite values."""
    y = np.asarray(values, dtype=np.float64)
    x = np.arange(y.size, dtype=np.float64)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    n = y.size
    if n < 3:
        return math.nan, math.nan
    xc = x - x.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (y - y.mean())) / sxx
    resid = y - y.mean() - slope * xc
    s2 = float(resid @ resid) / (n - 2)
    if s2 <= 0:
        return slope, (math.copysign(math.inf, slope) if slope != 0 else 0.0)
    return slope, slope / math.sqrt(s2 / sxx)


def fit_trend(
    values: ArrayLike,
    metric: str,
    component: str,
    higher_is_better: bool | None = None,
    t_crit: float = 2.0,
) -> Trend:
    """Trend of one series; ``current`` is the mean of its most recent quarter."""
    y = np.asarray(values, dtype=np.float64)
    y = y[np.isfinite(y)]
    better_up = HIGHER_IS_BETTER.get(metric, True) if higher_is_better is None else higher_is_better
    slope, t = slope_t(y)
    tail = y[-max(1, y.size // 4) :] if y.size else y
    current = float(tail.mean()) if tail.size else math.nan
    direction: Direction = "stable"
    if not math.isnan(t) and abs(t) >= t_crit:
        direction = "improving" if (slope > 0) == better_up else "degrading"
    return Trend(metric, component, slope, t, current, direction, int(y.size))


def robust_z(history: ArrayLike, current: float) -> float:
    h = np.asarray(history, dtype=np.float64)
    h = h[np.isfinite(h)]
    if h.size == 0 or math.isnan(current):
        return math.nan
    med = float(np.median(h))
    mad = float(np.median(np.abs(h - med)))
    scale = 1.4826 * max(mad, 1e-3 * abs(med), 1e-9)
    return (current - med) / scale


def detect_anomaly(
    history: ArrayLike,
    current: float,
    metric: str,
    z_threshold: float = 4.0,
    min_history: int = 5,
) -> Anomaly:
    """Flags ``current`` only in the bad direction of ``metric`` and with enough history."""
    h = np.asarray(history, dtype=np.float64)
    z = robust_z(h, current)
    bad_sign = -1.0 if HIGHER_IS_BETTER.get(metric, False) else 1.0
    anomalous = int(np.isfinite(h).sum()) >= min_history and not math.isnan(z)
    anomalous = anomalous and bad_sign * z >= z_threshold
    baseline = float(np.median(h[np.isfinite(h)])) if np.isfinite(h).any() else math.nan
    return Anomaly(metric, current, baseline, z, anomalous)


def chunk_stat(values: ArrayLike, size: int, stat: Literal["median", "mean"]) -> FloatArray:
    """The statistic of consecutive chunks of ``size`` values, aligned to end at the last value
    (a partial chunk at the start is dropped)."""
    v = np.asarray(values, dtype=np.float64)
    k = v.size // max(size, 1)
    if k == 0:
        return np.empty(0)
    blocks = v[v.size - k * size :].reshape(k, size)
    fn = np.median if stat == "median" else np.mean
    return np.asarray(fn(blocks, axis=1), dtype=np.float64)
