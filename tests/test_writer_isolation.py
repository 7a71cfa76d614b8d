"""The batched writer isolates rows the database refuses (issue 11, defect 1): a bad row is set
aside, logged and counted; the good rows of its batch and every later batch are still written. A
failure of the database itself (locked, stopped) keeps the rows and writes them once it is back."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients.bench import free_port
from server.storage.schema import (
    OutcomeRow,
    PredictionRow,
    RequestRow,
    close_database,
    database,
    open_database,
)
from server.storage.writer import BatchWriter, is_transient
from server.transport.telemetry import Telemetry
from tests.conftest import Trained
from tests.server_harness import running
from tests.test_postgres import BIN, _as_postgres, postgres_url  # noqa: F401 (fixture)

pytestmark = pytest.mark.serving

T0 = dt.datetime(2020, 1, 2, 15, 30)


def prediction(pid: str, symbol: str = "SPX") -> tuple[Any, ...]:
    return (pid, symbol, T0, T0, 1, 0.6, 0.2, 0.6, 0.6, 1.0, 0.1, "l1", "e1", "k1", 1.5)


def outcome(pid: str, realized: float | None = 0.01) -> tuple[Any, ...]:
    return (pid, realized, True, 0.001, T0)


def request_row() -> tuple[Any, ...]:
    return ("Predict", "OK", 1.0, T0, T0, 1)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "writer.db"
    open_database(f"sqlite:///{path}")
    yield path
    close_database()


def _queue_bad_batch(writer: BatchWriter) -> None:
    """Good predictions and outcomes with two rows no retry can ever write, in one batch."""
    writer.put_predictions([prediction("p1"), prediction("p2")])
    writer.put_requests([request_row()])
    writer.put_outcomes(
        [
            outcome("p1"),
            outcome("gone"),  # its prediction is not in the database: foreign key
            outcome("p2", realized=None),  # NOT NULL
        ]
    )


def test_a_refused_row_is_set_aside_and_the_rest_is_written(sqlite_db: Path) -> None:
    writer = BatchWriter(0.05, 512)
    telemetry = Telemetry()
    telemetry.watch_writer(writer)
    port = telemetry.serve("127.0.0.1", 0)
    try:
        _queue_bad_batch(writer)
        assert writer.flush(timeout=10), "the good rows of the batch were never written"
        # Later rows keep flowing, including one whose prediction comes in a later batch.
        for k in range(3, 6):
            writer.put_predictions([prediction(f"p{k}")])
            writer.put_outcomes([outcome(f"p{k}")])
            assert writer.flush(timeout=10)
        assert writer.rejected == 2 and writer.dropped == 0 and writer.depth == 0
        reasons = sorted(s.reason for s in writer.set_aside)
        assert "FOREIGN KEY" in reasons[0] and "NOT NULL" in reasons[1], reasons
        assert {s.row[0] for s in writer.set_aside} == {"gone", "p2"}
        assert all(s.table == "outcome_row" for s in writer.set_aside)
        assert PredictionRow.select().count() == 5
        assert RequestRow.select().count() == 1
        resolved = {r[0] for r in database.execute_sql("SELECT prediction_id FROM outcome_row")}
        assert resolved == {"p1", "p3", "p4", "p5"}
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"minhos_writer_rejected_rows_total 2.0" in page
        assert b"minhos_writer_dropped_rows_total 0.0" in page
    finally:
        telemetry.close()
        writer.close()


def test_refused_rows_among_many_cost_few_transactions(sqlite_db: Path) -> None:
    """Three refused rows among 2,000: found by splitting, everything else written in one flush."""
    writer = BatchWriter(0.05, 100_000)
    try:
        ids = [f"q{i}" for i in range(2000)]
        writer.put_predictions([prediction(i) for i in ids])
        bad = {17, 1000, 1999}
        writer.put_outcomes([outcome(f"x{i}" if i in bad else pid) for i, pid in enumerate(ids)])
        began = time.monotonic()
        assert writer.flush(timeout=20)
        assert time.monotonic() - began < 10
        assert writer.rejected == 3 and writer.depth == 0
        assert OutcomeRow.select().count() == 1997
    finally:
        writer.close()


def test_a_locked_database_delays_rows_without_losing_them(sqlite_db: Path) -> None:
    """Another process holds SQLite's write lock for 1.5 s: the writer waits for it (busy
    timeout), sets nothing aside, and writes the rows once the lock is released."""
    writer = BatchWriter(0.05, 512)
    try:
        writer.put_predictions([prediction("before")])
        assert writer.flush(timeout=10)
        holder = sqlite3.connect(sqlite_db, timeout=5, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            writer.put_predictions([prediction("during")])
            writer.put_outcomes([outcome("during")])
            assert not writer.flush(timeout=1.5)
            assert writer.depth == 2
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert writer.flush(timeout=15)
        assert writer.rejected == 0 and writer.dropped == 0
        assert OutcomeRow.get_by_id("during").realized_return == pytest.approx(0.01)
    finally:
        writer.close()


def test_error_classes() -> None:
    assert is_transient(sqlite3.OperationalError("database is locked"))
    assert not is_transient(sqlite3.IntegrityError("FOREIGN KEY constraint failed"))
    assert not is_transient(sqlite3.ProgrammingError("Error binding parameter 2"))
    assert not is_transient(TypeError("bad value"))


# -- PostgreSQL --------------------------------------------------------------------------------


def _pg_ctl(data: str, *args: str) -> None:
    done = subprocess.run(
        _as_postgres(str(BIN / "pg_ctl"), "-D", data, *args), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr + done.stdout


def test_postgres_refused_rows_and_a_restart(postgres_url: str) -> None:  # noqa: F811
    """On PostgreSQL: constraint and value errors are set aside; a stopped server is a transient
    failure (the rows wait in the backlog, the dead connection is replaced) and once it is back
    every row is written."""
    open_database(postgres_url)
    data = database.execute_sql("SHOW data_directory").fetchone()[0]
    port = postgres_url.rsplit(":", 1)[1].split("/")[0]
    writer = BatchWriter(0.05, 512)
    try:
        _queue_bad_batch(writer)
        writer.put_predictions([prediction("long", symbol="S" * 40)])  # varchar(32): DataError
        assert writer.flush(timeout=10)
        assert writer.rejected == 3, [s.reason for s in writer.set_aside]
        assert any("too long" in s.reason for s in writer.set_aside)

        _pg_ctl(data, "stop", "-m", "fast")
        writer.put_predictions([prediction("while-down")])
        writer.put_outcomes([outcome("while-down")])
        deadline = time.monotonic() + 10
        while not writer.last_error and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.last_error, "the writer did not notice the database was gone"
        assert writer.depth == 2 and writer.rejected == 3 and writer.dropped == 0
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        _pg_ctl(data, "start", "-w", "-l", f"{data}/restart.log", "-o", options)
        assert writer.flush(timeout=20), writer.last_error
        assert writer.dropped == 0 and writer.rejected == 3 and writer.depth == 0
    finally:
        writer.close()
    close_database()
    open_database(postgres_url)
    assert OutcomeRow.get_by_id("while-down").realized_return == pytest.approx(0.01)
    assert {r.id for r in PredictionRow.select()} == {"p1", "p2", "while-down"}


def test_the_server_exports_the_writer_counters(trained: Trained) -> None:
    port = free_port()
    with running(trained.config(), metrics_port=port):
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert b"minhos_writer_rejected_rows_total 0.0" in page
    assert b"minhos_writer_dropped_rows_total 0.0" in page


def test_request_rows_of_a_batch_merge_and_keep_their_counts(sqlite_db: Path) -> None:
    """One row per (method, code, market time) and batch, standing for its requests: the error
    rate reads the same sums, and a flush still waits for every row put."""
    from server.storage.queries import request_counts

    writer = BatchWriter(60.0, 100_000)  # nothing written until the flush
    later = T0 + dt.timedelta(days=1)
    for i in range(70):
        writer.put_requests([("Predict", "OK", float(i), T0, T0, 1)])
    writer.put_requests([("PredictStream", "OK", 4.0, T0, T0, 30)])  # a stream's batch
    for _ in range(20):
        writer.put_requests([("Predict", "INVALID_ARGUMENT", 2.0, T0, T0, 1)])
    writer.put_requests([("Predict", "OK", 1.0, T0, later, None)])  # an older row's NULL
    writer.put_predictions([prediction("p1")])
    assert writer.flush(timeout=10)
    rows = {
        (r.method, r.code, r.market_time): (r.messages, r.latency_ms) for r in RequestRow.select()
    }
    assert rows == {
        ("Predict", "OK", T0): (70, pytest.approx(34.5)),
        ("PredictStream", "OK", T0): (30, 4.0),
        ("Predict", "INVALID_ARGUMENT", T0): (20, 2.0),
        ("Predict", "OK", later): (1, 1.0),
    }
    assert PredictionRow.select().count() == 1
    assert request_counts(None, T0, ["INVALID_ARGUMENT"], inclusive=True) == (120, 20)
    # 92 request rows became 4: the 88 merged away are neither written nor dropped.
    assert writer.merged == 88 and writer.dropped == 0 and writer.depth == 0
    writer.close()


def test_request_counts_are_pulled_as_rows_by_a_flush_and_at_close(
    sqlite_db: Path, tmp_path: Path
) -> None:
    """The data plane counts requests in memory; the writer takes the counts as one row per
    (method, code, market time) when it writes, stamped by the plane's clock, and takes the last
    ones as it closes."""
    from server.core.config import load_config
    from server.serving.dataplane import DataPlane
    from server.serving.models import ModelHolder
    from server.storage.registry import ModelRepository

    config = load_config(env={})
    writer = BatchWriter(60.0, 100_000)  # nothing written but by the flush and the close
    stamp = T0 + dt.timedelta(hours=5)
    holder = ModelHolder(ModelRepository(str(tmp_path / "models")), config)
    plane = DataPlane(config, holder, writer, clock=lambda: stamp)
    for i in range(70):
        plane.record_request("Predict", "OK", i / 1e3, T0)
    plane.record_request("PredictStream", "OK", 0.004, T0, messages=30)
    for _ in range(20):
        plane.record_request("Predict", "INVALID_ARGUMENT", 0.002, None)
    assert writer.depth == 0  # counted, not queued
    assert writer.flush(timeout=10)
    rows = {(r.method, r.code, r.market_time): r for r in RequestRow.select()}
    assert {key: (r.messages, r.created_at) for key, r in rows.items()} == {
        ("Predict", "OK", T0): (70, stamp),
        ("PredictStream", "OK", T0): (30, stamp),
        ("Predict", "INVALID_ARGUMENT", None): (20, stamp),
    }
    mean_ms = [rows[key].latency_ms for key in sorted(rows, key=str)]
    assert mean_ms == pytest.approx([2.0, 34.5, 4.0])
    plane.record_request("Predict", "OK", 0.001, T0)
    writer.close()
    assert RequestRow.select().count() == 4


def test_a_failing_request_source_does_not_stop_the_writer(sqlite_db: Path) -> None:
    writer = BatchWriter(0.05, 100_000)

    def broken() -> list[tuple[Any, ...]]:
        raise RuntimeError("clock broke")

    writer.pull_requests(broken)
    writer.put_predictions([prediction("p1")])
    assert writer.flush(timeout=10)
    time.sleep(0.2)  # a few of the thread's own pulls
    writer.put_predictions([prediction("p2")])
    assert writer.flush(timeout=10)
    assert PredictionRow.select().count() == 2
    writer.close()
