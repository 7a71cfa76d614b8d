"""The page's behaviour: one refresh reads a snapshot through the client and redraws every panel
(or, when no server answers, says so and keeps the last data on screen); buttons acknowledge
alerts, queue retraining, roll back after confirmation, and page through the listings."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import grpc
from dash import ALL, Dash, Input, Output, State, ctx, html, no_update

from clients.client import MinhosClient
from dashboard import snapshot
from dashboard.formatting import when
from dashboard.layout import KINDS, PAGED_TABLES
from dashboard.panels import alerts, calibration, health, jobs, kelly, models, performance, trends
from dashboard.panels import predictions as feed
from dashboard.snapshot import Snapshot
from dashboard.widgets import PAGE_SIZE, page_count
from minhos.v1 import common_pb2, retrain_pb2

Clock = Callable[[], dt.datetime]
log = logging.getLogger("minhos.dashboard")

#: What a refresh redraws from a snapshot, in the order of the callback's outputs.
PANELS: tuple[tuple[str, str], ...] = (
    ("health-cards", "children"),
    ("health-graph", "figure"),
    ("subscores-graph", "figure"),
    ("components", "children"),
    ("alerts", "children"),
    ("trends-graph", "figure"),
    ("reliability-graph", "figure"),
    ("zones-graph", "figure"),
    ("calibration-notes-panel", "children"),
    ("performance-cards", "children"),
    ("equity-graph", "figure"),
    ("kelly-facts", "children"),
    ("stakes-graph", "figure"),
    ("predictions", "children"),
    ("model-cards", "children"),
    ("versions", "children"),
    ("jobs", "children"),
    *((f"rollback-{k}", "message") for k in KINDS),
    ("rollback-targets", "data"),
    ("row-counts", "data"),
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rollback_targets(reply: retrain_pb2.GetModelDetailsResponse) -> dict[str, dict[str, str]]:
    """Per kind, the deployed version and the backup a rollback would deploy: the one replaced
    most recently, i.e. deployed last (the server's choice too)."""
    out: dict[str, dict[str, str]] = {}
    for kind in KINDS:
        mine = [d.version for d in reply.models if models.kind_name(d.version.kind) == kind]
        deployed = next((v for v in mine if v.stage == common_pb2.MODEL_STAGE_DEPLOYED), None)
        backups = [v for v in mine if v.stage == common_pb2.MODEL_STAGE_BACKUP]
        backup = max(backups, key=lambda v: v.deployed_at.ToNanoseconds(), default=None)
        out[kind] = {
            "deployed": deployed.version if deployed else "",
            "backup": backup.version if backup else "",
        }
    return out


def rollback_message(kind: str, target: dict[str, str]) -> str:
    if not target.get("backup"):
        return f"{kind} has no backup to roll back to: the server will refuse. Try anyway?"
    return (
        f"Roll back {kind}?\n\nDeployed now: {target['deployed']}\n"
        f"Deploy instead: {target['backup']} (its most recent backup)\n\n"
        "The server swaps the model within a second; every prediction after that uses the backup."
    )


def panels_of(snap: Snapshot, pages: dict[str, int]) -> dict[tuple[str, str], Any]:
    """Every panel's new content; panels whose RPC failed keep what they show."""
    out: dict[tuple[str, str], Any] = dict.fromkeys(PANELS, no_update)
    if snap.health is not None:
        out["health-cards", "children"] = health.headline_cards(snap.health)
        out["health-graph", "figure"] = health.gauge_figure(snap.health)
        out["subscores-graph", "figure"] = health.subscores_figure(snap.health)
        out["components", "children"] = health.components_table(snap.health)
    out["alerts", "children"] = alerts.alerts_panel(snap.alerts)
    out["reliability-graph", "figure"] = calibration.reliability_figure(snap.calibration)
    out["zones-graph", "figure"] = calibration.zones_figure(snap.calibration)
    out["calibration-notes-panel", "children"] = calibration.calibration_notes(snap.calibration)
    if snap.series is not None:
        out["trends-graph", "figure"] = trends.trends_figure(snap.series)
    if snap.performance is not None:
        out["performance-cards", "children"] = performance.performance_cards(snap.performance)
        out["equity-graph", "figure"] = performance.equity_figure(snap.performance)
    if snap.kelly is not None:
        out["kelly-facts", "children"] = kelly.kelly_facts(snap.kelly)
        out["stakes-graph", "figure"] = kelly.stakes_figure(snap.kelly)
    out["predictions", "children"] = feed.predictions_table(
        snap.predictions, snapshot.HIGH_AGREEMENT, pages.get("predictions-table", 0)
    )
    if snap.models is not None:
        out["model-cards", "children"] = models.deployed_cards(snap.models)
        out["versions", "children"] = models.versions_table(
            snap.models, pages.get("versions-table", 0)
        )
        targets = rollback_targets(snap.models)
        for kind in KINDS:
            out[f"rollback-{kind}", "message"] = rollback_message(kind, targets[kind])
        out["rollback-targets", "data"] = targets
    out["jobs", "children"] = jobs.jobs_table(snap.jobs, pages.get("jobs-table", 0))
    out["row-counts", "data"] = {
        "predictions-table": len(snap.predictions),
        "versions-table": len(snap.models.models) if snap.models is not None else 0,
        "jobs-table": len(snap.jobs),
    }
    return out


def connection_line(
    target: str, snap: Snapshot, state: dict[str, str], now: dt.datetime
) -> tuple[Any, Any, dict[str, str]]:
    """(the header's connection status, the banner, the new connection state)."""
    stamp = now.strftime("%H:%M:%S")
    if snap.down:
        since = state.get("down_since") or stamp
        last = state.get("ok_at")
        kept = f"the panels below show the data of {last} UTC" if last else "no data yet"
        banner = html.Div(
            [
                html.B(f"The MinhOS server at {target} is not answering (since {since} UTC). "),
                f"Last try {stamp} UTC: {snap.down}. Retrying every refresh; {kept}.",
            ],
            className="banner-down",
            id="down-message",
        )
        status = html.Span(f"● server down since {since} UTC", className="conn-down")
        return status, banner, {"ok_at": last or "", "down_since": since}
    as_of = when(snap.health.as_of, "%Y-%m-%d") if snap.health is not None else "–"
    status = html.Span(
        [
            html.Span("● connected", className="conn-ok"),
            f"  {target} · market time {as_of} · refreshed {stamp} UTC",
        ]
    )
    return status, None, {"ok_at": stamp, "down_since": ""}


def register(app: Dash, client: MinhosClient, target: str, clock: Clock = utcnow) -> None:
    @app.callback(
        Output("tick", "n_intervals"),
        Output("connection", "children"),
        Output("down-banner", "children"),
        Output("errors", "children"),
        Output("connection-state", "data"),
        *(Output(i, p) for i, p in PANELS),
        Input("tick", "n_intervals"),
        Input("ack-result", "children"),
        Input("retrain-result", "children"),
        Input("rollback-result", "children"),
        *(Input(f"{t}-page", "data") for t in PAGED_TABLES),
        State("connection-state", "data"),
    )
    def refresh(*args: Any) -> tuple[Any, ...]:
        """Redraws the page and re-arms the tick (n_intervals back to 0), whatever happens."""
        pages = dict(zip(PAGED_TABLES, args[4 : 4 + len(PAGED_TABLES)], strict=True))
        state = args[-1] or {}
        snap = snapshot.fetch(client)
        status, banner, new_state = connection_line(target, snap, state, clock())
        if snap.down:
            return (0, status, banner, no_update, new_state, *(no_update for _ in PANELS))
        try:
            panels = panels_of(snap, {k: int(v or 0) for k, v in pages.items()})
        except Exception as exc:  # a drawing bug must not stop the refreshes
            log.exception("drawing the panels failed")
            error = html.Div(f"the dashboard failed to draw the panels: {exc!r}")
            return (0, status, banner, [error], new_state, *(no_update for _ in PANELS))
        errors = [html.Div(e) for e in snap.errors]
        return (0, status, banner, errors, new_state, *(panels[key] for key in PANELS))

    for table_id in PAGED_TABLES:
        _register_pager(app, table_id)

    @app.callback(
        Output("ack-result", "children"),
        Input({"type": "ack", "alert": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def acknowledge(clicks: list[int | None]) -> Any:
        triggered = ctx.triggered_id
        if not triggered or not any(clicks):
            return no_update
        return _call(lambda: client.acknowledge(triggered["alert"], by="dashboard")) or (
            f"acknowledged {triggered['alert']}"
        )

    @app.callback(
        Output("retrain-result", "children"),
        Input({"type": "retrain", "kind": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def retrain(clicks: list[int | None]) -> Any:
        triggered = ctx.triggered_id
        if not triggered or not any(clicks):
            return no_update
        kind = triggered["kind"]
        replies: list[retrain_pb2.TriggerRetrainResponse] = []
        error = _call(lambda: replies.append(client.trigger_retrain(kind, note="dashboard")))
        if error:
            return f"retrain {kind}: {error}"
        verb = "merged into job" if replies[0].merged else "queued job"
        return f"{kind}: {verb} {replies[0].job.id}"

    @app.callback(
        Output("rollback-result", "children"),
        *(Input(f"rollback-{k}", "submit_n_clicks") for k in KINDS),
        State("rollback-targets", "data"),
        prevent_initial_call=True,
    )
    def rollback(*args: Any) -> Any:
        triggered = ctx.triggered_id
        if not triggered or not any(args[: len(KINDS)]):
            return no_update
        kind = str(triggered).removeprefix("rollback-")
        target = (args[-1] or {}).get(kind, {})
        replies: list[retrain_pb2.RollbackResponse] = []
        error = _call(
            lambda: replies.append(
                client.rollback(kind, to_version=target.get("backup", ""), reason="dashboard")
            )
        )
        if error:
            return f"roll back {kind}: {error}"
        r = replies[0]
        return f"{kind} rolled back: {r.deployed.version} deployed in place of {r.replaced.version}"


def _register_pager(app: Dash, table_id: str) -> None:
    @app.callback(
        Output(f"{table_id}-page", "data"),
        Input(f"{table_id}-prev", "n_clicks"),
        Input(f"{table_id}-next", "n_clicks"),
        State(f"{table_id}-page", "data"),
        State("row-counts", "data"),
        prevent_initial_call=True,
    )
    def turn(_prev: int | None, _next: int | None, page: int | None, counts: Any) -> int:
        step = 1 if ctx.triggered_id == f"{table_id}-next" else -1
        last = page_count(int((counts or {}).get(table_id, 0)), PAGE_SIZE) - 1
        return min(max(int(page or 0) + step, 0), last)


def _call(action: Callable[[], object]) -> str:
    """Runs an action on the server; a failure becomes a message on the page, not a broken
    callback."""
    try:
        action()
    except grpc.RpcError as exc:
        return snapshot.describe(exc)
    return ""
