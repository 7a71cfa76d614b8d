"""Clients over several replicas: target lists, round-robin balancing and retries on UNAVAILABLE,
with three real servers on loopback sharing one SQLite file (tests/test_scale_out.py kills a
replica with SIGKILL under load on PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack

import grpc
import pytest

from clients.client import NOT_RETRIED, RETRIED, MinhosClient, channel_target, service_config
from export.data import MarketData
from minhos.v1 import calibration_pb2, inference_pb2, monitoring_pb2, retrain_pb2
from server.app import MinhosServer
from tests.conftest import Trained
from tests.server_harness import live_index, running, window

pytestmark = pytest.mark.serving


def test_every_rpc_of_the_contract_is_classified_once() -> None:
    """A new RPC must be put on one list or the other, with its reason in clients/client.py."""
    contract = {
        service.full_name: {method.name for method in service.methods}
        for module in (inference_pb2, monitoring_pb2, calibration_pb2, retrain_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
    }
    retried = {s: set(m) for s, m in RETRIED.items()}
    not_retried = {s: set(m) for s, m in NOT_RETRIED.items()}
    for service, methods in contract.items():
        both = retried.get(service, set()) & not_retried.get(service, set())
        assert not both, f"{service}: {both} on both lists"
        assert retried.get(service, set()) | not_retried.get(service, set()) == methods, service
    assert set(retried) | set(not_retried) <= set(contract)


def test_the_service_config_balances_and_retries_only_the_safe_rpcs() -> None:
    config = json.loads(service_config(4))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method_config,) = config["methodConfig"]
    named = {(n["service"], n["method"]) for n in method_config["name"]}
    assert ("minhos.v1.InferenceService", "Predict") in named
    assert ("minhos.v1.RetrainService", "Rollback") not in named
    assert ("minhos.v1.InferenceService", "PredictStream") not in named
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    # One attempt: balanced, never retried.
    assert "methodConfig" not in json.loads(service_config(1))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("localhost:50051", "localhost:50051"),
        ("dns:///minhos-headless:50051", "dns:///minhos-headless:50051"),
        ("127.0.0.1:1,127.0.0.2:2", "ipv4:127.0.0.1:1,127.0.0.2:2"),
        (" 127.0.0.1:1 , localhost:2 ", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
        ("ipv4:127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
    ],
)
def test_targets(given: str, expected: str) -> None:
    assert channel_target(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "target is empty"),
        ("127.0.0.1:1,,127.0.0.1:2", "has an empty entry"),
        ("127.0.0.1:1,127.0.0.1", "'127.0.0.1' is not host:port"),
        ("127.0.0.1:1,[::1]:2", "mixes IPv4 and IPv6"),
        ("127.0.0.1:1,no-such-host.invalid:2", "cannot resolve 'no-such-host.invalid'"),
    ],
)
def test_bad_targets_name_the_entry(given: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")):
        channel_target(given)


@pytest.fixture
def three(trained: Trained) -> Iterator[list[MinhosServer]]:
    config = trained.config()
    with ExitStack() as stack:
        yield [stack.enter_context(running(config, port=0))[0] for _ in range(3)]


def predicts(server: MinhosServer) -> int:
    calls, _, _ = server.telemetry.calls.snapshot()
    return calls.get(("Predict", "OK"), 0)


def test_predicts_spread_over_replicas_and_survive_one_stopping(
    three: list[MinhosServer], sp500: MarketData
) -> None:
    target = ",".join(f"127.0.0.1:{s.port}" for s in three)
    with MinhosClient(target) as client:
        need = client.serving_info().bars_required
        bars = window(sp500, live_index(sp500) + 10, need)
        before = [predicts(s) for s in three]
        for _ in range(90):
            client.predict("SPX", bars)
        spread = [predicts(s) - b for s, b in zip(three, before, strict=True)]
        assert sum(spread) == 90 and min(spread) >= 20, spread
        # One replica goes away: every later Predict is answered by the two others.
        three[0].stop(grace=0)
        failed = 0
        for _ in range(60):
            try:
                client.predict("SPX", bars)
            except grpc.RpcError:
                failed += 1
        assert failed == 0
