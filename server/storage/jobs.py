"""Writes of retraining jobs: queueing with merging, claims and heartbeats, state transitions, log
lines, gate metrics, probation verdicts (reads are in queries.py). Servers, workers and the job
processes all write here, always through targeted UPDATEs guarded by the state they expect, so that
none overwrites another's decision."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

import peewee as pw

from server.core.errors import InvalidArgument, NotFound
from server.core.jobs import (
    ACTIVE_STATES,
    FINAL_STATES,
    RUNNING_STATES,
    TRANSITIONS,
    TRIGGERS,
    merge_target,
)
from server.core.manifest import check_kind
from server.core.records import Job
from server.storage import queries
from server.storage.schema import JobRow, database, write_transaction


def _line(now: datetime, text: str) -> str:
    return f"{now:%Y-%m-%dT%H:%M:%S}Z {text}\n"


def enqueue(
    kind: str, trigger: str, note: str, market_time: datetime | None, now: datetime
) -> tuple[Job, bool]:
    """A new queued job, or the kind's active job with the trigger noted on it (merged=True)."""
    check_kind(kind)
    if trigger not in TRIGGERS:
        raise InvalidArgument(f"{trigger!r} is not one of {', '.join(TRIGGERS)}", field="reason")
    # The kind's lock: two replicas triggering at the same instant both read "no active job"
    # otherwise, and both insert one.
    with write_transaction(f"jobs:{kind}"):
        rows = list(
            JobRow.select(JobRow.id, JobRow.state)
            .where((JobRow.kind == kind) & JobRow.state.in_(ACTIVE_STATES))
            .order_by(JobRow.queued_at)
        )
        target = merge_target([(r.id, r.state) for r in rows])
        if target is not None:
            merged = f"merged {trigger} trigger" + (f": {note}" if note else "")
            current = _get(target).note
            set_fields(target, note=f"{current}\n{merged}" if current else merged)
            append_log(target, merged, now)
            return _get(target), True
        job_id = uuid.uuid4().hex
        JobRow.create(
            id=job_id,
            kind=kind,
            state="queued",
            trigger=trigger,
            note=note,
            queued_at=now,
            market_time=market_time,
            log=_line(
                now,
                f"queued by {trigger}" + (f" at market time {market_time}" if market_time else ""),
            ),
        )
    return _get(job_id), False


def claim_next(holder: str, now: dt.datetime, max_running: int = 1) -> Job | None:
    """The oldest queued job, now running and held by ``holder``; None when none is queued or
    ``max_running`` jobs already run. On PostgreSQL the queued row is taken with FOR UPDATE SKIP
    LOCKED, so a row another transaction holds (a claim, a merged trigger) is passed over instead
    of waited for; the running count is judged under one lock, so two claimers cannot both pass it.
    On SQLite the write transaction admits one claimer at a time."""
    with write_transaction("jobs:claim"):
        running = JobRow.select().where(JobRow.state.in_(RUNNING_STATES)).count()
        if running >= max_running:
            return None
        query = JobRow.select(JobRow.id).where(JobRow.state == "queued").order_by(JobRow.queued_at)
        if not isinstance(database.obj, pw.SqliteDatabase):
            query = query.for_update(skip_locked=True)
        row = query.first()
        if row is None:
            return None
        if not transition(
            row.id,
            "running",
            now,
            message=f"claimed by worker {holder}",
            fields={"holder": holder, "heartbeat_at": now},
        ):
            return None
    return _get(row.id)


def heartbeat(job_id: str, holder: str, now: dt.datetime) -> bool:
    """Records that ``holder`` still works on the job; False when the job is no longer its to run
    (failed as lost, or finished): the worker must then stop it."""
    updated = (
        JobRow.update(heartbeat_at=now)
        .where((JobRow.id == job_id) & (JobRow.holder == holder) & JobRow.state.in_(RUNNING_STATES))
        .execute()
    )
    return bool(updated)


