"""Calibration: the reliability diagram zoomed to where the predictions are, with each bin's
count, and the accuracy of each confidence zone as bars with counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dash import html

from dashboard.formatting import enum_name, number
from dashboard.panels import colors
from dashboard.widgets import Figure, empty_figure, figure
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


def reliability_figure(reports: Sequence[calibration_pb2.CalibrationReport]) -> Figure:
    title = "Reliability: predicted P(up) against the observed frequency of up"
    populated = [(r, [b for b in r.bins if b.count]) for r in reports]
    if not any(bins for _, bins in populated):
        return empty_figure(title, "no resolved predictions yet", height=340)
    largest = max(b.count for _, bins in populated for b in bins)
    data: list[Figure] = []
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
        trace: Figure = {
            "type": "scatter",
            "x": x,
            "y": y,
            "mode": "lines+markers+text" if fused else "lines+markers",
            "name": f"{source} (ECE {number(r.ece, 3)}, n={r.count})",
            "textposition": "top center",
            "textfont": {"size": 10},
            # Marker area follows the bin's count: the eye should weigh the big bins.
            "marker": {"size": [8 + 16 * (b.count / largest) ** 0.5 for b in bins]},
            "line": {"width": 2 if fused else 1, "color": SOURCE_COLOR.get(source, "#2ca02c")},
            "opacity": 1.0 if fused else 0.6,
            "customdata": [b.count for b in bins],
            "hovertemplate": "predicted %{x:.3f}, observed %{y:.3f}, n=%{customdata}"
            f"<extra>{source}</extra>",
        }
        if fused:
            trace["text"] = [f"n={b.count}" for b in bins]
        data.append(trace)
    lo, hi = zoom(xs + ys)
    data.append(
        {
            "type": "scatter",
            "x": [lo, hi],
            "y": [lo, hi],
            "mode": "lines",
            "name": "perfectly calibrated",
            "line": {"dash": "dot", "color": "#999"},
        }
    )
    return figure(
        data,
        title,
        340,
        xaxis={"range": [lo, hi], "title": {"text": "mean predicted P(up) in the bin"}},
        yaxis={"range": [lo, hi], "title": {"text": "observed frequency of up"}},
        legend={"font": {"size": 10}, "y": -0.25, "orientation": "h"},
    )


def zones_figure(reports: Sequence[calibration_pb2.CalibrationReport]) -> Figure:
    title = "Fused accuracy by confidence zone"
    fused = next((r for r in reports if source_name(r.source) == "fused"), None)
    if fused is None or not any(z.count for z in fused.zones):
        return empty_figure(title, "no resolved predictions yet", height=340)
    zones = list(fused.zones)
    names = [
        enum_name(calibration_pb2.ConfidenceZone, z.zone, "CONFIDENCE_ZONE_")
        + f"<br>{z.lower:.2f}–{z.upper:.2f}"
        for z in zones
    ]
    bars: Figure = {
        "type": "bar",
        "x": names,
        "y": [z.accuracy if z.count else 0.0 for z in zones],
        "text": [f"{number(z.accuracy)}<br>n={z.count}" if z.count else "n=0" for z in zones],
        "textposition": ["inside" if z.count else "outside" for z in zones],
        "insidetextanchor": "start",
        "textfont": {"color": ["white" if z.count else "#333" for z in zones]},
        "name": "accuracy",
        "marker": {"color": colors.SERIES["fusion"]},
    }
    confidence: Figure = {
        "type": "scatter",
        "x": names,
        "y": [z.mean_confidence if z.count else None for z in zones],
        "mode": "markers",
        "name": "mean confidence",
        "marker": {"symbol": "line-ew-open", "size": 28, "line": {"width": 3, "color": "#d62728"}},
    }
    top = max([z.accuracy for z in zones if z.count] + [z.upper for z in zones])
    return figure(
        [bars, confidence],
        title,
        340,
        yaxis={"range": [0, min(1.0, top + 0.15)], "title": {"text": "share of right directions"}},
        legend={"orientation": "h", "y": -0.25},
    )


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
