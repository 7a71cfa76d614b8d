"""Persistence schema (peewee): models, predictions, outcomes, bars, metrics, alerts and jobs.

SQLite (WAL mode) by default; PostgreSQL when the URL says so, so that several server replicas can
share one database. Only this module knows table layouts; callers use its functions and rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import peewee as pw
from playhouse.db_url import connect, register_database
from playhouse.shortcuts import ReconnectMixin

#: Bound at start-up by :func:`open_database`; every model below lives in it.
database = pw.DatabaseProxy()


def utcnow() -> dt.datetime:
    """Naive UTC, the one timestamp convention of the database (SQLite has no time zones)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class ModelVersionRow(BaseModel):
    """One registered model version; ``stage`` says which one serves."""

    kind = pw.CharField(max_length=16, index=True)  # "lstm" | "ensemble" | "kelly"
    version = pw.CharField(max_length=64)
    sha256 = pw.CharField(max_length=64)
    stage = pw.CharField(max_length=16, index=True)  # candidate|deployed|backup|rejected|retired
    created_at = pw.DateTimeField(default=utcnow)
    deployed_at = pw.DateTimeField(null=True)
    #: When the stage last changed: a backup's retention counts from here.
    stage_changed_at = pw.DateTimeField(default=utcnow)
    path = pw.CharField(max_length=512)
    manifest = pw.TextField()  # the manifest.json text, kept so the row is self-describing

    class Meta:
        indexes = ((("kind", "version"), True),)


class PredictionRow(BaseModel):
    id = pw.CharField(max_length=36, primary_key=True)
    symbol = pw.CharField(max_length=32, index=True)
    bar_time = pw.DateTimeField(index=True)  # market time of the last bar of the window
    created_at = pw.DateTimeField(default=utcnow)  # wall time
    direction = pw.SmallIntegerField()  # +1 up, -1 down
    probability_up = pw.DoubleField()
    confidence = pw.DoubleField()
    lstm_probability = pw.DoubleField()
    ensemble_probability = pw.DoubleField()
    agreement = pw.DoubleField()
    kelly_fraction = pw.DoubleField()
    lstm_version = pw.CharField(max_length=64)
    ensemble_version = pw.CharField(max_length=64)
    kelly_version = pw.CharField(max_length=64)
    latency_ms = pw.DoubleField()


class OutcomeRow(BaseModel):
    prediction = pw.ForeignKeyField(PredictionRow, primary_key=True, backref="outcome")
    realized_return = pw.DoubleField()
    hit = pw.BooleanField()
    position_return = pw.DoubleField()
    resolved_at = pw.DateTimeField(index=True)  # market time when known


class BarRow(BaseModel):
    """Bars the server has seen, kept for retraining on recent data."""

    symbol = pw.CharField(max_length=32)
    time = pw.DateTimeField()
    open = pw.DoubleField()
    high = pw.DoubleField()
    low = pw.DoubleField()
    close = pw.DoubleField()
    volume = pw.DoubleField()

    class Meta:
        indexes = ((("symbol", "time"), True),)


class RequestRow(BaseModel):
    """One served RPC, for error rates and latency over market-time windows."""

    method = pw.CharField(max_length=64)
    code = pw.CharField(max_length=32)  # grpc.StatusCode name
    latency_ms = pw.DoubleField()
    created_at = pw.DateTimeField(default=utcnow, index=True)
    market_time = pw.DateTimeField(null=True, index=True)
    #: Messages the row stands for: a stream's batch is one row; NULL (older databases) is one.
    messages = pw.IntegerField(null=True)


class MetricRow(BaseModel):
    """A metric snapshot (health score, accuracy, ...) for trends and the dashboard."""

    name = pw.CharField(max_length=64, index=True)
    component = pw.CharField(max_length=16)
    value = pw.DoubleField()
    market_time = pw.DateTimeField(index=True)
    created_at = pw.DateTimeField(default=utcnow)


class AlertRow(BaseModel):
    id = pw.CharField(max_length=36, primary_key=True)
    kind = pw.CharField(max_length=32, index=True)
    severity = pw.SmallIntegerField()
    component = pw.CharField(max_length=16)
    message = pw.TextField()
    value = pw.DoubleField()
    threshold = pw.DoubleField()
    raised_at = pw.DateTimeField(default=utcnow, index=True)
    market_time = pw.DateTimeField(null=True)
    acknowledged = pw.BooleanField(default=False)
    acknowledged_at = pw.DateTimeField(null=True)
    acknowledged_by = pw.CharField(max_length=128, default="")


class JobRow(BaseModel):
    id = pw.CharField(max_length=36, primary_key=True)
    kind = pw.CharField(max_length=16, index=True)
    state = pw.CharField(max_length=16, index=True)
    trigger = pw.CharField(max_length=16)
    note = pw.TextField(default="")
    queued_at = pw.DateTimeField(default=utcnow)
    started_at = pw.DateTimeField(null=True)
    finished_at = pw.DateTimeField(null=True)
    champion_version = pw.CharField(max_length=64, default="")
    challenger_version = pw.CharField(max_length=64, default="")
    gate_metrics = pw.TextField(default="[]")  # JSON list of {name, champion, challenger}
    failure_reason = pw.TextField(default="")
    log = pw.TextField(default="")
    #: Market time the job was queued at: the worker uses no bar after it (None: live, wall time).
    market_time = pw.DateTimeField(null=True)
    #: The worker that claimed the job ("host:pid"), and when it last said it was alive: a
    #: running job whose heartbeat is older than ``retrain.heartbeat_timeout_s`` has lost it.
    holder = pw.CharField(max_length=128, null=True)
    heartbeat_at = pw.DateTimeField(null=True)
    #: The probation verdict on the version this job deployed ("passed" / "failed"), decided once.
    probation = pw.CharField(max_length=16, null=True)


