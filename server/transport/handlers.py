"""Registers a servicer's methods with the gRPC server from its service descriptor, with
deserializers that never raise: a body that does not parse becomes an :class:`Undecodable`
request, which the servicer answers INVALID_ARGUMENT. grpcio would otherwise answer INTERNAL
before any handler runs, and a stream whose messages fail to parse kept the server from stopping
(grpcio 1.81).

The server is ``grpc.aio`` (host.py). A servicer's ``async`` methods (the streams) run on the event
loop as they are; a plain method runs in the server's thread pool, unless it is named ``inline``:
cheap, never-blocking unary methods (Predict, ModelInfer) run on the loop too, which spares them
two thread hand-offs a call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from server.serving.dataplane import Defer, run_now

log = logging.getLogger("minhos.rpc")


@dataclass(frozen=True)
class Undecodable:
    """A request body that is not a valid serialized ``message`` (the full message name)."""

    message: str
    reason: str


def parser(cls: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    name = cls.DESCRIPTOR.full_name

    def parse(body: bytes) -> Message | Undecodable:
        try:
            return cls.FromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            return Undecodable(name, str(exc) or type(exc).__name__)

    return parse


def _refusing_undecodable(behaviour: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """A unary request that did not parse is answered here, before the servicer sees it (a
    stream's messages are checked one by one by the servicer, which answers the ones before)."""

    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request: the body does not parse as {request.message} ({request.reason})",
            )
        return behaviour(request, context)

    return guarded


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class CallContext:
    """The context a plain servicer method is given: its ``abort`` raises, and the async wrapper
    ends the call with that status. (An aio context's ``abort`` is a coroutine, which a plain
    function cannot await, and the context grpc.aio gives plain functions in its thread pool does
    not raise from ``abort``, so code after it would run.)

    ``defer`` is where the method puts bookkeeping its reply does not need: on the loop, the loop's
    next turn, which comes after the reply is handed to gRPC and before any later call's handler
    (a client's next call, say RecordOutcome for this prediction, finds it done); in the pool, now.
    """

    def __init__(self, defer: Defer = run_now) -> None:
        self.defer = defer

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise _Aborted(code, details)


def deferral(context: object) -> Defer:
    """The ``defer`` of a handler's context (:class:`CallContext`); run now under any other."""
    return context.defer if isinstance(context, CallContext) else run_now


def _on_loop(behaviour: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        later: list[Callable[[], object]] = []
        try:
            return behaviour(request, CallContext(later.append))
        except _Aborted as aborted:
            await context.abort(aborted.code, aborted.details)
        finally:
            if later:  # one callback for the call's bookkeeping, however many pieces
                asyncio.get_running_loop().call_soon(_run_all, later)

    return handle


def _run_all(work: list[Callable[[], object]]) -> None:
    for piece in work:
        try:
            piece()
        except Exception:  # as the loop does for a failed callback: log, and run the next
            log.exception("deferred bookkeeping failed")


def _in_pool(
    behaviour: Callable[[Any, Any], Any], pool: Executor
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, behaviour, request, CallContext())
        except _Aborted as aborted:
            await context.abort(aborted.code, aborted.details)

    return handle


class Registry(Protocol):
    """Where handlers go: a ``grpc.aio.Server`` or the host that owns one."""

    def add_generic_rpc_handlers(self, handlers: Any) -> None: ...


def register(
    server: Registry,
    servicer: object,
    service: ServiceDescriptor,
    pool: Executor,
    inline: Collection[str] = (),
) -> None:
    """Every method of ``service`` served by the servicer's method of the same name: the plain
    unary methods named in ``inline`` on the event loop, the other plain ones in ``pool``, and the
    async (streaming) ones on the loop as they are."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        behaviour = getattr(servicer, method.name)
        streaming = method.client_streaming or method.server_streaming
        if streaming != inspect.isasyncgenfunction(behaviour):
            # A plain generator would read each message through a hop to the loop and back.
            raise ValueError(f"{method.name}: a method must be an async generator iff it streams")
        if not streaming:
            guarded = _refusing_undecodable(behaviour)
            behaviour = _on_loop(guarded) if method.name in inline else _in_pool(guarded, pool)
        parse = parser(GetMessageClass(method.input_type))
        serialize = GetMessageClass(method.output_type).SerializeToString
        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            behaviour, request_deserializer=parse, response_serializer=serialize
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
