"""Degradation detection on the series of hits (1 = direction right) of one component. Numpy only.

**"relative" profile (default): one-sided Bernoulli CUSUM (Page 1954).** In control, hits are
Bernoulli(p0), p0 = the model's own validation accuracy; the chart is tuned to detect a drop to
p1 = p0 - ``cusum_drop`` (default 0.06: from a typical daily edge of 0.53 to 0.47, i.e. worse than a
coin flip; smaller drops need thousands of bars to be told apart from noise whatever the method).
Each outcome adds its log-likelihood ratio

    x_t = hit * log(p1 / p0) + (1 - hit) * log((1 - p1) / (1 - p0)),   S_t = max(0, S_{t-1} + x_t)

The threshold h is chosen so that the in-control average run length to S >= h is ``cusum_arl0``
bars (default 20000), using Siegmund's approximation with the mean mu and variance s2 of x_t:
ARL = (exp(-2 mu b / s2) + 2 mu b / s2 - 1) / (2 mu^2 / s2), b = h + 1.166 s. This is checked by
simulation in the tests (tests/cusum_simulation.py). Severity ladder on S:
S >= h/2 info, >= h warning, >= 1.5 h error, >= 2 h critical.

**"fixed" profile:** accuracy over the last ``window`` outcomes against an absolute threshold t:
below t + 0.02 info, below t warning, below t - 0.05 error, below t - 0.10 critical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

from server.core.records import SEVERITIES, Severity

#: Multiples of h at which each severity is reached.
CUSUM_LADDER: dict[Severity, float] = {"info": 0.5, "warning": 1.0, "error": 1.5, "critical": 2.0}
#: Offsets from the fixed accuracy threshold below which each severity is reached.
FIXED_LADDER: dict[Severity, float] = {
    "info": 0.02,
    "warning": 0.0,
    "error": -0.05,
    "critical": -0.10,
}

FloatArray = NDArray[np.float64]


def _llr_steps(p0: float, p1: float) -> tuple[float, float]:
    """(step on a hit, step on a miss) of the log-likelihood ratio of p1 against p0."""
    if not (0 < p1 < p0 < 1):
        raise ValueError(f"need 0 < p1 < p0 < 1, got p0={p0}, p1={p1}")
    return math.log(p1 / p0), math.log((1 - p1) / (1 - p0))


def siegmund_arl(p: float, p0: float, p1: float, h: float) -> float:
    """Approximate average run length to S >= h when hits are Bernoulli(p)."""
    up_hit, up_miss = _llr_steps(p0, p1)
    mu = p * up_hit + (1 - p) * up_miss
    s2 = p * (1 - p) * (up_hit - up_miss) ** 2
    b = h + 1.166 * math.sqrt(s2)
    if abs(mu) < 1e-12:
        return b * b / s2
    a = 2 * mu * b / s2
    return (math.exp(-a) + a - 1) / (2 * mu * mu / s2)


@lru_cache(maxsize=256)
def threshold_for_arl(p0: float, p1: float, arl0: float) -> float:
    """h whose in-control (p = p0) average run length is ``arl0`` (Siegmund, bisection)."""
    lo, hi = 0.0, 1.0
    while siegmund_arl(p0, p0, p1, hi) < arl0:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if siegmund_arl(p0, p0, p1, mid) < arl0 else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class CusumParams:
    p0: float
    p1: float
    h: float

    @classmethod
    def for_model(cls, p0: float, drop: float = 0.06, arl0: float = 20000.0) -> CusumParams:
        p0 = min(max(p0, 0.02), 0.98)
        p1 = max(p0 - drop, 0.01)
        return cls(p0=p0, p1=p1, h=threshold_for_arl(round(p0, 6), round(p1, 6), arl0))

    def level(self, severity: Severity) -> float:
        return CUSUM_LADDER[severity] * self.h


def severity_of(statistic: float, params: CusumParams) -> Severity | None:
    found: Severity | None = None
    for sev in SEVERITIES:
        if statistic >= params.level(sev):
            found = sev
    return found


def cusum_path(hits: ArrayLike, params: CusumParams) -> FloatArray:
    """S_t for every t (Lindley recursion via cumulative sums: S_t = C_t - min(0, min C_<=t))."""
    x = np.asarray(hits, dtype=np.float64)
    up_hit, up_miss = _llr_steps(params.p0, params.p1)
    c = np.cumsum(x * up_hit + (1 - x) * up_miss, axis=-1)
    floor = np.minimum.accumulate(np.minimum(c, 0.0), axis=-1)
    return np.asarray(c - floor, dtype=np.float64)


def first_alarms(hits: ArrayLike, params: CusumParams) -> dict[Severity, int | None]:
    """Index of the first outcome at which S reaches each severity level (None if never)."""
    s = cusum_path(hits, params)
    out: dict[Severity, int | None] = {}
    for sev in SEVERITIES:
        above = np.flatnonzero(s >= params.level(sev))
        out[sev] = int(above[0]) if above.size else None
    return out


class BernoulliCusum:
    """Incremental form of the chart, fed one outcome at a time."""

    def __init__(self, params: CusumParams) -> None:
        self.params = params
        self._hit_step, self._miss_step = _llr_steps(params.p0, params.p1)
        self.statistic = 0.0
        self.count = 0
        self.peak = 0.0

    def update(self, hit: bool) -> Severity | None:
        self.statistic = max(0.0, self.statistic + (self._hit_step if hit else self._miss_step))
        self.count += 1
        self.peak = max(self.peak, self.statistic)
        return self.severity

    @property
    def severity(self) -> Severity | None:
        return severity_of(self.statistic, self.params)

    def reset(self) -> None:
        self.statistic = 0.0
        self.count = 0
        self.peak = 0.0


def rolling_accuracy(hits: ArrayLike, window: int) -> FloatArray:
    """Accuracy over the last ``window`` outcomes at each t (NaN until the window is full)."""
    x = np.asarray(hits, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    if window < 1 or x.size < window:
        return out
    c = np.concatenate([[0.0], np.cumsum(x)])
    out[window - 1 :] = (c[window:] - c[:-window]) / window
    return out


def fixed_first_alarms(
    hits: ArrayLike, min_accuracy: float, window: int
) -> dict[Severity, int | None]:
    """The "fixed" profile: first t at which the rolling accuracy falls below each level."""
    acc = rolling_accuracy(hits, window)
    out: dict[Severity, int | None] = {}
    for sev in SEVERITIES:
        below = np.flatnonzero(acc < min_accuracy + FIXED_LADDER[sev])
        out[sev] = int(below[0]) if below.size else None
    return out


def fixed_severity(accuracy: float, min_accuracy: float) -> Severity | None:
    found: Severity | None = None
    for sev in SEVERITIES:
        if accuracy < min_accuracy + FIXED_LADDER[sev]:
            found = sev
    return found
