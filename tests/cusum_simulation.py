"""Simulations of the Bernoulli CUSUM on synthetic hits: what the tests (and the README's figures)
measure the chart with. Test-only, so it lives beside the tests rather than in the server."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from server.core.records import SEVERITIES, Severity
from server.monitoring.degradation import CusumParams, _llr_steps, cusum_path

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class SimulationResult:
    """Measured behaviour of the chart on synthetic Bernoulli hits."""

    params: CusumParams
    runs: int
    bars: int
    change_at: int
    p_after: float
    #: Share of runs alarming at each severity before the change (false alarms).
    false_alarm_rate: dict[Severity, float]
    #: Median bars from the change to the first alarm, among runs that alarmed after it.
    median_delay: dict[Severity, float]
    #: Share of runs never alarming at a severity after the change (within ``bars``).
    miss_rate: dict[Severity, float]


def simulate_false_alarms_and_delay(
    p0: float = 0.53,
    drop: float = 0.06,
    arl0: float = 20000.0,
    p_after: float | None = None,
    bars: int = 3000,
    change_at: int = 1500,
    runs: int = 200,
    seed: int = 0,
) -> SimulationResult:
    """Hits Bernoulli(p0) up to ``change_at``, Bernoulli(p_after) from there (default p0 - drop)."""
    params = CusumParams.for_model(p0, drop, arl0)
    p_after = params.p1 if p_after is None else p_after
    rng = np.random.default_rng(seed)
    prob = np.where(np.arange(bars) < change_at, p0, p_after)
    hits = (rng.random((runs, bars)) < prob).astype(np.float64)
    s = cusum_path(hits, params)
    false_rate: dict[Severity, float] = {}
    delay: dict[Severity, float] = {}
    miss: dict[Severity, float] = {}
    for sev in SEVERITIES:
        above = np.asarray(s >= params.level(sev), dtype=np.bool_)
        before = above[:, :change_at].any(axis=1)
        false_rate[sev] = float(before.mean())
        after = above[:, change_at:]
        alarmed = ~before & after.any(axis=1)
        delays = np.argmax(after, axis=1)[alarmed]
        delay[sev] = float(np.median(delays)) if delays.size else math.nan
        clean = ~before
        never: NDArray[np.bool_] = np.asarray(~after.any(axis=1), dtype=np.bool_)
        miss[sev] = float(never[clean].mean()) if clean.any() else math.nan
    return SimulationResult(params, runs, bars, change_at, p_after, false_rate, delay, miss)


def simulate_run_lengths(
    params: CusumParams,
    p: float,
    runs: int = 200,
    max_bars: int = 200_000,
    chunk: int = 5_000,
    severity: Severity = "warning",
    seed: int = 0,
) -> FloatArray:
    """Bars to the first alarm at ``severity`` for each run (``max_bars`` when none: censored)."""
    rng = np.random.default_rng(seed)
    up_hit, up_miss = _llr_steps(params.p0, params.p1)
    level = params.level(severity)
    state = np.zeros(runs)
    lengths = np.full(runs, float(max_bars))
    done = np.zeros(runs, dtype=bool)
    for start in range(0, max_bars, chunk):
        n = min(chunk, max_bars - start)
        x = np.where(rng.random((runs, n)) < p, up_hit, up_miss)
        x[:, 0] += state
        c = np.cumsum(x, axis=1)
        s = c - np.minimum.accumulate(np.minimum(c, 0.0), axis=1)
        above = s >= level
        hit_now = above.any(axis=1) & ~done
        lengths[hit_now] = start + np.argmax(above[hit_now], axis=1) + 1
        done |= hit_now
        state = s[:, -1]
        if done.all():
            break
    return lengths
