"""Calibration metrics against sklearn's binning and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from server.core.calibration import (
    brier_decomposition,
    calibration_report,
    confidence_zones,
    ece_mce,
    find_miscalibrations,
    reliability_bins,
)
from server.core.scoring import brier_score


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bins_match_sklearn_calibration_curve(strategy: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 2, size=700)
    p[:5] = [0.0, 0.1, 0.5, 0.9, 1.0]  # values on bin edges
    y = (rng.random(700) < p).astype(np.float64)
    bins = reliability_bins(p, y, n_bins=10, strategy=strategy)  # type: ignore[arg-type]
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy=strategy)
    np.testing.assert_allclose([b.observed_frequency for b in bins], prob_true)
    np.testing.assert_allclose([b.mean_predicted for b in bins], prob_pred)
    assert sum(b.count for b in bins) == 700


def test_empty_bins_are_omitted() -> None:
    bins = reliability_bins([0.05, 0.06, 0.95], [0, 1, 1], n_bins=10)
    assert [(b.lower, b.upper, b.count) for b in bins] == [(0.0, 0.1, 2), (0.9, 1.0, 1)]


def test_ece_mce_brier_by_hand() -> None:
    p = np.array([0.1, 0.2, 0.8, 0.9])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    bins = reliability_bins(p, y, n_bins=2)
    ece, mce = ece_mce(bins)
    # bin [0, .5): mean .15, observed .5, gap .35; bin [.5, 1]: mean .85, observed 1, gap .15
    assert ece == pytest.approx((2 * 0.35 + 2 * 0.15) / 4)
    assert mce == pytest.approx(0.35)
    assert brier_score(p, y) == pytest.approx((0.01 + 0.64 + 0.04 + 0.01) / 4)
    d = brier_decomposition(bins)
    assert d.reliability == pytest.approx((2 * 0.35**2 + 2 * 0.15**2) / 4)
    assert d.resolution == pytest.approx((2 * 0.25**2 + 2 * 0.25**2) / 4)
    assert d.uncertainty == pytest.approx(0.75 * 0.25)


def test_decomposition_is_exact_with_one_forecast_per_bin() -> None:
    p = np.array([0.2, 0.2, 0.8, 0.8])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    d = brier_decomposition(reliability_bins(p, y, n_bins=2))
    assert d.reliability - d.resolution + d.uncertainty == pytest.approx(brier_score(p, y))


def test_zones_bounds() -> None:
    conf = [0.5, 0.519, 0.52, 0.55, 0.6, 0.7, 1.0]
    ok = [1, 0, 1, 1, 0, 1, 1]
    zones = confidence_zones(conf, ok)
    assert [z.zone for z in zones] == ["very_low", "low", "medium", "high", "very_high"]
    assert [z.count for z in zones] == [2, 1, 1, 1, 2]
    assert zones[0].accuracy == pytest.approx(0.5)
    assert zones[4].mean_confidence == pytest.approx(0.85)


def test_overconfident_region_is_found_and_recommended() -> None:
    rng = np.random.default_rng(3)
    n = 1000
    conf = np.where(rng.random(n) < 0.5, rng.uniform(0.5, 0.6, n), rng.uniform(0.72, 0.9, n))
    # Low zone calibrated, high zone right only 55% of the time.
    ok = (rng.random(n) < np.where(conf > 0.7, 0.55, conf)).astype(np.float64)
    p_up = np.where(rng.random(n) < 0.5, conf, 1 - conf)
    up = np.where(ok == 1, p_up > 0.5, p_up <= 0.5).astype(np.float64)
    report = calibration_report("ensemble", p_up, up)
    kinds = {m.kind for m in report.miscalibrations}
    assert kinds == {"overconfident"}
    assert all(m.lower >= 0.7 for m in report.miscalibrations)
    assert any("ensemble overconfident" in r and "refit" in r for r in report.recommendations)
    assert "binomial z" in report.miscalibrations[0].evidence


def test_calibrated_data_rarely_flagged() -> None:
    flagged = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        conf = rng.uniform(0.5, 0.8, 1500)
        ok = (rng.random(1500) < conf).astype(np.float64)
        flagged += bool(find_miscalibrations(conf, ok))
    # Family-wise level ~4.6% per report: ~1 of 20 expected.
    assert flagged <= 3


def test_underconfident_detected() -> None:
    rng = np.random.default_rng(5)
    conf = rng.uniform(0.5, 0.6, 2000)
    ok = (rng.random(2000) < conf + 0.15).astype(np.float64)
    found = find_miscalibrations(conf, ok, n_bins=2)
    assert found and all(m.kind == "underconfident" and m.gap < 0 for m in found)


def test_no_data_and_too_little_data() -> None:
    empty = calibration_report("fused", [], [])
    assert empty.count == 0 and math.isnan(empty.ece) and math.isnan(empty.brier)
    assert "no resolved fused predictions" in empty.recommendations[0]
    small = calibration_report("lstm", np.full(12, 0.6), np.ones(12))
    assert small.recommendations == [
        "too few outcomes (n=12) to judge calibration; at least 50 are needed"
    ]


def test_within_tolerance_message() -> None:
    rng = np.random.default_rng(9)
    p = rng.uniform(0.3, 0.7, 3000)
    y = (rng.random(3000) < p).astype(np.float64)
    report = calibration_report("fused", p, y, strategy="quantile")
    assert report.ece < 0.05
    assert report.recommendations[0].startswith("calibration within tolerance")
    assert report.accuracy == pytest.approx(float(np.mean((p > 0.5) == (y > 0.5))))
