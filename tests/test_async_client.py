"""The asyncio client against the real server: concurrent Predicts, a stream, an idempotent outcome."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from clients.client import AsyncMinhosClient, bar
from export.data import MarketData
from tests.conftest import Trained
from tests.server_harness import live_index, running, window

pytestmark = pytest.mark.serving


def test_async_client_predicts_streams_and_records(trained: Trained, sp500: MarketData) -> None:
    with running(trained.config()) as (srv, sync_client):
        target = f"127.0.0.1:{srv.port}"
        need = sync_client.serving_info().bars_required
        start = live_index(sp500)

        async def scenario() -> None:
            async with AsyncMinhosClient(target) as client:
                assert (await client.serving_info()).bars_required == need
                replies = await asyncio.gather(
                    *(client.predict("SPX", window(sp500, start + k, need)) for k in range(16))
                )
                assert len({r.prediction_id for r in replies}) == 16
                # Same window, same answer, whichever call it came through.
                again = await client.predict("SPX", window(sp500, start + 3, need))
                assert again.probability_up == replies[3].probability_up
                bars = [
                    bar(t, *map(float, row))
                    for t, row in zip(
                        sp500.times[start : start + need + 2],
                        sp500.ohlcv[start : start + need + 2],
                        strict=True,
                    )
                ]
                streamed = [r async for r in client.predict_stream(bars, symbol="SPX")]
                assert len(streamed) == need + 2 and streamed[-1].HasField("resolved")
                first = await client.record_outcome(replies[0].prediction_id, 0.01)
                second = await client.record_outcome(replies[0].prediction_id, -0.5)
                assert not first.already_recorded and second.already_recorded
                assert second.outcome.realized_return == pytest.approx(0.01)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await client.predict("SPX", window(sp500, start, need)[:-1])
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        asyncio.run(scenario())
