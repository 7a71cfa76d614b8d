"""Every read of the tables, in one place: the rooms above storage ask questions here and get
domain records (server.core.records) or numpy columns back, never ORM rows. The prediction ⋈
outcome join is written once (:func:`_joined`) and serves the monitor, probation, the retraining
worker and the listings alike."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import peewee as pw

from server.core import scoring
from server.core.manifest import Manifest
from server.core.records import (
    RANK_SEVERITY,
    SEVERITY_RANK,
    Alert,
    Job,
    Lease,
    ModelVersion,
    Outcome,
    Prediction,
    PredictionRecord,
    Severity,
)
from server.storage.schema import (
    AlertRow,
    BarRow,
    JobRow,
    LeaseRow,
    ModelVersionRow,
    OutcomeRow,
    PredictionRow,
    RequestRow,
    database,
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: The version column of each model kind in the predictions table.
VERSION_COLUMN = {
    "lstm": PredictionRow.lstm_version,
    "ensemble": PredictionRow.ensemble_version,
    "kelly": PredictionRow.kelly_version,
}


# -- predictions ⋈ outcomes -----------------------------------------------------------------------


def _joined(*columns: Any, resolved_only: bool = False) -> pw.Select:
    """Predictions with their outcome (NULLs where unresolved, unless ``resolved_only``)."""
    join = pw.JOIN.INNER if resolved_only else pw.JOIN.LEFT_OUTER
    return PredictionRow.select(*columns).join(
        OutcomeRow, join, on=(OutcomeRow.prediction == PredictionRow.id)
    )


def _parse_times(rows: list[list[Any]], positions: Sequence[int]) -> list[list[Any]]:
    """Datetimes come back as text from SQLite's driver: parse just those columns (peewee's
    per-field conversion cost four times the fetch itself on tens of thousands of rows)."""
    for r in rows:
        for i in positions:
            if isinstance(r[i], str):
                r[i] = dt.datetime.fromisoformat(r[i])
    return rows


@dataclass(frozen=True)
class PredictionOutcomes:
    """Columns of predictions in bar_time order, with their outcome where resolved by ``now``."""

    bar_time: list[dt.datetime]
    p_up: FloatArray
    confidence: FloatArray
    lstm_p: FloatArray
    ensemble_p: FloatArray
    latency_ms: FloatArray
    #: (lstm, ensemble, kelly) versions that made each prediction.
    versions: list[tuple[str, str, str]]
    #: NaN where not resolved by ``now``.
    realized_return: FloatArray


#: What a PredictionOutcomes reads, in its order; resolved_at last (it decides what counts).
_OUTCOME_COLUMNS = (
    PredictionRow.bar_time,
    PredictionRow.probability_up,
    PredictionRow.confidence,
    PredictionRow.lstm_probability,
    PredictionRow.ensemble_probability,
    PredictionRow.latency_ms,
    PredictionRow.lstm_version,
    PredictionRow.ensemble_version,
    PredictionRow.kelly_version,
    OutcomeRow.realized_return,
    OutcomeRow.resolved_at,
)


def _prediction_outcomes(
    query: pw.Select, now: dt.datetime | None, newest: bool
) -> PredictionOutcomes:
    """The rows of a query over :data:`_OUTCOME_COLUMNS`, oldest first (``newest``: the query
    ordered them newest first); an outcome resolved after ``now`` reads as unresolved."""
    rows = _parse_times([list(r) for r in database.execute(query).fetchall()], (0, 10))
    if newest:
        rows.reverse()
    realized = [
        r[9]
        if r[9] is not None and r[10] is not None and (now is None or r[10] <= now)
        else math.nan
        for r in rows
    ]
    return PredictionOutcomes(
        bar_time=[r[0] for r in rows],
        p_up=np.array([r[1] for r in rows], dtype=np.float64),
        confidence=np.array([r[2] for r in rows], dtype=np.float64),
        lstm_p=np.array([r[3] for r in rows], dtype=np.float64),
        ensemble_p=np.array([r[4] for r in rows], dtype=np.float64),
        latency_ms=np.array([r[5] for r in rows], dtype=np.float64),
        versions=[(r[6], r[7], r[8]) for r in rows],
        realized_return=np.array(realized, dtype=np.float64),
    )


def prediction_outcomes(
    now: dt.datetime,
    start: dt.datetime | None = None,
    newest: int | None = None,
    resolved_only: bool = False,
) -> PredictionOutcomes:
    """Predictions with ``start < bar_time <= now`` (the newest ``newest`` of them if given); an
    outcome counts only once ``resolved_at <= now``, so a report as of a past bar never sees
    later outcomes."""
    query = _joined(*_OUTCOME_COLUMNS).where(PredictionRow.bar_time <= now)
    if start is not None:
        query = query.where(PredictionRow.bar_time > start)
    if resolved_only:
        query = query.where(OutcomeRow.resolved_at.is_null(False) & (OutcomeRow.resolved_at <= now))
    if newest:
        query = query.order_by(PredictionRow.bar_time.desc()).limit(newest)
    else:
        query = query.order_by(PredictionRow.bar_time)
    return _prediction_outcomes(query, now, bool(newest))


def version_outcomes(kind: str, version: str, limit: int) -> PredictionOutcomes:
    """The first ``limit`` resolved predictions (oldest first) made with ``version`` of ``kind``:
    what a new version's probation is judged on."""
    query = (
        _joined(*_OUTCOME_COLUMNS, resolved_only=True)
        .where(VERSION_COLUMN[kind] == version)
        .order_by(PredictionRow.bar_time)
        .limit(limit)
    )
    return _prediction_outcomes(query, None, newest=False)


