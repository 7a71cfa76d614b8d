"""The stream's core: its incremental features give the same predictions as a unary Predict on the
same window (also across buffer compaction and interleaved symbols), a bad request in a batch
stops the batch there with the field named, limits hold, and a server failure is reported."""

from __future__ import annotations

import logging

import grpc
import numpy as np
import pytest

from clients.client import bars_from_arrays
from export.data import MarketData
from server.core.errors import InvalidArgument, NotFound, ResourceExhausted
from server.serving.dataplane import DataPlane
from server.serving.models import ModelSet
from server.serving.stream import StreamBars, StreamSession, StreamStep
from server.storage.schema import RequestRow
from tests.conftest import Trained
from tests.server_harness import live_index, running

pytestmark = pytest.mark.serving


def _bars(symbols: list[str], times: np.ndarray, ohlcv: np.ndarray, first: int) -> StreamBars:
    seconds = times.astype("datetime64[s]").astype(np.int64)
    return StreamBars(symbols, seconds, np.array(ohlcv, dtype=np.float64), first)


def _unary(plane: DataPlane, symbol: str, data: MarketData, end: int, need: int) -> float:
    seconds = data.times[end - need : end].astype("datetime64[s]").astype(np.int64)
    return plane.predict(symbol, seconds, data.ohlcv[end - need : end]).probability_up


@pytest.mark.parametrize("capacity", [1024, 0])  # 0: the smallest buffer (compacts every batch)
def test_stream_predictions_equal_unary_predictions(
    trained: Trained, sp500: MarketData, capacity: int
) -> None:
    with running(trained.config(), symbols="SPX,NDX") as (srv, _):
        plane = srv.plane
        need = plane.models().bars_required
        session = StreamSession(plane)
        session.capacity = capacity or need
        start, n = live_index(sp500), need + 40
        # Two symbols interleaved (NDX is SPX shifted by 7 bars), in batches of uneven sizes.
        order = [("SPX", start + i) for i in range(n)] + [("NDX", start + 7 + i) for i in range(n)]
        order.sort(key=lambda item: item[1] - (7 if item[0] == "NDX" else 0))
        steps: list[tuple[str, int, StreamStep]] = []
        sizes, at = [1, 5, 64, 2, 13], 0
        while at < len(order):
            chunk = order[at : at + sizes[at % len(sizes)]]
            rows = [i for _, i in chunk]
            got, error = session.step_many(
                _bars([s for s, _ in chunk], sp500.times[rows], sp500.ohlcv[rows], at)
            )
            assert error is None
            steps += [(s, i, step) for (s, i), step in zip(chunk, got, strict=True)]
            at += len(chunk)
        predicted = [(s, i, step) for s, i, step in steps if step.prediction is not None]
        assert len(predicted) == 2 * (n - need + 1)
        for symbol, i, step in predicted:
            assert step.prediction is not None
            assert step.prediction.probability_up == _unary(plane, symbol, sp500, i + 1, need)
        for symbol, i, step in steps:
            if step.prediction is None:
                first = start + (7 if symbol == "NDX" else 0)
                assert step.bars_needed == need - (i - first + 1)


def test_a_bad_request_stops_the_batch_there(trained: Trained, sp500: MarketData) -> None:
    with running(trained.config(), symbols="SPX,NDX") as (srv, _):
        session = StreamSession(srv.plane)
        start = live_index(sp500)
        rows = list(range(start, start + 4))
        ohlcv = sp500.ohlcv[rows].copy()
        ohlcv[1, 1] = ohlcv[1, 2] / 2  # high below low
        ohlcv[3, 3] = np.nan
        steps, error = session.step_many(_bars(["SPX"] * 4, sp500.times[rows], ohlcv, 10))
        assert len(steps) == 1 and isinstance(error, InvalidArgument)
        assert str(error).startswith("requests[11].bar.high: high ")

        times = sp500.times[rows].copy()
        times[2] = np.datetime64("1970-01-01")
        steps, error = session.step_many(_bars(["NDX"] * 4, times, sp500.ohlcv[rows], 0))
        assert len(steps) == 2 and str(error) == "requests[2].bar.time: time is not set"

        steps, error = session.step_many(
            _bars(["NDX", "AAPL"], sp500.times[rows[2:]], sp500.ohlcv[rows[2:]], 4)
        )
        assert len(steps) == 1 and isinstance(error, NotFound)
        assert str(error).startswith("requests[5].symbol: unknown symbol 'AAPL'")

        steps, error = session.step_many(_bars(["NDX"], sp500.times[rows[:1]], sp500.ohlcv[:1], 6))
        assert not steps and isinstance(error, InvalidArgument)
        assert str(error).startswith("requests[6].bar.time: bar time ")


def test_a_stream_holds_at_most_the_configured_symbols(trained: Trained, sp500: MarketData) -> None:
    with running(trained.config(), stream_max_symbols=2) as (srv, _):
        session = StreamSession(srv.plane)
        rows = [live_index(sp500)] * 3
        steps, error = session.step_many(
            _bars(["A", "B", "C"], sp500.times[rows], sp500.ohlcv[rows], 0)
        )
        assert len(steps) == 2 and isinstance(error, ResourceExhausted)
        assert str(error).startswith("requests[2].symbol: 'C' would be symbol 3 of this stream")


def test_a_server_failure_in_a_stream_is_internal_and_logged_with_its_traceback(
    trained: Trained,
    sp500: MarketData,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(self: ModelSet, sequences: np.ndarray) -> None:
        raise RuntimeError("session exploded")

    with running(trained.config()) as (srv, client):
        need = srv.plane.models().bars_required
        monkeypatch.setattr(ModelSet, "score_features", broken)
        start = live_index(sp500)
        bars = bars_from_arrays(
            sp500.times[start : start + need], sp500.ohlcv[start : start + need]
        )
        with (
            caplog.at_level(logging.ERROR, logger="minhos.rpc"),
            pytest.raises(grpc.RpcError) as info,
        ):
            list(client.predict_stream(bars, symbol="SPX"))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert "RuntimeError" in (info.value.details() or "")
        logged = [r for r in caplog.records if r.message == "unhandled error"]
        assert logged and logged[0].exc_info and logged[0].exc_info[0] is RuntimeError
        srv.writer.flush()
        failed = RequestRow.get(RequestRow.code == "INTERNAL")
        assert failed.method == "PredictStream" and failed.latency_ms < 1000
