"""With server.token set, every RPC the server serves (enumerated from the server, not listed here)
refuses a call without the token, or with a wrong one, as UNAUTHENTICATED; health and reflection
stay open (server/app.py OPEN_METHODS); the right token gets through everywhere."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import OPEN_METHODS, SERVICES
from tests.conftest import Trained
from tests.reliability_record import record
from tests.rpc_catalog import Metadata, Rpc, reflected_services, registered_rpcs
from tests.server_harness import running

pytestmark = pytest.mark.serving

TOKEN = "s3cret-token"
GOOD: Metadata = (("authorization", f"Bearer {TOKEN}"),)
#: Missing, wrong, a prefix or an extension of the right one, the right one without its scheme or
#: with another scheme's case.
BAD: dict[str, Metadata] = {
    "none": None,
    "wrong": (("authorization", "Bearer nope"),),
    "empty": (("authorization", ""),),
    "prefix": (("authorization", f"Bearer {TOKEN[:-1]}"),),
    "longer": (("authorization", f"Bearer {TOKEN}x"),),
    "no scheme": (("authorization", TOKEN),),
    "lower-case scheme": (("authorization", f"bearer {TOKEN}"),),
    "other header": (("x-api-key", TOKEN),),
}


def code_of(rpc: Rpc, channel: grpc.Channel, metadata: Metadata) -> grpc.StatusCode:
    """An empty request (valid for every message type): refused for its content at worst."""
    try:
        rpc.call(channel, [b""] if rpc.client_streaming else b"", timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_every_rpc_needs_the_token_and_probes_stay_open(trained: Trained) -> None:
    with (
        running(trained.config(), token=TOKEN) as (srv, _),
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel,
    ):
        rpcs = registered_rpcs(channel, GOOD)
        guarded = [r for r in rpcs if not r.path.startswith(OPEN_METHODS)]
        refused = {
            (rpc.path, name): code_of(rpc, channel, metadata)
            for rpc in guarded
            for name, metadata in BAD.items()
        }
        allowed = {rpc.path: code_of(rpc, channel, GOOD) for rpc in rpcs}
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        reflected = reflected_services(channel)
    # Every application service the server declares is served and was tried.
    assert {r.service for r in rpcs} >= set(SERVICES)
    let_in = {k: v.name for k, v in refused.items() if v != grpc.StatusCode.UNAUTHENTICATED}
    assert not let_in, let_in
    locked_out = {
        path: code.name
        for path, code in allowed.items()
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED)
    }
    assert not locked_out, locked_out
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert set(reflected) >= set(SERVICES)
    record(
        "auth: server.token set",
        "every served RPC without the token or with a wrong one ("
        + ", ".join(BAD)
        + ") → UNAUTHENTICATED; health and reflection open; the token lets every RPC through",
        f"{len(guarded)} RPCs of {len({r.service for r in rpcs})} services × {len(BAD)} bad "
        f"credentials: {len(refused)} calls, all UNAUTHENTICATED; health SERVING and "
        f"{len(reflected)} services reflected without a token",
    )


def test_without_a_token_configured_nothing_is_refused(trained: Trained) -> None:
    """The check is not vacuous: the same calls on a server without a token are not refused."""
    with (
        running(trained.config()) as (srv, _),
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel,
    ):
        rpcs = registered_rpcs(channel)
        codes = {rpc.path: code_of(rpc, channel, None) for rpc in rpcs}
    assert grpc.StatusCode.UNAUTHENTICATED not in codes.values()
    assert len(rpcs) > 20