def served_outcomes(
    symbol: str, before: dt.datetime, cutoff: dt.datetime | None
) -> tuple[FloatArray, FloatArray]:
    """Fused P(up) as served and realized returns of ``symbol``'s resolved predictions made before
    ``before``, none after ``cutoff`` (a job's market time) nor resolved after it."""
    query = _joined(
        PredictionRow.probability_up, OutcomeRow.realized_return, resolved_only=True
    ).where((PredictionRow.symbol == symbol) & (PredictionRow.bar_time < before))
    if cutoff is not None:
        query = query.where((PredictionRow.bar_time < cutoff) & (OutcomeRow.resolved_at <= cutoff))
    rows = list(query.order_by(PredictionRow.bar_time).tuples())
    p = np.array([row[0] for row in rows], dtype=np.float64)
    r = np.array([row[1] for row in rows], dtype=np.float64)
    return p, r


def latest_bar_time() -> dt.datetime | None:
    row = (
        PredictionRow.select(PredictionRow.bar_time).order_by(PredictionRow.bar_time.desc()).first()
    )
    return row.bar_time if row is not None and isinstance(row.bar_time, dt.datetime) else None


def prediction_bar_times() -> list[dt.datetime]:
    """Every stored prediction's bar time, oldest first."""
    query = PredictionRow.select(PredictionRow.bar_time).order_by(PredictionRow.bar_time)
    return [r.bar_time for r in query]


def _prediction(row: PredictionRow) -> Prediction:
    return Prediction(
        id=row.id,
        symbol=row.symbol,
        bar_time=row.bar_time,
        direction=int(row.direction),
        probability_up=row.probability_up,
        confidence=row.confidence,
        lstm_probability=row.lstm_probability,
        ensemble_probability=row.ensemble_probability,
        agreement=row.agreement,
        kelly_fraction=row.kelly_fraction,
        versions={
            "lstm": row.lstm_version,
            "ensemble": row.ensemble_version,
            "kelly": row.kelly_version,
        },
        latency_s=row.latency_ms / 1e3,
        close=math.nan,
    )


def _outcome(row: OutcomeRow) -> Outcome:
    return Outcome(
        prediction_id=str(row.prediction_id),  # type: ignore[attr-defined]  # peewee's FK column
        realized_return=row.realized_return,
        hit=bool(row.hit),
        position_return=row.position_return,
        resolved_at=row.resolved_at,
    )


