"""The real server on a loopback port, driven through the Python client: every inference RPC,
streaming with outcome resolution, bad input, auth, health, reflection, metrics, hot reload."""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from clients.client import MinhosClient, bar, columns_from_arrays, raw_from_arrays
from export.data import MarketData
from minhos.v1 import common_pb2
from server.core import features as F
from server.storage.schema import OutcomeRow, PredictionRow, RequestRow
from tests.conftest import TINY_WINDOW, Trained
from tests.server_harness import live_index, running, window


@pytest.mark.serving
def test_predict_returns_a_fused_sized_prediction(trained: Trained, sp500: MarketData) -> None:
    with running(trained.config()) as (srv, client):
        info = client.serving_info()
        need = info.bars_required
        assert need == F.bars_required(TINY_WINDOW)
        assert tuple(info.feature_names) == F.FEATURE_NAMES
        assert {v.kind for v in info.deployed} == {
            common_pb2.MODEL_KIND_LSTM,
            common_pb2.MODEL_KIND_ENSEMBLE,
            common_pb2.MODEL_KIND_KELLY,
        }
        end = live_index(sp500) + 10
        reply = client.predict("SPX", window(sp500, end, need))
        assert len(reply.prediction_id) == 32
        assert reply.bar_time.ToDatetime() == sp500.times[end - 1].astype(object)
        assert 0 < reply.probability_up < 1 and 0.5 <= reply.confidence <= 1
        up = reply.probability_up >= 0.5
        assert reply.direction == (common_pb2.DIRECTION_UP if up else common_pb2.DIRECTION_DOWN)
        assert reply.probability_up == pytest.approx(
            0.5 * reply.lstm.probability_up + 0.5 * reply.ensemble.probability_up
        )
        assert 0 <= reply.kelly_fraction <= trained.config().kelly.cap
        assert reply.server_latency.ToNanoseconds() > 0
        versions = srv.holder.current.versions
        assert (reply.lstm.version, reply.ensemble.version, reply.kelly_version) == (
            versions["lstm"],
            versions["ensemble"],
            versions["kelly"],
        )
        # More bars than needed: the oldest are ignored, the answer is the same.
        again = client.predict("SPX", window(sp500, end, need + 30))
        assert again.probability_up == reply.probability_up
        # The columnar form of the same window gives the same answer.
        columns = columns_from_arrays(sp500.times[end - need : end], sp500.ohlcv[end - need : end])
        assert client.predict("SPX", columns).probability_up == reply.probability_up
        # And so do the raw little-endian buffers.
        raw = raw_from_arrays(sp500.times[end - need : end], sp500.ohlcv[end - need : end])
        assert client.predict("SPX", raw).probability_up == reply.probability_up
        srv.writer.flush()
        row = PredictionRow.get_by_id(reply.prediction_id)
        assert row.probability_up == reply.probability_up


