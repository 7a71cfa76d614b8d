"""Features: the one source of truth, used by training and by the server alike.

Every feature at bar ``t`` is a function of the ``LOOKBACK`` bars ending at ``t`` and nothing else,
computed by the same code over a sliding window whether the input is a 20-year series (training) or
the few bars of one request (serving). That makes the features causal by construction and keeps
training and serving bit-for-bit identical; tests check both properties.

numpy only: the serving process must not import pandas.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from server.core.bars import CLOSE, HIGH, LOW, OPEN, VOLUME

FloatArray = npt.NDArray[np.float64]

FEATURE_NAMES: tuple[str, ...] = (
    "log_return_1",
    "log_return_2",
    "log_return_5",
    "log_return_10",
    "log_return_20",
    "volatility_10",
    "volatility_20",
    "rsi_14",
    "ma_ratio_10",
    "ma_ratio_50",
    "volume_change_20",
    "log_range",
    "close_location",
    "gap",
)
#: Bars one feature vector needs (the 50-bar moving average is the longest reach).
LOOKBACK = 50
RSI_PERIOD = 14


def bars_required(window: int) -> int:
    """Raw bars needed to build ``window`` consecutive feature vectors."""
    return LOOKBACK + window - 1


def _mean(x: FloatArray) -> FloatArray:
    # add.reduce directly: np.mean's dispatch costs more than the arithmetic on these small rows.
    out: FloatArray = np.add.reduce(x, axis=1) / x.shape[1]
    return out


def _std(x: FloatArray) -> FloatArray:
    """Sample standard deviation (ddof 1) along axis 1."""
    centred = x - _mean(x)[:, None]
    out: FloatArray = np.sqrt(np.add.reduce(centred * centred, axis=1) / (x.shape[1] - 1))
    return out


def _window_features(w: FloatArray) -> FloatArray:
    """Features of each window in ``w`` (shape (m, LOOKBACK, 5), oldest bar first) -> (m, F)."""
    out = np.empty((len(w), len(FEATURE_NAMES)))
    close = w[:, :, CLOSE]
    last = close[:, -1]
    log_close = np.log(close)
    returns = log_close[:, 1:] - log_close[:, :-1]  # (m, LOOKBACK - 1)
    for j, lag in enumerate((1, 2, 5, 10, 20)):
        out[:, j] = log_close[:, -1] - log_close[:, -1 - lag]
    out[:, 5] = _std(returns[:, -10:])
    out[:, 6] = _std(returns[:, -20:])
    # Cutler's RSI (simple means): no recursion, so it depends on the window only.
    recent = returns[:, -RSI_PERIOD:]
    gains = _mean(np.maximum(recent, 0.0))
    losses = _mean(np.maximum(-recent, 0.0))
    total = gains + losses
    out[:, 7] = np.divide(gains, total, out=np.full_like(total, 0.5), where=total > 0) - 0.5
    out[:, 8] = last / _mean(close[:, -10:]) - 1.0
    out[:, 9] = last / _mean(close) - 1.0  # the window is exactly LOOKBACK = 50 bars
    volume = w[:, :, VOLUME]
    out[:, 10] = np.log1p(volume[:, -1]) - np.log1p(_mean(volume[:, -20:]))
    high, low = w[:, -1, HIGH], w[:, -1, LOW]
    out[:, 11] = np.log(high / low)
    spread = high - low
    out[:, 12] = (
        np.divide(last - low, spread, out=np.full_like(spread, 0.5), where=spread > 0) - 0.5
    )
    out[:, 13] = np.log(w[:, -1, OPEN]) - log_close[:, -2]
    return out


def compute_features(ohlcv: FloatArray) -> FloatArray:
    """Feature matrix of a bar series (n, 5) -> (n, F); rows before ``LOOKBACK - 1`` are NaN."""
    ohlcv = np.ascontiguousarray(ohlcv, dtype=np.float64)
    n = len(ohlcv)
    out = np.full((n, len(FEATURE_NAMES)), np.nan)
    if n >= LOOKBACK:
        windows = sliding_window_view(ohlcv, (LOOKBACK, ohlcv.shape[1]))[:, 0]
        out[LOOKBACK - 1 :] = _window_features(np.ascontiguousarray(windows))
    return out


def window_features(ohlcv: FloatArray, window: int) -> FloatArray:
    """The last ``window`` feature vectors of one request's bars, (window, F): the single-window
    form of :func:`window_features_batch`, which the server calls. It needs at least
    ``bars_required(window)`` bars (older ones are ignored)."""
    need = bars_required(window)
    if len(ohlcv) < need:
        raise ValueError(f"{len(ohlcv)} bars given; {need} needed for a window of {window}")
    batch = window_features_batch(np.asarray(ohlcv, dtype=np.float64)[None, -need:], window)
    out: FloatArray = batch[0]
    return out


def window_features_batch(windows: FloatArray, window: int) -> FloatArray:
    """Feature windows of a batch of bar windows (k, >= bars_required, 5) -> (k, window, F), by the
    same per-window code as :func:`compute_features` (a stream scores several bars at once)."""
    need = bars_required(window)
    k = len(windows)
    bars = np.ascontiguousarray(windows[:, -need:, :], dtype=np.float64)
    views = sliding_window_view(bars, (LOOKBACK, bars.shape[2]), axis=(1, 2))[:, :, 0]
    flat = np.ascontiguousarray(views.reshape(k * window, LOOKBACK, bars.shape[2]))
    out: FloatArray = _window_features(flat).reshape(k, window, len(FEATURE_NAMES))
    return out


def labels(ohlcv: FloatArray) -> FloatArray:
    """1.0 where the next bar's close is above this bar's, 0.0 where not, NaN on the last bar."""
    close = ohlcv[:, CLOSE]
    out = np.full(len(close), np.nan)
    out[:-1] = (close[1:] > close[:-1]).astype(np.float64)
    return out


def next_returns(ohlcv: FloatArray) -> FloatArray:
    """Simple return from this bar's close to the next one's; NaN on the last bar."""
    close = ohlcv[:, CLOSE]
    out = np.full(len(close), np.nan)
    out[:-1] = close[1:] / close[:-1] - 1.0
    return out


def sequences(
    features: FloatArray, window: int, index: npt.NDArray[np.intp]
) -> npt.NDArray[np.float32]:
    """LSTM inputs: for each bar index ``t`` the feature rows ``t - window + 1 .. t``; (m, window, F)."""
    view = sliding_window_view(features, (window, features.shape[1]))[:, 0]
    out: npt.NDArray[np.float32] = np.ascontiguousarray(view[index - window + 1], dtype=np.float32)
    return out
