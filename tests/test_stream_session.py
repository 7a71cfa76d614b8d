"""The stream's core without gRPC: its incremental features give the same predictions as a unary
Predict on the same window (also across buffer compaction and interleaved symbols), and a bad
request in a batch stops the batch there with the field named."""

from __future__ import annotations

import numpy as np
import pytest

from export.data import MarketData
from server.dataplane import DataPlane, StreamBars, StreamStep
from server.errors import InvalidArgument, NotFound
from tests.conftest import Trained
from tests.server_harness import live_index, running


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
        session = plane.stream()
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
        session = srv.plane.stream()
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
