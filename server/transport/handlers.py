"""Registers a servicer's methods with the gRPC server from its service descriptor, with
deserializers that never raise: a body that does not parse becomes an :class:`Undecodable`
request, which the servicer answers INVALID_ARGUMENT. grpcio would otherwise answer INTERNAL
before any handler runs, and a stream whose messages fail to parse kept the server from stopping
(grpcio 1.81)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass


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


def register(server: grpc.Server, servicer: object, service: ServiceDescriptor) -> None:
    """Every method of ``service`` served by the servicer's method of the same name."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        behaviour = getattr(servicer, method.name)
        if not method.client_streaming:
            behaviour = _refusing_undecodable(behaviour)
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
