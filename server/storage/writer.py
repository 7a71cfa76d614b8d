"""Batched writes off the request path.

Requests enqueue rows and return; one writer thread inserts them in a transaction every
``batch_interval_s`` or once ``batch_max_rows`` are waiting. A clean shutdown (:meth:`close`, called on
SIGTERM) drains the queue. A kill -9 loses what was queued since the last flush began: rows of at
most one interval (0.2 s by default) plus the time of one write.

A failed write is retried as a batch when the failure is the database's (locked, connection lost);
when it is a row's (a constraint or a value the database refuses), the batch is split until the rows
at fault are found, and those are set aside (logged with the reason and counted) so that the rest,
and everything queued after them, is still written.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from server.storage.schema import (
    TABLES,
    BarRow,
    BaseModel,
    OutcomeRow,
    PredictionRow,
    RequestRow,
    database,
)

log = logging.getLogger("minhos.persistence")

#: Rows kept for a retry while the database is unreachable; beyond this the oldest are dropped
#: (and counted) rather than growing without bound.
MAX_BACKLOG = 200_000
#: Rows set aside that stay inspectable in :attr:`BatchWriter.set_aside` (each is also logged).
MAX_SET_ASIDE = 1000
#: DB-API exception classes (matched by name along the class hierarchy, as peewee does, so that
#: sqlite3's and psycopg2's both match) that are the database's state, not the rows': retrying
#: the same rows later can succeed.
TRANSIENT_ERRORS = frozenset({"OperationalError", "InterfaceError", "InternalError"})


#: Columns of the rows producers queue, in the order of their tuples.
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

#: A queued write: rows of one table, as tuples in the order of ``columns``.
Item = tuple[type[BaseModel], tuple[str, ...], list[tuple[Any, ...]]]
#: Hands over request rows (in the order of :data:`REQUEST_COLUMNS`) counted since it was last
#: called; thread-safe. The writer calls it before each write and each flush.
RequestSource = Callable[[], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class SetAside:
    """A row the database refused for itself (not for its state): never retried."""

    table: str
    columns: tuple[str, ...]
    row: tuple[Any, ...]
    reason: str


def is_transient(exc: BaseException) -> bool:
    """True for a failure of the database (locked, unreachable, connection lost), after which the
    same rows may be written; False for one of the rows (constraint, type, value)."""
    return any(cls.__name__ in TRANSIENT_ERRORS for cls in type(exc).__mro__)


class BatchWriter:
    """Rows arrive as tuples of values the database driver binds as they are (str, int, float,
    bool, naive datetime, None): producers build them once, and the writer thread does no
    per-value conversion under the GIL that requests need."""

    def __init__(self, interval_s: float, max_rows: int, *, enabled: bool = True) -> None:
        self.interval_s = interval_s
        self.max_rows = max_rows
        self.enabled = enabled
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._backlog: list[Item] = []
        #: Request rows merged into another row of their batch (see _coalesced): done with as they
        #: are merged, since the row they were merged into carries them (written, dropped or set
        #: aside, it is counted once); a flush still waits for that row.
        self.merged = 0
        self._flushed = threading.Condition()
        self._written = 0
        self._enqueued = 0
        self._count_lock = threading.Lock()  # put() runs on many request threads
        self.dropped = 0
        #: Rows the database refused (constraint or value errors), set aside and not retried.
        self.rejected = 0
        #: The latest of them, with the reason (each is also logged).
        self.set_aside: deque[SetAside] = deque(maxlen=MAX_SET_ASIDE)
        self.last_error = ""
        self._request_sources: list[RequestSource] = []
        self._thread = threading.Thread(target=self._run, name="minhos-writer", daemon=True)
        self._closed = False
        if enabled:
            self._thread.start()

    def put(
        self, table: type[BaseModel], columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> None:
        if self.enabled and not self._closed and rows:
            self._enqueue(table, columns, rows)

    def _enqueue(
        self, table: type[BaseModel], columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> None:
        with self._count_lock:
            self._enqueued += len(rows)
        self._queue.put((table, columns, rows))
        if self.depth >= self.max_rows:
            self._wake.set()

    def pull_requests(self, source: RequestSource) -> None:
        """Request rows are pulled from ``source`` (the data plane's :class:`RequestTally`) rather
        than queued one per call: at a thousand Predicts a second, a row queued per call cost
        more than the count it carries."""
        self._request_sources.append(source)

    def _pull(self) -> None:
        for source in self._request_sources:
            try:
                rows = source()
            except Exception:  # a failing source must not stop the thread that writes the rest
                log.exception("could not take the request counts")
                continue
            if rows:
                self._enqueue(RequestRow, REQUEST_COLUMNS, rows)

    def put_predictions(self, rows: list[tuple[Any, ...]]) -> None:
        """Tuples in the order of :data:`PREDICTION_COLUMNS`."""
        self.put(PredictionRow, PREDICTION_COLUMNS, rows)

    def put_outcomes(self, rows: list[tuple[Any, ...]]) -> None:
        """Tuples in the order of :data:`OUTCOME_COLUMNS`."""
        self.put(OutcomeRow, OUTCOME_COLUMNS, rows)

    def put_bars(self, rows: list[tuple[Any, ...]]) -> None:
        """Tuples in the order of :data:`BAR_COLUMNS`."""
        self.put(BarRow, BAR_COLUMNS, rows)

    def put_requests(self, rows: list[tuple[Any, ...]]) -> None:
        """Tuples in the order of :data:`REQUEST_COLUMNS`."""
        self.put(RequestRow, REQUEST_COLUMNS, rows)

    @property
    def depth(self) -> int:
        """Rows waiting to be written."""
        return self._enqueued - self._done

    def flush(self, timeout: float = 10.0) -> bool:
        """Blocks until everything enqueued before the call is written (tests, RecordOutcome)."""
        if not self.enabled:
            return True
        self._pull()
        target = self._enqueued
        deadline = time.monotonic() + timeout
        self._wake.set()  # now, not at the end of the interval
        with self._flushed:
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._flushed.wait(left)
        return True

    @property
    def _done(self) -> int:
        """Rows the writer is finished with: written, dropped, set aside or merged into another."""
        return self._written + self.dropped + self.rejected + self.merged

    def close(self, timeout: float = 10.0) -> None:
        if not self.enabled or self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        # The thread sleeps through the interval and takes everything queued at once: woken per
        # row, it would take the GIL from a request for every prediction served. Wakes keep a
        # fixed cadence (not one interval after the last write ended), so a row waits at most
        # one interval before its write begins: a kill -9 loses one interval plus one write.
        due = time.monotonic() + self.interval_s
        while True:
            self._wake.wait(max(0.0, due - time.monotonic()))
            due = time.monotonic() + self.interval_s
            self._wake.clear()
            closing = self._closed
            self._pull()
            fresh: list[Item] = []
            while True:
                try:
                    fresh.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # Only fresh rows are merged: the backlog was merged when it was fresh.
            fresh, merged = _coalesced(fresh)
            with self._flushed:
                self.merged += merged
            batch = self._backlog + fresh
            self._backlog = []
            if batch:
                self._write(batch)
            if closing:
                break
        if self._backlog:  # closing while the database is failing: say what is lost
            lost = sum(len(rows) for _, _, rows in self._backlog)
            log.error("writer closed with rows unwritten", extra={"rows": lost})
            with self._flushed:
                self.dropped += lost
                self._flushed.notify_all()
        database.close()

    def _write(self, batch: list[Item]) -> None:
        groups = _grouped(batch)
        try:
            self._insert(groups)
        except Exception as exc:
            if is_transient(exc):
                self._keep_for_retry(groups, exc)
            else:
                self._write_apart(groups)
            return
        self.last_error = ""
        self._count_written(sum(len(rows) for _, _, rows in groups))

    def _insert(self, groups: Sequence[Item]) -> None:
        """One transaction; inserting a row already present is a no-op, so a retry of rows that
        were written before is harmless."""
        database.connect(reuse_if_open=True)
        with database.atomic():
            cursor = database.cursor()
            for table, columns, rows in groups:
                cursor.executemany(_insert_sql(table, columns, database.param), rows)

    def _write_apart(self, groups: Sequence[Item]) -> None:
        """A row was refused: writes the batch in halves, in order, until each refused row is
        alone, and sets those aside. A few refused rows among n cost about 2 log2(n) transactions
        each. If the database itself fails meanwhile, what is not yet written waits for a retry."""
        pending = list(groups)
        written = 0
        while pending:
            table, columns, rows = pending[0]
            try:
                self._insert(pending[:1])
            except Exception as exc:
                if is_transient(exc):
                    self._count_written(written)
                    self._keep_for_retry(pending, exc)
                    return
                if len(rows) == 1:
                    self._reject(table, columns, rows[0], exc)
                    pending.pop(0)
                else:
                    half = len(rows) // 2
                    pending[:1] = [(table, columns, rows[:half]), (table, columns, rows[half:])]
                continue
            written += len(rows)
            pending.pop(0)
        self._count_written(written)

    def _reject(
        self, table: type[BaseModel], columns: tuple[str, ...], row: tuple[Any, ...], exc: Exception
    ) -> None:
        name = table._meta.table_name
        reason = f"{type(exc).__name__}: {exc}"
        self.set_aside.append(SetAside(name, columns, row, reason))
        log.error(
            "row refused by the database; set aside, not retried",
            extra={"table": name, "row": dict(zip(columns, row, strict=False)), "error": reason},
        )
        with self._flushed:
            self.rejected += 1
            self._flushed.notify_all()

    def _keep_for_retry(self, groups: Sequence[Item], exc: Exception) -> None:
        """The database failed: keeps up to MAX_BACKLOG rows for the next attempt, the newest of
        each table, tables in schema order (predictions and outcomes before request rows)."""
        count = sum(len(rows) for _, _, rows in groups)
        self.last_error = str(exc)
        log.error("batched write failed; will retry", extra={"rows": count, "error": str(exc)})
        _reconnect_if_broken()
        keep: list[Item] = []
        kept = 0
        for table, columns, rows in groups:
            take = rows[max(0, len(rows) - (MAX_BACKLOG - kept)) :]
            if take:
                keep.append((table, columns, take))
                kept += len(take)
        with self._flushed:
            self.dropped += count - kept
            self._flushed.notify_all()
        self._backlog = keep
        time.sleep(min(1.0, self.interval_s * 5))

    def _count_written(self, count: int) -> None:
        with self._flushed:
            self._written += count
            self._flushed.notify_all()


class RequestTally:
    """Requests counted per (method, code, market time): how many (a stream's batch counts its
    messages), their total latency and their latest stamp, taken as one row per key in the order
    of :data:`REQUEST_COLUMNS` (``latency_ms`` the mean weighted by messages). Only sums of
    ``messages`` are read (error rates), and at a thousand Predicts a second, a row per call would
    cost the writer thread more than the predictions' own rows. The one merge rule of request
    rows: the data plane counts its calls in one, and the writer merges queued rows with one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the loop and the pool's threads both count
        #: key -> [total latency (ms), messages, latest stamp or None]
        self._counts: dict[tuple[Any, ...], list[Any]] = {}

    def add(
        self,
        method: str,
        code: str,
        latency_ms: float,
        market_time: Any,
        messages: int | None = 1,
        created: Any = None,
    ) -> None:
        n = messages or 1  # a NULL count (an older row) stands for one request
        key = (method, code, market_time)
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                self._counts[key] = [latency_ms * n, n, created]
                return
            counts[0] += latency_ms * n
            counts[1] += n
            if created is not None and (counts[2] is None or created > counts[2]):
                counts[2] = created

    def take(self, stamp: Callable[[], Any] | None = None) -> list[tuple[Any, ...]]:
        """The rows counted since the last take; a key counted without a stamp gets ``stamp()``."""
        with self._lock:
            counts, self._counts = self._counts, {}
        now = stamp() if stamp is not None and counts else None
        return [
            (method, code, total_ms / n, now if created is None else created, market_time, n)
            for (method, code, market_time), (total_ms, n, created) in counts.items()
        ]


def _coalesced(batch: Sequence[Item]) -> tuple[list[Item], int]:
    """The batch with its request rows merged by :class:`RequestTally` (``created_at`` the
    latest); and how many rows were merged away."""
    method, code, latency, created, market, messages = (
        REQUEST_COLUMNS.index(c)
        for c in ("method", "code", "latency_ms", "created_at", "market_time", "messages")
    )
    tally = RequestTally()
    others: list[Item] = []
    count = 0
    for item in batch:
        table, columns, rows = item
        if table is not RequestRow or columns != REQUEST_COLUMNS:
            others.append(item)
            continue
        for row in rows:
            count += 1
            tally.add(
                row[method], row[code], row[latency], row[market], row[messages], row[created]
            )
    merged = tally.take()
    if not merged:
        return list(batch), 0
    others.append((RequestRow, REQUEST_COLUMNS, merged))
    return others, count - len(merged)


def _grouped(batch: Sequence[Item]) -> list[Item]:
    """The batch's rows merged per table and column list, in the schema's table order (for foreign
    keys: predictions before their outcomes)."""
    groups: dict[tuple[type[BaseModel], tuple[str, ...]], list[tuple[Any, ...]]] = {}
    for table, columns, rows in batch:
        groups.setdefault((table, columns), []).extend(rows)
    ordered = sorted(groups, key=lambda key: _ORDER[key[0]])
    return [(table, columns, groups[table, columns]) for table, columns in ordered]


def _reconnect_if_broken() -> None:
    """Drops this thread's connection when the driver says it is unusable (a PostgreSQL server
    restarted): reusing it would fail every retry even after the database is back."""
    try:
        if database.is_closed() or database.is_connection_usable():
            return
    except Exception:  # asking a dead connection can fail in any way
        pass
    try:
        database.close()
    except Exception:  # closing a dead one can fail too: forget it instead
        database.dispose()


@functools.cache
def _insert_sql(table: type[BaseModel], columns: tuple[str, ...], param: str) -> str:
    """One parametrised INSERT for executemany (peewee's insert_many builds SQL in Python for every
    row, about 50 µs a row). ON CONFLICT DO NOTHING is understood by SQLite (>= 3.24) and
    PostgreSQL alike. ``param``: the driver's placeholder (``?`` SQLite, ``%s`` PostgreSQL)."""
    meta = table._meta
    names = ", ".join(f'"{meta.fields[c].column_name}"' for c in columns)
    marks = ", ".join([param] * len(columns))
    return f'INSERT INTO "{meta.table_name}" ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING'


_ORDER = {table: i for i, table in enumerate(TABLES)}
