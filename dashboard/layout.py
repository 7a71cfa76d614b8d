"""The page's skeleton: where each panel goes, the controls that act on the server, and the
stylesheet. The panels' content is filled in by :mod:`dashboard.callbacks`."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from dashboard.widgets import pager

KINDS = ("lstm", "ensemble", "kelly")
#: Tables with a pager, each with a store holding its page.
PAGED_TABLES = ("predictions-table", "versions-table", "jobs-table")

CSS = """
body { font-family: sans-serif; margin: 0; background: #f4f5f7; color: #222; }
.page { padding: 12px 20px; }
header { display: flex; align-items: baseline; gap: 18px; padding: 10px 20px; background: #fff;
  border-bottom: 1px solid #ddd; position: sticky; top: 0; z-index: 10; }
header h1 { margin: 0; font-size: 22px; }
#connection { font-size: 14px; }
.conn-ok { color: #2e7d32; font-weight: bold; }
.conn-down { color: white; background: #b00020; font-weight: bold; padding: 4px 10px;
  border-radius: 4px; }
.banner-down { background: #fde7e9; border: 2px solid #b00020; color: #7a0016; padding: 10px 14px;
  margin: 10px 0; border-radius: 6px; font-size: 15px; }
h2 { font-size: 17px; margin: 22px 0 8px; border-bottom: 1px solid #ccc; padding-bottom: 3px; }
h4 { margin: 2px 0 6px; }
.section { background: #fff; border: 1px solid #e0e0e0; border-radius: 6px; padding: 10px 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 8px; }
.card { background: white; border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px;
  min-width: 120px; }
.card-title { font-size: 11px; color: #666; text-transform: uppercase; }
.card-value { font-size: 20px; font-weight: bold; }
.card-note { font-size: 11px; color: #666; }
.sev-critical { color: white; background: #b00020; padding: 1px 5px; border-radius: 3px; }
.sev-error { color: #b00020; font-weight: bold; } .sev-warning { color: #b36b00; font-weight: bold; }
.sev-info { color: #1565c0; }
.status-healthy { color: #2e7d32; font-weight: bold; } .status-degraded { color: #b36b00;
  font-weight: bold; } .status-unhealthy { color: #b00020; font-weight: bold; }
.status-unknown { color: #757575; }
.errors { color: #b00020; }
.listing { border-collapse: collapse; font-size: 13px; background: white; width: 100%; }
.listing th { background: #f0f0f0; }
.listing th, .listing td { border: 1px solid #ddd; padding: 3px 8px; vertical-align: top; }
.page-caption { font-size: 12px; color: #555; margin: 3px 0; }
.pager { margin: 4px 0; } .pager-button { margin-right: 6px; }
.row { display: flex; gap: 14px; flex-wrap: wrap; }
.row > div { flex: 1; min-width: 440px; }
.row > .narrow { flex: 1; min-width: 320px; } .row > .wide { flex: 2; }
.bar { position: relative; width: 110px; height: 16px; background: #eee; border-radius: 3px; }
.bar-fill { position: absolute; left: 0; top: 0; bottom: 0; background: #7aa6d8;
  border-radius: 3px; }
.bar-text { position: relative; padding-left: 4px; font-size: 12px; }
.up { color: #2e7d32; } .down { color: #b00020; }
.hit { color: #2e7d32; font-weight: bold; } .miss { color: #b00020; } .pending { color: #888; }
.high-agreement { font-weight: bold; color: #1f4e9c; }
.model-cards { display: flex; gap: 12px; flex-wrap: wrap; }
.model-card { flex: 1; min-width: 380px; background: #fff; border: 1px solid #ddd;
  border-radius: 6px; padding: 8px 10px; font-size: 13px; }
.model-card > div { margin-bottom: 4px; } .version { color: #555; font-weight: normal; }
.features { font-size: 12px; color: #444; }
.actions { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; margin: 6px 0; }
.actions button { padding: 4px 10px; }
.rollback-button { border: 1px solid #b36b00; background: #fff5e6; }
.note { font-size: 12px; color: #555; }
"""


def graph(id: str) -> dcc.Graph:
    return dcc.Graph(id=id, config={"displayModeBar": False})


def section(title: str, *children: Any, id: str | None = None) -> html.Div:
    props: dict[str, Any] = {"id": id} if id else {}
    return html.Div([html.H2(title), html.Div(list(children), className="section")], **props)


def actions() -> html.Div:
    """Retrain now and roll back, per kind; a rollback asks for confirmation first."""
    buttons: list[Any] = [
        html.Button(f"Retrain {k}", id={"type": "retrain", "kind": k}, className="retrain-button")
        for k in KINDS
    ]
    buttons += [
        dcc.ConfirmDialogProvider(
            html.Button(f"Roll back {k}", className="rollback-button"),
            id=f"rollback-{k}",
            message=f"Roll back {k}?",
        )
        for k in KINDS
    ]
    return html.Div(buttons, className="actions")


def page(target: str, refresh_ms: int) -> html.Div:
    return html.Div(
        [
            html.Header(
                [
                    html.H1("MinhOS"),
                    html.Div(id="connection", children=f"connecting to {target}…"),
                ]
            ),
            html.Div(
                [
                    html.Div(id="down-banner"),
                    html.Div(id="errors", className="errors"),
                    # One tick at a time, re-armed by each refresh when it is done: a slow server
                    # delays the next refresh instead of piling requests up (Dash drops all but
                    # the newest answer, so piled-up refreshes would never show anything).
                    dcc.Interval(id="tick", interval=refresh_ms, max_intervals=1),
                    dcc.Store(id="connection-state", data={}),
                    dcc.Store(id="rollback-targets", data={}),
                    dcc.Store(id="row-counts", data={}),
                    *(dcc.Store(id=f"{t}-page", data=0) for t in PAGED_TABLES),
                    section(
                        "Health",
                        html.Div(id="health-cards"),
                        html.Div(
                            [
                                html.Div(graph("health-graph"), className="narrow"),
                                html.Div(graph("subscores-graph"), className="wide"),
                            ],
                            className="row",
                        ),
                        html.Div(id="components"),
                    ),
                    section("Active alerts", html.Div(id="alerts")),
                    section(
                        "Trends",
                        graph("trends-graph"),
                        html.Div(
                            "Thick blue: the fused prediction (thin: lstm, ensemble; orange: "
                            "p99 latency). Dotted grey: what the server expects (validation); "
                            "for confidence, the accuracy it is judged against. Dashed amber and "
                            "red: where the health sub-score falls to the warning and critical "
                            "levels (they widen when a window holds fewer outcomes); for latency, "
                            "the anomaly level.",
                            className="note",
                        ),
                    ),
                    section(
                        "Calibration",
                        html.Div(
                            [html.Div(graph("reliability-graph")), html.Div(graph("zones-graph"))],
                            className="row",
                        ),
                        html.Div(id="calibration-notes-panel", className="note"),
                    ),
                    section(
                        "Performance and the Kelly component",
                        html.Div(id="performance-cards"),
                        html.Div(
                            [
                                html.Div(graph("equity-graph")),
                                html.Div([html.Div(id="kelly-facts"), graph("stakes-graph")]),
                            ],
                            className="row",
                        ),
                    ),
                    section(
                        "Recent predictions",
                        html.Div(
                            "★ high agreement: the two models' probabilities within 0.2 of each "
                            "other (agreement = 1 − |p_lstm − p_ensemble| ≥ 0.8).",
                            className="note",
                        ),
                        pager("predictions-table"),
                        html.Div(id="predictions"),
                    ),
                    section(
                        "Models",
                        actions(),
                        html.Div(id="retrain-result"),
                        html.Div(id="rollback-result"),
                        html.Div(id="model-cards"),
                        html.H4("Every registered version"),
                        pager("versions-table"),
                        html.Div(id="versions"),
                    ),
                    section("Retraining jobs", pager("jobs-table"), html.Div(id="jobs")),
                    html.Div(id="ack-result", style={"display": "none"}),
                ],
                className="page",
            ),
        ]
    )
