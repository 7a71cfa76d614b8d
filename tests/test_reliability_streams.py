"""Streams that end badly (issue 11): clients that disconnect mid-PredictStream, and clients that
send and never read, give back what they held once they go: the server's threads (each stream
runs a reader and a worker thread of its own, server/transport/pipeline.py) return to their
baseline and every gRPC worker is free again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc

from clients.client import MinhosClient, bars_from_arrays
from export.data import MarketData
from minhos.v1 import inference_pb2
from tests.conftest import Trained
from tests.reliability_record import record
from tests.server_harness import live_index, running, window

WORKERS = 4
#: Long enough that no stream ends on its own during the test.
STREAM_BARS = 3000
SETTLE_S = 5.0


def stream_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("minhos-stream")]


def requests(
    data: MarketData, symbol: str, sent: list[int]
) -> Iterator[inference_pb2.StreamRequest]:
    start = live_index(data)
    for bar in bars_from_arrays(data.times[start:], data.ohlcv[start:])[:STREAM_BARS]:
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


def settle(baseline: int) -> float:
    """Seconds until the thread count is back to ``baseline`` and no stream thread is left."""
    began = time.monotonic()
    while threading.active_count() > baseline or stream_threads():
        assert time.monotonic() - began < SETTLE_S, (
            f"{threading.active_count()} threads (baseline {baseline}): {stream_threads()}"
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
        baseline = threading.active_count()
        assert not stream_threads()

        # Disconnects mid-stream: reads a few replies, then closes its channel.
        for i in range(WORKERS):
            sent = [0]
            with MinhosClient(target, max_attempts=1) as quitter:
                replies = iter(quitter.predict_stream(requests(sp500, f"QUIT{i}", sent)))
                got = [next(replies) for _ in range(5)]
                assert len(got) == 5
        after_quitters = settle(baseline)

        # Never reads: sends its bars, holds the stream open, then goes. One worker stays free
        # meanwhile, and answers.
        readers = [MinhosClient(target, max_attempts=1) for _ in range(WORKERS - 1)]
        sent_by = [[0] for _ in readers]
        calls = [
            c.predict_stream(requests(sp500, f"MUTE{i}", sent_by[i])) for i, c in enumerate(readers)
        ]
        time.sleep(1.5)
        held = len(stream_threads())
        answered_meanwhile = client.predict("SPX", probe, timeout=10).prediction_id
        for c in readers:
            c.close()
        after_mute = settle(baseline)

        # Everything back: a unary call, and WORKERS streams at once.
        assert client.predict("SPX", probe, timeout=10).prediction_id
        assert concurrently(target, sp500, need, "AFTER") == [need + 5] * WORKERS
    assert held == 2 * len(calls)  # each mute stream was live, with its reader and worker
    assert answered_meanwhile
    sent = [s[0] for s in sent_by]
    record(
        "clients that disconnect mid-stream or never read",
        "server threads back to baseline; every gRPC worker free again; Predict answers",
        f"{WORKERS} disconnects after 5 replies, {len(calls)} non-readers ({min(sent)}-{max(sent)} "
        f"bars sent each, held 1.5 s): threads back to {baseline} in {after_quitters:.2f} / "
        f"{after_mute:.2f} s; {WORKERS} concurrent streams served after",
    )


def test_a_cancelled_stream_frees_its_worker(trained: Trained, sp500: MarketData) -> None:
    """The gRPC pool has one worker: if a cancelled stream kept it, Predict would time out."""
    with running(trained.config(), workers=1) as (_, client):
        need = client.serving_info().bars_required
        probe = window(sp500, live_index(sp500), need)
        for i in range(3):
            call = client.predict_stream(requests(sp500, f"CANCEL{i}", [0]))
            next(iter(call))
            call.cancel()  # type: ignore[no-untyped-call]
            try:
                client.predict("SPX", probe, timeout=5)
            except grpc.RpcError as exc:
                raise AssertionError(f"after cancel {i}: {exc.code().name}") from exc
