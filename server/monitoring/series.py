"""Rolling-window series of the health metrics, and the levels the health score judges them by.
Pure functions over numpy arrays of predictions in bar-time order (the dashboard's trend charts).

A point is the metric over the ``window`` predictions that end at it; points are spread evenly over
the predictions given, the newest always included. The levels invert the health score's ramps
(:mod:`server.monitoring.health_score`): the value at which a sub-score falls to the warning or the
critical health score. In the relative profile they are z-test levels, so they move with the
observations in each window; in the fixed profile they are constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from server.core.config import MonitoringConfig

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Line:
    """A level drawn beside a series, one value per point."""

    name: str
    #: None for a reference level (what the metric is expected to be).
    severity: str | None
    values: FloatArray


@dataclass(frozen=True)
class Series:
    metric: str
    component: str
    #: Index (into the predictions given) of each point's newest prediction.
    ends: IntArray
    values: FloatArray
    counts: IntArray
    lines: tuple[Line, ...] = ()


def window_ends(n: int, window: int, points: int) -> IntArray:
    """Indices of the points' newest predictions: evenly spread from the first full window (or
    the first prediction, with fewer than ``window``) to the last, without repeats."""
    if n <= 0 or points <= 0:
        return np.empty(0, dtype=np.int64)
    first = min(max(window, 1) - 1, n - 1)
    ends = np.rint(np.linspace(first, n - 1, min(points, n - first))).astype(np.int64)
    return np.unique(ends)


def _starts(ends: IntArray, window: int) -> IntArray:
    return np.maximum(ends - max(window, 1) + 1, 0)


def rolling_mean(
    values: FloatArray, ends: IntArray, window: int, mask: BoolArray | None = None
) -> tuple[FloatArray, IntArray]:
    """Mean of ``values`` (where ``mask``) over each window, and how many values it averaged
    (NaN where none)."""
    x = np.asarray(values, dtype=np.float64)
    keep = np.ones(x.size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    sums = np.concatenate([[0.0], np.cumsum(np.where(keep, x, 0.0))])
    counts = np.concatenate([[0], np.cumsum(keep.astype(np.int64))])
    starts = _starts(ends, window)
    total = sums[ends + 1] - sums[starts]
    count = counts[ends + 1] - counts[starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), math.nan)
    return mean.astype(np.float64), count.astype(np.int64)


def rolling_percentile(values: FloatArray, ends: IntArray, window: int, q: float) -> FloatArray:
    """The ``q``-th percentile of ``values`` over each window."""
    x = np.asarray(values, dtype=np.float64)
    starts = _starts(ends, window)
    return np.array(
        [float(np.percentile(x[s : e + 1], q)) for s, e in zip(starts, ends, strict=True)],
        dtype=np.float64,
    )


def _z_level(level: float, z_floor: float) -> float:
    """The z at which the health ramp ``100 * clip(1 + z / z_floor, 0, 1)`` equals ``level``."""
    return (level / 100.0 - 1.0) * z_floor


def proportion_level(expected: float, counts: IntArray, level: float, z_floor: float) -> FloatArray:
    """Proportion at which a one-sided z against ``expected`` over ``counts`` observations gives the
    health sub-score ``level`` (NaN where there are no observations)."""
    p = min(max(expected, 1e-6), 1 - 1e-6)
    n = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p + _z_level(level, z_floor) * np.sqrt(p * (1 - p) / n)
    return np.where(n > 0, out, math.nan).astype(np.float64)


def overconfidence_level(
    accuracy: FloatArray, counts: IntArray, level: float, z_floor: float
) -> FloatArray:
    """Mean confidence at which the confidence sub-score (z of the accuracy against the confidence,
    capped at 0) falls to ``level``: the larger root c of (c - acc)^2 = z^2 c (1 - c) / n."""
    acc = np.asarray(accuracy, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = _z_level(level, z_floor) ** 2 / n
        b = 2 * acc + k
        root = (b + np.sqrt(np.maximum(b * b - 4 * (1 + k) * acc * acc, 0.0))) / (2 * (1 + k))
    return np.where((n > 0) & np.isfinite(acc), root, math.nan).astype(np.float64)


def absolute_level(threshold: float, floor: float, level: float) -> float:
    """Value at which the fixed profile's ramp from ``floor`` to ``threshold`` gives ``level``."""
    return floor + level / 100.0 * (threshold - floor)


