"""The stream pipeline without gRPC: order, batching, stopping, errors and backpressure, on an
event loop as the server runs it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest

from server.transport.pipeline import pipelined

pytestmark = pytest.mark.serving


async def _arrived(items: Iterable[int]) -> AsyncIterator[int]:
    """Requests that are all there already, as a pipelining client's are: each read lets the loop
    run once, as a read from the network does."""
    for item in items:
        await asyncio.sleep(0)
        yield item


def _collect(
    items: Iterable[int], stop_at: int | None = None, max_in_flight: int = 100
) -> tuple[list[list[int]], list[int]]:
    batches: list[list[int]] = []

    def process(batch: list[int]) -> tuple[list[int], bool]:
        batches.append(batch)
        return [x * 10 for x in batch], stop_at not in batch

    async def consume() -> list[int]:
        outs: list[int] = []
        async for out in pipelined(
            _arrived(items), process, max_batch=8, max_in_flight=max_in_flight
        ):
            outs += out
            await asyncio.sleep(0.001)  # while a reply is sent, the reader takes what has arrived
        return outs

    return batches, asyncio.run(consume())


def test_answers_in_order_and_batches_what_has_arrived() -> None:
    batches, outs = _collect(range(50))
    assert outs == [x * 10 for x in range(50)]
    assert [x for b in batches for x in b] == list(range(50))
    assert all(len(b) <= 8 for b in batches)
    # Requests that arrive while replies are sent are processed together.
    assert len(batches) < 50


def test_a_live_feed_is_answered_one_by_one_without_waiting_for_more() -> None:
    async def run() -> list[float]:
        arrived = asyncio.Event()
        answered: list[float] = []
        loop = asyncio.get_running_loop()

        async def feed() -> AsyncIterator[int]:
            yield 1
            await asyncio.wait_for(arrived.wait(), 5)  # the next only once the first is answered
            yield 2

        began = loop.time()
        async for out in pipelined(feed(), lambda b: (b, True), max_batch=8, max_in_flight=8):
            answered.append(loop.time() - began)
            assert out in ([1], [2])
            arrived.set()
        return answered

    answered = asyncio.run(run())
    assert len(answered) == 2 and answered[0] < 1.0


def test_nothing_is_processed_after_a_stop() -> None:
    batches, outs = _collect(range(50), stop_at=20)
    assert 20 in batches[-1]
    assert max(x for b in batches for x in b) < 28  # at most the rest of that batch
    assert outs[-1] == batches[-1][-1] * 10


def test_an_error_in_processing_is_raised_to_the_consumer() -> None:
    def process(batch: list[int]) -> tuple[list[int], bool]:
        if 7 in batch:
            raise ValueError("bad 7")
        return batch, True

    seen: list[int] = []

    async def run() -> None:
        async for out in pipelined(_arrived(range(20)), process, max_batch=4, max_in_flight=50):
            seen.extend(out)

    with pytest.raises(ValueError, match="bad 7"):
        asyncio.run(run())
    assert 7 not in seen


def test_a_consumer_that_stops_reading_stops_the_reading() -> None:
    read: list[int] = []

    async def source() -> AsyncIterator[int]:
        for i in range(10_000):
            read.append(i)
            await asyncio.sleep(0)
            yield i

    async def run() -> tuple[int, int]:
        stream = pipelined(source(), lambda b: (b, True), max_batch=4, max_in_flight=16)
        await stream.__anext__()  # take one output, then stop consuming
        await asyncio.sleep(0.3)
        while_held = len(read)
        await stream.aclose()
        await asyncio.sleep(0.3)
        return while_held, len(read)

    while_held, after = asyncio.run(run())
    assert while_held <= 16 + 1  # the in-flight bound (plus the one the reader holds)
    assert after == while_held  # closing the consumer ends the reader
