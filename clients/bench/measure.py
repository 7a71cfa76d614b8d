"""Timing from this process: single-client latency in interleaved bursts, and stream rounds with
the server's CPU time per message. The callers send bytes serialized beforehand and do not parse
the replies, so the client's work is the same for every server compared."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from clients.bench import procfs


def percentiles(samples_s: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in microseconds of samples in seconds."""
    if not samples_s:
        return float("nan"), float("nan")
    arr = np.asarray(samples_s) * 1e6
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def unary_caller(channel: grpc.Channel, method: str, body: bytes) -> Callable[[], object]:
    call = channel.unary_unary(method, None, None)
    return lambda: call(body, timeout=10)


def stream_caller(channel: grpc.Channel, method: str, bodies: Sequence[bytes]) -> Callable[[], int]:
    """One pipelined stream of ``bodies``; returns the number of replies."""
    call = channel.stream_stream(method, None, None)
    return lambda: sum(1 for _ in call(iter(bodies), timeout=300))


def time_calls(
    call: Callable[[], object], n: int, warmup: int = 50, gap_s: float = 0.0
) -> list[float]:
    """Latency of ``n`` calls; ``gap_s`` of idle (untimed) before each one."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        if gap_s:
            time.sleep(gap_s)
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return samples


def time_interleaved(
    calls: Mapping[str, Callable[[], object]], n: int, warmup: int, burst: int = 10
) -> dict[str, list[float]]:
    """Latency of ``n`` calls of each named call, in bursts of ``burst`` taking turns (in a
    rotating order), so that the machine's speed changes (on a shared VM it halves and recovers
    within seconds) hit every one of them alike."""
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        time_calls(calls[name], 0, warmup)
    turn = 0
    while any(len(samples[name]) < n for name in names):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            samples[name] += time_calls(calls[name], min(burst, n - len(samples[name])), 0)
        turn += 1
    return samples


@dataclass
class StreamRounds:
    """Rounds of one stream kind: messages/s and the server's CPU time per message of each round,
    from its /proc counters (all threads: gRPC's, the handler's, the writer's), counted until the
    server is idle again (the writer's last rows included). Medians over rounds, so that a
    periodic job (the health evaluation every 10 s) falling into one round does not decide."""

    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    messages: int = 0

    def run(self, stream: Callable[[], int], count: int, pid: int) -> None:
        cpu = procfs.cpu_seconds(pid)
        began = time.perf_counter()
        got = stream()
        elapsed = time.perf_counter() - began
        procfs.settle([pid])
        if got != count:
            raise RuntimeError(f"{got} replies to {count} messages")
        self.rates.append(count / elapsed)
        self.cpu_us.append((procfs.cpu_seconds(pid) - cpu) / count * 1e6)
        self.messages = count

    @property
    def rate(self) -> float:
        return float(np.median(self.rates))

    @property
    def cpu_per_message_us(self) -> float:
        return float(np.median(self.cpu_us))
