"""Reads behind the dashboard's aggregates (metric series, Kelly stakes, equity): the newest
predictions of the table as numpy columns, with their outcomes. The aggregation itself is in
server.monitoring.series and server.monitoring.performance."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import peewee as pw

from server.storage.schema import OutcomeRow, PredictionRow, database

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class PredictionColumns:
    """Predictions in bar_time order; outcome columns are NaN / False where none is stored."""

    bar_time: list[dt.datetime]
    p_up: FloatArray
    confidence: FloatArray
    lstm_p: FloatArray
    ensemble_p: FloatArray
    agreement: FloatArray
    kelly_fraction: FloatArray
    latency_ms: FloatArray
    resolved: BoolArray
    realized_return: FloatArray
    hit: BoolArray
    position_return: FloatArray

    def __len__(self) -> int:
        return len(self.bar_time)

    @property
    def up(self) -> BoolArray:
        """Whether the bar after each resolved prediction went up (False where unresolved)."""
        return np.asarray(np.nan_to_num(self.realized_return, nan=0.0) > 0)


_COLUMNS = (
    PredictionRow.bar_time,
    PredictionRow.probability_up,
    PredictionRow.confidence,
    PredictionRow.lstm_probability,
    PredictionRow.ensemble_probability,
    PredictionRow.agreement,
    PredictionRow.kelly_fraction,
    PredictionRow.latency_ms,
    OutcomeRow.realized_return,
    OutcomeRow.hit,
    OutcomeRow.position_return,
)


def newest_predictions(
    newest: int,
    *,
    symbol: str | None = None,
    kelly_version: str | None = None,
    resolved_only: bool = False,
) -> PredictionColumns:
    """The newest ``newest`` predictions (of ``symbol``, sized by ``kelly_version``, resolved
    only, when given), returned oldest first."""
    join = pw.JOIN.INNER if resolved_only else pw.JOIN.LEFT_OUTER
    query = PredictionRow.select(*_COLUMNS).join(
        OutcomeRow, join, on=(OutcomeRow.prediction == PredictionRow.id)
    )
    if symbol:
        query = query.where(PredictionRow.symbol == symbol)
    if kelly_version:
        query = query.where(PredictionRow.kelly_version == kelly_version)
    query = query.order_by(PredictionRow.bar_time.desc()).limit(newest)
    # The driver's rows, not peewee's models: per-field conversion would cost more than the fetch.
    rows: list[tuple[Any, ...]] = list(database.execute(query).fetchall())
    rows.reverse()
    resolved = np.array([r[8] is not None for r in rows], dtype=bool)

    def column(i: int, missing: float = np.nan) -> FloatArray:
        return np.array([missing if r[i] is None else r[i] for r in rows], dtype=np.float64)

    return PredictionColumns(
        bar_time=[dt.datetime.fromisoformat(r[0]) if isinstance(r[0], str) else r[0] for r in rows],
        p_up=column(1),
        confidence=column(2),
        lstm_p=column(3),
        ensemble_p=column(4),
        agreement=column(5),
        kelly_fraction=column(6),
        latency_ms=column(7),
        resolved=resolved,
        realized_return=column(8),
        hit=np.array([bool(r[9]) for r in rows], dtype=bool) & resolved,
        position_return=column(10),
    )


def newest_symbol() -> str | None:
    """The symbol of the newest prediction (by bar time), if any."""
    row = PredictionRow.select(PredictionRow.symbol).order_by(PredictionRow.bar_time.desc()).first()
    return str(row.symbol) if row is not None else None
