"""The newest predictions: time, symbol, direction, fused P(up), a confidence bar, agreement
(high agreement marked), Kelly stake and the outcome once resolved."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dash import html

from dashboard.formatting import number, percent, when
from dashboard.widgets import PAGE_SIZE, table
from minhos.v1 import common_pb2, inference_pb2

COLUMNS = (
    "bar (UTC)",
    "symbol",
    "direction",
    "P(up)",
    "confidence",
    "agreement",
    "Kelly stake",
    "outcome",
)


def confidence_bar(confidence: float) -> html.Div:
    """Confidence runs from 0.5 (a coin) to 1, so the bar fills from 0.5."""
    width = max(0.0, min(1.0, (confidence - 0.5) * 2)) * 100
    return html.Div(
        [
            html.Div(className="bar-fill", style={"width": f"{width:.0f}%"}),
            html.Span(number(confidence), className="bar-text"),
        ],
        className="bar",
    )


def outcome_cell(record: inference_pb2.PredictionRecord) -> Any:
    if not record.HasField("outcome"):
        return html.Span("pending", className="pending")
    o = record.outcome
    text = f"{'hit' if o.hit else 'miss'} ({o.realized_return:+.2%})"
    return html.Span(text, className="hit" if o.hit else "miss")


def predictions_table(
    records: Sequence[inference_pb2.PredictionRecord], high_agreement: float, page: int
) -> html.Div:
    rows: list[list[Any]] = []
    for r in records:
        p = r.prediction
        up = p.direction == common_pb2.DIRECTION_UP
        high = p.agreement >= high_agreement
        rows.append(
            [
                when(p.bar_time),
                p.symbol,
                html.Span("▲ up" if up else "▼ down", className="up" if up else "down"),
                number(p.probability_up),
                confidence_bar(p.confidence),
                html.Span(
                    f"{number(p.agreement)}{' ★' if high else ''}",
                    className="high-agreement" if high else "",
                    title="high agreement" if high else "",
                ),
                percent(p.kelly_fraction, 2),
                outcome_cell(r),
            ]
        )
    return table("predictions-table", COLUMNS, rows, page_size=PAGE_SIZE, page=page)
