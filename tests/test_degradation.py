"""Bernoulli CUSUM: false alarms on healthy series, detection delay on degraded ones."""

from __future__ import annotations

import numpy as np
import pytest

from server.monitoring.degradation import (
    BernoulliCusum,
    CusumParams,
    cusum_path,
    first_alarms,
    fixed_first_alarms,
    siegmund_arl,
)
from tests.cusum_simulation import simulate_false_alarms_and_delay, simulate_run_lengths

pytestmark = pytest.mark.serving


def test_cusum_path_matches_the_recursion() -> None:
    params = CusumParams.for_model(0.53)
    hits = (np.random.default_rng(0).random(800) < 0.5).astype(np.float64)
    chart = BernoulliCusum(params)
    naive = []
    for h in hits:
        chart.update(bool(h))
        naive.append(chart.statistic)
    np.testing.assert_allclose(cusum_path(hits, params), naive)


def test_threshold_gives_the_requested_arl() -> None:
    params = CusumParams.for_model(0.53, 0.06, 1000.0)
    assert siegmund_arl(0.53, 0.53, params.p1, params.h) == pytest.approx(1000.0, rel=1e-6)
    lengths = simulate_run_lengths(params, 0.53, runs=400, max_bars=20_000, seed=1)
    assert (lengths < 20_000).all()
    assert 0.75 * 1000 < lengths.mean() < 1.33 * 1000


def test_healthy_series_rarely_alarm_above_info() -> None:
    params = CusumParams.for_model(0.53)  # default ARL0 20000 bars
    severities = []
    for seed in range(20):
        hits = (np.random.default_rng(seed).random(1500) < 0.53).astype(np.float64)
        alarms = first_alarms(hits, params)
        severities.append({k for k, v in alarms.items() if v is not None})
    warnings = sum("warning" in s for s in severities)
    # P(warning within 1500 bars) ~ 1 - exp(-1500/20000) = 7%: ~1.5 of 20 expected.
    assert warnings <= 4
    assert sum("critical" in s for s in severities) == 0


@pytest.mark.parametrize("mode", ["drop", "flip"])
def test_degraded_series_alarm_with_bounded_delay(mode: str) -> None:
    params = CusumParams.for_model(0.53)
    k, n, delays = 500, 2500, []
    for seed in range(30):
        rng = np.random.default_rng(1000 + seed)
        u = rng.random(n)
        if mode == "drop":
            hits = (u < np.where(np.arange(n) < k, 0.53, 0.45)).astype(np.float64)
        else:  # outcomes flipped from bar k: accuracy 0.53 becomes 0.47
            hits = (u < 0.53).astype(np.float64)
            hits[k:] = 1 - hits[k:]
        first = first_alarms(hits, params)["warning"]
        if first is not None and first >= k:
            delays.append(first - k)
    assert len(delays) >= 25
    assert np.median(delays) < (450 if mode == "drop" else 700)


def test_simulation_reports_measured_numbers() -> None:
    result = simulate_false_alarms_and_delay(runs=200, bars=3000, change_at=1500, p_after=0.45)
    assert result.false_alarm_rate["warning"] < 0.15
    assert result.false_alarm_rate["critical"] < 0.02
    assert result.median_delay["warning"] < 450
    assert result.miss_rate["warning"] < 0.05


def test_incremental_severity_ladder() -> None:
    params = CusumParams.for_model(0.55, 0.06, 2000.0)
    chart = BernoulliCusum(params)
    seen = [chart.update(False) for _ in range(200)]
    assert seen[0] is None
    ordered = [s for i, s in enumerate(seen) if s is not None and (i == 0 or seen[i - 1] != s)]
    assert ordered == ["info", "warning", "error", "critical"]
    chart.reset()
    assert chart.statistic == 0.0 and chart.severity is None


def test_fixed_profile_rolling_accuracy() -> None:
    hits = np.r_[np.ones(100), np.zeros(100)]
    alarms = fixed_first_alarms(hits, min_accuracy=0.65, window=100)
    # Rolling accuracy at t = 99 + j is (100 - j) / 100.
    assert alarms["info"] == 99 + 34  # first below 0.67
    assert alarms["warning"] == 99 + 36  # first below 0.65
    assert alarms["critical"] == 99 + 46  # first below 0.55
