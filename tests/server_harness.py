"""Starting a real server on a free loopback port for tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from clients.client import MinhosClient, bars_from_arrays
from export.data import MarketData
from minhos.v1 import common_pb2
from server.app import MinhosServer
from server.core.config import Config


def server_config(config: Config, **server: Any) -> Config:
    settings: dict[str, Any] = {"port": 0, "metrics_port": 0, "reload_interval_s": 0.1, **server}
    return dataclasses.replace(config, server=dataclasses.replace(config.server, **settings))


@contextmanager
def running(config: Config, **server: Any) -> Iterator[tuple[MinhosServer, MinhosClient]]:
    srv = MinhosServer(server_config(config, **server)).start()
    client = MinhosClient(
        f"127.0.0.1:{srv.port}", token=config.server.token or server.get("token") or None
    )
    try:
        client.wait_ready(5)
        yield srv, client
    finally:
        client.close()
        srv.stop(grace=1.0)


def window(data: MarketData, end: int, need: int) -> list[common_pb2.Bar]:
    return bars_from_arrays(data.times[end - need : end], data.ohlcv[end - need : end])


def live_index(data: MarketData) -> int:
    """First bar after the tiny models' training data."""
    return int(data.times.searchsorted(np.datetime64("2007-01-01")))