def robust_upper_level(values: FloatArray, z: float) -> float:
    """median + z * 1.4826 * MAD of the finite values: the latency anomaly rule's level (the MAD
    floored as in :func:`server.monitoring.trends.robust_z`)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return math.nan
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med)))
    return med + z * 1.4826 * max(mad, 1e-3 * abs(med), 1e-9)


def _proportion_lines(
    cfg: MonitoringConfig,
    expected: float,
    counts: IntArray,
    fixed_threshold: float,
    floor: float,
) -> list[Line]:
    """A proportion's levels: in the fixed profile the ramp's, from ``floor`` to
    ``fixed_threshold``; in the relative profile ``expected`` and the z-test's (none if unknown)."""
    size = counts.size
    if cfg.profile == "fixed":
        return [
            Line(name, sev, np.full(size, absolute_level(fixed_threshold, floor, level)))
            for name, sev, level in _levels(cfg)
        ]
    if math.isnan(expected):
        return []
    return [
        Line("expected (validation)", None, np.full(size, expected)),
        *(
            Line(name, sev, proportion_level(expected, counts, level, cfg.health_z_floor))
            for name, sev, level in _levels(cfg)
        ),
    ]


def _levels(cfg: MonitoringConfig) -> tuple[tuple[str, str, float], ...]:
    return (
        ("health warning", "warning", cfg.warn_health_score),
        ("health critical", "critical", cfg.critical_health_score),
    )


def metric_series(
    cfg: MonitoringConfig,
    reference: dict[str, float],
    *,
    lstm_p: FloatArray,
    ensemble_p: FloatArray,
    confidence: FloatArray,
    latency_ms: FloatArray,
    resolved: BoolArray,
    up: BoolArray,
    hit: BoolArray,
    window: int,
    points: int,
) -> list[Series]:
    """The dashboard's series over predictions in bar-time order. ``reference``: the monitor's
    expected accuracy per component and, under "agreement", the expected agreement rate."""
    ends = window_ends(len(confidence), window, points)
    res = np.asarray(resolved, dtype=bool)
    went_up = np.asarray(up, dtype=bool)
    lstm_up = np.asarray(lstm_p) >= 0.5
    ensemble_up = np.asarray(ensemble_p) >= 0.5
    correct = {
        "lstm": lstm_up == went_up,
        "ensemble": ensemble_up == went_up,
        "fusion": np.asarray(hit, dtype=bool),
    }
    out: list[Series] = []
    for component, right in correct.items():
        acc, count = rolling_mean(right.astype(np.float64), ends, window, res)
        lines = _proportion_lines(
            cfg, reference.get(component, math.nan), count, cfg.fixed_min_accuracy, 0.5
        )
        out.append(Series("accuracy", component, ends, acc, count, tuple(lines)))
    fused = out[-1]

    conf, count = rolling_mean(np.asarray(confidence, dtype=np.float64), ends, window)
    if cfg.profile == "fixed":
        conf_lines = _proportion_lines(cfg, math.nan, count, cfg.fixed_min_confidence, 0.5)
    else:
        # Confidence costs points only above the accuracy it is judged against.
        conf_lines = [
            Line("accuracy", None, fused.values),
            *(
                Line(
                    f"{name} (overconfident)",
                    sev,
                    overconfidence_level(fused.values, fused.counts, level, cfg.health_z_floor),
                )
                for name, sev, level in _levels(cfg)
            ),
        ]
    out.append(Series("mean_confidence", "fusion", ends, conf, count, tuple(conf_lines)))

    rate, count = rolling_mean((lstm_up == ensemble_up).astype(np.float64), ends, window)
    a0 = reference.get("agreement", cfg.fixed_min_agreement)
    agree_lines = _proportion_lines(cfg, a0, count, cfg.fixed_min_agreement, 0.0)
    out.append(Series("agreement_rate", "fusion", ends, rate, count, tuple(agree_lines)))

    latency = np.asarray(latency_ms, dtype=np.float64)
    counts = (ends - _starts(ends, window) + 1).astype(np.int64)
    p50 = rolling_percentile(latency, ends, window, 50)
    anomaly = Line(
        "anomaly level", "warning", np.full(ends.size, robust_upper_level(p50, cfg.anomaly_z))
    )
    out.append(Series("latency_p50_ms", "server", ends, p50, counts, (anomaly,)))
    p99 = rolling_percentile(latency, ends, window, 99)
    out.append(Series("latency_p99_ms", "server", ends, p99, counts))
    return out
