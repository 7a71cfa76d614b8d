"""Health sub-scores: accuracy judged against expectation and sample size."""

from __future__ import annotations

import math

import pytest

from server.core.config import MonitoringConfig
from server.monitoring.health_score import (
    error_rate_score,
    overall_score,
    ramp,
    score_component,
    status_for,
)

pytestmark = pytest.mark.serving

CFG = MonitoringConfig()


def test_small_sample_below_expectation_is_not_evidence() -> None:
    s = score_component(CFG, resolved=30, accuracy=0.45, expected_accuracy=0.52)
    assert s.status == "healthy"
    assert 60 < s.score < 100


def test_large_sample_below_expectation_is_unhealthy() -> None:
    s = score_component(CFG, resolved=500, accuracy=0.45, expected_accuracy=0.52)
    assert s.z["accuracy"] < -3
    assert s.score == 0.0 and s.status == "unhealthy"


def test_normal_daily_accuracy_is_healthy() -> None:
    s = score_component(
        CFG, resolved=250, accuracy=0.52, expected_accuracy=0.53, mean_confidence=0.53
    )
    assert s.status == "healthy" and s.score > 85


def test_too_little_data_is_unknown() -> None:
    s = score_component(CFG, resolved=5, accuracy=0.2, expected_accuracy=0.52)
    assert s.status == "unknown" and math.isnan(s.score)
    assert "5 resolved outcomes" in s.detail


def test_overconfidence_costs_points_underconfidence_does_not() -> None:
    over = score_component(
        CFG, resolved=400, accuracy=0.53, expected_accuracy=0.53, mean_confidence=0.65
    )
    under = score_component(
        CFG, resolved=400, accuracy=0.53, expected_accuracy=0.53, mean_confidence=0.51
    )
    assert over.subscores["confidence"] == 0.0
    assert under.subscores["confidence"] == 100.0


def test_error_rate_mapping() -> None:
    assert error_rate_score(0.0, CFG) == 100.0
    assert error_rate_score(CFG.warn_error_rate, CFG) == pytest.approx(CFG.warn_health_score)
    assert error_rate_score(CFG.critical_error_rate, CFG) == pytest.approx(
        CFG.critical_health_score
    )
    assert error_rate_score(1.0, CFG) == 0.0


def test_fixed_profile_uses_absolute_thresholds() -> None:
    fixed = MonitoringConfig(profile="fixed")
    s = score_component(fixed, resolved=1000, accuracy=0.52, expected_accuracy=0.52)
    # 0.52 against the fixed 0.65: (0.52 - 0.5) / (0.65 - 0.5) of the way
    assert s.subscores["accuracy"] == pytest.approx(100 * 0.02 / 0.15)


def test_status_and_ramp() -> None:
    assert status_for(math.nan, 60, 30) == "unknown"
    assert status_for(60, 60, 30) == "healthy"
    assert status_for(45, 60, 30) == "degraded"
    assert status_for(10, 60, 30) == "unhealthy"
    assert ramp(-1.5, 3.0) == pytest.approx(50.0)
    assert ramp(2.0, 3.0) == 100.0
    assert overall_score({"fusion": 100.0, "lstm": math.nan, "server": 50.0}) == pytest.approx(
        (0.4 * 100 + 0.2 * 50) / 0.6
    )
