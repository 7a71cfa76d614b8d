"""The load of ``make reliability`` in short (issue 11): 16 clients mixing Predict, PredictStream and
RecordOutcome for a few seconds against a real server process; no errors, every acknowledged row
stored after SIGTERM, memory bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clients.bench import Models
from clients.reliability import Series, load_lines, load_on_real_server
from export.data import MarketData
from tests.conftest import Trained
from tests.reliability_record import record

pytestmark = pytest.mark.serving

SECONDS = 3.0
CLIENTS = 16
#: Resident memory the server may gain over a short run (the recent-predictions book fills).
RSS_GROWTH_MB = 40.0


def test_mixed_load_on_a_real_server(trained: Trained, sp500: MarketData, tmp_path: Path) -> None:
    models = Models(trained.root / "models", trained.root / "minhos.db")
    series = Series(sp500.times, sp500.ohlcv, int(sp500.times.searchsorted(np.datetime64("2007"))))
    result, persisted, status = load_on_real_server(
        models, tmp_path, CLIENTS, SECONDS, series=series
    )
    for line in load_lines(result, persisted):
        record(f"{line.scenario} (make test)", line.checked, line.figure)
    assert result.errors == []
    assert status == 0  # drained on SIGTERM
    assert all(len(result.latencies[m]) >= 5 for m in ("Predict", "PredictStream", "RecordOutcome"))
    assert result.stream_messages > 0 and result.outcomes
    assert persisted.predictions_missing == persisted.outcomes_missing == 0
    assert persisted.integrity == "ok"
    assert len(result.rss) >= 3
    assert result.rss_at(1.0) - result.rss_at(0.0) < RSS_GROWTH_MB
