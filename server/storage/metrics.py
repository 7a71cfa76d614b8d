"""Writes of metric snapshots (health scores, accuracies), for trends and the dashboard."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from server.storage.schema import MetricRow


def insert_snapshots(
    snapshots: Sequence[tuple[str, str, float]], market_time: dt.datetime, created_at: dt.datetime
) -> None:
    """(name, component, value) triples; NaN values are skipped."""
    rows = [
        {
            "name": name,
            "component": component,
            "value": value,
            "market_time": market_time,
            "created_at": created_at,
        }
        for name, component, value in snapshots
        if not math.isnan(value)
    ]
    if rows:
        MetricRow.insert_many(rows).execute()