def prediction(prediction_id: str) -> Prediction | None:
    row = PredictionRow.get_or_none(PredictionRow.id == prediction_id)
    return _prediction(row) if row is not None else None


def outcome(prediction_id: str) -> Outcome | None:
    row = OutcomeRow.get_or_none(OutcomeRow.prediction == prediction_id)
    return _outcome(row) if row is not None else None


def prediction_records(symbol: str, limit: int, resolved_only: bool) -> list[PredictionRecord]:
    """Newest first, with outcomes where resolved."""
    query = PredictionRow.select()
    if symbol:
        query = query.where(PredictionRow.symbol == symbol)
    if resolved_only:
        query = query.where(PredictionRow.id.in_(OutcomeRow.select(OutcomeRow.prediction)))
    rows = list(
        query.order_by(PredictionRow.bar_time.desc(), PredictionRow.created_at.desc()).limit(limit)
    )
    outcomes = {
        o.prediction_id: o
        for o in map(
            _outcome,
            OutcomeRow.select().where(OutcomeRow.prediction.in_([r.id for r in rows])),
        )
    }
    return [PredictionRecord(_prediction(r), outcomes.get(r.id)) for r in rows]


# -- the dashboard's columns ---------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionColumns:
    """Predictions in bar_time order; outcome columns are NaN / False where none is stored."""

    bar_time: list[dt.datetime]
    p_up: FloatArray
    confidence: FloatArray
    lstm_p: FloatArray
    ensemble_p: FloatArray
    agreement: FloatArray
    kelly_fraction: FloatArray
    latency_ms: FloatArray
    resolved: BoolArray
    realized_return: FloatArray
    hit: BoolArray
    position_return: FloatArray

    def __len__(self) -> int:
        return len(self.bar_time)

    @property
    def up(self) -> BoolArray:
        """Whether the bar after each resolved prediction went up (False where unresolved)."""
        return scoring.went_up(np.nan_to_num(self.realized_return, nan=0.0)) & self.resolved


_COLUMNS = (
    PredictionRow.bar_time,
    PredictionRow.probability_up,
    PredictionRow.confidence,
    PredictionRow.lstm_probability,
    PredictionRow.ensemble_probability,
    PredictionRow.agreement,
    PredictionRow.kelly_fraction,
    PredictionRow.latency_ms,
    OutcomeRow.realized_return,
    OutcomeRow.hit,
    OutcomeRow.position_return,
)


def newest_predictions(
    newest: int,
    *,
    symbol: str | None = None,
    kelly_version: str | None = None,
    resolved_only: bool = False,
) -> PredictionColumns:
    """The newest ``newest`` predictions (of ``symbol``, sized by ``kelly_version``, resolved
    only, when given), returned oldest first."""
    query = _joined(*_COLUMNS, resolved_only=resolved_only)
    if symbol:
        query = query.where(PredictionRow.symbol == symbol)
    if kelly_version:
        query = query.where(PredictionRow.kelly_version == kelly_version)
    query = query.order_by(PredictionRow.bar_time.desc()).limit(newest)
    rows = _parse_times([list(r) for r in database.execute(query).fetchall()], (0,))
    rows.reverse()
    resolved = np.array([r[8] is not None for r in rows], dtype=bool)

    def column(i: int, missing: float = np.nan) -> FloatArray:
        return np.array([missing if r[i] is None else r[i] for r in rows], dtype=np.float64)

    return PredictionColumns(
        bar_time=[r[0] for r in rows],
        p_up=column(1),
        confidence=column(2),
        lstm_p=column(3),
        ensemble_p=column(4),
        agreement=column(5),
        kelly_fraction=column(6),
        latency_ms=column(7),
        resolved=resolved,
        realized_return=column(8),
        hit=np.array([bool(r[9]) for r in rows], dtype=bool) & resolved,
        position_return=column(10),
    )


def newest_symbol() -> str | None:
    """The symbol of the newest prediction (by bar time), if any."""
    row = PredictionRow.select(PredictionRow.symbol).order_by(PredictionRow.bar_time.desc()).first()
    return str(row.symbol) if row is not None else None


# -- requests -------------------------------------------------------------------------------------


