"""``make bench``: one table from one run, so that ratios compare figures taken side by side.

Rows: the in-process floor (features + both ONNX sessions + fusion + Kelly, no RPC), a bare gRPC
unary round trip and a bare bidirectional stream carrying messages of the same sizes, unary Predict
and PredictStream against the real server (persistence on), 8 concurrent unary clients in a separate
process, and the server with persistence off. The server runs in its own process, as in production,
on a scratch copy of the database so the benchmark leaves no predictions behind.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
import numpy as np

from clients.client import MinhosClient
from minhos.v1 import inference_pb2

BARE_SERVICE = "bench.Bare"


@dataclass
class Row:
    name: str
    p50_us: float = float("nan")
    p99_us: float = float("nan")
    per_second: float = float("nan")
    note: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(samples_s: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(samples_s) * 1e6
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


# --- the bare server: same message sizes, no work ------------------------------------------------


def serve_bare(port: int, response_size: int) -> None:
    payload = b"x" * response_size

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        return payload

    def stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for _ in requests:
            yield payload

    handler = grpc.method_handlers_generic_handler(
        BARE_SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


# --- timing loops ---------------------------------------------------------------------------------


def time_calls(call: Callable[[], object], n: int, warmup: int = 50) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return samples


def stream_rate(
    open_stream: Callable[[Iterator[object]], Iterator[object]],
    make: Callable[[int], object],
    n: int,
) -> float:
    """Messages per second through one stream, pipelined: the requests are sent as fast as gRPC
    takes them while the replies are read."""
    began = time.perf_counter()
    count = sum(1 for _ in open_stream(make(i) for i in range(n)))
    elapsed = time.perf_counter() - began
    assert count == n, f"{count} replies to {n} messages"
    return n / elapsed


def load(target: str, request_bytes: bytes, clients: int, seconds: float) -> dict[str, float]:
    """Runs in its own process: ``clients`` threads, each with its own channel, calling Predict
    for ``seconds``. Prints counts and latency percentiles as JSON."""
    request = inference_pb2.PredictRequest.FromString(request_bytes)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        with MinhosClient(target, timeout=5) as client:
            client.predict(request.symbol, request.bars)
            while time.perf_counter() < stop:
                began = time.perf_counter()
                try:
                    client.predict(request.symbol, request.bars)
                    latencies[i].append(time.perf_counter() - began)
                except grpc.RpcError:
                    errors[i] += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    flat = [x for per in latencies for x in per]
    p50, p99 = percentiles(flat)
    return {
        "calls": len(flat),
        "errors": sum(errors),
        "seconds": elapsed,
        "p50_us": p50,
        "p99_us": p99,
    }
