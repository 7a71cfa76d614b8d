"""The transport-free core of serving: validate bars, score them with the current model set, record
predictions and outcomes. gRPC servicers convert protos to these calls and back
(server/transport); tests and the benchmark's in-process floor call it directly."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from server.core.bars import CLOSE
from server.core.config import Config
from server.core.errors import InvalidArgument, Unavailable
from server.core.records import ModelVersion, Outcome, Prediction, PredictionRecord
from server.serving.ids import new_ids
from server.serving.models import BarsRefused, ModelHolder, ModelSet, Scored
from server.serving.outcome_book import OutcomeBook
from server.serving.validation import (
    FloatArray,
    IntArray,
    SymbolPolicy,
    explain_window,
    window_of,
)
from server.storage import queries
from server.storage.registry import ModelNotFoundError
from server.storage.schema import database, utcnow
from server.storage.writer import BatchWriter, RequestTally

log = logging.getLogger("minhos.dataplane")

SERVER_VERSION = "minhos/0.1.0"
#: Most predictions one ListPredictions call returns.
MAX_LIST_LIMIT = 10_000
EPOCH = dt.datetime(1970, 1, 1)  # naive UTC, the database's convention

#: Where a call puts its bookkeeping (remembering predictions, queueing rows): given the work, runs
#: it now or later, in order. A transport that answers on an event loop runs it on the loop's next
#: turn, after the reply is handed to gRPC, so the caller does not wait for it.
Defer = Callable[[Callable[[], object]], object]


def run_now(work: Callable[[], object]) -> None:
    work()


def to_datetime(seconds: int | float) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=seconds)


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
        self.symbols = SymbolPolicy(config.server.symbols.split(","))
        self.book = OutcomeBook()
        self._requests = RequestTally()
        writer.pull_requests(lambda: self._requests.take(self.clock))

    @property
    def market_now(self) -> dt.datetime | None:
        """Latest bar time served: the market clock of monitoring during a replay."""
        return self.book.market_now

    def check_symbol(self, symbol: str, field_name: str = "symbol") -> None:
        self.symbols.check(symbol, field_name)

    def models(self) -> ModelSet:
        try:
            return self.holder.current
        except ModelNotFoundError as exc:
            raise Unavailable(str(exc)) from None

    # -- Predict -----------------------------------------------------------------------------

    def predict(
        self,
        symbol: str,
        times: IntArray,
        ohlcv: FloatArray,
        form: str = "bars",
        defer: Defer = run_now,
    ) -> Prediction:
        """``times``: bar times in epoch seconds; ``ohlcv``: (n, 5). Uses the last
        ``bars_required`` bars (earlier ones are ignored). ``form`` ("bars" or "columns") is how
        the request carried them, so that errors name the field the caller set. ``defer``: where
        the recording of the prediction goes (:data:`Defer`)."""
        began = time.perf_counter()
        self.check_symbol(symbol)
        models = self.models()
        need, graph_checks = models.bars_required, models.checks_bars
        base = len(ohlcv) - need
        times, ohlcv = window_of(
            times, ohlcv, need, models.window, form, check_bars=not graph_checks
        )
        try:
            one = models.score_one(ohlcv, check_bars=graph_checks)
        except BarsRefused:
            explain_window(times, ohlcv, base, form)
        versions, fused = models.versions, one.fused
        (prediction_id,) = new_ids(1)
        prediction = Prediction(
            id=prediction_id,
            symbol=symbol,
            bar_time=to_datetime(int(times[-1])),
            direction=fused.direction,
            probability_up=fused.probability_up,
            confidence=fused.confidence,
            lstm_probability=one.p_lstm,
            ensemble_probability=one.p_ensemble,
            agreement=fused.agreement,
            kelly_fraction=one.kelly_fraction,
            versions=versions,
            latency_s=time.perf_counter() - began,
            close=float(ohlcv[-1, CLOSE]),
        )
        created = self.clock()
        defer(lambda: self._keep([prediction], created, versions))
        return prediction

    def record_scored(
        self,
        symbols: Sequence[str],
        bar_times: Sequence[dt.datetime],
        closes: Sequence[float],
        scored: Scored,
        began: float,
        defer: Defer = run_now,
    ) -> list[Prediction]:
        """Predictions from a scored batch (one per symbol, bar time and close), remembered for
        outcome resolution and queued for storage (through ``defer``)."""
        latency = time.perf_counter() - began
        created = self.clock()
        versions = scored.versions
        fused = scored.fused
        columns = zip(
            new_ids(len(symbols)),
            symbols,
            bar_times,
            fused.direction.tolist(),
            fused.probability_up.tolist(),
            fused.confidence.tolist(),
            scored.p_lstm.tolist(),
            scored.p_ensemble.tolist(),
            fused.agreement.tolist(),
            scored.kelly_fraction.tolist(),
            closes,
            strict=True,
        )
        # Positional, in Prediction's field order: a stream builds one per message.
        predictions = [
            Prediction(i, s, t, d, p, c, pl, pe, a, k, versions, latency, close)
            for i, s, t, d, p, c, pl, pe, a, k, close in columns
        ]
        defer(lambda: self._keep(predictions, created, versions))
        return predictions

    def _keep(
        self, predictions: list[Prediction], created: dt.datetime, versions: dict[str, str]
    ) -> None:
        self.book.remember(predictions)
        lstm, ensemble, kelly = versions["lstm"], versions["ensemble"], versions["kelly"]
        self.writer.put_predictions(
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
                    p.latency_s * 1e3,
                )
                for p in predictions
            ]
        )

    # -- outcomes ----------------------------------------------------------------------------

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
        prediction = self.book.prediction(prediction_id)
        outcome, known = self.book.resolve(prediction, realized_return, resolved_at or self.clock())
        if not known:
            self.store_outcomes([outcome])
        return outcome, known

    def store_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        self.writer.put_outcomes(
            [
                (o.prediction_id, o.realized_return, o.hit, o.position_return, o.resolved_at)
                for o in outcomes
            ]
        )

    def store_bars(
        self, rows: list[tuple[str, dt.datetime, float, float, float, float, float]]
    ) -> None:
        """(symbol, time, open, high, low, close, volume) of bars seen, for retraining."""
        self.writer.put_bars(rows)

    # -- info and listings -------------------------------------------------------------------

    def deployed_versions(self, models: ModelSet) -> list[ModelVersion]:
        """The registry's records of the versions ``models`` was loaded from."""
        found = (queries.model_version(kind, v) for kind, v in models.versions.items())
        return [v for v in found if v is not None]

    def list_predictions(
        self, symbol: str, limit: int, resolved_only: bool
    ) -> list[PredictionRecord]:
        if symbol:
            self.check_symbol(symbol)
        limit = 100 if limit == 0 else limit
        if limit > MAX_LIST_LIMIT:
            raise InvalidArgument(
                f"{limit} is above the maximum of {MAX_LIST_LIMIT}", field="limit"
            )
        self.writer.flush(timeout=2.0)  # include what was just served
        return queries.prediction_records(symbol, limit, resolved_only)

    def record_request(
        self,
        method: str,
        code: str,
        latency_s: float,
        market_time: dt.datetime | None,
        messages: int = 1,
    ) -> None:
        """``messages``: how many requests the call stands for (a stream's batch is one call).
        Counted here per method, code and market time; the writer takes the counts as rows,
        stamped by :attr:`clock`, at its next write."""
        if self.writer.enabled:  # else nothing would ever take the counts
            self._requests.add(method, code, latency_s * 1e3, market_time, messages)

    def database_ok(self) -> bool:
        try:
            database.connect(reuse_if_open=True)
            database.execute_sql("SELECT 1")
            return True
        except Exception:
            log.warning("database check failed", exc_info=True)
            return False
