"""Other daily series shipped inside packages, and training pooled over several series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.data import SERIES, MarketData, load_bokeh_stock, load_series
from export.train import pool, prepare, train_and_publish
from server.core.bars import CLOSE
from server.core.config import load_config
from server.storage.registry import ModelRepository
from server.storage.schema import close_database, open_database
from tests.conftest import TRAIN_END
from tests.tiny_models import TINY

EXPECTED = {
    "NASDAQ": (5031, "1999-01-04", "2018-12-31"),
    "AAPL": (3270, "2000-03-01", "2013-03-01"),
    "IBM": (3270, "2000-03-01", "2013-03-01"),
    "MSFT": (3270, "2000-03-01", "2013-03-01"),
    "GOOG": (2148, "2004-08-19", "2013-03-01"),
    "AAPL-2019": (1509, "2019-01-02", "2024-12-30"),
}


def test_packaged_series_load_and_validate() -> None:
    assert set(EXPECTED) | {"SPX"} == set(SERIES)
    for data in load_series(list(EXPECTED)):
        n, first, last = EXPECTED[data.symbol]
        assert (len(data), str(data.times[0])[:10], str(data.times[-1])[:10]) == (n, first, last)
        assert np.all(np.diff(data.times.astype(np.int64)) > 0)


@pytest.mark.parametrize(("ticker", "day"), [("AAPL", "2005-02-28"), ("MSFT", "2003-02-18")])
def test_splits_are_adjusted_away(ticker: str, day: str) -> None:
    """A 2-for-1 split is a -50 % close-to-close move in raw prices; adjusted, an ordinary day."""
    from bokeh_sampledata import stocks

    raw = getattr(stocks, ticker)
    i = raw["date"].index(day)
    assert raw["close"][i] / raw["close"][i - 1] < 0.6
    data = load_bokeh_stock(ticker)
    j = int(np.searchsorted(data.times, np.datetime64(day)))
    assert abs(data.ohlcv[j, CLOSE] / data.ohlcv[j - 1, CLOSE] - 1) < 0.1
    np.testing.assert_allclose(data.ohlcv[:, CLOSE], raw["adj_close"])


def test_unknown_series_is_named() -> None:
    with pytest.raises(ValueError, match="unknown series XYZ"):
        load_series(["SPX", "XYZ"])


def _slices(sp500: MarketData) -> list[MarketData]:
    end = int(sp500.times.searchsorted(np.datetime64(TRAIN_END)))
    nasdaq = load_series(["NASDAQ"])[0]
    return [sp500.slice(0, end), nasdaq.slice(0, end - 100)]


def test_pool_keeps_each_series_walk_forward_and_apart(sp500: MarketData) -> None:
    members = [prepare(data, TINY) for data in _slices(sp500)]
    ds, split, placed = pool(members)
    assert len(ds.data) == sum(len(m.dataset.data) for m in placed)
    for span in ("train", "validation", "test"):
        assert len(getattr(split, span)) == sum(len(getattr(s, span)) for _, s in members)
    for member in placed:
        own, mine = member.split, member.dataset
        # The pooled samples are the series' own, window for window.
        np.testing.assert_array_equal(
            ds.sequences(own.train + member.offset), mine.sequences(own.train)
        )
        np.testing.assert_array_equal(ds.y[own.test + member.offset], mine.y[own.test])
    times = ds.data.times
    assert times[split.train].max() < np.datetime64(TINY.validation_start)
    assert times[split.validation].min() >= np.datetime64(TINY.validation_start)
    assert times[split.validation].max() < np.datetime64(TINY.test_start)
    assert times[split.test].min() >= np.datetime64(TINY.test_start)


@pytest.mark.slow
def test_pooled_training_publishes_and_reports_the_first_series(
    tmp_path: Path, sp500: MarketData
) -> None:
    open_database(f"sqlite:///{tmp_path}/minhos.db")
    try:
        report = train_and_publish(
            _slices(sp500),
            ModelRepository(tmp_path / "models"),
            TINY,
            load_config(env={}),
            progress=False,
        )
    finally:
        close_database()
    assert "SPX (trained on SPX+NASDAQ)" in report.table
    assert {"SPX train", "NASDAQ test"} <= set(report.split)
    assert "fused + platt" in report.signals
    spec = report.manifests["lstm"].feature_spec
    assert spec.train_end < TINY.validation_start
