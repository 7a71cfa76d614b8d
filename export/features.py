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

from export.bars import CLOSE, HIGH, LOW, OPEN, VOLUME

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


def _window_features(w: FloatArray) -> FloatArray:
    """Features of each window in ``w`` (shape (m, LOOKBACK, 5), oldest bar first) -> (m, F)."""
    close = w[:, :, CLOSE]
    last = close[:, -1]
    log_close = np.log(close)
    returns = np.diff(log_close, axis=1)  # (m, LOOKBACK - 1)
    cols: list[FloatArray] = []
    for lag in (1, 2, 5, 10, 20):
        cols.append(log_close[:, -1] - log_close[:, -1 - lag])
    for span in (10, 20):
        cols.append(np.std(returns[:, -span:], axis=1, ddof=1))
    # Cutler's RSI (simple means): no recursion, so it depends on the window only.
    recent = returns[:, -RSI_PERIOD:]
    gains = np.mean(np.where(recent > 0, recent, 0.0), axis=1)
    losses = np.mean(np.where(recent < 0, -recent, 0.0), axis=1)
    total = gains + losses
    cols.append(np.divide(gains, total, out=np.full_like(total, 0.5), where=total > 0) - 0.5)
    for span in (10, 50):
        cols.append(last / np.mean(close[:, -span:], axis=1) - 1.0)
    volume = w[:, :, VOLUME]
    cols.append(np.log1p(volume[:, -1]) - np.log1p(np.mean(volume[:, -20:], axis=1)))
    high, low = w[:, -1, HIGH], w[:, -1, LOW]
    cols.append(np.log(high / low))
    spread = high - low
    cols.append(
        np.divide(last - low, spread, out=np.full_like(spread, 0.5), where=spread > 0) - 0.5
    )
    cols.append(np.log(w[:, -1, OPEN]) - log_close[:, -2])
    return np.stack(cols, axis=1)


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
    """The last ``window`` feature vectors of a request's bars, (window, F). The server's entry
    point: it needs exactly ``bars_required(window)`` bars (more are ignored, oldest first)."""
    need = bars_required(window)
    if len(ohlcv) < need:
        raise ValueError(f"{len(ohlcv)} bars given; {need} needed for a window of {window}")
    return compute_features(ohlcv[-need:])[LOOKBACK - 1 :]


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
