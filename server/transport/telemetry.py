"""Prometheus metrics and structured (JSON-lines) logs.

Each server gets its own registry, so tests can run several servers in one process.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
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
        self.requests = Counter(
            "minhos_requests",
            "RPCs served, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "minhos_request_seconds",
            "Server-side RPC latency (per message for streams)",
            ["method"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
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
        # The labelled children, looked up once: ``labels()`` validates and locks on every call.
        self._served: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._versions: dict[str, str] = {}
        self._http: Any = None

    def served(self, method: str, code: str, seconds: float, messages: int = 1) -> None:
        """Counts ``messages`` requests of ``method`` answered ``code``, each observed with
        ``seconds`` (a stream's batch shares its latency)."""
        children = self._served.get((method, code))
        if children is None:
            children = self.requests.labels(method, code), self.latency.labels(method)
            self._served[method, code] = children
        count, latency = children
        count.inc(messages)
        for _ in range(messages):
            latency.observe(seconds)

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