@pytest.mark.serving
def test_stream_resolves_outcomes_and_record_outcome_is_idempotent(
    trained: Trained, sp500: MarketData
) -> None:
    with running(trained.config()) as (srv, client):
        need = client.serving_info().bars_required
        start = live_index(sp500)
        n = need + 30
        times, ohlcv = sp500.times[start : start + n], sp500.ohlcv[start : start + n]
        replies = list(
            client.predict_stream(
                (bar(t, *map(float, r)) for t, r in zip(times, ohlcv, strict=True)), symbol="SPX"
            )
        )
        assert len(replies) == n
        assert [r.bars_needed for r in replies[: need - 1]] == list(range(need - 1, 0, -1))
        assert all(not r.HasField("prediction") for r in replies[: need - 1])
        assert all(r.HasField("prediction") for r in replies[need - 1 :])
        resolved = [r for r in replies if r.HasField("resolved")]
        assert len(resolved) == n - need
        for i in range(need, n):
            previous, outcome = replies[i - 1].prediction, replies[i].resolved
            assert outcome.prediction_id == previous.prediction_id
            expected = ohlcv[i, 3] / ohlcv[i - 1, 3] - 1
            assert outcome.realized_return == pytest.approx(expected, rel=1e-12)
            went_up = expected > 0
            assert outcome.hit == (went_up == (previous.direction == common_pb2.DIRECTION_UP))
            assert outcome.position_return == pytest.approx(
                previous.kelly_fraction
                * (1 if previous.direction == common_pb2.DIRECTION_UP else -1)
                * expected
            )
        # The stream resolved it already: RecordOutcome returns the stored outcome, unchanged.
        first = resolved[0].resolved
        again = client.record_outcome(first.prediction_id, 0.5)
        assert again.already_recorded and again.outcome.realized_return == first.realized_return
        # The last prediction is open: a unary outcome resolves it once.
        last = replies[-1].prediction.prediction_id
        recorded = client.record_outcome(last, -0.01)
        assert not recorded.already_recorded and recorded.outcome.hit == (
            replies[-1].prediction.direction == common_pb2.DIRECTION_DOWN
        )
        assert client.record_outcome(last, 0.02).already_recorded
        srv.writer.flush()
        assert OutcomeRow.select().count() == n - need + 1
        listed = client.list_predictions("SPX", limit=5)
        assert len(listed) == 5 and listed[0].prediction.prediction_id == last
        assert listed[0].outcome.realized_return == pytest.approx(-0.01)


def _code(call: object) -> tuple[grpc.StatusCode, str]:
    assert isinstance(call, grpc.Call)
    return call.code(), call.details() or ""


@pytest.mark.serving
def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving(
    trained: Trained, sp500: MarketData
) -> None:
    config = trained.config()
    with running(config, symbols="SPX,NDX", max_message_bytes=64 * 1024) as (_, client):
        need = client.serving_info().bars_required
        end = live_index(sp500) + 5
        good = window(sp500, end, need)

        def fails(bars: list[common_pb2.Bar], symbol: str = "SPX") -> tuple[grpc.StatusCode, str]:
            with pytest.raises(grpc.RpcError) as info:
                client.predict(symbol, bars)
            return _code(info.value)

        code, text = fails(good[:-1])
        assert (
            code == grpc.StatusCode.INVALID_ARGUMENT
            and text.startswith("bars:")
            and str(need) in text
        )
        for field, value, expected in (
            ("close", math.nan, "bars[3].close"),
            ("open", math.inf, "bars[3].open"),
            ("low", -1.0, "bars[3].low"),
            ("high", 1.0, "bars[3].high"),  # below low
        ):
            bad = [common_pb2.Bar() for _ in good]
            for b, g in zip(bad, good, strict=True):
                b.CopyFrom(g)
            setattr(bad[3], field, value)
            code, text = fails(bad)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, text
            assert text.startswith(expected), text
        unsorted = list(good)
        unsorted[5], unsorted[6] = unsorted[6], unsorted[5]
        code, text = fails(unsorted)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "bars[6].time" in text
        assert fails(good, symbol="")[0] == grpc.StatusCode.INVALID_ARGUMENT
        code, text = fails(good, symbol="SPX; DROP")
        assert code == grpc.StatusCode.INVALID_ARGUMENT and text.startswith("symbol:")
        code, text = fails(good, symbol="AAPL")
        assert code == grpc.StatusCode.NOT_FOUND and text.startswith("symbol:")
        code, _ = fails(good * 40)  # far above 64 KiB
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as info:
            client.record_outcome("no-such-id", 0.01)
        assert _code(info.value)[0] == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            client.record_outcome("x", math.nan)
        assert _code(info.value) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "realized_return: nan is not a simple return (finite, > -1)",
        )
        # A bad bar in a stream ends that stream with the field named; others are unaffected.
        bars = [
            bar(t, *map(float, r))
            for t, r in zip(sp500.times[end : end + 3], sp500.ohlcv[end : end + 3], strict=True)
        ]
        bars[2].close = -5
        with pytest.raises(grpc.RpcError) as info:
            list(client.predict_stream(bars, symbol="SPX"))
        code, text = _code(info.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and text.startswith(
            "requests[2].bar.close"
        ), text

        # A client deadline ends the call as DEADLINE_EXCEEDED: a stream whose client stalls past it.
        def stalled() -> Iterator[common_pb2.Bar]:
            yield bars[0]
            time.sleep(1.0)
            yield bars[1]

        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            list(client.predict_stream(stalled(), symbol="SPX", timeout=0.3))
        assert _code(info.value)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - began < 0.9
        assert 0 < client.predict("SPX", good).probability_up < 1


@pytest.mark.serving
def test_health_reflection_metrics_and_token(trained: Trained, sp500: MarketData) -> None:
    with running(trained.config(), token="s3cret", metrics_port=0) as (srv, client):
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert "minhos.v1.InferenceService" in services and "grpc.health.v1.Health" in services
        with pytest.raises(grpc.RpcError) as info:
            MinhosClient(f"127.0.0.1:{srv.port}").serving_info()
        assert _code(info.value)[0] == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            MinhosClient(f"127.0.0.1:{srv.port}", token="wrong").serving_info()
        assert _code(info.value)[0] == grpc.StatusCode.UNAUTHENTICATED
        need = client.serving_info().bars_required
        client.predict("SPX", window(sp500, live_index(sp500), need))
        metrics_port = srv.telemetry.serve("127.0.0.1", 0)
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        )
        assert 'minhos_requests_total{code="OK",method="Predict"} 1.0' in text
        assert "minhos_request_seconds_bucket" in text and "minhos_model_version_info" in text
        srv.writer.flush()
        assert RequestRow.select().where(RequestRow.method == "Predict").count() == 1
        channel.close()


