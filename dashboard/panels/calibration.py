"""Calibration: the reliability diagram zoomed to where the predictions are, with each bin's
count, and the accuracy of each confidence zone as bars with counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from dash import html

from dashboard.formatting import enum_name, number
from dashboard.panels import colors
from dashboard.widgets import empty_figure, figure_layout
from minhos.v1 import calibration_pb2

SOURCE_COLOR = {"fused": colors.SERIES["fusion"], "lstm": colors.SERIES["lstm"]}


def source_name(value: int) -> str:
    return enum_name(calibration_pb2.ProbabilitySource, value, "PROBABILITY_SOURCE_")


def zoom(values: Sequence[float], pad: float = 0.02) -> tuple[float, float]:
    """A range around ``values`` (within [0, 1]) with a small margin; the whole square if none."""
    finite = [v for v in values if v == v]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    margin = max((hi - lo) * 0.1, pad)
    return max(0.0, lo - margin), min(1.0, hi + margin)


def reliability_figure(reports: Sequence[calibration_pb2.CalibrationReport]) -> go.Figure:
    title = "Reliability: predicted P(up) against the observed frequency of up"
    populated = [(r, [b for b in r.bins if b.count]) for r in reports]
    if not any(bins for _, bins in populated):
        return empty_figure(title, "no resolved predictions yet", height=340)
    fig = go.Figure()
    largest = max(b.count for _, bins in populated for b in bins)
    xs: list[float] = []
    ys: list[float] = []
    for r, bins in populated:
        if not bins:
            continue
        source = source_name(r.source)
        x = [b.mean_confidence for b in bins]
        y = [b.observed_frequency for b in bins]
        xs += x
        ys += y
        fused = source == "fused"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers+text" if fused else "lines+markers",
                name=f"{source} (ECE {number(r.ece, 3)}, n={r.count})",
                text=[f"n={b.count}" for b in bins] if fused else None,
                textposition="top center",
                textfont={"size": 10},
                marker={"size": [8 + 16 * (b.count / largest) ** 0.5 for b in bins]},
                line={"width": 2 if fused else 1, "color": SOURCE_COLOR.get(source)},
                opacity=1.0 if fused else 0.6,
                customdata=[b.count for b in bins],
                hovertemplate="predicted %{x:.3f}, observed %{y:.3f}, n=%{customdata}"
                f"<extra>{source}</extra>",
            )
        )
    lo, hi = zoom(xs + ys)
    fig.add_trace(
        go.Scatter(
            x=[lo, hi],
            y=[lo, hi],
            mode="lines",
            name="perfectly calibrated",
            line={"dash": "dot", "color": "#999"},
        )
    )
    fig.update_xaxes(range=[lo, hi], title_text="mean predicted P(up) in the bin")
    fig.update_yaxes(range=[lo, hi], title_text="observed frequency of up")
    return figure_layout(
        fig, title, height=340, legend={"font": {"size": 10}, "y": -0.25, "orientation": "h"}
    )


def zones_figure(reports: Sequence[calibration_pb2.CalibrationReport]) -> go.Figure:
    title = "Fused accuracy by confidence zone"
    fused = next((r for r in reports if source_name(r.source) == "fused"), None)
    if fused is None or not any(z.count for z in fused.zones):
        return empty_figure(title, "no resolved predictions yet", height=340)
    names = [
        enum_name(calibration_pb2.ConfidenceZone, z.zone, "CONFIDENCE_ZONE_")
        + f"<br>{z.lower:.2f}–{z.upper:.2f}"
        for z in fused.zones
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=names,
            y=[z.accuracy if z.count else 0.0 for z in fused.zones],
            text=[
                f"{number(z.accuracy)}<br>n={z.count}" if z.count else "n=0" for z in fused.zones
            ],
            textposition=["inside" if z.count else "outside" for z in fused.zones],
            insidetextanchor="start",
            textfont={"color": ["white" if z.count else "#333" for z in fused.zones]},
            name="accuracy",
            marker={"color": colors.SERIES["fusion"]},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=names,
            y=[z.mean_confidence if z.count else None for z in fused.zones],
            mode="markers",
            name="mean confidence",
            marker={"symbol": "line-ew-open", "size": 28, "line": {"width": 3, "color": "#333"}},
        )
    )
    top = max([z.accuracy for z in fused.zones if z.count] + [z.upper for z in fused.zones])
    fig.update_yaxes(range=[0, min(1.0, top + 0.15)], title_text="share of right directions")
    return figure_layout(fig, title, height=340, legend={"orientation": "h", "y": -0.25})


def calibration_notes(reports: Sequence[calibration_pb2.CalibrationReport]) -> list[Any]:
    items: list[Any] = []
    for r in reports:
        items.append(
            html.Li(
                f"{source_name(r.source)}: ECE {number(r.ece, 4)}, MCE {number(r.mce, 4)}, "
                f"Brier {number(r.brier, 4)}, accuracy {number(r.accuracy)} over {r.count}"
            )
        )
        items.extend(html.Li(rec, className="recommendation") for rec in r.recommendations)
    return [html.Ul(items, id="calibration-notes")]