class LeaseRow(BaseModel):
    """A duty that one process at a time performs (health evaluation, schedules, probation,
    pruning): held by ``holder`` until ``expires_at`` unless renewed; any process takes an expired
    lease. Coordination needs nothing but the database every replica already uses."""

    name = pw.CharField(max_length=64, primary_key=True)
    holder = pw.CharField(max_length=128)
    expires_at = pw.DateTimeField()
    acquired_at = pw.DateTimeField()
    #: Bumped at each change of holder: a holder's writes can be fenced by it.
    generation = pw.IntegerField(default=1)


class ArtifactRow(BaseModel):
    """A model file's bytes, for registries kept in the database (PostgreSQL: machines that share
    no filesystem); each replica caches them in its own directory, checked by SHA-256."""

    kind = pw.CharField(max_length=16)
    version = pw.CharField(max_length=64)
    name = pw.CharField(max_length=64)  # file name inside the version: model file, serving graph
    sha256 = pw.CharField(max_length=64)
    size = pw.BigIntegerField()
    data = pw.BlobField()
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("kind", "version", "name"), True),)


TABLES: list[type[BaseModel]] = [
    ModelVersionRow,
    PredictionRow,
    OutcomeRow,
    BarRow,
    RequestRow,
    MetricRow,
    AlertRow,
    JobRow,
    LeaseRow,
    ArtifactRow,
]


def delete_served_rows() -> None:
    """Empties every table but the registry's: what a study or a fresh demo starts from."""
    with database.atomic():
        for table in (
            OutcomeRow,
            PredictionRow,
            RequestRow,
            AlertRow,
            MetricRow,
            BarRow,
            JobRow,
            LeaseRow,
        ):
            table.delete().execute()


def lock_id(key: str) -> int:
    """A signed 64-bit number for ``key``, the same in every process (PostgreSQL's advisory locks
    are keyed by a bigint)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


@contextmanager
def write_transaction(*locks: str) -> Iterator[None]:
    """A transaction that takes the write lock up front, and serializes every transaction that
    names one of the same ``locks`` (a kind's jobs, an alert's cooldown, a kind's deployment), so
    that two replicas reading "no job yet" at the same instant cannot both insert one.

    SQLite: BEGIN IMMEDIATE, one writer at a time, which is already the serialization the locks
    ask for (and a transaction that reads first and writes later would otherwise fail at once,
    "database is locked", if the batched writer committed in between). PostgreSQL: transaction
    advisory locks, released at commit or rollback, taken in a fixed order so that two
    transactions naming the same keys cannot deadlock."""
    sqlite = isinstance(database.obj, pw.SqliteDatabase)
    with database.atomic(lock_type="IMMEDIATE") if sqlite else database.atomic():
        if not sqlite:
            for key in sorted(set(locks)):
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (lock_id(key),))
        yield


def _add_missing_columns(db: pw.Database) -> None:
    """Adds nullable columns that a newer schema declares and an older database lacks (the one kind
    of migration this schema has needed); anything else is left to a real migration."""
    from playhouse.migrate import SchemaMigrator, migrate

    migrator = SchemaMigrator.from_database(db)
    for table in TABLES:
        name = table._meta.table_name
        present = {c.name for c in db.get_columns(name)}
        missing = [f for f in table._meta.sorted_fields if f.column_name not in present]
        if missing and all(f.null for f in missing):
            migrate(*(migrator.add_column(name, f.column_name, f) for f in missing))


#: The URL the proxy is connected to.
_opened_url: str | None = None


#: What a caller sees when the database is unreachable: the transport answers UNAVAILABLE.
DATABASE_ERRORS: tuple[type[Exception], ...] = (pw.OperationalError, pw.InterfaceError)


class _ReconnectingPostgres(ReconnectMixin, pw.PostgresqlDatabase):  # type: ignore[misc]
    """A server outlives a PostgreSQL restart: each thread's dead connection is reopened at its
    next statement (never inside a transaction) instead of failing for good."""

    reconnect_errors = (
        (pw.OperationalError, "server closed the connection"),
        (pw.OperationalError, "terminating connection"),
        (pw.InterfaceError, "connection already closed"),
    )


register_database(_ReconnectingPostgres, "postgres", "postgresql")


def open_database(url: str) -> pw.Database:
    """Connects the proxy to ``url`` and creates missing tables. Idempotent: for the URL it is
    already connected to, the same database object (replacing it would leave the other threads'
    connections, and any transaction open on them, behind)."""
    global _opened_url
    if database.obj is not None and url == _opened_url:
        current: pw.Database = database.obj
        current.connect(reuse_if_open=True)
        return current
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # WAL lets readers (dashboard, monitor) run beside the batched writer; busy_timeout makes
        # a second process wait for the lock instead of failing.
        kwargs["pragmas"] = {
            "journal_mode": "wal",
            "synchronous": "normal",
            "busy_timeout": 10_000,
            "foreign_keys": 1,
        }
    db: pw.Database = connect(url, **kwargs)
    database.initialize(db)
    _opened_url = url
    db.connect(reuse_if_open=True)
    db.create_tables(TABLES, safe=True)
    _add_missing_columns(db)
    return db


def close_database() -> None:
    """Closes this thread's connection; the next :func:`open_database` opens afresh."""
    global _opened_url
    _opened_url = None
    if database.obj is not None and not database.is_closed():
        database.close()
