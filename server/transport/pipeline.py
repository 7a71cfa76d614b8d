"""The stages of a bidirectional stream on the event loop: a reader task takes requests off the
call while the handler processes a batch and sends its replies.

The next batch is whatever arrived while the previous replies were being sent, so a pipelining
client's requests are processed in batches (one ONNX run for many windows) while a live feed's
are processed one by one as they come. Processing runs on the loop itself: a batch is bounded
(``max_batch``), and a batch of 256 windows costs about 10 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Final, TypeVar

Req = TypeVar("Req")
Out = TypeVar("Out")


class _End:
    """Marks the end of the requests (the client closed its side, or the call ended)."""


END: Final = _End()


async def pipelined(
    source: AsyncIterator[Req],
    process: Callable[[list[Req]], tuple[Out, bool]],
    *,
    max_batch: int,
    max_in_flight: int,
) -> AsyncGenerator[Out, None]:
    """Yields ``process(batch)`` for successive batches of ``source`` (each up to ``max_batch``
    requests, whatever has arrived), in order. ``process`` returns its output and whether to go
    on: after a False nothing more is processed. An exception in ``process`` is raised here.

    At most ``max_in_flight`` requests are read but not yet answered: a client that stops reading
    replies stops being read, so HTTP/2 flow control pushes back on it instead of memory growing.
    """
    inbox: asyncio.Queue[Req | _End] = asyncio.Queue()
    slots = asyncio.Semaphore(max_in_flight)

    async def read() -> None:
        try:
            async for request in source:
                await slots.acquire()
                inbox.put_nowait(request)
        except Exception:
            pass  # the call ended (cancelled, past its deadline); what was read is still answered
        finally:
            inbox.put_nowait(END)

    reader = asyncio.get_running_loop().create_task(read())
    try:
        while True:
            first = await inbox.get()
            batch: list[Req] = []
            ended = False
            if isinstance(first, _End):
                ended = True
            else:
                batch.append(first)
            while not ended and len(batch) < max_batch and not inbox.empty():
                item = inbox.get_nowait()
                if isinstance(item, _End):
                    ended = True
                else:
                    batch.append(item)
            if batch:
                out, more = process(batch)
                yield out  # the reader fills the inbox while the consumer sends this
                for _ in batch:
                    slots.release()
                if not more:
                    return
            if ended:
                return
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
