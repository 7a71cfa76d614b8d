"""Trends: small time-series charts of rolling accuracy, mean confidence, agreement and latency,
with the levels the server judges them by (expected value, health warning and critical levels,
the latency anomaly level) drawn beside them."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.formatting import datetime_of, enum_name
from dashboard.panels import colors
from dashboard.widgets import empty_figure, figure_layout
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


def trends_figure(reply: monitoring_pb2.GetMetricSeriesResponse) -> go.Figure:
    title = f"Trends: rolling over the last {reply.window} predictions"
    if not any(len(s.points) for s in reply.series):
        return empty_figure(title, "no predictions yet", height=280)
    fig = make_subplots(
        rows=1, cols=len(CHARTS), subplot_titles=[c[0] for c in CHARTS], horizontal_spacing=0.06
    )
    for col, (_, metrics, fmt) in enumerate(CHARTS, start=1):
        for s in reply.series:
            if s.metric not in metrics:
                continue
            times = [datetime_of(p.time) for p in s.points]
            component = _component(s)
            judged = (s.metric, component) in JUDGED or s.metric == "latency_p50_ms"
            fig.add_trace(
                go.Scatter(
                    x=times,
                    y=[p.value for p in s.points],
                    customdata=[p.count for p in s.points],
                    name=_label(s),
                    mode="lines",
                    line={
                        "color": colors.SERIES.get(component, "#1f77b4")
                        if s.metric == "accuracy"
                        else ("#1f77b4" if judged else "#ff7f0e"),
                        "width": 2 if judged else 1,
                    },
                    hovertemplate=f"%{{x|%Y-%m-%d}}: %{{y:{fmt}}} (n=%{{customdata}})"
                    f"<extra>{_label(s)}</extra>",
                    legendgroup=f"c{col}",
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
            if not judged:
                continue
            for line in s.thresholds:
                severity = (
                    enum_name(monitoring_pb2.Severity, line.severity, "SEVERITY_")
                    if line.severity
                    else ""
                )
                fig.add_trace(
                    go.Scatter(
                        x=times,
                        y=list(line.values),
                        name=line.name,
                        mode="lines",
                        line={**LINE_STYLE.get(severity, LINE_STYLE[""]), "width": 1},
                        hovertemplate=f"%{{y:{fmt}}}<extra>{line.name}</extra>",
                        showlegend=False,
                    ),
                    row=1,
                    col=col,
                )
        fig.update_yaxes(tickformat=fmt, row=1, col=col)
    fig.update_annotations(font={"size": 12})
    return figure_layout(fig, title, height=300, margin={"l": 50, "r": 20, "t": 70, "b": 40})
