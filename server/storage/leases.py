"""Leases: a duty that one process at a time performs, held through a row of the database every
replica already shares (no leader-election service). A holder renews its lease before it expires;
any process takes a lease whose expiry has passed. One statement decides, an upsert guarded by
"still mine, or expired", so two processes asking at the same instant cannot both win.

Expiry is judged by the clock of the process that asks: replicas' clocks must agree to well within
a lease's time to live (NTP does; the default TTL is seconds).
"""

from __future__ import annotations

import datetime as dt

import peewee as pw

from server.core.records import Lease
from server.storage import queries
from server.storage.schema import LeaseRow, database

#: The one lease of a MinhOS deployment: health evaluation and alerts, retraining schedules and
#: degradation triggers, probation verdicts, lost-job reaping and backup pruning.
DUTIES = "duties"


def hold(name: str, holder: str, ttl: dt.timedelta, now: dt.datetime) -> Lease | None:
    """Takes or renews the lease ``name`` for ``holder`` until ``now + ttl``; the lease if
    ``holder`` has it now, None if another process holds an unexpired one."""
    mine = LeaseRow.holder == holder
    with database.atomic():
        (
            LeaseRow.insert(
                name=name, holder=holder, expires_at=now + ttl, acquired_at=now, generation=1
            )
            .on_conflict(
                conflict_target=[LeaseRow.name],
                update={
                    LeaseRow.holder: holder,
                    LeaseRow.expires_at: now + ttl,
                    LeaseRow.acquired_at: pw.Case(None, [(mine, LeaseRow.acquired_at)], now),
                    LeaseRow.generation: pw.Case(
                        None, [(mine, LeaseRow.generation)], LeaseRow.generation + 1
                    ),
                },
                where=mine | (LeaseRow.expires_at < now),
            )
            .execute()
        )
        found = queries.lease(name)
    return found if found is not None and found.holder == holder else None


def release(name: str, holder: str) -> bool:
    """Gives the lease up at once (a draining process), so another takes it without waiting for
    the expiry; False if ``holder`` did not have it."""
    return bool(
        LeaseRow.update(expires_at=dt.datetime(1970, 1, 1))
        .where((LeaseRow.name == name) & (LeaseRow.holder == holder))
        .execute()
    )
