"""Kelly position sizing.

For the predicted direction with calibrated win probability ``p`` and payoff ratio ``b`` (mean win /
mean loss, estimated from resolved outcomes by the Kelly component), the full Kelly stake is

    f* = p - (1 - p) / b

We bet ``fraction * f*`` (half Kelly by default: full Kelly's growth is optimal only if p and b are
exact, and they are estimates), never more than ``cap``, and nothing when f* <= 0 (no edge).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from server.core.calibrator import KellyComponent
from server.core.config import KellyConfig

FloatArray = npt.NDArray[np.float64]


def kelly_fraction(p_win: FloatArray, payoff_ratio: float, config: KellyConfig) -> FloatArray:
    """Fraction of capital to stake on each prediction, in [0, cap]."""
    if not payoff_ratio > 0:
        raise ValueError(f"payoff ratio must be > 0, got {payoff_ratio}")
    p_win = np.asarray(p_win, dtype=np.float64)
    full = p_win - (1.0 - p_win) / payoff_ratio
    return np.clip(full * config.fraction, 0.0, config.cap)


def size_positions(
    probability_up: FloatArray,
    direction: npt.NDArray[np.int8],
    component: KellyComponent,
    config: KellyConfig,
) -> FloatArray:
    """Kelly stakes for fused predictions: the component calibrates P(up); the stake is on the
    predicted direction, so a calibrator that moves p across 0.5 leaves no edge (stake 0)."""
    if np.shape(probability_up) == (1,):
        return np.array([stake_one(float(probability_up[0]), int(direction[0]), component, config)])
    calibrated = component.calibrate(probability_up)
    p_win = np.where(np.asarray(direction) > 0, calibrated, 1.0 - calibrated)
    return kelly_fraction(p_win, component.payoff_ratio, config)


def stake_one(
    probability_up: float, direction: int, component: KellyComponent, config: KellyConfig
) -> float:
    """:func:`size_positions` of one prediction (unary Predict), the same rule on floats: numpy's
    per-call cost would exceed the arithmetic."""
    up = component.calibrate_one(probability_up)
    win = up if direction > 0 else 1.0 - up
    stake = (win - (1.0 - win) / component.payoff_ratio) * config.fraction
    return min(max(stake, 0.0), config.cap)
