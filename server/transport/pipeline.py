"""The three stages of a bidirectional stream, overlapped: reading requests, processing those that
arrived together as one batch, and sending the replies.

gRPC's synchronous server blocks the handler thread on every send until the message is written.
With reading and processing in threads of their own, that wait (which releases the GIL) overlaps
with the next batch's work instead of adding to it, and a pipelining client's requests are
processed in batches while a live feed's are processed one by one as they come.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

Req = TypeVar("Req")
Out = TypeVar("Out")


def pipelined(
    source: Iterator[Req],
    process: Callable[[list[Req]], tuple[Out, bool]],
    *,
    max_batch: int,
    max_in_flight: int,
) -> Generator[Out, None, None]:
    """Yields ``process(batch)`` for successive batches of ``source`` (each up to ``max_batch``
    requests, whatever has arrived), in order. ``process`` returns its output and whether to go
    on: after a False nothing more is processed. An exception in ``process`` is raised here.

    At most ``max_in_flight`` requests are read but not yet answered: a client that stops reading
    replies stops being read, so HTTP/2 flow control pushes back on it instead of memory growing.
    """
    inbox: queue.SimpleQueue[Req | None] = queue.SimpleQueue()
    # (output, requests it answers), or what process raised; None ends the stream.
    outbox: queue.SimpleQueue[tuple[Out, int] | BaseException | None] = queue.SimpleQueue()
    slots = threading.Semaphore(max_in_flight)
    # Double buffering: the next batch is taken from the inbox only once the consumer has taken
    # the previous output, so it holds whatever arrived meanwhile (a pipelining client's requests
    # batch up; a live feed's single request goes straight through).
    taken = threading.Semaphore(1)
    closed = threading.Event()

    def read() -> None:
        try:
            for request in source:
                while not slots.acquire(timeout=0.1):
                    if closed.is_set():
                        return
                inbox.put(request)
        except Exception:
            pass  # the call ended (cancelled, past its deadline); what was read is still answered
        finally:
            inbox.put(None)

    def work() -> None:
        while True:
            while not taken.acquire(timeout=0.1):
                if closed.is_set():
                    return
            batch = [inbox.get()]
            while batch[-1] is not None and len(batch) < max_batch:
                try:
                    batch.append(inbox.get_nowait())
                except queue.Empty:
                    break
            requests = [r for r in batch if r is not None]
            if closed.is_set():  # the consumer has gone: nothing more is answered
                return
            if requests:
                try:
                    out, more = process(requests)
                except BaseException as exc:
                    outbox.put(exc)
                    return
                outbox.put((out, len(requests)))
                if not more:
                    break
            if batch[-1] is None:
                break
        outbox.put(None)

    threading.Thread(target=read, name="minhos-stream-reader", daemon=True).start()
    threading.Thread(target=work, name="minhos-stream-worker", daemon=True).start()
    try:
        while True:
            item = outbox.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            taken.release()
            out, count = item
            yield out
            slots.release(count)
    finally:
        closed.set()
