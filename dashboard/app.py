"""Plotly Dash dashboard. Reads everything through gRPC (the typed client), never the database, so it
shows what any remote client would see and works against any replica.

Panels: health score and components, window metrics, active alerts (acknowledge), calibration
(reliability diagram, zones), recent predictions (rolling hit rate, Kelly equity), model versions,
retraining jobs (retrain buttons).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import Any

import grpc
import plotly.graph_objects as go
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html

from clients.client import DEFAULT_TARGET, MinhosClient
from minhos.v1 import calibration_pb2, common_pb2, monitoring_pb2, retrain_pb2


def _table(
    id: str, columns: list[dict[str, str]], data: list[dict[str, Any]], **_: Any
) -> html.Table:
    """A plain HTML table (dash_table.DataTable is deprecated in Dash 4 and would pull a grid
    library for what is a read-only listing)."""
    names = [c["id"] for c in columns]
    head = html.Thead(html.Tr([html.Th(c["name"]) for c in columns]))
    body = html.Tbody([html.Tr([html.Td(str(row.get(n, ""))) for n in names]) for row in data])
    return html.Table([head, body], id=id, className="listing")


REFRESH_MS = 5000


def _name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower().replace("_", " ")


def _num(value: float, digits: int = 3) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _card(title: str, value: str, element_id: str | None = None) -> html.Div:
    props: dict[str, Any] = {"className": "card"}
    if element_id:
        props["id"] = element_id
    return html.Div(
        [html.Div(title, className="card-title"), html.Div(value, className="card-value")], **props
    )


def health_panel(reply: monitoring_pb2.GetHealthResponse) -> list[Any]:
    status = _name(monitoring_pb2.HealthStatus, reply.status, "HEALTH_STATUS_")
    # The last-N window: on daily bars the 24 h window holds a single prediction.
    m = reply.last_n_metrics
    cards = html.Div(
        [
            _card("health score", f"{reply.health_score:.0f} / 100", "health-score"),
            _card("status", status),
            _card("predictions (last N)", str(m.predictions)),
            _card("accuracy", _num(m.accuracy)),
            _card("mean confidence", _num(m.mean_confidence)),
            _card("agreement", _num(m.agreement_rate)),
            _card("error rate", _num(m.error_rate, 4)),
            _card(
                "latency p50 / p99", f"{_num(m.latency_p50_ms, 2)} / {_num(m.latency_p99_ms, 2)} ms"
            ),
        ],
        className="cards",
    )
    components = _table(
        id="components-table",
        columns=[{"name": n, "id": n} for n in ("component", "score", "status", "detail")],
        data=[
            {
                "component": _name(common_pb2.Component, c.component, "COMPONENT_"),
                "score": f"{c.score:.1f}",
                "status": _name(monitoring_pb2.HealthStatus, c.status, "HEALTH_STATUS_"),
                "detail": c.detail,
            }
            for c in reply.components
        ],
        style_cell={"textAlign": "left", "fontFamily": "sans-serif", "fontSize": 13},
    )
    trends = html.Ul(
        [
            html.Li(
                f"{t.metric} ({_name(common_pb2.Component, t.component, 'COMPONENT_')}): "
                f"{_name(monitoring_pb2.TrendDirection, t.direction, 'TREND_DIRECTION_')}, "
                f"slope {t.slope:+.2e}, now {_num(t.current)}"
            )
            for t in reply.trends
        ]
    )
    return [cards, html.H3("Components"), components, html.H3("Trends"), trends]


def alerts_panel(alerts: Sequence[monitoring_pb2.Alert]) -> list[Any]:
    if not alerts:
        return [html.P("No active alerts.", id="no-alerts")]
    rows = []
    for a in alerts:
        severity = _name(monitoring_pb2.Severity, a.severity, "SEVERITY_")
        rows.append(
            html.Tr(
                [
                    html.Td(severity, className=f"sev-{severity}"),
                    html.Td(f"{a.raised_at.ToDatetime():%Y-%m-%d %H:%M:%S}"),
                    html.Td(a.message),
                    html.Td(
                        html.Button(
                            "Acknowledge",
                            id={"type": "ack", "alert": a.id},
                            className="ack-button",
                        )
                    ),
                ]
            )
        )
    return [html.Table([html.Tbody(rows)], id="alerts-table")]


def calibration_figure(reports: Sequence[calibration_pb2.CalibrationReport]) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot", "color": "#999"}
        )
    )
    for r in reports:
        source = _name(calibration_pb2.ProbabilitySource, r.source, "PROBABILITY_SOURCE_")
        bins = [b for b in r.bins if b.count]
        fig.add_trace(
            go.Scatter(
                x=[b.mean_confidence for b in bins],
                y=[b.observed_frequency for b in bins],
                mode="lines+markers",
                name=f"{source} (ECE {_num(r.ece, 4)}, n={r.count})",
                text=[f"n={b.count}" for b in bins],
            )
        )
    fig.update_layout(
        title="Reliability diagram: predicted p(up) vs observed frequency",
        xaxis_title="mean predicted p(up)",
        yaxis_title="observed frequency of up",
        margin={"l": 40, "r": 10, "t": 40, "b": 40},
        height=380,
    )
    return fig


def calibration_text(reports: Sequence[calibration_pb2.CalibrationReport]) -> list[Any]:
    items: list[Any] = []
    for r in reports:
        source = _name(calibration_pb2.ProbabilitySource, r.source, "PROBABILITY_SOURCE_")
        zones = ", ".join(
            f"{_name(calibration_pb2.ConfidenceZone, z.zone, 'CONFIDENCE_ZONE_')}: {_num(z.accuracy)} (n={z.count})"
            for z in r.zones
        )
        items.append(
            html.Li(
                f"{source}: ECE {_num(r.ece, 4)}, MCE {_num(r.mce, 4)}, Brier {_num(r.brier, 4)}; "
                f"zones {zones}"
            )
        )
        items.extend(html.Li(rec, className="recommendation") for rec in r.recommendations)
    return [html.Ul(items)]


def predictions_figure(client: MinhosClient) -> go.Figure:
    records = list(reversed(client.list_predictions(limit=1000, resolved_only=True)))
    fig = go.Figure()
    if records:
        times = [r.prediction.bar_time.ToDatetime() for r in records]
        hits = [1.0 if r.outcome.hit else 0.0 for r in records]
        window = 50
        rolling = [
            sum(hits[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1))
            for i in range(len(hits))
        ]
        equity, bh = [], []
        e = b = 1.0
        for r in records:
            e *= 1 + r.outcome.position_return
            b *= 1 + r.outcome.realized_return
            equity.append(e)
            bh.append(b)
        fig.add_trace(
            go.Scatter(x=times, y=rolling, name=f"hit rate (rolling {window})", yaxis="y1")
        )
        fig.add_trace(go.Scatter(x=times, y=equity, name="Kelly-sized equity", yaxis="y2"))
        fig.add_trace(
            go.Scatter(x=times, y=bh, name="buy and hold", yaxis="y2", line={"dash": "dot"})
        )
    fig.update_layout(
        title="Resolved predictions",
        yaxis={"title": "hit rate", "range": [0, 1]},
        yaxis2={"title": "equity", "overlaying": "y", "side": "right"},
        margin={"l": 40, "r": 40, "t": 40, "b": 40},
        height=380,
    )
    return fig


def versions_table(versions: Sequence[common_pb2.ModelVersion]) -> Any:
    return _table(
        id="versions-table",
        columns=[
            {"name": n, "id": n}
            for n in ("kind", "version", "stage", "sha256", "test accuracy", "test log-loss")
        ],
        data=[
            {
                "kind": _name(common_pb2.ModelKind, v.kind, "MODEL_KIND_"),
                "version": v.version,
                "stage": _name(common_pb2.ModelStage, v.stage, "MODEL_STAGE_"),
                "sha256": v.sha256[:12],
                "test accuracy": _num(v.metrics.get("test_accuracy", math.nan), 4),
                "test log-loss": _num(v.metrics.get("test_log_loss", math.nan), 4),
            }
            for v in versions
        ],
        page_size=10,
        style_cell={"textAlign": "left", "fontFamily": "sans-serif", "fontSize": 13},
    )


def jobs_table(jobs: Sequence[retrain_pb2.Job]) -> Any:
    return _table(
        id="jobs-table",
        columns=[
            {"name": n, "id": n}
            for n in ("id", "kind", "state", "trigger", "queued", "challenger", "reason")
        ],
        data=[
            {
                "id": j.id[:8],
                "kind": _name(common_pb2.ModelKind, j.kind, "MODEL_KIND_"),
                "state": _name(retrain_pb2.JobState, j.state, "JOB_STATE_"),
                "trigger": _name(retrain_pb2.TriggerReason, j.trigger, "TRIGGER_REASON_"),
                "queued": f"{j.queued_at.ToDatetime():%Y-%m-%d %H:%M:%S}",
                "challenger": j.challenger_version,
                "reason": j.failure_reason,
            }
            for j in jobs
        ],
        page_size=10,
        style_cell={"textAlign": "left", "fontFamily": "sans-serif", "fontSize": 13},
    )


def _safe(call: Any, default: Any) -> tuple[Any, str]:
    """Runs an RPC; a failure becomes a message on the page instead of a broken callback."""
    try:
        return call(), ""
    except grpc.RpcError as exc:
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        code = exc.code().name if isinstance(exc, grpc.Call) else "RPC"
        return default, f"{code}: {detail}"


CSS = """
body { font-family: sans-serif; margin: 16px; background: #fafafa; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; }
.card { background: white; border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; min-width: 120px; }
.card-title { font-size: 11px; color: #666; text-transform: uppercase; }
.card-value { font-size: 20px; font-weight: bold; }
.sev-critical { color: white; background: #b00020; } .sev-error { color: #b00020; }
.sev-warning { color: #b36b00; } .sev-info { color: #1565c0; }
.errors { color: #b00020; }
.listing { border-collapse: collapse; font-size: 13px; background: white; }
.listing th, .listing td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
.row { display: flex; gap: 16px; flex-wrap: wrap; } .row > div { flex: 1; min-width: 420px; }
"""


def create_app(client: MinhosClient, refresh_ms: int = REFRESH_MS) -> Dash:
    app = Dash(__name__, title="MinhOS")
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + CSS + "</style>")
    app.layout = html.Div(
        [
            html.H1("MinhOS"),
            html.Div(id="errors", className="errors"),
            dcc.Interval(id="tick", interval=refresh_ms),
            html.Div(id="health"),
            html.H3("Active alerts"),
            html.Div(id="alerts"),
            html.Div(
                [
                    html.Div([dcc.Graph(id="calibration-graph"), html.Div(id="calibration-text")]),
                    html.Div([dcc.Graph(id="predictions-graph")]),
                ],
                className="row",
            ),
            html.H3("Model versions"),
            html.Div(id="versions"),
            html.H3("Retraining"),
            html.Div(
                [
                    html.Button(
                        f"Retrain {kind}",
                        id={"type": "retrain", "kind": kind},
                        className="retrain-button",
                    )
                    for kind in ("lstm", "ensemble", "kelly")
                ]
            ),
            html.Div(id="retrain-result"),
            html.Div(id="jobs"),
            html.Div(id="ack-result", style={"display": "none"}),
        ]
    )

    @app.callback(
        Output("health", "children"),
        Output("alerts", "children"),
        Output("calibration-graph", "figure"),
        Output("calibration-text", "children"),
        Output("predictions-graph", "figure"),
        Output("versions", "children"),
        Output("jobs", "children"),
        Output("errors", "children"),
        Input("tick", "n_intervals"),
        Input("ack-result", "children"),
        Input("retrain-result", "children"),
    )
    def refresh(*_: Any) -> tuple[Any, ...]:
        errors: list[str] = []

        def grab(call: Any, default: Any) -> Any:
            value, error = _safe(call, default)
            if error:
                errors.append(error)
            return value

        health = grab(client.health, None)
        alerts = grab(client.alerts, [])
        reports = grab(client.calibration, [])
        predictions = grab(lambda: predictions_figure(client), go.Figure())
        versions = grab(client.model_versions, [])
        jobs = grab(client.jobs, [])
        return (
            health_panel(health) if health is not None else html.P("health unavailable"),
            alerts_panel(alerts),
            calibration_figure(reports),
            calibration_text(reports),
            predictions,
            versions_table(versions),
            jobs_table(jobs),
            [html.Div(e) for e in errors],
        )

    @app.callback(
        Output("ack-result", "children"),
        Input({"type": "ack", "alert": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def acknowledge(clicks: list[int | None]) -> str:
        triggered = ctx.triggered_id
        if not triggered or not any(clicks):
            return ""
        _, error = _safe(lambda: client.acknowledge(triggered["alert"], by="dashboard"), None)
        return error or f"acknowledged {triggered['alert']}"

    @app.callback(
        Output("retrain-result", "children"),
        Input({"type": "retrain", "kind": ALL}, "n_clicks"),
        State("retrain-result", "children"),
        prevent_initial_call=True,
    )
    def retrain(clicks: list[int | None], _state: Any) -> str:
        triggered = ctx.triggered_id
        if not triggered or not any(clicks):
            return ""
        kind = triggered["kind"]
        reply, error = _safe(lambda: client.trigger_retrain(kind, note="dashboard"), None)
        if error:
            return error
        verb = "merged into job" if reply.merged else "queued job"
        return f"{kind}: {verb} {reply.job.id}"

    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minhos-dashboard", description=__doc__)
    parser.add_argument("--target", default=os.environ.get("MINHOS_TARGET", DEFAULT_TARGET))
    parser.add_argument("--token", default=os.environ.get("MINHOS_TOKEN") or None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    parser.add_argument("--refresh-ms", type=int, default=REFRESH_MS)
    args = parser.parse_args(argv)
    client = MinhosClient(args.target, token=args.token)
    app = create_app(client, args.refresh_ms)
    print(f"dashboard on http://{args.host}:{args.port}/ (server {args.target})", flush=True)
    app.run(host=args.host, port=args.port, debug=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
