"""The request counters and the latency histogram are kept as plain numbers and exported at a
scrape; the exposition must read as prometheus_client's own Counter and Histogram would give it."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from server.transport.telemetry import LATENCY_BUCKETS, Telemetry

pytestmark = pytest.mark.serving


def _samples(registry: CollectorRegistry) -> list[str]:
    """Exposition lines of the two metrics, without the _created timestamps (which differ)."""
    return sorted(
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith(("minhos_requests_total", "minhos_request_seconds"))
        and "_created" not in line
    )


def test_counts_and_histogram_read_as_prometheus_clients_own() -> None:
    reference = CollectorRegistry()
    requests = Counter("minhos_requests", "", ["method", "code"], registry=reference)
    latency = Histogram(
        "minhos_request_seconds", "", ["method"], buckets=LATENCY_BUCKETS, registry=reference
    )
    telemetry = Telemetry()
    rng = random.Random(5)
    # Every bound exactly (a bucket is "less than or equal"), around them, and beyond the last.
    values = [*LATENCY_BUCKETS, 0.0, 3.0, *(rng.uniform(0, 0.3) for _ in range(300))]
    for i, seconds in enumerate(values):
        method = ("Predict", "PredictStream", "ModelInfer")[i % 3]
        code = "OK" if i % 7 else "INVALID_ARGUMENT"
        messages = 1 if method != "PredictStream" else 1 + i % 40  # a stream batch's messages
        telemetry.served(method, code, seconds, messages)
        requests.labels(method, code).inc(messages)
        for _ in range(messages):
            latency.labels(method).observe(seconds)
    ours, theirs = _samples(telemetry.registry), _samples(reference)
    assert len(ours) == len(theirs) == 3 * (len(LATENCY_BUCKETS) + 3) + 6
    for mine, reference_line in zip(ours, theirs, strict=True):
        if "_sum{" in mine:  # a batch adds seconds x messages; one by one rounds otherwise
            name, value = mine.rsplit(" ", 1)
            assert reference_line.startswith(name + " ")
            assert float(value) == pytest.approx(float(reference_line.rsplit(" ", 1)[1]))
        else:
            assert mine == reference_line
