"""Streams that end badly (issue 11): clients that disconnect mid-PredictStream, and clients that
send and never read, give back what they held once they go: the event loop's tasks (each stream
is grpc's tasks for the call and our reader task, server/transport/pipeline.py) and the threads
(the clients' included, as they run in this process) return to their baseline, and the server
answers meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from clients.client import MinhosClient, bars_from_arrays
from export.data import MarketData
from minhos.v1 import inference_pb2
from server.app import MinhosServer
from tests.conftest import Trained
from tests.reliability_record import record
from tests.server_harness import live_index, running, window

pytestmark = pytest.mark.serving

WORKERS = 4
#: Long enough that no stream ends on its own during the test.
STREAM_BARS = 3000
SETTLE_S = 5.0


def requests(
    data: MarketData, symbol: str, sent: list[int]
) -> Iterator[inference_pb2.StreamRequest]:
    start = live_index(data)
    end = start + STREAM_BARS
    for bar in bars_from_arrays(data.times[start:end], data.ohlcv[start:end]):
        sent[0] += 1
        yield inference_pb2.StreamRequest(symbol=symbol, bar=bar)


def full_stream(target: str, data: MarketData, need: int, symbol: str) -> int:
    """A short well-behaved stream; the number of replies."""
    start = live_index(data)
    bars = bars_from_arrays(
        data.times[start : start + need + 5], data.ohlcv[start : start + need + 5]
    )
    with MinhosClient(target, max_attempts=1) as client:
        return len(list(client.predict_stream(bars, symbol=symbol, timeout=30)))


def concurrently(target: str, data: MarketData, need: int, tag: str) -> list[int]:
    """WORKERS full streams at once: each holds a gRPC worker, so all must be free."""
    counts = [0] * WORKERS

    def run(i: int) -> None:
        counts[i] = full_stream(target, data, need, f"{tag}{i}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return counts


def settle(srv: MinhosServer, baseline: tuple[int, int]) -> float:
    """Seconds until the loop's tasks and the process's threads are back to ``baseline``."""
    began = time.monotonic()
    while srv.server.tasks() > baseline[0] or threading.active_count() > baseline[1]:
        assert time.monotonic() - began < SETTLE_S, (
            f"{srv.server.tasks()} tasks, {threading.active_count()} threads; baseline {baseline}"
        )
        time.sleep(0.05)
    return time.monotonic() - began


def test_abandoned_streams_free_their_resources(trained: Trained, sp500: MarketData) -> None:
    with running(trained.config(), workers=WORKERS) as (srv, client):
        target = f"127.0.0.1:{srv.port}"
        need = client.serving_info().bars_required
        probe = window(sp500, live_index(sp500), need)
        # Warm-up: every pool thread exists, so the baseline is the steady state.
        assert concurrently(target, sp500, need, "WARM") == [need + 5] * WORKERS
        baseline = (srv.server.tasks(), threading.active_count())

        # Disconnects mid-stream: reads a few replies, then closes its channel.
        for i in range(WORKERS):
            sent = [0]
            with MinhosClient(target, max_attempts=1) as quitter:
                replies = iter(quitter.predict_stream(requests(sp500, f"QUIT{i}", sent)))
                for _ in range(5):
                    next(replies)
        after_quitters = settle(srv, baseline)

        # Never reads: sends its bars, holds the stream open, then goes. One worker stays free
        # meanwhile, and answers.
        readers = [MinhosClient(target, max_attempts=1) for _ in range(WORKERS - 1)]
        sent_by = [[0] for _ in readers]
        calls = [
            c.predict_stream(requests(sp500, f"MUTE{i}", sent_by[i])) for i, c in enumerate(readers)
        ]
        time.sleep(1.5)
        held = srv.server.tasks() - baseline[0]
        answered_meanwhile = client.predict("SPX", probe, timeout=10).prediction_id
        for c in readers:
            c.close()
        after_mute = settle(srv, baseline)

        # Everything back: a unary call, and WORKERS streams at once.
        assert client.predict("SPX", probe, timeout=10).prediction_id
        assert concurrently(target, sp500, need, "AFTER") == [need + 5] * WORKERS
    # Each mute stream was live: grpc's tasks for the call (handler and its own) and our reader.
    assert held >= 2 * len(calls)
    assert answered_meanwhile
    sent = [s[0] for s in sent_by]
    record(
        "clients that disconnect mid-stream or never read",
        "the loop's tasks and the threads back to baseline; Predict answers meanwhile",
        f"{WORKERS} disconnects after 5 replies, {len(calls)} non-readers ({min(sent)}-{max(sent)} "
        f"bars sent each, held 1.5 s): tasks and threads back to {baseline} in {after_quitters:.2f} / "
        f"{after_mute:.2f} s; {WORKERS} concurrent streams served after",
    )


def test_a_cancelled_stream_frees_its_worker(trained: Trained, sp500: MarketData) -> None:
    """One worker in each pool (the RPC pool and the stream-scoring pool): if a cancelled stream
    kept its scoring thread, the next stream would hang; GetServingInfo (in the RPC pool) and
    Predict (on the loop) must answer too."""
    with running(trained.config(), workers=1) as (srv, client):
        need = client.serving_info().bars_required
        probe = window(sp500, live_index(sp500), need)
        for i in range(3):
            call = client.predict_stream(requests(sp500, f"CANCEL{i}", [0]))
            next(iter(call))
            call.cancel()  # type: ignore[no-untyped-call]
            try:
                client.predict("SPX", probe, timeout=5)
                client.serving_info(timeout=5)
            except grpc.RpcError as exc:
                raise AssertionError(f"after cancel {i}: {exc.code().name}") from exc
        assert full_stream(f"127.0.0.1:{srv.port}", sp500, need, "AFTER") == need + 5
