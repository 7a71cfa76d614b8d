"""A ``grpc.aio`` server on an event-loop thread of its own, behind a blocking API (start, stop,
wait), so that the rest of the server (poller, writer, signal handling, tests) stays threaded.

Why asyncio: per unary call, grpcio's synchronous server spends about twice the CPU of its asyncio
server in its own machinery (thread-pool hand-offs and completion-queue polling, all under the
GIL); on a process bound by one interpreter that is the difference between the two controls of
``make bench``. Handlers that are cheap and never block (Predict, ModelInfer and the streams) run
on the loop itself; every other one runs in the ``workers``-thread pool (handlers.py hands it
over; grpc.aio also runs the library's own plain servicers, health checking, there), so a slow
database read never stalls the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from concurrent import futures
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

T = TypeVar("T")
if TYPE_CHECKING:
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    GenericHandler = grpc.GenericRpcHandler[Any, Any]

#: Longest the blocking API waits for the loop to do a small thing (bind, start).
LOOP_TIMEOUT_S = 30.0


class AioHost:
    """Owns the loop thread and the ``grpc.aio.Server`` on it."""

    def __init__(
        self,
        *,
        workers: int,
        options: Sequence[tuple[str, Any]],
        interceptors: Sequence[Interceptor] = (),
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minhos-rpc")
        # The loop's default executor scores stream batches (pipeline.py): a pool of its own, so
        # that streams never wait for a slow RPC's thread, nor the reverse.
        self.loop.set_default_executor(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minhos-stream")
        )
        self._thread = threading.Thread(target=self._run, name="minhos-grpc-loop", daemon=True)
        self._thread.start()

        async def make() -> grpc.aio.Server:
            # The server binds to the loop it is created on.
            return grpc.aio.server(
                migration_thread_pool=self.pool,
                options=list(options),
                interceptors=list(interceptors),
            )

        self.server = self.call(make())
        self._stopped = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = LOOP_TIMEOUT_S) -> T:
        """Runs ``coroutine`` on the loop and waits for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def add_generic_rpc_handlers(self, handlers: Sequence[GenericHandler]) -> None:
        self.server.add_generic_rpc_handlers(tuple(handlers))

    def add_insecure_port(self, address: str) -> int:
        async def bind() -> int:
            return self.server.add_insecure_port(address)

        return self.call(bind())

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        async def bind() -> int:
            return self.server.add_secure_port(address, credentials)

        return self.call(bind())

    def start(self) -> None:
        self.call(self.server.start())

    def stop(self, grace: float | None) -> None:
        """Refuses new RPCs, lets those in flight finish for ``grace`` seconds (then cancels
        them), and ends the loop thread."""
        if self._stopped.is_set():
            return
        try:
            self.call(self.server.stop(grace), timeout=(grace or 0) + LOOP_TIMEOUT_S)
        finally:
            self._stopped.set()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(LOOP_TIMEOUT_S)
            if not self._thread.is_alive():
                self.loop.close()  # also shuts the default executor down
            self.pool.shutdown(wait=False, cancel_futures=True)

    def tasks(self) -> int:
        """Tasks on the loop: grpc's for each RPC in flight, and each stream's reader."""

        async def count() -> int:
            return len(asyncio.all_tasks()) - 1  # less this one

        return self.call(count())

    def wait(self) -> None:
        self._stopped.wait()
