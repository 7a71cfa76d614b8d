"""Batched writes off the request path.

Requests enqueue rows and return; one writer thread inserts them in a transaction every
``batch_interval_s`` or once ``batch_max_rows`` are waiting. A clean shutdown (:meth:`close`, called on
SIGTERM) drains the queue. A kill -9 loses what was queued since the last flush: at most one
interval's worth of rows (0.2 s by default).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import defaultdict
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
        self._flushed = threading.Condition()
        self._written = 0
        self._enqueued = 0
        self._count_lock = threading.Lock()  # put() runs on many request threads
        self.dropped = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="minhos-writer", daemon=True)
        self._closed = False
        if enabled:
            self._thread.start()

    def put(
        self, table: type[BaseModel], columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> None:
        if self.enabled and not self._closed and rows:
            with self._count_lock:
                self._enqueued += len(rows)
            self._queue.put((table, columns, rows))
            if self.depth >= self.max_rows:
                self._wake.set()

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
        return self._enqueued - self._written - self.dropped

    def flush(self, timeout: float = 10.0) -> bool:
        """Blocks until everything enqueued before the call is written (tests, RecordOutcome)."""
        if not self.enabled:
            return True
        target = self._enqueued
        deadline = time.monotonic() + timeout
        self._wake.set()  # now, not at the end of the interval
        with self._flushed:
            while self._written + self.dropped < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._flushed.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        if not self.enabled or self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        # The thread sleeps through the interval and takes everything queued at once: woken per
        # row, it would take the GIL from a request for every prediction served.
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            closing = self._closed
            batch = self._backlog
            self._backlog = []
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            if closing:
                break
        database.close()

    def _write(self, batch: list[Item]) -> None:
        groups: dict[tuple[type[BaseModel], tuple[str, ...]], list[tuple[Any, ...]]] = defaultdict(
            list
        )
        for table, columns, rows in batch:
            groups[table, columns].extend(rows)
        count = sum(len(rows) for rows in groups.values())
        try:
            database.connect(reuse_if_open=True)
            with database.atomic():
                cursor = database.cursor()
                # Insertion order matters for foreign keys: predictions before their outcomes.
                for table, columns in sorted(groups, key=lambda key: _ORDER[key[0]]):
                    cursor.executemany(
                        _insert_sql(table, columns, database.param), groups[table, columns]
                    )
        except Exception as exc:
            self.last_error = str(exc)
            log.error("batched write failed; will retry", extra={"rows": count, "error": str(exc)})
            keep: list[Item] = []
            kept = 0
            for item in reversed(batch):  # the newest rows, up to MAX_BACKLOG
                if kept + len(item[2]) > MAX_BACKLOG:
                    break
                keep.append(item)
                kept += len(item[2])
            self.dropped += count - kept
            self._backlog = keep[::-1]
            time.sleep(min(1.0, self.interval_s * 5))
            return
        self.last_error = ""
        with self._flushed:
            self._written += count
            self._flushed.notify_all()


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
