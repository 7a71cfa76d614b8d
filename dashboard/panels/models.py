"""Models: for each deployed model its version, when it was trained and deployed, its data spans,
its validation and test metrics beside the baselines, its features and training settings, and its
state (deployed, backup, rejected, training now); below, every registered version."""

from __future__ import annotations

import math
from typing import Any

from dash import html

from dashboard.formatting import day, enum_name, number, when
from dashboard.widgets import PAGE_SIZE, table
from minhos.v1 import common_pb2, retrain_pb2

KINDS = ("lstm", "ensemble", "kelly")
#: Metrics where lower is better.
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


def kind_name(value: int) -> str:
    return enum_name(common_pb2.ModelKind, value, "MODEL_KIND_")


def stage_name(value: int) -> str:
    return enum_name(common_pb2.ModelStage, value, "MODEL_STAGE_")


def training_now(reply: retrain_pb2.GetModelDetailsResponse) -> dict[str, retrain_pb2.Job]:
    """The newest active job of each kind."""
    out: dict[str, retrain_pb2.Job] = {}
    for job in reply.active_jobs:
        out.setdefault(kind_name(job.kind), job)
    return out


def state(details: retrain_pb2.ModelDetails, active: dict[str, retrain_pb2.Job]) -> str:
    v = details.version
    stage = stage_name(v.stage)
    job = active.get(kind_name(v.kind))
    if stage == "deployed" and job is not None:
        job_state = enum_name(retrain_pb2.JobState, job.state, "JOB_STATE_")
        return f"deployed; training now (job {job.id[:8]}, {job_state})"
    return stage


def _against(value: float, metric: str, baseline: float) -> Any:
    """The baseline's value, green where the model beats it and red where it does not."""
    if math.isnan(baseline) or math.isnan(value):
        return number(baseline, 4)
    better = value < baseline if metric in LOWER_IS_BETTER else value > baseline
    return html.Span(
        f"{baseline:.4f} {'✓' if better else '✗'}",
        className="hit" if better else "miss",
        title="the model beats it" if better else "the model does not beat it",
    )


def comparisons_table(details: retrain_pb2.ModelDetails, kind: str) -> html.Div:
    """One row per span and metric: the version's value, then each baseline's."""
    baselines = list(dict.fromkeys(c.baseline for c in details.comparisons if c.baseline))
    rows: dict[tuple[str, str], list[Any]] = {}
    for c in details.comparisons:
        row = rows.setdefault(
            (c.span, c.metric),
            [c.span, c.metric.replace("_", "-"), number(c.value, 4)] + ["–"] * len(baselines),
        )
        if c.baseline:
            row[3 + baselines.index(c.baseline)] = _against(c.value, c.metric, c.baseline_value)
    columns = ("span", "metric", "value", *baselines)
    return table(f"metrics-{kind}", columns, list(rows.values()))


def model_card(details: retrain_pb2.ModelDetails, active: dict[str, retrain_pb2.Job]) -> html.Div:
    v = details.version
    kind = kind_name(v.kind)
    spans = ", ".join(f"{s.name} {day(s.start)} .. {day(s.end)}" for s in details.spans) or "–"
    features = list(v.feature_spec.feature_names)
    settings = [[s.name, s.value] for s in details.settings]
    return html.Div(
        [
            html.H4([kind, html.Span(f" {v.version}", className="version")]),
            html.Div(f"state: {state(details, active)}", className=f"model-state state-{kind}"),
            html.Div(
                f"trained {when(v.created_at)} UTC, deployed {when(v.deployed_at)} UTC"
                + (f", by job {details.job_id[:8]}" if details.job_id else "")
            ),
            html.Div(f"data: {spans}"),
            comparisons_table(details, kind),
            html.Details(
                [
                    html.Summary(
                        f"{len(features)} features, window {v.feature_spec.window}, "
                        f"{v.feature_spec.bars_required} bars per request"
                        if features
                        else "no features (sizes the fused prediction)"
                    ),
                    html.Div(", ".join(features), className="features"),
                ]
            ),
            html.Details(
                [
                    html.Summary(f"training settings ({len(settings)})"),
                    table(f"settings-{kind}", ("setting", "value"), settings),
                ]
            ),
        ],
        className="model-card",
        id=f"model-{kind}",
    )


def deployed_cards(reply: retrain_pb2.GetModelDetailsResponse) -> html.Div:
    active = training_now(reply)
    deployed = {
        kind_name(d.version.kind): d
        for d in reply.models
        if d.version.stage == common_pb2.MODEL_STAGE_DEPLOYED
    }
    cards: list[Any] = [model_card(deployed[k], active) for k in KINDS if k in deployed]
    missing = [k for k in KINDS if k not in deployed]
    if missing:
        cards.append(html.P(f"nothing deployed for {', '.join(missing)}", className="errors"))
    return html.Div(cards, className="model-cards")


def versions_table(reply: retrain_pb2.GetModelDetailsResponse, page: int) -> html.Div:
    active = training_now(reply)
    rows: list[list[Any]] = []
    for d in reply.models:
        v = d.version
        rows.append(
            [
                kind_name(v.kind),
                v.version,
                state(d, active),
                when(v.created_at),
                when(v.deployed_at),
                number(v.metrics.get("test_accuracy", math.nan), 4),
                number(v.metrics.get("test_log_loss", math.nan), 4),
                d.job_id[:8],
            ]
        )
    columns = (
        "kind",
        "version",
        "state",
        "trained (UTC)",
        "last deployed",
        "test accuracy",
        "test log-loss",
        "job",
    )
    return table("versions-table", columns, rows, page_size=PAGE_SIZE, page=page)
