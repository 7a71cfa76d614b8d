"""Batched writes off the request path.

Requests enqueue rows and return; one writer thread inserts them in a transaction every
``batch_interval_s`` or once ``batch_max_rows`` are waiting. A clean shutdown (:meth:`close`, called on
SIGTERM) drains the queue. A kill -9 loses what was queued since the last flush: at most one
interval's worth of rows (0.2 s by default).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from typing import Any

from server.db import BaseModel, database

log = logging.getLogger("minhos.persistence")

#: Rows kept for a retry while the database is unreachable; beyond this the oldest are dropped
#: (and counted) rather than growing without bound.
MAX_BACKLOG = 200_000


class BatchWriter:
    def __init__(self, interval_s: float, max_rows: int, *, enabled: bool = True) -> None:
        self.interval_s = interval_s
        self.max_rows = max_rows
        self.enabled = enabled
        self._queue: queue.SimpleQueue[tuple[type[BaseModel], dict[str, Any]] | None] = (
            queue.SimpleQueue()
        )
        self._backlog: list[tuple[type[BaseModel], dict[str, Any]]] = []
        self._flushed = threading.Condition()
        self._written = 0
        self._enqueued = 0
        self.dropped = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="minhos-writer", daemon=True)
        self._closed = False
        if enabled:
            self._thread.start()

    def put(self, table: type[BaseModel], row: dict[str, Any]) -> None:
        if self.enabled and not self._closed:
            self._enqueued += 1
            self._queue.put((table, row))

    @property
    def depth(self) -> int:
        return self._queue.qsize() + len(self._backlog)

    def flush(self, timeout: float = 10.0) -> bool:
        """Blocks until everything enqueued before the call is written (tests, RecordOutcome)."""
        if not self.enabled:
            return True
        target = self._enqueued
        deadline = time.monotonic() + timeout
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
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = self._backlog
            self._backlog = []
            deadline = time.monotonic() + self.interval_s
            while len(batch) < self.max_rows:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            if stop:  # drain whatever is left
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        batch.append(item)
            if batch:
                self._write(batch)
        database.close()

    def _write(self, batch: list[tuple[type[BaseModel], dict[str, Any]]]) -> None:
        groups: dict[tuple[type[BaseModel], tuple[str, ...]], list[dict[str, Any]]] = defaultdict(
            list
        )
        for table, row in batch:
            groups[table, tuple(row)].append(row)
        try:
            database.connect(reuse_if_open=True)
            with database.atomic():
                cursor = database.cursor()
                # Insertion order matters for foreign keys: predictions before their outcomes.
                for table, columns in sorted(groups, key=lambda key: _ORDER[key[0]]):
                    sql, fields = _insert_sql(table, columns)
                    cursor.executemany(
                        sql,
                        [
                            tuple(f.db_value(row[c]) for f, c in zip(fields, columns, strict=True))
                            for row in groups[table, columns]
                        ],
                    )
        except Exception as exc:
            self.last_error = str(exc)
            log.error(
                "batched write failed; will retry", extra={"rows": len(batch), "error": str(exc)}
            )
            keep = batch[-MAX_BACKLOG:]
            self.dropped += len(batch) - len(keep)
            self._backlog = keep
            time.sleep(min(1.0, self.interval_s * 5))
            return
        self.last_error = ""
        with self._flushed:
            self._written += len(batch)
            self._flushed.notify_all()


def _insert_sql(table: type[BaseModel], columns: tuple[str, ...]) -> tuple[str, list[Any]]:
    """One parametrised INSERT for executemany. peewee's insert_many builds SQL in Python for every
    row (about 50 µs a row, under the GIL that requests need); this is built once per batch and
    group. ON CONFLICT DO NOTHING is understood by SQLite (>= 3.24) and PostgreSQL alike."""
    meta = table._meta
    fields = [meta.fields[c] for c in columns]
    names = ", ".join(f'"{f.column_name}"' for f in fields)
    marks = ", ".join([database.param] * len(fields))
    return (
        f'INSERT INTO "{meta.table_name}" ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING',
        fields,
    )


def _table_order() -> dict[type[BaseModel], int]:
    from server.db import TABLES

    return {table: i for i, table in enumerate(TABLES)}


_ORDER = _table_order()
