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
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from export.bars import CLOSE, BarError, all_valid, validate_ohlcv
from export.features import FEATURE_NAMES
from server.config import Config
from server.db import (
    BarRow,
    ModelVersionRow,
    OutcomeRow,
    PredictionRow,
    RequestRow,
    database,
    utcnow,
)
from server.errors import InvalidArgument, MinhosError, NotFound, Unavailable
from server.inference import ModelHolder, ModelSet
from server.persistence import BatchWriter
from server.registry import ModelNotFoundError

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


@dataclass(frozen=True)
class Prediction:
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


@dataclass(frozen=True)
class Outcome:
    prediction_id: str
    realized_return: float
    hit: bool
    position_return: float
    resolved_at: dt.datetime

    @property
    def actual_up(self) -> bool:
        return self.realized_return > 0


@dataclass(frozen=True)
class StreamStep:
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
    up = realized_return > 0
    return Outcome(
        prediction_id=prediction.id,
        realized_return=realized_return,
        # A flat bar (return exactly 0) counts as a miss for both directions: no edge was realised.
        hit=(up and prediction.direction > 0) or (realized_return < 0 and prediction.direction < 0),
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
        self.server_version = SERVER_VERSION

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
        return self._score(symbol, int(times[-1]), ohlcv, models, began)

    def _score(
        self, symbol: str, bar_time: int, window: FloatArray, models: ModelSet, began: float
    ) -> Prediction:
        return self._score_many([symbol], [bar_time], window[None, :, :], models, began)[0]

    def _score_many(
        self,
        symbols: list[str],
        bar_times: list[int],
        windows: FloatArray,
        models: ModelSet,
        began: float,
    ) -> list[Prediction]:
        """Scores a batch of windows (k, bars_required, 5) with one model set: one pass of the
        feature code and one run of each ONNX session, however many predictions."""
        scored = models.score(windows)
        fused = scored.fused
        latency = time.perf_counter() - began
        created = self.clock()
        versions = scored.versions
        predictions = []
        for i, (symbol, bar_time) in enumerate(zip(symbols, bar_times, strict=True)):
            prediction = Prediction(
                id=uuid.uuid4().hex,
                symbol=symbol,
                bar_time=to_datetime(bar_time),
                direction=int(fused.direction[i]),
                probability_up=float(fused.probability_up[i]),
                confidence=float(fused.confidence[i]),
                lstm_probability=float(scored.p_lstm[i]),
                ensemble_probability=float(scored.p_ensemble[i]),
                agreement=float(fused.agreement[i]),
                kelly_fraction=float(scored.kelly_fraction[i]),
                versions=versions,
                latency_s=latency,
                close=float(windows[i, -1, CLOSE]),
            )
            predictions.append(prediction)
            self._remember(prediction)
            if self.market_now is None or prediction.bar_time > self.market_now:
                self.market_now = prediction.bar_time
            self.writer.put(
                PredictionRow,
                {
                    "id": prediction.id,
                    "symbol": symbol,
                    "bar_time": prediction.bar_time,
                    "created_at": created,
                    "direction": prediction.direction,
                    "probability_up": prediction.probability_up,
                    "confidence": prediction.confidence,
                    "lstm_probability": prediction.lstm_probability,
                    "ensemble_probability": prediction.ensemble_probability,
                    "agreement": prediction.agreement,
                    "kelly_fraction": prediction.kelly_fraction,
                    "lstm_version": versions["lstm"],
                    "ensemble_version": versions["ensemble"],
                    "kelly_version": versions["kelly"],
                    "latency_ms": latency * 1e3,
                },
            )
        return predictions

    def _remember(self, prediction: Prediction) -> None:
        with self._lock:
            self._recent[prediction.id] = prediction
            if len(self._recent) > RECENT_PREDICTIONS:
                self._recent.popitem(last=False)

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
            if known is None:
                row = OutcomeRow.get_or_none(OutcomeRow.prediction == prediction_id)
                if row is not None:
                    known = outcome_from_row(row)
            if known is not None:
                return known, True
            outcome = outcome_of(prediction, realized_return, resolved_at or self.clock())
            self._store_outcome(outcome)
        return outcome, False

    def _store_outcome(self, outcome: Outcome) -> None:
        self._resolved[outcome.prediction_id] = outcome
        if len(self._resolved) > RECENT_PREDICTIONS:
            self._resolved.popitem(last=False)
        self.writer.put(
            OutcomeRow,
            {
                "prediction": outcome.prediction_id,
                "realized_return": outcome.realized_return,
                "hit": outcome.hit,
                "position_return": outcome.position_return,
                "resolved_at": outcome.resolved_at,
            },
        )

    # -- PredictStream -----------------------------------------------------------------------

    def stream(self) -> StreamSession:
        return StreamSession(self)

    # -- info and listings -------------------------------------------------------------------

    def serving_info(self) -> tuple[ModelSet, tuple[str, ...]]:
        models = self.models()
        return models, FEATURE_NAMES

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
        self, method: str, code: str, latency_s: float, market_time: dt.datetime | None
    ) -> None:
        self.writer.put(
            RequestRow,
            {
                "method": method,
                "code": code,
                "latency_ms": latency_s * 1e3,
                "created_at": self.clock(),
                "market_time": market_time,
            },
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
    """A symbol's recent bars in a numpy buffer (the window is a slice, not a rebuild)."""

    bars: FloatArray
    count: int = 0
    last_time: int = 0
    pending: Prediction | None = None

    def append(self, bar: FloatArray, keep: int) -> None:
        if self.count == len(self.bars):
            # Full: keep the newest ``keep`` bars at the front and go on.
            self.bars[:keep] = self.bars[self.count - keep : self.count]
            self.count = keep
        self.bars[self.count] = bar
        self.count += 1


@dataclass(frozen=True)
class StreamItem:
    symbol: str
    time_s: int
    bar: FloatArray
    #: Position of the request in the stream, for error messages.
    index: int


@dataclass
class StreamSession:
    """Per-stream state: a rolling buffer of bars per symbol and each symbol's open prediction.

    Requests that arrive together (a pipelining client) are scored as one batch: the feature code
    and each ONNX session run once for the batch, and outcomes are resolved in arrival order."""

    plane: DataPlane
    symbols: dict[str, _SymbolState] = field(default_factory=dict)
    #: Bars kept per symbol: enough for any window a hot-swapped model could ask for.
    capacity: int = 1024

    def _accept(self, item: StreamItem, bars_checked: bool) -> _SymbolState:
        self.plane.check_symbol(item.symbol, f"requests[{item.index}].symbol")
        where = f"requests[{item.index}].bar"
        if item.time_s <= 0:
            raise InvalidArgument("time is not set", field=f"{where}.time")
        if not bars_checked:
            try:
                validate_ohlcv(item.bar[None, :], row_labels=[where])
            except BarError as exc:
                raise InvalidArgument(
                    exc.text, field=f"{where}.{exc.column}" if exc.column else where
                ) from None
        state = self.symbols.get(item.symbol)
        if state is None:
            state = self.symbols[item.symbol] = _SymbolState(np.empty((self.capacity, 5)))
        if state.count and item.time_s <= state.last_time:
            raise InvalidArgument(
                f"bar time {to_datetime(item.time_s)} is not after the previous {item.symbol} "
                f"bar's {to_datetime(state.last_time)}",
                field=f"{where}.time",
            )
        return state

    def step_many(self, items: list[StreamItem]) -> tuple[list[StreamStep], MinhosError | None]:
        """Steps for the valid prefix of ``items``, and the error of the first invalid one."""
        began = time.perf_counter()
        plane = self.plane
        models = plane.models()
        need = models.bars_required
        error: MinhosError | None = None
        accepted: list[tuple[StreamItem, _SymbolState, int]] = []  # (item, state, bars missing)
        windows: list[FloatArray] = []
        # One vectorised check for the whole batch; bars are diagnosed one by one only if it fails.
        checked = bool(items) and all_valid(np.stack([item.bar for item in items]))
        for item in items:
            try:
                state = self._accept(item, checked)
            except MinhosError as exc:
                error = exc
                break
            state.append(item.bar, need)
            state.last_time = item.time_s
            plane.writer.put(
                BarRow,
                {
                    "symbol": item.symbol,
                    "time": to_datetime(item.time_s),
                    "open": item.bar[0],
                    "high": item.bar[1],
                    "low": item.bar[2],
                    "close": item.bar[3],
                    "volume": item.bar[4],
                },
            )
            missing = max(0, need - state.count)
            if not missing:
                windows.append(state.bars[state.count - need : state.count].copy())
            accepted.append((item, state, missing))
        ready = [(item.symbol, item.time_s) for item, _, missing in accepted if not missing]
        scored = (
            plane._score_many(
                [s for s, _ in ready], [t for _, t in ready], np.stack(windows), models, began
            )
            if windows
            else []
        )
        predictions = iter(scored)
        steps = []
        for item, state, missing in accepted:
            bar_time = to_datetime(item.time_s)
            resolved = None
            if state.pending is not None:
                previous = state.pending
                realized = float(item.bar[CLOSE]) / previous.close - 1.0
                with plane._lock:
                    if previous.id not in plane._resolved:
                        resolved = outcome_of(previous, realized, bar_time)
                        plane._store_outcome(resolved)
                state.pending = None
            prediction = None if missing else next(predictions)
            state.pending = prediction
            steps.append(StreamStep(item.symbol, bar_time, prediction, missing, resolved))
        return steps, error


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
