"""The RPCs behind the dashboard, on a real server after a replay, checked against the predictions
the server lists and the models it serves: metric series, Kelly status, performance, model
details, and the health report's sub-scores and bands."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest

from clients.replay import replay
from export.data import MarketData
from minhos.v1 import common_pb2
from server.core.calibrator import KellyComponent
from tests.conftest import Trained
from tests.server_harness import live_index, running

pytestmark = pytest.mark.serving

BARS = 300


@pytest.mark.slow
def test_dashboard_rpcs_agree_with_the_stored_predictions(
    trained: Trained, sp500: MarketData
) -> None:
    with running(trained.config()) as (srv, client):
        start = live_index(sp500)
        end = start + BARS
        replay(
            client, "SPX", sp500.times[:end], sp500.ohlcv[:end], start_index=start, progress=False
        )
        srv.writer.flush()
        listed = list(reversed(client.list_predictions(limit=BARS)))  # oldest first
        resolved = [r for r in listed if r.HasField("outcome")]
        assert len(listed) == BARS and len(resolved) == BARS - 1

        perf = client.performance(points=50)
        assert (perf.symbol, perf.resolved) == ("SPX", BARS - 1)
        assert perf.hits == sum(r.outcome.hit for r in resolved)
        equity = np.cumprod([1 + r.outcome.position_return for r in resolved])
        held = np.cumprod([1 + r.outcome.realized_return for r in resolved])
        assert perf.kelly_return == pytest.approx(equity[-1] - 1)
        assert perf.buy_and_hold_return == pytest.approx(held[-1] - 1)
        assert perf.buy_and_hold_max_drawdown == pytest.approx(
            float(np.min(held / np.maximum.accumulate(held) - 1))
        )
        assert len(perf.equity) == 50
        assert perf.equity[-1].time == resolved[-1].prediction.bar_time
        high = [r for r in resolved if r.prediction.agreement >= 0.9]
        strict = client.performance(high_agreement=0.9)
        assert strict.by_agreement[0].resolved == len(high)
        assert strict.by_agreement[0].hits == sum(r.outcome.hit for r in high)
        assert strict.by_agreement[1].resolved == len(resolved) - len(high)

        series = client.metric_series(window=50, points=20)
        fused = next(
            s
            for s in series.series
            if s.metric == "accuracy" and s.component == common_pb2.COMPONENT_FUSION
        )
        newest = listed[-50:]
        outcomes = [r.outcome.hit for r in newest if r.HasField("outcome")]
        assert fused.points[-1].value == pytest.approx(np.mean(outcomes))
        assert fused.points[-1].count == len(outcomes)
        assert fused.points[-1].time == listed[-1].prediction.bar_time
        assert fused.thresholds[0].name == "expected (validation)"
        assert all(len(t.values) == len(fused.points) for t in fused.thresholds)
        assert series.as_of == listed[-1].prediction.bar_time

        kelly = client.kelly_status(bins=5)
        version = srv.repository.deployed()["kelly"]
        _, payload = srv.repository.load_verified("kelly", version)
        component = KellyComponent.from_json(payload.decode())
        assert kelly.version.version == version and kelly.calibrator == component.method
        assert kelly.payoff_ratio == pytest.approx(component.payoff_ratio)
        stakes = [r.prediction.kelly_fraction for r in listed]
        assert kelly.predictions == BARS
        assert kelly.sized_share == pytest.approx(np.mean([s > 0 for s in stakes]))
        assert sum(b.count for b in kelly.stakes) == sum(s > 0 for s in stakes)
        assert kelly.stakes[-1].upper == pytest.approx(kelly.cap) and len(kelly.stakes) == 5

        details = client.model_details()
        deployed = {
            d.version.kind: d
            for d in details.models
            if d.version.stage == common_pb2.MODEL_STAGE_DEPLOYED
        }
        assert set(deployed) == {
            common_pb2.MODEL_KIND_LSTM,
            common_pb2.MODEL_KIND_ENSEMBLE,
            common_pb2.MODEL_KIND_KELLY,
        }
        lstm = deployed[common_pb2.MODEL_KIND_LSTM]
        assert [s.name for s in lstm.spans] == ["train", "validation"]
        assert any(c.baseline == "coin flip" and c.metric == "log_loss" for c in lstm.comparisons)
        assert dict((s.name, s.value) for s in lstm.settings)["seed"] == "3"
        assert not details.active_jobs
        job = client.trigger_retrain("kelly", note="test").job
        assert [j.id for j in client.model_details().active_jobs] == [job.id]

        health = client.health()
        assert health.warn_health_score == 60 and health.critical_health_score == 30
        fusion = next(c for c in health.components if c.component == common_pb2.COMPONENT_FUSION)
        assert set(fusion.subscores) >= {"accuracy", "confidence"}
        assert all(0 <= v <= 100 for v in fusion.subscores.values())

        with pytest.raises(grpc.RpcError) as err:
            client.metric_series(points=501)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            client.performance(high_agreement=1.5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        other = client.performance(symbol="OTHER")
        assert other.resolved == 0 and math.isnan(other.hit_rate) and not other.equity
