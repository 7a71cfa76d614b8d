"""The stream pipeline without gRPC: order, batching, stopping, errors and backpressure."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from server.transport.pipeline import pipelined


def _collect(
    source: Iterator[int], stop_at: int | None = None, max_in_flight: int = 100
) -> tuple[list[list[int]], list[int]]:
    batches: list[list[int]] = []

    def process(batch: list[int]) -> tuple[list[int], bool]:
        batches.append(batch)
        return [x * 10 for x in batch], stop_at not in batch

    outs = [
        y
        for out in pipelined(source, process, max_batch=8, max_in_flight=max_in_flight)
        for y in out
    ]
    return batches, outs


def test_answers_in_order_and_batches_what_has_arrived() -> None:
    batches, outs = _collect(iter(range(50)))
    assert outs == [x * 10 for x in range(50)]
    assert [x for b in batches for x in b] == list(range(50))
    assert all(len(b) <= 8 for b in batches)
    # An iterator that is always ready is read faster than processed: some batches hold several.
    assert len(batches) < 50


def test_a_live_feed_is_answered_one_by_one_without_waiting_for_more() -> None:
    arrived = threading.Event()
    answered: list[float] = []

    def feed() -> Iterator[int]:
        yield 1
        arrived.wait(5)  # the next request only comes once the first is answered
        yield 2

    began = time.monotonic()
    for out in pipelined(feed(), lambda b: (b, True), max_batch=8, max_in_flight=8):
        answered.append(time.monotonic() - began)
        assert out in ([1], [2])
        arrived.set()
    assert len(answered) == 2 and answered[0] < 1.0


def test_nothing_is_processed_after_a_stop() -> None:
    batches, outs = _collect(iter(range(50)), stop_at=20)
    assert 20 in batches[-1]
    assert max(x for b in batches for x in b) < 28  # at most the rest of that batch
    assert outs[-1] == batches[-1][-1] * 10


def test_an_error_in_processing_is_raised_to_the_consumer() -> None:
    def process(batch: list[int]) -> tuple[list[int], bool]:
        if 7 in batch:
            raise ValueError("bad 7")
        return batch, True

    seen: list[int] = []
    with pytest.raises(ValueError, match="bad 7"):
        for out in pipelined(iter(range(20)), process, max_batch=4, max_in_flight=50):
            seen += out
    assert 7 not in seen


def test_a_consumer_that_stops_reading_stops_the_reading() -> None:
    read: list[int] = []

    def source() -> Iterator[int]:
        for i in range(10_000):
            read.append(i)
            yield i

    stream = pipelined(source(), lambda b: (b, True), max_batch=4, max_in_flight=16)
    next(stream)  # take one output, then stop consuming
    time.sleep(0.3)
    assert len(read) <= 16 + 1  # the in-flight bound (plus the one the reader holds)
    stream.close()
    time.sleep(0.3)
    assert len(read) <= 16 + 1