def fail_lost(now: dt.datetime, timeout: dt.timedelta) -> list[Job]:
    """Fails the running jobs whose worker has not sent a heartbeat for ``timeout``: it died, or
    lost the database. Each is failed once: the transition is guarded by its state."""
    cutoff = now - timeout
    stale = JobRow.select(JobRow.id, JobRow.holder, JobRow.heartbeat_at).where(
        JobRow.state.in_(RUNNING_STATES)
        & (JobRow.heartbeat_at.is_null() | (JobRow.heartbeat_at < cutoff))
    )
    lost = []
    for row in list(stale):
        silent = (now - row.heartbeat_at).total_seconds() if row.heartbeat_at else None
        reason = (
            f"worker {row.holder or '?'} lost: no heartbeat for {silent:.0f} s"
            if silent is not None
            else f"worker {row.holder or '?'} lost: it never sent a heartbeat"
        )
        # Guarded again by the heartbeat: one that arrived since the read keeps the job alive.
        with database.atomic():
            updated = (
                JobRow.update(state="failed", finished_at=now, failure_reason=reason)
                .where(
                    (JobRow.id == row.id)
                    & JobRow.state.in_(RUNNING_STATES)
                    & (JobRow.heartbeat_at.is_null() | (JobRow.heartbeat_at < cutoff))
                )
                .execute()
            )
            if updated:
                append_log(row.id, f"failed: {reason}", now)
        if updated:
            lost.append(_get(row.id))
    return lost


def decide_probation(job_id: str, verdict: str, now: dt.datetime, reason: str) -> bool:
    """Records the probation verdict on the job that deployed a version; True only for the one
    caller that recorded it (a verdict, and the rollback it may bring, happen once)."""
    with database.atomic():
        updated = (
            JobRow.update(probation=verdict)
            .where((JobRow.id == job_id) & JobRow.probation.is_null())
            .execute()
        )
        if updated:
            append_log(job_id, f"probation {verdict}: {reason}", now)
    return bool(updated)


def _get(job_id: str) -> Job:
    found = queries.job(job_id)
    if found is None:
        raise NotFound(f"no job {job_id!r}", field="job_id")
    return found


def transition(
    job_id: str,
    state: str,
    now: datetime,
    *,
    reason: str = "",
    message: str = "",
    fields: Mapping[str, object] | None = None,
) -> bool:
    """Moves the job to ``state`` if its current state allows it; False (nothing written) if not."""
    values: dict[str, object] = {"state": state, **(fields or {})}
    if state == "running":  # the coordinator starts the job, the worker confirms it
        values.setdefault("started_at", pw.fn.COALESCE(JobRow.started_at, now))
    if state in FINAL_STATES:
        values["finished_at"] = now
    if reason:
        values["failure_reason"] = reason
    with database.atomic():
        updated = (
            JobRow.update(**values)
            .where((JobRow.id == job_id) & JobRow.state.in_(TRANSITIONS[state]))
            .execute()
        )
        if updated:
            text = message or (f"{state}: {reason}" if reason else state)
            append_log(job_id, text, now)
    return bool(updated)


def set_fields(job_id: str, **fields: object) -> None:
    JobRow.update(**fields).where(JobRow.id == job_id).execute()


def append_log(job_id: str, text: str, now: datetime) -> None:
    JobRow.update(log=JobRow.log.concat(_line(now, text))).where(JobRow.id == job_id).execute()


def set_gate_metrics(job_id: str, metrics: Sequence[Mapping[str, float | str]]) -> None:
    set_fields(job_id, gate_metrics=json.dumps(list(metrics)))


def record_rollback(
    kind: str,
    deployed: str,
    replaced: str,
    reason: str,
    trigger: str,
    now: datetime,
    market_time: datetime | None,
) -> Job:
    """Marks the job that deployed ``replaced`` rolled back; without such a job (the first
    training deployed it), a rolled-back job row records the rollback."""
    text = f"rolled back to {deployed}" + (f": {reason}" if reason else "")
    source = queries.job_that_deployed(kind, replaced)
    if source is not None and transition(
        source.id, "rolled_back", now, reason=reason or "rolled back", message=text
    ):
        return _get(source.id)
    job_id = uuid.uuid4().hex
    JobRow.create(
        id=job_id,
        kind=kind,
        state="rolled_back",
        trigger=trigger,
        note=reason,
        queued_at=now,
        started_at=now,
        finished_at=now,
        champion_version=replaced,
        challenger_version=deployed,
        failure_reason=reason or "rolled back",
        market_time=market_time,
        log=_line(now, text),
    )
    return _get(job_id)
