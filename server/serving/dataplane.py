"""The transport-free core of serving: validate bars, score them with the current model set, record
predictions and outcomes. gRPC servicers convert protos to these calls and back (servicers.py);
tests and the benchmark's in-process floor call it directly.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from server.core.bars import CLOSE, BarError, valid_rows, validate_ohlcv
from server.core.config import Config
from server.core.errors import (
    InvalidArgument,
    MinhosError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from server.core.features import FEATURE_NAMES, LOOKBACK, window_features_batch
from server.core.scoring import is_hit, went_up
from server.serving.ids import new_ids
from server.serving.models import ModelHolder, ModelSet, Scored
from server.storage.registry import ModelNotFoundError
from server.storage.schema import (
    BarRow,
    ModelVersionRow,
    OutcomeRow,
    PredictionRow,
    RequestRow,
    database,
    utcnow,
)
from server.storage.writer import BatchWriter

log = logging.getLogger("minhos.dataplane")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SERVER_VERSION = "minhos/0.1.0"
MAX_SYMBOL_LENGTH = 32
#: The contract's symbol alphabet (inference.proto, PredictRequest.symbol).
SYMBOL_PATTERN = re.compile(r"[A-Za-z0-9.\-^_]+")
#: Recent predictions kept in memory (a few MB) so outcomes resolve without a database read, even
#: before the batched writer has stored the prediction; older ones are read back from the database.
RECENT_PREDICTIONS = 20_000


#: Columns of the rows queued for the batched writer, in the order of their tuples.
PREDICTION_COLUMNS = (
    "id",
    "symbol",
    "bar_time",
    "created_at",
    "direction",
    "probability_up",
    "confidence",
    "lstm_probability",
    "ensemble_probability",
    "agreement",
    "kelly_fraction",
    "lstm_version",
    "ensemble_version",
    "kelly_version",
    "latency_ms",
)
OUTCOME_COLUMNS = ("prediction", "realized_return", "hit", "position_return", "resolved_at")
BAR_COLUMNS = ("symbol", "time", "open", "high", "low", "close", "volume")
REQUEST_COLUMNS = ("method", "code", "latency_ms", "created_at", "market_time", "messages")


# Prediction, Outcome and StreamStep are NamedTuples: immutable like frozen dataclasses, and built
# in a quarter of the time (a stream builds one of each per bar).


class Prediction(NamedTuple):
    id: str
    symbol: str
    #: Market time of the last bar of the window (naive UTC).
    bar_time: dt.datetime
    #: +1 up, -1 down.
    direction: int
    probability_up: float
    confidence: float
    lstm_probability: float
    ensemble_probability: float
    agreement: float
    kelly_fraction: float
    versions: dict[str, str]
    latency_s: float
    #: Close of the last bar, the base of the realized return.
    close: float


class Outcome(NamedTuple):
    prediction_id: str
    realized_return: float
    hit: bool
    position_return: float
    resolved_at: dt.datetime

    @property
    def actual_up(self) -> bool:
        return bool(went_up(self.realized_return))


class StreamStep(NamedTuple):
    symbol: str
    bar_time: dt.datetime
    prediction: Prediction | None
    #: Bars still needed before the first prediction of the symbol (0 once predicting).
    bars_needed: int
    resolved: Outcome | None


@dataclass(frozen=True)
class PredictionRecord:
    prediction: Prediction
    outcome: Outcome | None


EPOCH = dt.datetime(1970, 1, 1)  # naive UTC, the database's convention


def to_datetime(seconds: int | float) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=seconds)


def field_of(form: str, row: int | None, column: str | None) -> str:
    """The request field a bar problem is in: ``bars[3].close`` or ``columns.close[3]``."""
    if row is None:
        return form
    if form == "columns":
        name = "time_seconds" if column in (None, "time") else column
        return f"columns.{name}[{row}]"
    return f"bars[{row}]" + (f".{column}" if column else "")


def outcome_of(prediction: Prediction, realized_return: float, resolved_at: dt.datetime) -> Outcome:
    return Outcome(
        prediction_id=prediction.id,
        realized_return=realized_return,
        hit=is_hit(prediction.direction, realized_return),
        position_return=prediction.kelly_fraction * prediction.direction * realized_return,
        resolved_at=resolved_at,
    )


class DataPlane:
    def __init__(
        self,
        config: Config,
        holder: ModelHolder,
        writer: BatchWriter,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.config = config
        self.holder = holder
        self.writer = writer
        self.clock = clock
        self.symbols = frozenset(s.strip() for s in config.server.symbols.split(",") if s.strip())
        self._recent: OrderedDict[str, Prediction] = OrderedDict()
        self._resolved: OrderedDict[str, Outcome] = OrderedDict()
        self._lock = threading.Lock()
        #: Latest bar time served: the market clock of monitoring during a replay.
        self.market_now: dt.datetime | None = None

    # -- validation ---------------------------------------------------------------------------

    def check_symbol(self, symbol: str, field_name: str = "symbol") -> None:
        if not symbol:
            raise InvalidArgument("must be set", field=field_name)
        if len(symbol) > MAX_SYMBOL_LENGTH:
            raise InvalidArgument(f"longer than {MAX_SYMBOL_LENGTH} characters", field=field_name)
        if not SYMBOL_PATTERN.fullmatch(symbol):
            raise InvalidArgument(
                f"{symbol!r} has characters other than letters, digits, '.', '-', '^', '_'",
                field=field_name,
            )
        if self.symbols and symbol not in self.symbols:
            raise NotFound(
                f"unknown symbol {symbol!r}; this server serves {sorted(self.symbols)}",
                field=field_name,
            )

    def models(self) -> ModelSet:
        try:
            return self.holder.current
        except ModelNotFoundError as exc:
            raise Unavailable(str(exc)) from None

    # -- Predict -----------------------------------------------------------------------------

    def predict(
        self, symbol: str, times: IntArray, ohlcv: FloatArray, form: str = "bars"
    ) -> Prediction:
        """``times``: bar times in epoch seconds; ``ohlcv``: (n, 5). Uses the last
        ``bars_required`` bars (earlier ones are ignored). ``form`` ("bars" or "columns") is how
        the request carried them, so that errors name the field the caller set."""
        began = time.perf_counter()
        self.check_symbol(symbol)
        models = self.models()
        need = models.bars_required
        if len(ohlcv) < need:
            raise InvalidArgument(
                f"{len(ohlcv)} bars given; the deployed models need {need} (window of "
                f"{models.window} feature vectors over {need - models.window + 1}-bar lookbacks)",
                field=form,
            )
        base = len(ohlcv) - need
        times, ohlcv = times[base:], ohlcv[base:]
        if np.any(times <= 0):
            row = int(np.flatnonzero(times <= 0)[0])
            raise InvalidArgument("time is not set", field=field_of(form, row + base, "time"))
        try:
            validate_ohlcv(ohlcv, times.astype("datetime64[s]"))
        except BarError as exc:
            at = None if exc.row is None else exc.row + base
            raise InvalidArgument(exc.text, field=field_of(form, at, exc.column)) from None
        (prediction,) = self._record_predictions(
            [symbol],
            [to_datetime(int(times[-1]))],
            [float(ohlcv[-1, CLOSE])],
            models.score(ohlcv[None]),
            began,
        )
        return prediction

    def _record_predictions(
        self,
        symbols: list[str],
        bar_times: list[dt.datetime],
        closes: list[float],
        scored: Scored,
        began: float,
    ) -> list[Prediction]:
        """Predictions from a scored batch (one per symbol, bar time and close),
        remembered for outcome resolution and queued for storage."""
        fused = scored.fused
        latency = time.perf_counter() - began
        created = self.clock()
        versions = scored.versions
        ids = new_ids(len(symbols))
        outputs = zip(
            fused.direction.tolist(),
            fused.probability_up.tolist(),
            fused.confidence.tolist(),
            scored.p_lstm.tolist(),
            scored.p_ensemble.tolist(),
            fused.agreement.tolist(),
            scored.kelly_fraction.tolist(),
            strict=True,
        )
        predictions = [
            Prediction(
                id=ids[i],
                symbol=symbol,
                bar_time=bar_time,
                direction=int(direction),
                probability_up=p_up,
                confidence=confidence,
                lstm_probability=p_lstm,
                ensemble_probability=p_ensemble,
                agreement=agreement,
                kelly_fraction=kelly,
                versions=versions,
                latency_s=latency,
                close=close,
            )
            for i, (
                (symbol, bar_time, close),
                (direction, p_up, confidence, p_lstm, p_ensemble, agreement, kelly),
            ) in enumerate(zip(zip(symbols, bar_times, closes, strict=True), outputs, strict=True))
        ]
        with self._lock:
            for prediction in predictions:
                self._recent[prediction.id] = prediction
            while len(self._recent) > RECENT_PREDICTIONS:
                self._recent.popitem(last=False)
            latest = max(predictions, key=lambda p: p.bar_time).bar_time
            if self.market_now is None or latest > self.market_now:
                self.market_now = latest
        lstm, ensemble, kelly = versions["lstm"], versions["ensemble"], versions["kelly"]
        self.writer.put(
            PredictionRow,
            PREDICTION_COLUMNS,
            [
                (
                    p.id,
                    p.symbol,
                    p.bar_time,
                    created,
                    p.direction,
                    p.probability_up,
                    p.confidence,
                    p.lstm_probability,
                    p.ensemble_probability,
                    p.agreement,
                    p.kelly_fraction,
                    lstm,
                    ensemble,
                    kelly,
                    latency * 1e3,
                )
                for p in predictions
            ],
        )
        return predictions

    # -- outcomes ----------------------------------------------------------------------------

    def _lookup(self, prediction_id: str) -> Prediction:
        with self._lock:
            found = self._recent.get(prediction_id)
        if found is not None:
            return found
        row = PredictionRow.get_or_none(PredictionRow.id == prediction_id)
        if row is None:
            raise NotFound(f"no prediction {prediction_id!r}", field="prediction_id")
        return prediction_from_row(row)

    def record_outcome(
        self, prediction_id: str, realized_return: float, resolved_at: dt.datetime | None
    ) -> tuple[Outcome, bool]:
        """Stores the outcome of a prediction; idempotent: a second call returns the first outcome
        and ``True`` (already recorded), whatever return it carries."""
        if not prediction_id:
            raise InvalidArgument("must be set", field="prediction_id")
        if not np.isfinite(realized_return) or realized_return <= -1.0:
            raise InvalidArgument(
                f"{realized_return} is not a simple return (finite, > -1)", field="realized_return"
            )
        prediction = self._lookup(prediction_id)
        with self._lock:
            known = self._resolved.get(prediction_id)
        stored = None
        if known is None:
            # Read outside the lock: every prediction served takes it.
            row = OutcomeRow.get_or_none(OutcomeRow.prediction == prediction_id)
            stored = outcome_from_row(row) if row is not None else None
        with self._lock:
            known = self._resolved.get(prediction_id) or stored
            if known is not None:
                return known, True
            outcome = outcome_of(prediction, realized_return, resolved_at or self.clock())
            self._store_outcomes([outcome])
        return outcome, False

    def _store_outcomes(self, outcomes: list[Outcome]) -> None:
        """Call with ``_lock`` held."""
        for outcome in outcomes:
            self._resolved[outcome.prediction_id] = outcome
        while len(self._resolved) > RECENT_PREDICTIONS:
            self._resolved.popitem(last=False)
        self.writer.put(
            OutcomeRow,
            OUTCOME_COLUMNS,
            [
                (o.prediction_id, o.realized_return, o.hit, o.position_return, o.resolved_at)
                for o in outcomes
            ],
        )

    # -- PredictStream -----------------------------------------------------------------------

    def stream(self) -> StreamSession:
        return StreamSession(self)

    # -- info and listings -------------------------------------------------------------------

    def deployed_rows(self, models: ModelSet) -> list[ModelVersionRow]:
        rows = []
        for kind, version in models.versions.items():
            row = ModelVersionRow.get_or_none(
                (ModelVersionRow.kind == kind) & (ModelVersionRow.version == version)
            )
            if row is not None:
                rows.append(row)
        return rows

    def list_predictions(
        self, symbol: str, limit: int, resolved_only: bool
    ) -> list[PredictionRecord]:
        if symbol:
            self.check_symbol(symbol)
        limit = 100 if limit == 0 else limit
        if limit > 10_000:
            raise InvalidArgument(f"{limit} is above the maximum of 10000", field="limit")
        self.writer.flush(timeout=2.0)  # include what was just served
        query = PredictionRow.select()
        if symbol:
            query = query.where(PredictionRow.symbol == symbol)
        if resolved_only:
            query = query.where(PredictionRow.id.in_(OutcomeRow.select(OutcomeRow.prediction)))
        rows = list(
            query.order_by(PredictionRow.bar_time.desc(), PredictionRow.created_at.desc()).limit(
                limit
            )
        )
        outcomes = {
            str(o.prediction_id): outcome_from_row(o)  # type: ignore[attr-defined]
            for o in OutcomeRow.select().where(OutcomeRow.prediction.in_([r.id for r in rows]))
        }
        records = [PredictionRecord(prediction_from_row(r), outcomes.get(r.id)) for r in rows]
        return records

    def record_request(
        self,
        method: str,
        code: str,
        latency_s: float,
        market_time: dt.datetime | None,
        messages: int = 1,
    ) -> None:
        """``messages``: how many requests the row stands for (a stream's batch is one row)."""
        self.writer.put(
            RequestRow,
            REQUEST_COLUMNS,
            [(method, code, latency_s * 1e3, self.clock(), market_time, messages)],
        )

    def database_ok(self) -> bool:
        try:
            database.connect(reuse_if_open=True)
            database.execute_sql("SELECT 1")
            return True
        except Exception:
            return False


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
            plane._record_predictions(
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
        plane.writer.put(
            BarRow,
            BAR_COLUMNS,
            [(symbol, t, *bars.ohlcv[i].tolist()) for i, (symbol, _, _, t) in enumerate(accepted)],
        )
        steps, outcomes = [], []
        with plane._lock:  # a RecordOutcome call may have resolved a pending prediction already
            for symbol, state, row, at in accepted:
                resolved = None
                previous = state.pending
                if previous is not None and previous.id not in plane._resolved:
                    realized = float(state.bars[row, CLOSE]) / previous.close - 1.0
                    resolved = outcome_of(previous, realized, at)
                    outcomes.append(resolved)
                missing = state.bars_needed(row, window)
                state.pending = None if missing else next(predictions)
                steps.append(StreamStep(symbol, at, state.pending, missing, resolved))
            if outcomes:
                plane._store_outcomes(outcomes)
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


def prediction_from_row(row: PredictionRow) -> Prediction:
    return Prediction(
        id=row.id,
        symbol=row.symbol,
        bar_time=row.bar_time,
        direction=int(row.direction),
        probability_up=row.probability_up,
        confidence=row.confidence,
        lstm_probability=row.lstm_probability,
        ensemble_probability=row.ensemble_probability,
        agreement=row.agreement,
        kelly_fraction=row.kelly_fraction,
        versions={
            "lstm": row.lstm_version,
            "ensemble": row.ensemble_version,
            "kelly": row.kelly_version,
        },
        latency_s=row.latency_ms / 1e3,
        close=float("nan"),
    )


def outcome_from_row(row: OutcomeRow) -> Outcome:
    return Outcome(
        prediction_id=str(row.prediction_id),  # type: ignore[attr-defined]  # peewee's FK column
        realized_return=row.realized_return,
        hit=bool(row.hit),
        position_return=row.position_return,
        resolved_at=row.resolved_at,
    )
