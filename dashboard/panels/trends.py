"""Trends: small time-series charts of rolling accuracy, mean confidence, agreement and latency,
with the levels the server judges them by (expected value, health warning and critical levels,
the latency anomaly level) drawn beside them."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from dashboard.formatting import enum_name
from dashboard.panels import colors
from dashboard.widgets import Figure, empty_figure, figure
from minhos.v1 import common_pb2, monitoring_pb2

#: (title, metrics drawn in it, y-axis format).
CHARTS = (
    ("accuracy", ("accuracy",), ".2f"),
    ("mean confidence", ("mean_confidence",), ".3f"),
    ("models on the same side", ("agreement_rate",), ".0%"),
    ("latency (ms)", ("latency_p50_ms", "latency_p99_ms"), ".2f"),
)
LINE_STYLE = {
    "": {"dash": "dot", "color": "#555"},
    "warning": {"dash": "dash", "color": colors.SEVERITY["warning"]},
    "critical": {"dash": "dash", "color": colors.SEVERITY["critical"]},
}
#: The series whose levels are drawn (the other accuracies are context).
JUDGED = {("accuracy", "fusion"), ("mean_confidence", "fusion"), ("agreement_rate", "fusion")}


def _component(s: monitoring_pb2.MetricSeries) -> str:
    return enum_name(common_pb2.Component, s.component, "COMPONENT_")


def _label(s: monitoring_pb2.MetricSeries) -> str:
    component = _component(s)
    if s.metric == "accuracy":
        return "fused" if component == "fusion" else component
    return {"latency_p50_ms": "p50", "latency_p99_ms": "p99"}.get(s.metric, s.metric)


def _axis(col: int, name: str) -> str:
    """plotly's axis names: "x", "x2", ... (the layout's keys: "xaxis", "xaxis2", ...)."""
    return name if col == 1 else f"{name}{col}"


def _time(stamp: Timestamp) -> str:
    return stamp.ToDatetime().isoformat()


def _traces(s: monitoring_pb2.MetricSeries, col: int, fmt: str) -> list[Figure]:
    times = [_time(p.time) for p in s.points]
    component = _component(s)
    judged = (s.metric, component) in JUDGED or s.metric == "latency_p50_ms"
    if s.metric == "accuracy":
        color = colors.SERIES.get(component, "#1f77b4")
    else:
        color = "#1f77b4" if judged else "#ff7f0e"
    axes = {"xaxis": _axis(col, "x"), "yaxis": _axis(col, "y"), "showlegend": False}
    out: list[Figure] = [
        {
            "type": "scatter",
            "mode": "lines",
            "x": times,
            "y": [p.value for p in s.points],
            "customdata": [p.count for p in s.points],
            "name": _label(s),
            "line": {"color": color, "width": 2 if judged else 1},
            "hovertemplate": f"%{{x|%Y-%m-%d}}: %{{y:{fmt}}} (n=%{{customdata}})"
            f"<extra>{_label(s)}</extra>",
            **axes,
        }
    ]
    if not judged:
        return out
    for line in s.thresholds:
        severity = (
            enum_name(monitoring_pb2.Severity, line.severity, "SEVERITY_") if line.severity else ""
        )
        out.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": times,
                "y": list(line.values),
                "name": line.name,
                "line": {**LINE_STYLE.get(severity, LINE_STYLE[""]), "width": 1},
                "hovertemplate": f"%{{y:{fmt}}}<extra>{line.name}</extra>",
                **axes,
            }
        )
    return out


def trends_figure(reply: monitoring_pb2.GetMetricSeriesResponse) -> Figure:
    title = f"Trends: rolling over the last {reply.window} predictions"
    if not any(len(s.points) for s in reply.series):
        return empty_figure(title, "no predictions yet", height=300)
    gap = 0.05
    width = (1 - gap * (len(CHARTS) - 1)) / len(CHARTS)
    data: list[Figure] = []
    layout: dict[str, Any] = {"annotations": []}
    for col, (chart, metrics, fmt) in enumerate(CHARTS, start=1):
        left = (col - 1) * (width + gap)
        layout[f"xaxis{'' if col == 1 else col}"] = {
            "domain": [left, left + width],
            "anchor": _axis(col, "y"),
            "type": "date",
        }
        layout[f"yaxis{'' if col == 1 else col}"] = {"anchor": _axis(col, "x"), "tickformat": fmt}
        layout["annotations"].append(
            {
                "text": chart,
                "x": left + width / 2,
                "y": 1.0,
                "xref": "paper",
                "yref": "paper",
                "xanchor": "center",
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 12},
            }
        )
        for s in reply.series:
            if s.metric in metrics:
                data += _traces(s, col, fmt)
    return figure(data, title, 300, margin={"l": 50, "r": 20, "t": 70, "b": 40}, **layout)
