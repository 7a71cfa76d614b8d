"""Performance: the Kelly-sized equity curve beside buy-and-hold with the Kelly drawdown under it
(on its own scale: half-Kelly stakes of a few percent draw down far less than the market, whose
deepest drawdown is in the cards), and the hit rate of high-agreement predictions beside the
rest's."""

from __future__ import annotations

from typing import Any

from dash import html

from dashboard.formatting import percent
from dashboard.panels import colors
from dashboard.widgets import Figure, card, cards, empty_figure, figure
from minhos.v1 import monitoring_pb2


def equity_figure(reply: monitoring_pb2.GetPerformanceResponse) -> Figure:
    title = f"Kelly-sized equity against buy-and-hold ({reply.symbol or 'no symbol'})"
    if not reply.equity:
        return empty_figure(title, "no resolved predictions yet", height=380)
    times = [p.time.ToDatetime().isoformat() for p in reply.equity]

    def line(y: list[float], name: str, axis: str, color: str, **style: Any) -> Figure:
        return {
            "type": "scatter",
            "mode": "lines",
            "x": times,
            "y": y,
            "name": name,
            "yaxis": axis,
            "line": {"color": color, **style},
        }

    kelly, held = colors.SERIES["kelly"], colors.SERIES["buy and hold"]
    data = [
        line(
            [p.kelly_equity for p in reply.equity],
            f"Kelly ({percent(reply.kelly_return, 1, signed=True)})",
            "y",
            kelly,
            width=2,
        ),
        line(
            [p.buy_and_hold_equity for p in reply.equity],
            f"buy and hold ({percent(reply.buy_and_hold_return, 1, signed=True)})",
            "y",
            held,
            width=1,
            dash="dot",
        ),
        {
            **line(
                [p.kelly_drawdown for p in reply.equity],
                f"Kelly drawdown (max {percent(reply.kelly_max_drawdown)})",
                "y2",
                kelly,
                width=1,
            ),
            "fill": "tozeroy",
        },
    ]
    return figure(
        data,
        title,
        380,
        xaxis={"type": "date", "anchor": "y2"},
        yaxis={"domain": [0.36, 1.0], "title": {"text": "growth of 1"}},
        yaxis2={"domain": [0.0, 0.3], "title": {"text": "Kelly drawdown"}, "tickformat": ".1%"},
        legend={"orientation": "h", "y": -0.12, "font": {"size": 10}},
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
