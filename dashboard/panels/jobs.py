"""Retraining jobs, newest first: state, trigger, times, champion and challenger, and why a
challenger was rejected or a job failed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dash import html

from dashboard.formatting import enum_name, when
from dashboard.widgets import PAGE_SIZE, table
from minhos.v1 import common_pb2, retrain_pb2


def jobs_table(jobs: Sequence[retrain_pb2.Job], page: int) -> html.Div:
    if not jobs:
        return html.Div(
            "No retraining job yet: schedules, the degradation detector and the Retrain buttons "
            "queue them.",
            id="jobs-table",
            className="note",
        )
    rows: list[list[Any]] = []
    for j in jobs:
        job_state = enum_name(retrain_pb2.JobState, j.state, "JOB_STATE_")
        rows.append(
            [
                j.id[:8],
                enum_name(common_pb2.ModelKind, j.kind, "MODEL_KIND_"),
                html.Span(job_state, className=f"job-{job_state.replace(' ', '-')}"),
                enum_name(retrain_pb2.TriggerReason, j.trigger, "TRIGGER_REASON_"),
                when(j.queued_at, "%Y-%m-%d %H:%M:%S"),
                when(j.finished_at, "%H:%M:%S"),
                j.champion_version,
                j.challenger_version,
                j.failure_reason or j.note,
            ]
        )
    columns = (
        "id",
        "kind",
        "state",
        "trigger",
        "queued (UTC)",
        "finished",
        "champion",
        "challenger",
        "reason / note",
    )
    return table("jobs-table", columns, rows, page_size=PAGE_SIZE, page=page)
