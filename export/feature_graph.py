"""The features of :mod:`server.core.features` as an ONNX graph, for the server's one-run hot path.

The numpy module stays the one source of truth (training computes its features with it); this graph
is a second implementation held to it by a parity check at build time (:func:`check_feature_parity`)
and by tests on the whole built-in series and on random bars. Change a feature there and the build
refuses the graph until this module computes the same.

Written for onnxruntime's cost model, where a small graph costs per node (about a microsecond
each at batch 1) rather than per flop: every rolling mean is the difference of two entries of one
cumulative sum (all channels at once), the nine means come out of two gathers, and splits replace
runs of slices. Float64 throughout; parity with numpy is about 3e-14 on the S&P 500.

  input  "bars"      float64 (batch, bars_required(window), 5)   OHLCV, oldest first
  output "features"  float64 (batch, window, F)                  as ``window_features_batch``
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from server.core.bars import CLOSE, HIGH, LOW, OPEN, VOLUME
from server.core.features import (
    FEATURE_NAMES,
    LOOKBACK,
    RSI_PERIOD,
    bars_required,
    window_features_batch,
)

FloatArray = npt.NDArray[np.float64]

BARS = "bars"
FEATURES = "features"
#: The legacy (TorchScript) exporter at this opset is what was measured; serving_graph.py converts
#: it to the models' opset when it composes.
OPSET = 17
#: Largest |graph - numpy| accepted; the graph differs by rounding only (about 1e-14).
FEATURE_TOLERANCE = 1e-6

#: What this graph computes, in order; checked against the reference at build time.
GRAPH_FEATURES: tuple[str, ...] = (
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
LAGS = (1, 2, 5, 10, 20)
#: Series whose rolling means the features read, stacked as channels of one cumulative sum.
CHANNELS = ("close", "volume", "return", "return_squared", "gain", "loss")
#: (channel, length) of each rolling mean, in the order the features read them.
ROLLING = (
    ("return", 10),
    ("return", 20),
    ("return_squared", 10),
    ("return_squared", 20),
    ("gain", RSI_PERIOD),
    ("loss", RSI_PERIOD),
    ("close", 10),
    ("close", LOOKBACK),
    ("volume", 20),
)


class FeatureGraphError(ValueError):
    """The graph does not compute the reference features (names or values)."""


class WindowFeatures(nn.Module):
    """(N, bars_required(window), 5) bars -> (N, window, F) features, as the numpy reference."""

    def __init__(self, window: int) -> None:
        super().__init__()
        if GRAPH_FEATURES != FEATURE_NAMES:
            raise FeatureGraphError(
                "server/core/features.py computes other features than the graph: "
                f"{FEATURE_NAMES} != {GRAPH_FEATURES}; update export/feature_graph.py"
            )
        if tuple(range(5)) != (OPEN, HIGH, LOW, CLOSE, VOLUME):
            raise FeatureGraphError(
                "the graph splits bars in the order open, high, low, close, volume"
            )
        self.window = window
        self.need = bars_required(window)
        self.first = LOOKBACK - 1  # bar index of the first output row's last bar
        ends = torch.arange(self.first, self.need)
        self.register_buffer("lagged", ends[:, None] - torch.tensor(LAGS)[None, :])
        channel = torch.tensor([CHANNELS.index(name) for name, _ in ROLLING])
        length = torch.tensor([n for _, n in ROLLING])
        # Indices into the (bar, channel) columns of the flattened cumulative sums.
        self.register_buffer("end_at", ends[:, None] * len(CHANNELS) + channel[None, :])
        self.register_buffer(
            "start_at", (ends[:, None] + 1 - length[None, :]) * len(CHANNELS) + channel[None, :]
        )
        self.register_buffer("lengths", length.to(torch.float64))
        # n / (n - 1) of the two volatility lengths: sample variance from the two means.
        volatility_lengths = torch.tensor([n for _, n in ROLLING[:2]], dtype=torch.float64)
        self.register_buffer("bessel", volatility_lengths / (volatility_lengths - 1.0))

    def forward(self, bars: torch.Tensor) -> torch.Tensor:
        first, need, channels = self.first, self.need, len(CHANNELS)
        # Every tensor is (batch, bar, channel): splits and concatenations on the last axis, so
        # the graph needs no transposes (a batch-last layout made onnxruntime insert a dozen).
        _, _, _, close, volume = torch.split(bars, 1, dim=2)
        log_close = torch.log(close)
        # Bar-indexed returns: bar 0 has none (0), so every series below shares one bar index.
        returns = log_close - torch.cat([log_close[:, :1], log_close[:, :-1]], dim=1)
        gain = torch.clamp(returns, min=0.0)
        # Uncentred, so that a run of flat closes sums exact zeros (volatility exactly 0, as numpy).
        series = torch.cat([close, volume, returns, returns * returns, gain, gain - returns], dim=2)
        inclusive = torch.cumsum(series, dim=1)
        exclusive = inclusive - series
        flat_in = inclusive.reshape(-1, need * channels)
        flat_ex = exclusive.reshape(-1, need * channels)
        means = (
            flat_in[:, self.get_buffer("end_at")] - flat_ex[:, self.get_buffer("start_at")]
        ) / self.get_buffer("lengths")  # (batch, window, len(ROLLING))
        mean_return, mean_square, gains, losses, closes, volumes = torch.split(
            means, [2, 2, 1, 1, 2, 1], dim=2
        )
        variance = (mean_square - mean_return * mean_return) * self.get_buffer("bessel")
        volatility = torch.sqrt(torch.clamp(variance, min=0.0))
        total = gains + losses
        rsi = torch.where(total > 0, gains / total, 0.5) - 0.5
        open_, high, low, last_close, last_volume = torch.split(bars[:, first:], 1, dim=2)
        ma_ratio = last_close / closes - 1.0
        volume_change = torch.log1p(last_volume) - torch.log1p(volumes)
        lagged = log_close.reshape(-1, need)[:, self.get_buffer("lagged")]
        log_returns = log_close[:, first:] - lagged
        log_range = torch.log(high / low)
        spread = high - low
        location = torch.where(spread > 0, (last_close - low) / spread, 0.5) - 0.5
        gap = torch.log(open_) - log_close[:, first - 1 : -1]
        return torch.cat(
            [log_returns, volatility, rsi, ma_ratio, volume_change, log_range, location, gap],
            dim=2,
        )  # (batch, window, F)


def export_feature_graph(window: int) -> bytes:
    """The ONNX graph of :class:`WindowFeatures`, with a dynamic batch axis."""
    module = WindowFeatures(window).eval()
    # An example batch of 1 can pin the batch axis to 1 even when declared dynamic: use 2.
    example = torch.rand((2, bars_required(window), 5), dtype=torch.float64) + 1.0
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "features.onnx"
        torch.onnx.export(
            module,
            (example,),
            path,
            input_names=[BARS],
            output_names=[FEATURES],
            dynamic_axes={BARS: {0: "batch"}, FEATURES: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        return path.read_bytes()


def random_bars(
    rng: np.random.Generator, count: int, need: int, *, edge_cases: bool = True
) -> FloatArray:
    """``count`` valid bar windows (count, need, 5) of random walks at several scales and
    volatilities; with ``edge_cases`` some windows carry what the reference handles specially:
    zero spread (high == low), flat closes (zero gains and losses), zero volume."""
    scale = np.exp(rng.uniform(np.log(0.01), np.log(1e5), (count, 1)))
    sigma = np.exp(rng.uniform(np.log(1e-4), np.log(0.2), (count, 1)))
    close = scale * np.exp(np.cumsum(rng.normal(0.0, sigma, (count, need)), axis=1))
    open_ = close * np.exp(rng.normal(0.0, sigma / 2, (count, need)))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, sigma / 2, (count, need))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, sigma / 2, (count, need))))
    volume = np.floor(np.exp(rng.uniform(0.0, 25.0, (count, need))))
    bars = np.stack([open_, high, low, close, volume], axis=2)
    if edge_cases and count >= 8:
        k = count // 8
        # zero spread on every bar: open = high = low = close
        bars[:k, :, :4] = bars[:k, :, CLOSE : CLOSE + 1]
        # flat closes over the last 30 bars (zero gains and losses), and flat bars at that price
        flat = slice(k, 2 * k)
        bars[flat, -30:, :4] = bars[flat, -31:-30, CLOSE : CLOSE + 1]
        # zero volume
        bars[2 * k : 3 * k, :, VOLUME] = 0.0
        # entirely constant windows
        bars[3 * k : 3 * k + 1] = bars[3 * k : 3 * k + 1, :1]
    return np.ascontiguousarray(bars)


def check_feature_parity(
    run: Callable[[FloatArray], FloatArray], windows: FloatArray, window: int
) -> float:
    """Max |graph - numpy| over ``windows``; raises :class:`FeatureGraphError` above tolerance.
    ``run`` maps (N, need, 5) bars to (N, window, F) features."""
    got = np.asarray(run(windows), dtype=np.float64)
    expected = window_features_batch(windows, window)
    if got.shape != expected.shape:
        raise FeatureGraphError(f"feature graph gives shape {got.shape}, not {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not diff <= FEATURE_TOLERANCE:
        raise FeatureGraphError(
            f"feature graph differs from server/core/features.py by {diff:.2e} > "
            f"{FEATURE_TOLERANCE:.0e}"
        )
    return diff
