"""A PredictStream session: each symbol's recent bars and feature vectors, and its open prediction,
resolved by the symbol's next bar. Requests that arrive together are scored as one batch."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from server.core.bars import CLOSE, BarError, valid_rows, validate_ohlcv
from server.core.errors import InvalidArgument, MinhosError, ResourceExhausted
from server.core.features import FEATURE_NAMES, LOOKBACK, window_features_batch
from server.core.records import Outcome, Prediction
from server.serving.dataplane import DataPlane, to_datetime
from server.serving.validation import FloatArray, IntArray


class StreamStep(NamedTuple):
    symbol: str
    bar_time: dt.datetime
    prediction: Prediction | None
    #: Bars still needed before the first prediction of the symbol (0 once predicting).
    bars_needed: int
    resolved: Outcome | None


@dataclass
class _SymbolState:
    """A symbol's recent bars and their feature vectors, row for row, in numpy buffers: a new bar
    costs one feature vector, and a window is a slice."""

    bars: FloatArray
    features: FloatArray
    count: int = 0
    #: First row with a feature vector (a bar with a full lookback behind it).
    features_from: int = LOOKBACK - 1
    last_time: int = 0
    pending: Prediction | None = None

    @classmethod
    def empty(cls, capacity: int) -> _SymbolState:
        return cls(np.empty((capacity, 5)), np.empty((capacity, len(FEATURE_NAMES))))

    def bars_needed(self, row: int, window: int) -> int:
        """Bars still to come before the bar at ``row`` ends a full window of feature vectors."""
        return max(0, self.features_from + window - row - 1)

    def reserve(self, rows: int, keep: int) -> None:
        """Room for ``rows`` more bars; when full, only the newest ``keep`` stay (moved to the
        front, so rows appended afterwards keep their index until the next call)."""
        if self.count + rows <= len(self.bars):
            return
        keep = min(keep, self.count)
        shift = self.count - keep
        size = max(len(self.bars), keep + rows)
        bars, features = np.empty((size, 5)), np.empty((size, len(FEATURE_NAMES)))
        bars[:keep] = self.bars[shift : self.count]
        features[:keep] = self.features[shift : self.count]
        self.bars, self.features = bars, features
        self.count = keep
        self.features_from = max(0, self.features_from - shift)


@dataclass(frozen=True)
class StreamBars:
    """Stream requests that arrived together, as arrays."""

    symbols: list[str]
    #: Bar times, epoch seconds, (k,).
    times: IntArray
    #: (k, 5) OHLCV.
    ohlcv: FloatArray
    #: Position of the first request in the stream, for error messages.
    first_index: int


@dataclass
class StreamSession:
    """Per-stream state: each symbol's recent bars, their features and its open prediction.

    Requests that arrive together (a pipelining client) are scored as one batch: one pass of the
    feature code (one vector per new bar; the rest of each window was computed with earlier bars,
    by the same function over the same bars) and one run of each ONNX session, and outcomes are
    resolved in arrival order."""

    plane: DataPlane
    symbols: dict[str, _SymbolState] = field(default_factory=dict)
    #: Rows of a symbol's buffers (bars and features, about 40 KB): compacted to the newest
    #: ``bars_required`` when full, grown if a batch needs more.
    capacity: int = 256

    def _state(self, symbol: str, where: str) -> _SymbolState:
        state = self.symbols.get(symbol)
        if state is None:
            self.plane.check_symbol(symbol, f"{where}.symbol")
            limit = self.plane.config.server.stream_max_symbols
            if len(self.symbols) >= limit:
                raise ResourceExhausted(
                    f"{symbol!r} would be symbol {limit + 1} of this stream; at most {limit} "
                    "per stream (server.stream_max_symbols)",
                    field=f"{where}.symbol",
                )
            state = self.symbols[symbol] = _SymbolState.empty(self.capacity)
        return state

    @staticmethod
    def _first_bad_bar(bars: StreamBars) -> tuple[int, MinhosError] | None:
        """The first request whose bar is malformed, and why: one vectorised check for the batch,
        and a diagnosis of that one bar only if it fails."""
        ok = valid_rows(bars.ohlcv) & (bars.times > 0)
        if ok.all():
            return None
        row = int(np.argmin(ok))
        where = f"requests[{bars.first_index + row}].bar"
        if bars.times[row] <= 0:
            return row, InvalidArgument("time is not set", field=f"{where}.time")
        try:
            validate_ohlcv(bars.ohlcv[row : row + 1])
        except BarError as exc:
            name = f"{where}.{exc.column}" if exc.column else where
            return row, InvalidArgument(exc.text, field=name)
        raise AssertionError("valid_rows and validate_ohlcv disagree")  # pragma: no cover

    def step_many(self, bars: StreamBars) -> tuple[list[StreamStep], MinhosError | None]:
        """Steps for the valid prefix of ``bars``, and the error of the first invalid one."""
        began = time.perf_counter()
        plane = self.plane
        models = plane.models()
        window, keep = models.window, models.bars_required
        bad = self._first_bad_bar(bars)
        stop, error = bad if bad is not None else (len(bars.symbols), None)
        times = bars.times.tolist()
        counts = Counter(bars.symbols[:stop])
        reserved: set[str] = set()
        # (symbol, state, row in the state's buffers, bar time), in arrival order
        accepted: list[tuple[str, _SymbolState, int, dt.datetime]] = []
        for i in range(stop):
            symbol, bar_time = bars.symbols[i], times[i]
            where = f"requests[{bars.first_index + i}].bar"
            try:
                state = self._state(symbol, f"requests[{bars.first_index + i}]")
                if state.count and bar_time <= state.last_time:
                    raise InvalidArgument(
                        f"bar time {to_datetime(bar_time)} is not after the previous {symbol} "
                        f"bar's {to_datetime(state.last_time)}",
                        field=f"{where}.time",
                    )
            except MinhosError as exc:
                error = exc
                break
            if symbol not in reserved:
                state.reserve(counts[symbol], keep)
                reserved.add(symbol)
            state.bars[state.count] = bars.ohlcv[i]
            state.count += 1
            state.last_time = bar_time
            accepted.append((symbol, state, state.count - 1, to_datetime(bar_time)))
        self._add_features(accepted)
        ready = [a for a in accepted if not a[1].bars_needed(a[2], window)]
        predictions = iter(
            plane.record_scored(
                [symbol for symbol, _, _, _ in ready],
                [t for _, _, _, t in ready],
                [float(state.bars[row, CLOSE]) for _, state, row, _ in ready],
                models.score_features(
                    np.stack(
                        [state.features[row + 1 - window : row + 1] for _, state, row, _ in ready]
                    )
                ),
                began,
            )
            if ready
            else []
        )
        plane.store_bars(
            [(symbol, t, *bars.ohlcv[i].tolist()) for i, (symbol, _, _, t) in enumerate(accepted)]
        )
        # Each accepted bar resolves its symbol's open prediction (unless RecordOutcome did), then
        # opens the next one.
        opened: list[tuple[int, Prediction, float, dt.datetime]] = []
        steps: list[StreamStep] = []
        for symbol, state, row, at in accepted:
            previous = state.pending
            if previous is not None:
                realized = float(state.bars[row, CLOSE]) / previous.close - 1.0
                opened.append((len(steps), previous, realized, at))
            missing = state.bars_needed(row, window)
            state.pending = None if missing else next(predictions)
            steps.append(StreamStep(symbol, at, state.pending, missing, None))
        if opened:
            outcomes = plane.book.resolve_open([(p, r, at) for _, p, r, at in opened])
            for (index, _, _, _), outcome in zip(opened, outcomes, strict=True):
                if outcome is not None:
                    steps[index] = steps[index]._replace(resolved=outcome)
            plane.store_outcomes([o for o in outcomes if o is not None])
        return steps, error

    @staticmethod
    def _add_features(accepted: list[tuple[str, _SymbolState, int, dt.datetime]]) -> None:
        """The feature vector of each new bar that has a full lookback, in one batch."""
        new = [(state, row) for _, state, row, _ in accepted if row >= LOOKBACK - 1]
        if not new:
            return
        lookbacks = np.stack([state.bars[row + 1 - LOOKBACK : row + 1] for state, row in new])
        vectors = window_features_batch(lookbacks, 1)[:, 0, :]
        for (state, row), vector in zip(new, vectors, strict=True):
            state.features[row] = vector
