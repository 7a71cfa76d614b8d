"""The server's event loop (server/transport/host.py): Predict runs on the loop, RPCs that may
block run in the ``workers`` pool, so a pool full of slow calls never stalls Predict."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
import time

import grpc
import pytest

from clients.client import MinhosClient
from export.data import MarketData
from tests.conftest import Trained
from tests.server_harness import live_index, running, window

pytestmark = pytest.mark.serving

WORKERS = 2
SLOW_CALLS = 2 * WORKERS
LOCK_S = 2.5


def test_predict_answers_while_every_worker_waits_on_the_database(
    trained: Trained, sp500: MarketData
) -> None:
    """Another process holds SQLite's write lock for 2.5 s; ListPredictions (which first waits up
    to 2 s for the writer to flush) fills both pool threads and queues more. Predict, on the loop,
    still answers at its usual speed."""
    db = trained.database_url.removeprefix("sqlite:///")
    with running(trained.config(), workers=WORKERS) as (srv, client):
        need = client.serving_info().bars_required
        probe = window(sp500, live_index(sp500), need)
        client.predict("SPX", probe, timeout=10)  # a row for the writer to be stuck on
        holder = sqlite3.connect(db, timeout=10, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        locked_at = time.monotonic()
        slow_done: list[float] = []

        def slow() -> None:
            began = time.monotonic()
            # Answered or not, it held a worker for its wait.
            with (
                MinhosClient(f"127.0.0.1:{srv.port}", max_attempts=1) as c,
                contextlib.suppress(grpc.RpcError),
            ):
                c.list_predictions(limit=1, timeout=30)
            slow_done.append(time.monotonic() - began)

        try:
            client.predict("SPX", probe, timeout=10)  # queues a row the writer cannot write
            threads = [threading.Thread(target=slow) for _ in range(SLOW_CALLS)]
            for t in threads:
                t.start()
            time.sleep(0.3)  # the pool is full
            latencies = []
            for _ in range(20):
                began = time.monotonic()
                client.predict("SPX", probe, timeout=10)
                latencies.append(time.monotonic() - began)
            busy = len(slow_done) < SLOW_CALLS  # the slow calls were still waiting meanwhile
            time.sleep(max(0.0, LOCK_S - (time.monotonic() - locked_at)))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for t in threads:
            t.join(30)
    assert busy
    assert max(latencies) < 0.5, latencies
    # The first two waited out the 2 s flush, the queued ones for a thread and then the lock.
    assert min(slow_done) >= 1.5 and max(slow_done) >= LOCK_S - 0.2, slow_done


def test_a_prediction_is_known_to_the_next_call_though_recorded_after_its_reply(
    trained: Trained, sp500: MarketData
) -> None:
    """Predict's bookkeeping runs on the loop's turn after its reply. With storage off, only that
    bookkeeping (the outcome book) can answer RecordOutcome, so each call right after its Predict
    fails NOT_FOUND if the reply ever overtakes it; a second client on its own channel races it
    with the same ids."""
    config = trained.config()
    config = dataclasses.replace(config, storage=dataclasses.replace(config.storage, persist=False))
    with running(config) as (srv, client), MinhosClient(f"127.0.0.1:{srv.port}") as other:
        need = client.serving_info().bars_required
        start = live_index(sp500)
        for i in range(200):
            reply = client.predict("SPX", window(sp500, start + i, need), timeout=10)
            recorder = other if i % 2 else client
            recorded = recorder.record_outcome(reply.prediction_id, 0.01, timeout=10)
            assert not recorded.already_recorded
            assert recorded.outcome.prediction_id == reply.prediction_id
