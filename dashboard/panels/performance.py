"""Performance: the Kelly-sized equity curve beside buy-and-hold with both drawdowns under it, and
the hit rate of high-agreement predictions beside the rest's."""

from __future__ import annotations

import plotly.graph_objects as go
from dash import html
from plotly.subplots import make_subplots

from dashboard.formatting import datetime_of, percent
from dashboard.panels import colors
from dashboard.widgets import card, cards, empty_figure, figure_layout
from minhos.v1 import monitoring_pb2


def equity_figure(reply: monitoring_pb2.GetPerformanceResponse) -> go.Figure:
    title = f"Kelly-sized equity against buy-and-hold ({reply.symbol or 'no symbol'})"
    if not reply.equity:
        return empty_figure(title, "no resolved predictions yet", height=380)
    times = [datetime_of(p.time) for p in reply.equity]
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.05
    )
    fig.add_trace(
        go.Scatter(
            x=times,
            y=[p.kelly_equity for p in reply.equity],
            name=f"Kelly ({percent(reply.kelly_return, 1, signed=True)})",
            line={"color": colors.SERIES["kelly"], "width": 2},
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=times,
            y=[p.buy_and_hold_equity for p in reply.equity],
            name=f"buy and hold ({percent(reply.buy_and_hold_return, 1, signed=True)})",
            line={"color": colors.SERIES["buy and hold"], "width": 1, "dash": "dot"},
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=times,
            y=[p.kelly_drawdown for p in reply.equity],
            name=f"Kelly drawdown (max {percent(reply.kelly_max_drawdown)})",
            fill="tozeroy",
            line={"color": colors.SERIES["kelly"], "width": 1},
        ),
        row=2,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=times,
            y=[p.buy_and_hold_drawdown for p in reply.equity],
            name=f"buy-and-hold drawdown (max {percent(reply.buy_and_hold_max_drawdown)})",
            line={"color": colors.SERIES["buy and hold"], "width": 1, "dash": "dot"},
        ),
        row=2,
        col=1,
    )
    fig.update_yaxes(title_text="growth of 1", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".0%", row=2, col=1)
    return figure_layout(
        fig, title, height=380, legend={"orientation": "h", "y": -0.12, "font": {"size": 10}}
    )


def performance_cards(reply: monitoring_pb2.GetPerformanceResponse) -> html.Div:
    items = [
        card(
            "hit rate",
            percent(reply.hit_rate),
            "hit-rate",
            note=f"{reply.hits} of {reply.resolved} resolved",
        ),
    ]
    for group in reply.by_agreement:
        bound = (
            f"agreement ≥ {group.min_agreement:.2f}"
            if group.name == "high agreement"
            else f"agreement < {group.max_agreement:.2f}"
        )
        items.append(
            card(
                f"{group.name} hit rate",
                percent(group.hit_rate),
                f"hit-rate-{group.name.replace(' ', '-')}",
                note=f"{group.hits} of {group.resolved} ({bound})",
            )
        )
    items += [
        card("Kelly return", percent(reply.kelly_return, 2, signed=True), "kelly-return"),
        card("Kelly max drawdown", percent(reply.kelly_max_drawdown, 2)),
        card("buy-and-hold return", percent(reply.buy_and_hold_return, 2, signed=True)),
        card("buy-and-hold max drawdown", percent(reply.buy_and_hold_max_drawdown, 2)),
    ]
    return cards(items)
