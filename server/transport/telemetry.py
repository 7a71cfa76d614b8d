"""Prometheus metrics and structured (JSON-lines) logs.

Each server gets its own registry, so tests can run several servers in one process.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from server.storage.writer import BatchWriter

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = CallCounts()
        self.registry.register(_CallCollector(self.calls))
        self.model_version = Gauge(
            "minhos_model_version_info",
            "1 for the version serving each model kind",
            ["kind", "version"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "minhos_write_queue_depth",
            "Rows waiting for the batched writer",
            registry=self.registry,
        )
        self.reloads = Counter("minhos_model_swaps", "Model-set hot swaps", registry=self.registry)
        self._versions: dict[str, str] = {}
        self._http: Any = None

    def served(self, method: str, code: str, seconds: float, messages: int = 1) -> None:
        """Counts ``messages`` requests of ``method`` answered ``code``, each observed with
        ``seconds`` (a stream's batch shares its latency)."""
        self.calls.add(method, code, seconds, messages)

    def set_versions(self, versions: dict[str, str]) -> None:
        for kind, old in self._versions.items():
            if versions.get(kind) != old:
                self.model_version.remove(kind, old)
        for kind, version in versions.items():
            self.model_version.labels(kind, version).set(1)
        self._versions = dict(versions)
        self.reloads.inc()

    def watch_writer(self, writer: BatchWriter) -> None:
        """Exports the writer's rows lost to the database, read at each scrape."""
        self.registry.register(_WriterCollector(writer))

    def serve(self, host: str, port: int) -> int:
        """Starts the /metrics endpoint; returns the bound port (``port`` 0 picks a free one)."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


#: Upper bounds (seconds) of the request latency histogram's buckets (+Inf follows).
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class CallCounts:
    """Requests per method and status code, and a latency histogram per method, kept as plain
    numbers under one lock and exported at each scrape (:class:`_CallCollector`): a
    prometheus_client Counter and Histogram take a lock per update (three a call), and a
    histogram observes one value at a time (a stream's batch of 200 was 200 observations)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the loop and the pool's threads both count
        self._calls: dict[tuple[str, str], int] = {}
        #: Per method: how many observations fell in each bucket (not cumulative), +Inf last.
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def add(self, method: str, code: str, seconds: float, messages: int = 1) -> None:
        # The first bound >= seconds, as Prometheus buckets are "less than or equal".
        bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        with self._lock:
            self._calls[method, code] = self._calls.get((method, code), 0) + messages
            counts = self._buckets.get(method)
            if counts is None:
                counts = self._buckets[method] = [0] * (len(LATENCY_BUCKETS) + 1)
                self._sums[method] = 0.0
            counts[bucket] += messages
            self._sums[method] += seconds * messages

    def snapshot(
        self,
    ) -> tuple[dict[tuple[str, str], int], dict[str, list[int]], dict[str, float]]:
        with self._lock:
            return (
                dict(self._calls),
                {m: list(c) for m, c in self._buckets.items()},
                dict(self._sums),
            )


class _CallCollector(Collector):
    def __init__(self, calls: CallCounts) -> None:
        self._calls = calls

    def collect(self) -> Iterator[Metric]:
        calls, buckets, sums = self._calls.snapshot()
        requests = CounterMetricFamily(
            "minhos_requests", "RPCs served, by method and status code", labels=["method", "code"]
        )
        for (method, code), count in sorted(calls.items()):
            requests.add_metric([method, code], count)
        latency = HistogramMetricFamily(
            "minhos_request_seconds",
            "Server-side RPC latency (per message for streams)",
            labels=["method"],
        )
        # repr() writes these bounds as Prometheus does (tests/test_telemetry.py).
        bounds = [repr(b) for b in LATENCY_BUCKETS] + ["+Inf"]
        for method, counts in sorted(buckets.items()):
            cumulative = list(itertools.accumulate(counts))
            latency.add_metric([method], list(zip(bounds, cumulative, strict=True)), sums[method])
        yield requests
        yield latency


class _WriterCollector(Collector):
    def __init__(self, writer: BatchWriter) -> None:
        self._writer = writer

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "minhos_writer_rejected_rows",
            "Rows the database refused (constraint or value errors), set aside and not retried",
            value=self._writer.rejected,
        )
        yield CounterMetricFamily(
            "minhos_writer_dropped_rows",
            "Rows dropped past the backlog bound while the database was failing",
            value=self._writer.dropped,
        )
