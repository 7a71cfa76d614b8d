"""The shared feature code: causal, and identical over a rolling window and over the whole series."""

from __future__ import annotations

import numpy as np
import pytest

from export.data import MarketData
from server.core import features as F

pytestmark = pytest.mark.serving


def test_features_are_causal(sp500: MarketData) -> None:
    ohlcv = sp500.ohlcv[:600]
    full = F.compute_features(ohlcv)
    for t in (F.LOOKBACK - 1, 100, 377, 598):
        truncated = F.compute_features(ohlcv[: t + 1])
        np.testing.assert_array_equal(truncated[t], full[t])
        # Changing every later bar must not move the features at t.
        altered = ohlcv.copy()
        altered[t + 1 :, :4] *= 1.5
        np.testing.assert_array_equal(F.compute_features(altered)[t], full[t])


def test_serving_window_equals_training_series(sp500: MarketData) -> None:
    window = 20
    full = F.compute_features(sp500.ohlcv)
    need = F.bars_required(window)
    for end in (need, 1000, 2500, len(sp500.ohlcv)):
        served = F.window_features(sp500.ohlcv[end - need : end], window)
        assert served.shape == (window, len(F.FEATURE_NAMES))
        np.testing.assert_allclose(served, full[end - window : end], rtol=0, atol=1e-9)
    # And the LSTM's training sequences are the same rows.
    t = np.array([1500], dtype=np.intp)
    np.testing.assert_allclose(
        F.sequences(full, window, t)[0],
        F.window_features(sp500.ohlcv[t[0] + 1 - need : t[0] + 1], window).astype(np.float32),
    )


def test_warm_up_rows_are_nan_and_the_rest_finite(sp500: MarketData) -> None:
    full = F.compute_features(sp500.ohlcv)
    assert np.isnan(full[: F.LOOKBACK - 1]).all()
    assert np.isfinite(full[F.LOOKBACK - 1 :]).all()


def test_labels_and_returns_look_one_bar_ahead() -> None:
    close = np.array([10.0, 11.0, 10.5, 10.5])
    ohlcv = np.column_stack([close, close, close, close, np.ones(4)])
    np.testing.assert_array_equal(F.labels(ohlcv)[:-1], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(F.next_returns(ohlcv)[:-1], [0.1, 10.5 / 11 - 1, 0.0])
    assert np.isnan(F.labels(ohlcv)[-1])


def test_window_features_refuses_short_input(sp500: MarketData) -> None:
    with pytest.raises(ValueError, match="needed"):
        F.window_features(sp500.ohlcv[:10], 5)
