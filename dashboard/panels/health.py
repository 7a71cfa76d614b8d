"""Health: the overall score as a gauge beside every component's sub-scores, the headline metrics
of the last N predictions, and the components table."""

from __future__ import annotations

import math
from typing import Any

from dash import html

from dashboard.formatting import enum_name, number, percent
from dashboard.panels import colors
from dashboard.widgets import Figure, card, cards, figure, table
from minhos.v1 import common_pb2, monitoring_pb2

SUBSCORE_ORDER = ("accuracy", "confidence", "agreement", "error_rate")


def _bands(reply: monitoring_pb2.GetHealthResponse) -> tuple[float, float]:
    # Servers older than the thresholds' fields send 0: fall back to the documented defaults.
    return (reply.warn_health_score or 60.0, reply.critical_health_score or 30.0)


def status_name(value: int) -> str:
    return enum_name(monitoring_pb2.HealthStatus, value, "HEALTH_STATUS_")


def component_name(value: int) -> str:
    return enum_name(common_pb2.Component, value, "COMPONENT_")


def gauge_figure(reply: monitoring_pb2.GetHealthResponse) -> Figure:
    """The overall score on a gauge banded by the server's warning and critical levels."""
    warn, critical = _bands(reply)
    status = status_name(reply.status)
    gauge = {
        "type": "indicator",
        "mode": "gauge+number",
        "value": reply.health_score if not math.isnan(reply.health_score) else 0.0,
        "number": {"suffix": " / 100", "valueformat": ".0f"},
        "title": {"text": f"health: <b>{status}</b>", "font": {"size": 15}},
        "gauge": {
            "axis": {"range": [0, 100], "tickvals": [0, critical, warn, 100]},
            "bar": {"color": colors.STATUS.get(status, colors.STATUS["unknown"])},
            "steps": [
                {"range": [0, critical], "color": colors.BAND["unhealthy"]},
                {"range": [critical, warn], "color": colors.BAND["degraded"]},
                {"range": [warn, 100], "color": colors.BAND["healthy"]},
            ],
        },
    }
    return figure([gauge], "Health score", 300, margin={"l": 30, "r": 30, "t": 60, "b": 10})


def subscores_figure(reply: monitoring_pb2.GetHealthResponse) -> Figure:
    """Each component's score and the sub-scores it is the weighted mean of."""
    warn, critical = _bands(reply)
    components: list[str] = []
    parts: list[str] = []
    values: list[float] = []
    for c in reply.components:
        name = component_name(c.component)
        components.append(name)
        parts.append("<b>score</b>")
        values.append(c.score)
        for sub in SUBSCORE_ORDER:
            if sub in c.subscores:
                components.append(name)
                parts.append(sub.replace("_", " "))
                values.append(c.subscores[sub])
    bars = {
        "type": "bar",
        "orientation": "h",
        "x": values,
        "y": [components, parts],
        "marker": {"color": [colors.for_score(v, warn, critical) for v in values]},
        "text": [number(v, 0) for v in values],
        "textposition": "inside",
        "textangle": 0,
        "insidetextanchor": "end",
        "hovertemplate": "%{y}: %{x:.1f}<extra></extra>",
    }
    levels = [
        {
            "type": "line",
            "x0": level,
            "x1": level,
            "y0": 0,
            "y1": 1,
            "xref": "x",
            "yref": "paper",
            "line": {"dash": "dot", "color": "#666"},
        }
        for level in (critical, warn)
    ]
    return figure(
        [bars],
        "Components and sub-scores",
        max(300, 20 * len(values) + 90),
        xaxis={"range": [0, 100], "title": {"text": "0-100; dotted: critical and warning levels"}},
        yaxis={"autorange": "reversed", "tickfont": {"size": 11}},
        shapes=levels,
    )


def headline_cards(reply: monitoring_pb2.GetHealthResponse) -> html.Div:
    # The last-N window: on daily bars the 24 h window holds a single prediction.
    m = reply.last_n_metrics
    return cards(
        [
            card("health score", f"{reply.health_score:.0f} / 100", "health-score"),
            card("status", status_name(reply.status), "health-status"),
            card("predictions (last N)", str(m.predictions), "last-n-predictions"),
            card("accuracy", number(m.accuracy), note=f"{m.resolved} resolved"),
            card("mean confidence", number(m.mean_confidence)),
            card("models on the same side", percent(m.agreement_rate)),
            card("error rate", percent(m.error_rate, 2)),
            card(
                "latency p50 / p99",
                f"{number(m.latency_p50_ms, 2)} / {number(m.latency_p99_ms, 2)} ms",
            ),
        ]
    )


def components_table(reply: monitoring_pb2.GetHealthResponse) -> html.Div:
    rows: list[list[Any]] = []
    for c in reply.components:
        status = status_name(c.status)
        rows.append(
            [
                component_name(c.component),
                number(c.score, 1),
                html.Span(status, className=f"status-{status}"),
                c.detail,
            ]
        )
    return table("components-table", ("component", "score", "status", "detail"), rows)
