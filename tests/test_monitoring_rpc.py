"""Health and Calibration RPCs from a running server after a replay, through the client and CLI."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from clients import cli
from clients.client import MinhosClient
from clients.replay import replay
from export.data import MarketData
from minhos.v1 import calibration_pb2, common_pb2, monitoring_pb2
from server.core.config import Config
from tests.conftest import Trained
from tests.server_harness import live_index, running

pytestmark = pytest.mark.serving


def _config(trained: Trained) -> Config:
    config = trained.config()
    return dataclasses.replace(
        config,
        retrain=dataclasses.replace(config.retrain, enabled=False),
        monitoring=dataclasses.replace(config.monitoring, evaluate_interval_s=0.0),
    )


def _replay(client: MinhosClient, sp500: MarketData, bars: int) -> None:
    start = live_index(sp500)
    summary = replay(
        client,
        "SPX",
        sp500.times[: start + bars],
        sp500.ohlcv[: start + bars],
        start_index=start,
        progress=False,
    )
    assert summary.predictions == bars


def test_health_and_calibration_after_a_replay(
    trained: Trained, sp500: MarketData, capsys: pytest.CaptureFixture[str]
) -> None:
    with running(_config(trained)) as (srv, client):
        _replay(client, sp500, 300)
        srv.writer.flush()
        srv.tick()  # the poller does this every few seconds; here at once
        health = client.health()
        assert 0 <= health.health_score <= 100
        assert health.status != monitoring_pb2.HEALTH_STATUS_UNSPECIFIED
        components = {c.component for c in health.components}
        assert {
            common_pb2.COMPONENT_LSTM,
            common_pb2.COMPONENT_ENSEMBLE,
            common_pb2.COMPONENT_FUSION,
        } <= components
        assert health.last_n_metrics.predictions == 100 and health.last_n_metrics.resolved >= 99
        assert 0.3 < health.last_n_metrics.accuracy < 0.7
        assert health.as_of.ToDatetime() == sp500.times[live_index(sp500) + 299].astype(object)
        reports = client.calibration()
        assert [r.source for r in reports] == [
            calibration_pb2.PROBABILITY_SOURCE_FUSED,
            calibration_pb2.PROBABILITY_SOURCE_LSTM,
            calibration_pb2.PROBABILITY_SOURCE_ENSEMBLE,
        ]
        fused = reports[0]
        assert fused.count == 299  # the last prediction is still open
        assert sum(b.count for b in fused.bins) == fused.count
        assert sum(z.count for z in fused.zones) == fused.count
        assert 0 <= fused.ece <= fused.mce <= 1 and 0 <= fused.brier <= 1
        assert fused.recommendations
        mass = client.calibration(
            source=calibration_pb2.PROBABILITY_SOURCE_LSTM,
            bins=5,
            binning=calibration_pb2.BINNING_EQUAL_MASS,
        )
        assert len(mass) == 1 and len(mass[0].bins) <= 5
        with pytest.raises(grpc.RpcError) as info:
            client.calibration(bins=1)
        assert isinstance(info.value, grpc.Call)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith("bins:")
        with pytest.raises(grpc.RpcError) as info:
            client.acknowledge("no-such-alert")
        assert isinstance(info.value, grpc.Call) and info.value.code() == grpc.StatusCode.NOT_FOUND

        # Alerts: a raised one can be acknowledged once and then leaves the active list.
        from server.monitoring.alerts import AlertCandidate

        srv.monitor.record(
            AlertCandidate("high_error_rate", "critical", "server", "test alert", 0.2, 0.05)
        )
        alerts = client.alerts()
        assert alerts and alerts[0].severity == monitoring_pb2.SEVERITY_CRITICAL
        acked = client.acknowledge(alerts[0].id, by="tester")
        assert acked.acknowledged and acked.acknowledged_by == "tester"
        assert alerts[0].id not in {a.id for a in client.alerts()}
        assert alerts[0].id in {a.id for a in client.alerts(include_acknowledged=True)}

        target = ["--target", f"127.0.0.1:{srv.port}"]
        assert cli.main([*target, "health"]) == 0
        assert cli.main([*target, "calibration"]) == 0
        out = capsys.readouterr().out
        assert "health score" in out.lower() and "ece" in out.lower()
