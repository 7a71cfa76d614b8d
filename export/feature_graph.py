"""The features of :mod:`server.core.features` as an ONNX graph, for the server's one-run hot path.

The numpy module stays the one source of truth (training computes its features with it); this graph
is a second implementation held to it by a parity check at build time (:func:`check_feature_parity`)
and by tests on the whole built-in series and on random bars. Change a feature there and the build
refuses the graph until this module computes the same.

Written by hand for onnxruntime's cost model, where a small graph costs per node (a few
microseconds each at batch 1) rather than per flop: 31 nodes, where the same features exported
from torch took 55. Every feature is a function of a handful of *terms*, each the difference of two
entries of one flat vector that holds the running sums of nine bar series, the log prices and the
bars themselves: a rolling sum is the difference of two running sums, a log return the difference
of two log closes, a bar value its difference with an exact zero. Two gathers and one subtraction
make every term of every output row; one matrix product combines them into the linear quantities
(means, numerators, denominators); a few element-wise nodes finish. Every product column combines
at most two terms, so the graph rounds like the reference (no long sums where cancellation could
leave noise in place of the reference's exact zeros). Float64 throughout; parity with numpy is about
3e-14 on the S&P 500.

The graph also checks the bars it reads, by the rule of :func:`server.core.bars.all_valid` (the
same product with ``MARGINS``), so that the server need not check them in numpy first: the server
explains a refused window in numpy (which names the bad field) and never uses its scores.

  input  "bars"       float64 (batch, bars_required(window), 5)   OHLCV, oldest first
  output "features"   float64 (batch, window, F)                  as ``window_features_batch``
         "bar_check"  float64 (batch,)   >= 0 when every bar passes the rule and the window's sum
                      is finite; negative or NaN when not
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from server.core.bars import (
    CLOSE,
    HIGH,
    LOW,
    LOW_MARGIN,
    MARGINS,
    OPEN,
    VOLUME,
    all_valid,
    finite_sum,
)
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
BAR_CHECK = "bar_check"
#: serving_graph.py converts the graph to the models' opset when it composes.
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
VOLATILITY = (10, 20)
MA = (10, LOOKBACK)
VOLUME_MEAN = 20
#: Series summed over bars: the five bar columns, then what the rolling means read.
SERIES = ("open", "high", "low", "close", "volume", "return", "return_squared", "gain", "loss")
#: Columns of the product, in the order its split hands them to the element-wise nodes.
PARTS = ("linear", "mean_square", "mean_return", "numerator", "denominator", "volume", "log_volume")
#: Named outputs of the element-wise nodes, in the order they are concatenated.
LINEAR = (
    "log_return_1",
    "log_return_2",
    "log_return_5",
    "log_return_10",
    "log_return_20",
    "log_range",
    "gap",
)
RATIOS = ("rsi_14", "close_location", "ma_ratio_10", "ma_ratio_50")
CONCATENATED = (*LINEAR, "volatility_10", "volatility_20", *RATIOS, "volume_change_20")

#: The least positive float: any positive denominator or low is at least this.
_SMALLEST = float(np.nextafter(0.0, 1.0))

#: (end, start): a term's value is values[end] - values[start] in the flat vector.
Term = tuple[int, int]


class FeatureGraphError(ValueError):
    """The graph does not compute the reference features (names or values)."""


@dataclass(frozen=True)
class _Layout:
    """Where things are in the flat vector: the running sums first ((need + 1) bars of the series,
    bar 0 holding the empty sum, exactly 0), then per bar the five logs and the five bar values."""

    need: int

    @property
    def zero(self) -> int:
        return 0  # the empty sum of the first series

    def window_sum(self, series: str, bar: int, length: int) -> Term:
        """The sum of ``series`` over the ``length`` bars ending at ``bar``."""
        column, width = SERIES.index(series), len(SERIES)
        return ((bar + 1) * width + column, (bar + 1 - length) * width + column)

    def log(self, column: int, bar: int) -> int:
        return (self.need + 1) * len(SERIES) + bar * 10 + column

    def value(self, column: int, bar: int) -> int:
        return self.log(column, bar) + 5


def _columns(layout: _Layout, t: int) -> list[tuple[str, dict[Term, float]]]:
    """The product's columns for the output row whose last bar is ``t``: (part, {term: coefficient}).
    Logs hold log(price) and log(1 + volume) (one Log node for all five)."""
    zero, log, value = layout.zero, layout.log, layout.value
    columns: list[tuple[str, dict[Term, float]]] = []
    for lag in LAGS:
        columns.append(("linear", {(log(CLOSE, t), log(CLOSE, t - lag)): 1.0}))
    columns.append(("linear", {(log(HIGH, t), log(LOW, t)): 1.0}))
    columns.append(("linear", {(log(OPEN, t), log(CLOSE, t - 1)): 1.0}))
    for n in VOLATILITY:
        # Sample variance as n / (n - 1) * (E[r^2] - E[r]^2): the element-wise nodes take the
        # difference of these two columns, squaring the second.
        bessel = n / (n - 1.0)
        columns.append(("mean_square", {layout.window_sum("return_squared", t, n): bessel / n}))
    for n in VOLATILITY:
        columns.append(
            ("mean_return", {layout.window_sum("return", t, n): np.sqrt(n / (n - 1.0)) / n})
        )
    gains = layout.window_sum("gain", t, RSI_PERIOD)
    losses = layout.window_sum("loss", t, RSI_PERIOD)
    above_low = (value(CLOSE, t), value(LOW, t))
    below_high = (value(HIGH, t), value(CLOSE, t))
    close = (value(CLOSE, t), zero)
    closes = {n: layout.window_sum("close", t, n) for n in MA}
    # Each ratio minus its centre, as numerator / denominator, so that one division serves four
    # features and a zero denominator (no moves, no spread) comes with a zero numerator:
    # gains / (gains + losses) - 1/2 = (gains - losses) / (2 (gains + losses));
    # (close - low) / (high - low) - 1/2 = ((close - low) - (high - close)) / (2 (high - low));
    # close / mean - 1 = (close - mean) / mean.
    columns.append(("numerator", {gains: 1.0, losses: -1.0}))
    columns.append(("numerator", {above_low: 1.0, below_high: -1.0}))
    for n in MA:
        columns.append(("numerator", {close: 1.0, closes[n]: -1.0 / n}))
    columns.append(("denominator", {gains: 2.0, losses: 2.0}))
    columns.append(("denominator", {above_low: 2.0, below_high: 2.0}))
    for n in MA:
        columns.append(("denominator", {closes[n]: 1.0 / n}))
    columns.append(("volume", {layout.window_sum("volume", t, VOLUME_MEAN): 1.0 / VOLUME_MEAN}))
    columns.append(("log_volume", {(log(VOLUME, t), zero): 1.0}))
    return sorted(columns, key=lambda c: PARTS.index(c[0]))


@dataclass(frozen=True)
class _Plan:
    ends: npt.NDArray[np.int64]  # (window, terms)
    starts: npt.NDArray[np.int64]
    combine: FloatArray  # (terms, columns), the same for every row
    sizes: list[int]  # columns per part


def _plan(window: int) -> _Plan:
    layout = _Layout(bars_required(window))
    first = LOOKBACK - 1  # bar index of the first output row's last bar
    rows = [_columns(layout, t) for t in range(first, layout.need)]
    terms = [list(dict.fromkeys(term for _, coefs in row for term in coefs)) for row in rows]

    def matrix(row: int) -> FloatArray:
        out = np.zeros((len(terms[row]), len(rows[row])))
        for j, (_, coefs) in enumerate(rows[row]):
            for term, coefficient in coefs.items():
                out[terms[row].index(term), j] += coefficient
        return out

    combine = matrix(0)
    # Rows differ only in which entries they gather; one matrix must combine them all.
    if any(not np.array_equal(matrix(r), combine) for r in range(1, len(rows))):
        raise FeatureGraphError("the feature rows do not share one combination")
    if max(np.count_nonzero(combine, axis=0)) > 2:
        raise FeatureGraphError("a column combines more than two terms")
    return _Plan(
        ends=np.array([[end for end, _ in row] for row in terms], dtype=np.int64),
        starts=np.array([[start for _, start in row] for row in terms], dtype=np.int64),
        combine=combine,
        sizes=[sum(1 for part, _ in rows[0] if part == name) for name in PARTS],
    )


def export_feature_graph(window: int) -> bytes:
    """The ONNX graph of the features of ``window`` rows, with a dynamic batch axis."""
    if GRAPH_FEATURES != FEATURE_NAMES:
        raise FeatureGraphError(
            "server/core/features.py computes other features than the graph: "
            f"{FEATURE_NAMES} != {GRAPH_FEATURES}; update export/feature_graph.py"
        )
    if tuple(range(5)) != (OPEN, HIGH, LOW, CLOSE, VOLUME):
        raise FeatureGraphError("the graph reads bars in the order open, high, low, close, volume")
    plan = _plan(window)
    need = bars_required(window)

    def const(name: str, array: npt.ArrayLike) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(array), name)

    def int64(*values: int) -> npt.NDArray[np.int64]:
        return np.array(values, dtype=np.int64)

    constants = [
        const("volume_plus_one", [0.0, 0.0, 0.0, 0.0, 1.0]),
        # (batch, bar, column): shift one bar later; bar 0 repeats, so its return is 0.
        const("shift_pads", int64(0, 1, 0, 0, -1, 0)),
        const("close_column", int64(CLOSE)),
        const("empty_sum_pads", int64(0, 1, 0, 0, 0, 0)),
        const("zero", np.float64(0.0)),
        const("bar_axis", np.int64(1)),
        const("flat", int64(0, -1)),
        const("ends", plan.ends),
        const("starts", plan.starts),
        const("combine", plan.combine),
        const("part_sizes", int64(*plan.sizes)),
        # Any positive denominator is at least this, so Max leaves it alone; a zero one comes
        # with a zero numerator (see _columns) and gives 0.
        const("smallest", np.float64(_SMALLEST)),
        const("one", np.float64(1.0)),
        const("order", int64(*(CONCATENATED.index(name) for name in FEATURE_NAMES))),
        const("margins", MARGINS),
        # low - smallest >= 0 exactly when low > 0; the other margins must be >= 0.
        const("margin_floor", np.where(np.arange(MARGINS.shape[1]) == LOW_MARGIN, _SMALLEST, 0.0)),
        const("bar_and_column", int64(1, 2)),
    ]
    node = helper.make_node
    nodes = [
        node("Add", [BARS, "volume_plus_one"], ["bars_plus"]),
        node("Log", ["bars_plus"], ["logs"]),
        node("Pad", ["logs", "shift_pads"], ["previous_logs"], mode="edge"),
        node("Sub", ["logs", "previous_logs"], ["log_changes"]),
        node("Gather", ["log_changes", "close_column"], ["return"], axis=2),
        node("Relu", ["return"], ["gain"]),
        node("Sub", ["gain", "return"], ["loss"]),
        node("Mul", ["return", "return"], ["return_squared"]),
        node("Concat", [BARS, "return", "return_squared", "gain", "loss"], ["series"], axis=2),
        node("Pad", ["series", "empty_sum_pads", "zero"], ["series_after_empty"], mode="constant"),
        node("CumSum", ["series_after_empty", "bar_axis"], ["sums"]),
        node("Reshape", ["sums", "flat"], ["flat_sums"]),
        node("Concat", ["logs", BARS], ["logs_and_bars"], axis=2),
        node("Reshape", ["logs_and_bars", "flat"], ["flat_logs_and_bars"]),
        node("Concat", ["flat_sums", "flat_logs_and_bars"], ["values"], axis=1),
        node("Gather", ["values", "ends"], ["at_ends"], axis=1),
        node("Gather", ["values", "starts"], ["at_starts"], axis=1),
        node("Sub", ["at_ends", "at_starts"], ["terms"]),
        node("MatMul", ["terms", "combine"], ["columns"]),
        node("Split", ["columns", "part_sizes"], list(PARTS), axis=2),
        node("Mul", ["mean_return", "mean_return"], ["mean_return_squared"]),
        node("Sub", ["mean_square", "mean_return_squared"], ["variance"]),
        node("Relu", ["variance"], ["variance_floor"]),  # rounding can leave -1e-20
        node("Sqrt", ["variance_floor"], ["volatility"]),
        node("Max", ["denominator", "smallest"], ["safe_denominator"]),
        node("Div", ["numerator", "safe_denominator"], ["ratios"]),
        node("Add", ["volume", "one"], ["volume_plus"]),
        node("Log", ["volume_plus"], ["log_mean_volume"]),
        node("Sub", ["log_volume", "log_mean_volume"], ["volume_change"]),
        node("Concat", ["linear", "volatility", "ratios", "volume_change"], ["unordered"], axis=2),
        node("Gather", ["unordered", "order"], [FEATURES], axis=2),
        # The bar rule. A minimum may skip NaN, so a NaN or an infinity anywhere also reaches the
        # check through the window's sum, times zero.
        node("MatMul", [BARS, "margins"], ["bar_margins"]),
        node("Sub", ["bar_margins", "margin_floor"], ["margins_above_floor"]),
        node("ReduceMin", ["margins_above_floor"], ["least_margin"], axes=[1, 2], keepdims=0),
        node("ReduceSum", [BARS, "bar_and_column"], ["bar_sum"], keepdims=0),
        node("Mul", ["bar_sum", "zero"], ["non_finite"]),
        node("Add", ["least_margin", "non_finite"], [BAR_CHECK]),
    ]
    graph = helper.make_graph(
        nodes,
        "features",
        [helper.make_tensor_value_info(BARS, TensorProto.DOUBLE, ["batch", need, 5])],
        [
            helper.make_tensor_value_info(
                FEATURES, TensorProto.DOUBLE, ["batch", window, len(FEATURE_NAMES)]
            ),
            helper.make_tensor_value_info(BAR_CHECK, TensorProto.DOUBLE, ["batch"]),
        ],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


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


def planted_defects(rng: np.random.Generator, count: int, need: int) -> FloatArray:
    """``count`` valid windows, most with one or two defects planted: NaN, infinities, zero,
    negative, subnormal and huge values, or a plausible price on the wrong side of high or low."""
    windows = random_bars(rng, count, need, edge_cases=False)
    defects = [np.nan, np.inf, -np.inf, 0.0, -1.0, 5e-324, 1e308, 1e-300]
    for bars in windows:
        for _ in range(int(rng.integers(0, 3))):
            row, col = int(rng.integers(0, need)), int(rng.integers(0, 5))
            if rng.uniform() < 0.5:
                bars[row, col] = defects[int(rng.integers(0, len(defects)))]
            else:
                bars[row, col] = bars[row, int(rng.integers(0, 4))] * rng.uniform(0.98, 1.02)
    return windows


def check_bar_rule(run: Callable[[FloatArray], FloatArray], windows: FloatArray) -> int:
    """The graph's verdict (``run`` maps windows to their ``bar_check``) against the request
    rule on every window: :func:`server.core.bars.all_valid` and a finite sum (valid but huge
    values overflow the features' sums; server/serving/validation.py refuses them too). Returns
    how many windows the rule refuses; raises :class:`FeatureGraphError` on a disagreement."""
    with np.errstate(invalid="ignore"):
        passed = np.asarray(run(windows)) >= 0.0
    expected = np.array([all_valid(bars) and finite_sum(bars) for bars in windows])
    wrong = np.flatnonzero(passed != expected)
    if wrong.size:
        raise FeatureGraphError(
            f"the graph's bar check disagrees with the request rule on {wrong.size} of "
            f"{len(windows)} windows (first: {int(wrong[0])})"
        )
    return int((~expected).sum())
