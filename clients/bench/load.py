"""Closed-loop clients in a separate process: ``clients`` threads, each with its own channel and
connection, calling one unary method back to back for a few seconds; servers take turns round by
round so that the machine's drift hits them alike."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import grpc
import numpy as np

from clients.bench import procfs
from clients.client import channel_options


@dataclass(frozen=True)
class Load:
    """One server's load: where, which method, the request bytes, and the server's processes
    (whose CPU time is counted over each round)."""

    target: str
    method: str
    body: bytes
    pids: tuple[int, ...] = ()


#: Longest a load process may take beyond its seconds (connecting, joining) before it is an error.
GRACE_S = 60.0


def closed_loop(load: Load, clients: int, seconds: float) -> dict[str, object]:
    """Runs in the load process. Returns the latencies (s), error codes and elapsed seconds."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1, timeout=GRACE_S)
    stop = [time.perf_counter() + 3600]

    def worker(i: int) -> None:
        # A local subchannel pool: otherwise channels with equal arguments share one connection
        # (and a group of serving processes on one port would see one client).
        options = [*channel_options(), ("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(load.target, options=options) as channel:
            call = channel.unary_unary(load.method, None, None)
            try:
                call(load.body, timeout=10)  # connect before the clock starts
            except grpc.RpcError as exc:
                errors[i].append(f"warm-up {exc.code().name}")
            start.wait()
            while time.perf_counter() < stop[0]:
                began = time.perf_counter()
                try:
                    call(load.body, timeout=10)
                    latencies[i].append(time.perf_counter() - began)
                except grpc.RpcError as exc:
                    errors[i].append(exc.code().name)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    stop[0] = began + seconds
    for t in threads:
        t.join()
    return {
        "latencies": [x for per in latencies for x in per],
        "errors": [e for per in errors for e in per],
        "seconds": time.perf_counter() - began,
    }


@dataclass
class LoadTotals:
    """All rounds of one server: every latency, every error, each round's throughput."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rates: list[float] = field(default_factory=list)
    #: CPU seconds the server's processes used over the rounds (connecting included).
    cpu_s: float = 0.0

    def add(self, result: Mapping[str, object], cpu_s: float = 0.0) -> None:
        latencies: list[float] = result["latencies"]  # type: ignore[assignment]
        seconds = float(result["seconds"])  # type: ignore[arg-type]
        self.latencies += latencies
        self.errors += result["errors"]  # type: ignore[arg-type]
        self.seconds += seconds
        self.rates.append(len(latencies) / seconds if seconds else float("nan"))
        self.cpu_s += cpu_s

    @property
    def throughput(self) -> float:
        """Requests per second, median of the rounds."""
        return float(np.median(self.rates)) if self.rates else float("nan")

    @property
    def cpu_per_call_us(self) -> float:
        return self.cpu_s / len(self.latencies) * 1e6 if self.latencies else float("nan")

    @property
    def error_note(self) -> str:
        kinds = f" ({', '.join(sorted(set(self.errors)))})" if self.errors else ""
        return f"{len(self.errors)} errors{kinds}"


def alternate(
    loads: Mapping[str, Load],
    clients: int,
    seconds: float,
    rounds: int,
    idle: Sequence[int] = (),
) -> dict[str, LoadTotals]:
    """``rounds`` rounds in which every load runs once, in an order rotating round by round; each
    run starts once the processes ``idle`` are idle."""
    names = list(loads)
    totals = {name: LoadTotals() for name in names}
    # An executor, not a Pool: a load process that dies raises here instead of hanging the run.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        for r in range(rounds):
            turn = r % len(names)
            for name in names[turn:] + names[:turn]:
                procfs.settle(idle)
                pids = loads[name].pids
                cpu = procfs.cpu_total(pids)
                done = pool.submit(closed_loop, loads[name], clients, seconds)
                result = done.result(timeout=seconds + 2 * GRACE_S)
                used = procfs.cpu_total(pids) - cpu
                totals[name].add(result, used)
    return totals
