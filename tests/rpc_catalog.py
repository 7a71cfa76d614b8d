"""Every RPC a running server serves, found from the server itself (not a hard-coded list): the
services its reflection lists, plus every service of the contract's generated modules that the
server answers (a method it does not serve is UNIMPLEMENTED). Calls go through raw channels with
identity serializers, so tests can send any bytes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

# The contract's generated modules: importing them puts their services in the default pool.
from minhos.oip.v2 import open_inference_pb2
from minhos.v1 import calibration_pb2, inference_pb2, monitoring_pb2, retrain_pb2

CONTRACT_MODULES = (inference_pb2, monitoring_pb2, calibration_pb2, retrain_pb2, open_inference_pb2)
#: Not an application service: probes and discovery.
INFRASTRUCTURE = ("grpc.health.v1.Health", "grpc.reflection.")
#: A body no message type parses (a field-number-0 tag): the server fails to decode it before any
#: handler runs, so probing a unary method with it has no effect.
UNDECODABLE = b"\x00"

POOL = descriptor_pool.Default()  # type: ignore[no-untyped-call]

Metadata = tuple[tuple[str, str | bytes], ...] | None


@dataclass(frozen=True)
class Rpc:
    service: str
    name: str
    request: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    def call(
        self,
        channel: grpc.Channel,
        body: bytes | Sequence[bytes],
        *,
        timeout: float = 10.0,
        metadata: Metadata = None,
    ) -> list[bytes]:
        """Sends serialized request(s), returns the serialized responses; raises grpc.RpcError."""
        bodies = [body] if isinstance(body, bytes) else list(body)
        if not bodies and not self.client_streaming:
            raise ValueError(f"{self.path} needs one request")
        if self.client_streaming and self.server_streaming:
            stream = channel.stream_stream(self.path, None, None)
            return list(stream(iter(bodies), timeout=timeout, metadata=metadata))
        if self.client_streaming:
            return [
                channel.stream_unary(self.path, None, None)(
                    iter(bodies), timeout=timeout, metadata=metadata
                )
            ]
        if self.server_streaming:
            call = channel.unary_stream(self.path, None, None)
            return list(call(bodies[0], timeout=timeout, metadata=metadata))
        return [
            channel.unary_unary(self.path, None, None)(
                bodies[0], timeout=timeout, metadata=metadata
            )
        ]


def _rpcs_of(service_name: str) -> list[Rpc]:
    service = POOL.FindServiceByName(service_name)
    methods: list[MethodDescriptor] = list(service.methods)
    return [
        Rpc(
            service.full_name,
            m.name,
            message_factory.GetMessageClass(m.input_type),
            bool(m.client_streaming),
            bool(m.server_streaming),
        )
        for m in methods
    ]


def reflected_services(channel: grpc.Channel, metadata: Metadata = None) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = list(stub.ServerReflectionInfo(iter([request]), timeout=10, metadata=metadata))
    return [s.name for r in replies for s in r.list_services_response.service]


def contract_services() -> list[str]:
    return [s.full_name for m in CONTRACT_MODULES for s in m.DESCRIPTOR.services_by_name.values()]


def served(rpc: Rpc, channel: grpc.Channel, metadata: Metadata = None) -> bool:
    # A stream gets no message at all: an undecodable one can leave grpcio's server unable to
    # stop (see tests/test_reliability_fuzz.py).
    probe: bytes | list[bytes] = [] if rpc.client_streaming else UNDECODABLE
    try:
        rpc.call(channel, probe, timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        return bool(exc.code() != grpc.StatusCode.UNIMPLEMENTED)
    return True


def registered_rpcs(channel: grpc.Channel, metadata: Metadata = None) -> list[Rpc]:
    """The application RPCs the server behind ``channel`` serves (``metadata``: the credentials
    needed to reach them)."""
    names = dict.fromkeys([*reflected_services(channel, metadata), *contract_services()])
    found: list[Rpc] = []
    for name in names:
        if name.startswith(INFRASTRUCTURE):
            continue
        try:
            rpcs = _rpcs_of(name)
        except KeyError:
            continue  # reflected, but not in this process's contract modules
        found += [rpc for rpc in rpcs if served(rpc, channel, metadata)]
    return found


def parse(rpc: Rpc, reply: bytes) -> Any:
    """A serialized response of ``rpc`` as its message."""
    method = POOL.FindServiceByName(rpc.service).methods_by_name[rpc.name]
    return message_factory.GetMessageClass(method.output_type).FromString(reply)
