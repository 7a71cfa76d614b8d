"""The Kelly component's calibrators and payoff ratio, against scikit-learn and hand cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from server.core.calibrator import (
    KellyComponent,
    fit_isotonic,
    fit_kelly_component,
    fit_platt,
    payoff_ratio,
)


def _sample(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.3, 0.7, n)
    # Overconfident forecasts: the true probability is only half as far from 0.5.
    y = (rng.uniform(size=n) < 0.5 + (p - 0.5) * 0.5).astype(np.float64)
    return p, y


def test_platt_matches_unregularised_logistic_regression() -> None:
    p, y = _sample()
    a, b = fit_platt(p, y, l2=0.0)
    logit = np.log(p / (1 - p))[:, None]
    reference = LogisticRegression(C=1e9, tol=1e-10, max_iter=1000).fit(logit, y)
    assert a == pytest.approx(reference.coef_[0, 0], abs=1e-4)
    assert b == pytest.approx(reference.intercept_[0], abs=1e-4)
    assert a < 0.8  # it found the overconfidence built into the sample


def test_isotonic_matches_scikit_learn() -> None:
    p, y = _sample(seed=1)
    kx, ky = fit_isotonic(p, y)
    reference = IsotonicRegression(out_of_bounds="clip").fit(p, y)
    grid = np.linspace(0.25, 0.75, 501)
    np.testing.assert_allclose(np.interp(grid, kx, ky), reference.predict(grid), atol=1e-12)
    assert np.all(np.diff(ky) >= 0)


def test_payoff_ratio_hand_case() -> None:
    p_up = np.array([0.6, 0.6, 0.4, 0.4])
    r = np.array([0.02, -0.01, -0.03, 0.01])
    # Trades: long +0.02, long -0.01, short +0.03, short -0.01 -> wins 0.025, losses 0.01.
    ratio, n = payoff_ratio(p_up, r)
    assert ratio == pytest.approx(2.5)
    assert n == 4
    assert payoff_ratio(np.array([0.6]), np.array([0.01]), default=1.7) == (1.7, 1)


def test_component_round_trips_and_calibrates() -> None:
    p, y = _sample(seed=2)
    rng = np.random.default_rng(3)
    for method in ("identity", "platt", "isotonic"):
        component = fit_kelly_component(p, y, rng.normal(0, 0.01, len(p)), method=method)
        again = KellyComponent.from_json(component.to_json())
        assert again == component
        out = again.calibrate(p)
        assert out.shape == p.shape
        assert np.all((out >= 0) & (out <= 1))
    platt = fit_kelly_component(p, y, np.zeros(len(p)) + 0.01, method="platt")
    # Calibration pulls overconfident forecasts towards 0.5.
    assert abs(platt.calibrate(np.array([0.7]))[0] - 0.5) < 0.15


def test_bad_components_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown calibrator method"):
        KellyComponent(method="magic")
    with pytest.raises(ValueError, match="payoff_ratio"):
        KellyComponent(payoff_ratio=0.0)
    with pytest.raises(ValueError, match="malformed"):
        KellyComponent.from_json('{"method": "platt", "nonsense": 1}')
    with pytest.raises(ValueError, match="same shape"):
        fit_kelly_component(np.zeros(3), np.zeros(2), np.zeros(3))