def test_hot_reload_under_load_never_fails_or_mixes(trained: Trained, sp500: MarketData) -> None:
    """A new LSTM is deployed while 4 threads predict: no request fails, and every response's LSTM
    probability is exactly what the version it names computes."""
    from export.train import fit_lstm, prepare
    from server.storage.registry import ModelRepository
    from tests.tiny_models import TINY

    config = trained.config()
    ds, split = prepare(sp500.slice(0, live_index(sp500)), TINY)
    challenger = fit_lstm(
        ds, split, TINY.__class__(seed=11, window=TINY.window, lstm=TINY.lstm), progress=False
    )
    with running(config) as (srv, client):
        need = client.serving_info().bars_required
        end = live_index(sp500) + 20
        bars = window(sp500, end, need)
        x = F.window_features(sp500.ohlcv[end - need : end], TINY.window)[None].astype(np.float32)
        expected = {}
        for version in (srv.holder.current.versions["lstm"],):
            expected[version] = client.predict("SPX", bars).lstm.probability_up
        sess = ort.InferenceSession(challenger.payload, providers=["CPUExecutionProvider"])
        new_p = float(sess.run(None, {"features": x})[0].reshape(-1)[0])
        seen: list[tuple[str, float]] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def hammer() -> None:
            with MinhosClient(f"127.0.0.1:{srv.port}", max_attempts=1) as own:
                while not stop.is_set():
                    try:
                        r = own.predict("SPX", bars)
                        seen.append((r.lstm.version, r.lstm.probability_up))
                    except grpc.RpcError as exc:  # pragma: no cover - the assertion reports it
                        errors.append(exc)

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        try:  # the load stops whatever happens, or a failure here would hang the test session
            time.sleep(0.5)
            manifest = ModelRepository(config.storage.model_repository).publish(
                "lstm",
                challenger.payload,
                file="model.onnx",
                feature_spec=challenger.feature_spec,
                metrics=challenger.metrics,
                deploy=True,
            )
            expected[manifest.version] = new_p
            deadline = time.monotonic() + 10
            while (
                srv.holder.current.versions["lstm"] != manifest.version
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert not errors
    versions = {v for v, _ in seen}
    assert versions == set(expected), versions
    for version, p in seen:
        assert p == pytest.approx(expected[version], abs=1e-6), version
    assert (
        abs(new_p - expected[next(iter(expected))]) > 1e-6
    )  # the two versions are distinguishable
