"""Which predictions are open and which are resolved, shared by RecordOutcome and the stream
sessions behind one lock, so that a prediction gets exactly one outcome whichever resolves it
first. Recent predictions stay in memory (outcomes resolve without a database read, even before
the batched writer stored them); older ones are read back through server.storage.queries."""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Sequence

from server.core.errors import NotFound
from server.core.records import Outcome, Prediction, outcome_of
from server.storage import queries

#: Recent predictions (and outcomes) kept in memory: a few MB.
RECENT_PREDICTIONS = 20_000


class OutcomeBook:
    def __init__(self, capacity: int = RECENT_PREDICTIONS) -> None:
        self.capacity = capacity
        self._recent: OrderedDict[str, Prediction] = OrderedDict()
        self._resolved: OrderedDict[str, Outcome] = OrderedDict()
        self._lock = threading.Lock()
        #: Latest bar time served: the market clock of monitoring during a replay.
        self.market_now: dt.datetime | None = None

    def remember(self, predictions: Sequence[Prediction]) -> None:
        with self._lock:
            for prediction in predictions:
                self._recent[prediction.id] = prediction
            while len(self._recent) > self.capacity:
                self._recent.popitem(last=False)
            latest = max(p.bar_time for p in predictions)
            if self.market_now is None or latest > self.market_now:
                self.market_now = latest

    def prediction(self, prediction_id: str) -> Prediction:
        with self._lock:
            found = self._recent.get(prediction_id)
        if found is None:
            found = queries.prediction(prediction_id)
        if found is None:
            raise NotFound(f"no prediction {prediction_id!r}", field="prediction_id")
        return found

    def resolve(
        self, prediction: Prediction, realized_return: float, resolved_at: dt.datetime
    ) -> tuple[Outcome, bool]:
        """The prediction's outcome, and True if it had one already (whatever return this call
        carries): idempotent."""
        with self._lock:
            known = self._resolved.get(prediction.id)
        if known is None:
            # Read outside the lock: every prediction served takes it.
            known = queries.outcome(prediction.id)
        with self._lock:
            known = self._resolved.get(prediction.id) or known
            if known is not None:
                return known, True
            outcome = outcome_of(prediction, realized_return, resolved_at)
            self._add([outcome])
        return outcome, False

    def resolve_open(
        self, items: Sequence[tuple[Prediction, float, dt.datetime]]
    ) -> list[Outcome | None]:
        """Outcomes for predictions a stream resolves from the next bar: None for one already
        resolved (by RecordOutcome) since it was made."""
        out: list[Outcome | None] = []
        with self._lock:
            for prediction, realized, at in items:
                out.append(
                    None
                    if prediction.id in self._resolved
                    else outcome_of(prediction, realized, at)
                )
            self._add([o for o in out if o is not None])
        return out

    def _add(self, outcomes: list[Outcome]) -> None:
        """Call with the lock held."""
        for outcome in outcomes:
            self._resolved[outcome.prediction_id] = outcome
        while len(self._resolved) > self.capacity:
            self._resolved.popitem(last=False)
