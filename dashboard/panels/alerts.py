"""Active alerts, newest first, each with its acknowledge button."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dash import html

from dashboard.formatting import enum_name, number, when
from dashboard.widgets import table
from minhos.v1 import common_pb2, monitoring_pb2


def alerts_panel(alerts: Sequence[monitoring_pb2.Alert]) -> list[Any]:
    if not alerts:
        return [html.P("No active alerts.", id="no-alerts")]
    rows: list[list[Any]] = []
    for a in alerts:
        severity = enum_name(monitoring_pb2.Severity, a.severity, "SEVERITY_")
        rows.append(
            [
                html.Span(severity, className=f"sev-{severity}"),
                when(a.raised_at, "%Y-%m-%d %H:%M:%S"),
                enum_name(common_pb2.Component, a.component, "COMPONENT_"),
                a.message,
                f"{number(a.value, 4)} vs {number(a.threshold, 4)}",
                html.Button(
                    "Acknowledge", id={"type": "ack", "alert": a.id}, className="ack-button"
                ),
            ]
        )
    columns = ("severity", "raised (UTC)", "component", "message", "value vs threshold", "")
    return [table("alerts-table", columns, rows)]
