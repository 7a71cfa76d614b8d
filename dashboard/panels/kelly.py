"""The Kelly component: what is deployed (calibrator, payoff ratio b, fraction, cap, version, when
fitted) and how it sized the newest predictions (share above zero, distribution of stakes)."""

from __future__ import annotations

from dash import html

from dashboard.formatting import number, percent, when
from dashboard.panels import colors
from dashboard.widgets import Figure, empty_figure, figure, table
from minhos.v1 import monitoring_pb2


def kelly_facts(reply: monitoring_pb2.GetKellyStatusResponse) -> html.Div:
    rows = [
        ("version", reply.version.version or "–"),
        ("fitted", when(reply.version.created_at)),
        ("fitted on", reply.fitted_on or "–"),
        ("calibrator", f"{reply.calibrator} ({reply.calibrator_detail})"),
        ("payoff ratio b", f"{number(reply.payoff_ratio)} (from {reply.payoff_outcomes} outcomes)"),
        ("fraction of full Kelly", number(reply.fraction, 2)),
        ("cap", percent(reply.cap, 0)),
        ("predictions sized above 0", percent(reply.sized_share)),
        ("predictions at the cap", percent(reply.capped_share)),
        ("mean stake (sized ones)", percent(reply.mean_stake, 2)),
        ("predictions covered", str(reply.predictions)),
    ]
    return table("kelly-table", ("", "Kelly component"), [list(r) for r in rows])


def stakes_figure(reply: monitoring_pb2.GetKellyStatusResponse) -> Figure:
    title = "Stakes of the newest predictions"
    if not reply.predictions:
        return empty_figure(title, "no predictions sized by this version yet", height=300)
    unsized = reply.predictions - sum(b.count for b in reply.stakes)
    labels = ["0 (no edge)"] + [f"{b.lower:.1%}–{b.upper:.1%}" for b in reply.stakes]
    counts = [unsized] + [b.count for b in reply.stakes]
    bars: Figure = {
        "type": "bar",
        "x": labels,
        "y": counts,
        "text": [str(c) if c else "" for c in counts],
        "textposition": "outside",
        "marker": {"color": ["#bbb"] + [colors.SERIES["kelly"]] * len(reply.stakes)},
    }
    return figure(
        [bars],
        title,
        300,
        xaxis={
            "title": {"text": "stake (share of capital)"},
            "tickangle": -40,
            "tickfont": {"size": 10},
        },
        yaxis={"title": {"text": "predictions"}, "range": [0, max(counts) * 1.2 + 1]},
    )