def request_counts(
    start: dt.datetime | None,
    end: dt.datetime,
    error_codes: Sequence[str],
    inclusive: bool = False,
) -> tuple[int, int]:
    """(messages served, of which failed with one of ``error_codes``) in the window, by market
    time where the request had one, else by wall time."""

    def within(col: Any) -> Any:
        cond = col <= end
        if start is not None:
            cond &= (col >= start) if inclusive else (col > start)
        return cond

    cond = (RequestRow.market_time.is_null(False) & within(RequestRow.market_time)) | (
        RequestRow.market_time.is_null() & within(RequestRow.created_at)
    )
    messages = pw.fn.SUM(pw.fn.COALESCE(RequestRow.messages, 1))
    total = RequestRow.select(messages).where(cond).scalar()
    errors = (
        RequestRow.select(messages).where(cond & RequestRow.code.in_(sorted(error_codes))).scalar()
    )
    return int(total or 0), int(errors or 0)


# -- alerts ---------------------------------------------------------------------------------------


def alert_of(row: AlertRow) -> Alert:
    return Alert(
        id=row.id,
        kind=row.kind,
        severity=RANK_SEVERITY.get(int(row.severity), "info"),
        component=row.component,
        message=row.message,
        value=float(row.value),
        threshold=float(row.threshold),
        raised_at=row.raised_at,
        market_time=row.market_time,
        acknowledged=bool(row.acknowledged),
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
    )


def last_alert(kind: str, component: str) -> Alert | None:
    row = (
        AlertRow.select()
        .where((AlertRow.kind == kind) & (AlertRow.component == component))
        # Of alerts raised at the same instant (replicas), the most severe is the one to beat.
        .order_by(AlertRow.raised_at.desc(), AlertRow.severity.desc())
        .first()
    )
    return alert_of(row) if row is not None else None


def alert(alert_id: str) -> Alert | None:
    row = AlertRow.get_or_none(AlertRow.id == alert_id)
    return alert_of(row) if row is not None else None


def alerts(include_acknowledged: bool, min_severity: Severity | None, limit: int) -> list[Alert]:
    """Newest first."""
    query = AlertRow.select()
    if not include_acknowledged:
        query = query.where(AlertRow.acknowledged == False)  # noqa: E712 (peewee expression)
    if min_severity is not None:
        query = query.where(AlertRow.severity >= SEVERITY_RANK[min_severity])
    query = query.order_by(AlertRow.raised_at.desc(), AlertRow.market_time.desc()).limit(limit)
    return [alert_of(row) for row in query]


def alert_counts() -> list[tuple[str, Severity]]:
    """(kind, severity) of every stored alert."""
    return [(row.kind, RANK_SEVERITY[row.severity]) for row in AlertRow.select()]


# -- model versions -------------------------------------------------------------------------------


def model_version_of(row: ModelVersionRow) -> ModelVersion:
    return ModelVersion(
        kind=row.kind,
        version=row.version,
        sha256=row.sha256,
        stage=row.stage,
        created_at=row.created_at,
        deployed_at=row.deployed_at,
        stage_changed_at=row.stage_changed_at,
        path=row.path,
        manifest=Manifest.from_json(row.manifest),
    )


def model_version(kind: str, version: str) -> ModelVersion | None:
    row = ModelVersionRow.get_or_none(
        (ModelVersionRow.kind == kind) & (ModelVersionRow.version == version)
    )
    return model_version_of(row) if row is not None else None


def model_versions(kind: str | None = None, stage: str | None = None) -> list[ModelVersion]:
    """Registered versions, newest first."""
    query = ModelVersionRow.select()
    if kind:
        query = query.where(ModelVersionRow.kind == kind)
    if stage:
        query = query.where(ModelVersionRow.stage == stage)
    rows = query.order_by(ModelVersionRow.created_at.desc(), ModelVersionRow.version.desc())
    return [model_version_of(row) for row in rows]


