"""One hit rule for the data plane, the monitor, calibration, probation and the training labels."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from server.core import features, scoring
from server.core.calibration import calibration_report
from server.core.records import Prediction, outcome_of

pytestmark = pytest.mark.serving


def _prediction(direction: int, p_up: float) -> Prediction:
    return Prediction(
        id="p1",
        symbol="X",
        bar_time=dt.datetime(2020, 1, 2),
        direction=direction,
        probability_up=p_up,
        confidence=max(p_up, 1 - p_up),
        lstm_probability=p_up,
        ensemble_probability=p_up,
        agreement=1.0,
        kelly_fraction=0.1,
        versions={"lstm": "a", "ensemble": "b", "kelly": "c"},
        latency_s=0.001,
        close=100.0,
    )


def test_a_flat_bar_is_a_hit_for_down_and_a_miss_for_up_everywhere() -> None:
    # The data plane used to count a flat bar as a miss for both directions.
    assert outcome_of(_prediction(-1, 0.4), 0.0, dt.datetime(2020, 1, 3)).hit
    assert not outcome_of(_prediction(+1, 0.6), 0.0, dt.datetime(2020, 1, 3)).hit
    # The training label of a flat bar is 0 (not up), which the same rule scores.
    bars = np.array([[1.0, 1.0, 1.0, 100.0, 1.0], [1.0, 1.0, 1.0, 100.0, 1.0]])
    assert features.labels(bars)[0] == 0.0
    assert scoring.hits(np.array([False, True]), np.array([0.0, 0.0])).tolist() == [True, False]


def test_the_served_direction_at_exactly_one_half_is_up_in_calibration_too() -> None:
    # Calibration used p > 0.5 while the server serves up at p >= 0.5.
    p = np.array([0.5, 0.5, 0.5, 0.5])
    y = np.array([1.0, 1.0, 1.0, 0.0])
    report = calibration_report("fusion", p, y)
    assert report.accuracy == scoring.direction_accuracy(p, y) == 0.75


def test_one_return_is_labelled_as_in_a_batch() -> None:
    # A stream labels each outcome on a float; training and the monitor label arrays.
    returns = [0.0, -0.0, 5e-324, -5e-324, 0.01, -0.01, float("nan"), float("inf")]
    batch = scoring.went_up(np.array(returns)).tolist()
    assert [scoring.went_up_one(r) for r in returns] == batch
    at = dt.datetime(2020, 1, 3)
    assert [outcome_of(_prediction(+1, 0.6), r, at).actual_up for r in returns] == batch
    assert [outcome_of(_prediction(+1, 0.6), r, at).hit for r in returns] == batch