def deployed_versions() -> dict[str, str]:
    """Deployed version per kind (kinds with none deployed are absent)."""
    rows = ModelVersionRow.select(ModelVersionRow.kind, ModelVersionRow.version).where(
        ModelVersionRow.stage == "deployed"
    )
    return {row.kind: row.version for row in rows}


def newest_backup(kind: str) -> ModelVersion | None:
    row = (
        ModelVersionRow.select()
        .where((ModelVersionRow.kind == kind) & (ModelVersionRow.stage == "backup"))
        .order_by(ModelVersionRow.stage_changed_at.desc(), ModelVersionRow.created_at.desc())
        .first()
    )
    return model_version_of(row) if row is not None else None


# -- jobs -----------------------------------------------------------------------------------------


def job_of(row: JobRow) -> Job:
    return Job(
        id=row.id,
        kind=row.kind,
        state=row.state,
        trigger=row.trigger,
        note=row.note,
        queued_at=row.queued_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        champion_version=row.champion_version,
        challenger_version=row.challenger_version,
        gate_metrics=Job.parse_gate_metrics(row.gate_metrics),
        failure_reason=row.failure_reason,
        log=[line for line in (row.log or "").splitlines() if line],
        market_time=row.market_time,
        holder=row.holder or "",
        heartbeat_at=row.heartbeat_at,
        probation=row.probation or "",
    )


def job(job_id: str) -> Job | None:
    row = JobRow.get_or_none(JobRow.id == job_id)
    return job_of(row) if row is not None else None


def jobs(kind: str | None = None, state: str | None = None, limit: int = 100) -> list[Job]:
    """Newest first."""
    query = JobRow.select()
    if kind:
        query = query.where(JobRow.kind == kind)
    if state:
        query = query.where(JobRow.state == state)
    query = query.order_by(JobRow.queued_at.desc(), JobRow.id.desc()).limit(max(limit, 1))
    return [job_of(r) for r in query]


def jobs_in_states(states: Sequence[str]) -> list[Job]:
    return [job_of(r) for r in JobRow.select().where(JobRow.state.in_(list(states)))]


def latest_job(kind: str, trigger: str | None = None, market: bool = False) -> Job | None:
    """The kind's most recent job (of ``trigger``), by market time when ``market`` (jobs queued
    without a market time are skipped) else by wall time."""
    query = JobRow.select().where(JobRow.kind == kind)
    if trigger:
        query = query.where(JobRow.trigger == trigger)
    if market:
        query = query.where(JobRow.market_time.is_null(False)).order_by(JobRow.market_time.desc())
    else:
        query = query.order_by(JobRow.queued_at.desc())
    row = query.first()
    return job_of(row) if row is not None else None


def job_that_deployed(kind: str, version: str) -> Job | None:
    """The job whose challenger ``version`` of ``kind`` is deployed (None: the first training)."""
    row = (
        JobRow.select()
        .where(
            (JobRow.kind == kind)
            & (JobRow.challenger_version == version)
            & (JobRow.state == "deployed")
        )
        .first()
    )
    return job_of(row) if row is not None else None


# -- bars -----------------------------------------------------------------------------------------


def stored_bars(
    symbol: str, cutoff: dt.datetime | None
) -> tuple[npt.NDArray[np.datetime64], FloatArray]:
    """Bars the server has seen for ``symbol`` (none after ``cutoff``): times and (n, 5) OHLCV."""
    query = BarRow.select().where(BarRow.symbol == symbol)
    if cutoff is not None:
        query = query.where(BarRow.time <= cutoff)
    rows = list(query.order_by(BarRow.time))
    times = np.array([np.datetime64(r.time, "s") for r in rows], dtype="datetime64[s]")
    ohlcv = np.array(
        [[r.open, r.high, r.low, r.close, r.volume] for r in rows], dtype=np.float64
    ).reshape(-1, 5)
    return times, ohlcv


# -- leases ---------------------------------------------------------------------------------------


def lease(name: str) -> Lease | None:
    """The lease as stored (its holder may have let it expire)."""
    row = LeaseRow.get_or_none(LeaseRow.name == name)
    if row is None:
        return None
    return Lease(row.name, row.holder, row.expires_at, row.acquired_at, row.generation)
