"""Coordination through the database, on SQLite and on a real PostgreSQL: the duties lease, job
claims and heartbeats, and decisions that many processes may try at the same instant (a trigger,
an alert, a lease) made once. "Many processes" are threads here, each with its own connection,
which is what the database sees of replicas; tests/test_scale_out.py runs real replicas."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg2
import pytest

from server.core.records import Alert, Lease
from server.monitoring.alert_store import AlertStore
from server.monitoring.alerts import AlertCandidate
from server.storage import jobs, leases, queries
from server.storage.schema import AlertRow, JobRow, close_database, database, open_database
from tests.postgres_cluster import Cluster, postgres_cluster

pytestmark = pytest.mark.serving

T = TypeVar("T")
T0 = dt.datetime(2026, 1, 5, 12, 0, 0)
TTL = dt.timedelta(seconds=5)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with postgres_cluster() as found:
        yield found


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind, open on this thread."""
    if request.param == "sqlite":
        found = f"sqlite:///{tmp_path / 'minhos.db'}"
    else:
        cluster: Cluster = request.getfixturevalue("cluster")
        name = f"t_{uuid.uuid4().hex[:12]}"
        admin = psycopg2.connect(cluster.url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        admin.close()
        found = cluster.url.rsplit("/", 1)[0] + f"/{name}"
    open_database(found)
    yield found
    close_database()


def at_once(count: int, work: Callable[[int], T]) -> list[T]:
    """Runs ``work(i)`` on ``count`` threads released together, each with its own connection."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            database.connect(reuse_if_open=True)
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results  # type: ignore[return-value]  # every slot was filled: no error


def test_a_lease_is_held_renewed_taken_when_expired_and_released(url: str) -> None:
    first = leases.hold("duties", "a", TTL, T0)
    assert first is not None and first.generation == 1
    assert leases.hold("duties", "b", TTL, T0 + dt.timedelta(seconds=4)) is None
    renewed = leases.hold("duties", "a", TTL, T0 + dt.timedelta(seconds=4))
    assert renewed is not None and renewed.acquired_at == T0 and renewed.generation == 1
    # Renewed until T0 + 9 s: still refused to b at T0 + 8 s, taken at T0 + 10 s.
    assert leases.hold("duties", "b", TTL, T0 + dt.timedelta(seconds=8)) is None
    taken = leases.hold("duties", "b", TTL, T0 + dt.timedelta(seconds=10))
    assert (
        taken is not None
        and taken.generation == 2
        and taken.acquired_at == T0 + dt.timedelta(seconds=10)
    )
    assert leases.hold("duties", "a", TTL, T0 + dt.timedelta(seconds=11)) is None
    assert not leases.release("duties", "a")
    assert leases.release("duties", "b")
    back = leases.hold("duties", "a", TTL, T0 + dt.timedelta(seconds=11))
    assert back is not None and back.generation == 3


def test_many_processes_asking_for_an_expired_lease_give_one_holder(url: str) -> None:
    for round_ in range(5):
        now = T0 + dt.timedelta(minutes=round_)  # the previous round's lease has expired

        def ask(i: int, now: dt.datetime = now) -> Lease | None:
            return leases.hold("duties", f"p{i}", TTL, now)

        won = at_once(8, ask)
        winners = [w for w in won if w is not None]
        assert len(winners) == 1, won
        stored = queries.lease("duties")
        assert stored is not None and stored.holder == winners[0].holder


def test_simultaneous_triggers_for_a_kind_give_one_job(url: str) -> None:
    for round_ in range(5):
        results = at_once(6, lambda i: jobs.enqueue("lstm", "manual", f"replica {i}", None, T0))
        ids = {job.id for job, _ in results}
        assert len(ids) == 1 and sum(not merged for _, merged in results) == 1
        jobs.transition(ids.pop(), "failed", T0, reason=f"round {round_} done")
    assert JobRow.select().count() == 5


class Collect:
    """A sink that keeps what it is sent (a webhook would post it)."""

    every_alert = True

    def __init__(self) -> None:
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> bool:
        self.sent.append(alert)
        return True


def test_simultaneous_alerts_are_stored_once(url: str) -> None:
    sink = Collect()
    store = AlertStore(dt.timedelta(minutes=30), [sink], lambda: T0)
    candidate = AlertCandidate("health_score", "warning", "overall", "low", 55.0, 60.0)
    raised = at_once(8, lambda i: store.record(candidate, T0))
    assert sum(r is not None for r in raised) == 1
    assert AlertRow.select().count() == 1 and len(sink.sent) == 1
    # A more severe alert of the same kind is not held back by the cooldown: once, too.
    worse = AlertCandidate("health_score", "critical", "overall", "lower", 25.0, 30.0)
    raised = at_once(8, lambda i: store.record(worse, T0))
    assert sum(r is not None for r in raised) == 1 and AlertRow.select().count() == 2


def test_claims_take_each_job_once_and_respect_the_running_limit(url: str) -> None:
    queued = [jobs.enqueue(kind, "manual", "", None, T0)[0].id for kind in ("lstm", "ensemble")]
    claimed = at_once(4, lambda i: jobs.claim_next(f"w{i}", T0, max_running=2))
    got = [job for job in claimed if job is not None]
    assert sorted(j.id for j in got) == sorted(queued)
    assert len({j.holder for j in got}) == 2 and all(j.state == "running" for j in got)
    assert all(j.heartbeat_at == T0 for j in got)
    # One running job at most (the default): a third kind waits for the first two.
    jobs.enqueue("kelly", "manual", "", None, T0)
    assert jobs.claim_next("w9", T0, max_running=1) is None
    for job in got:
        jobs.transition(job.id, "rejected", T0, reason="test")
    third = jobs.claim_next("w9", T0, max_running=1)
    assert third is not None and third.kind == "kelly" and third.holder == "w9"


def test_a_job_whose_heartbeat_stops_fails_once_with_the_reason(url: str) -> None:
    jobs.enqueue("lstm", "manual", "", None, T0)
    jobs.enqueue("ensemble", "manual", "", None, T0)
    silent = jobs.claim_next("dead-worker", T0, max_running=2)
    alive = jobs.claim_next("live-worker", T0, max_running=2)
    assert silent is not None and alive is not None
    later = T0 + dt.timedelta(seconds=20)
    assert jobs.heartbeat(alive.id, "live-worker", later - dt.timedelta(seconds=2))
    assert not jobs.heartbeat(alive.id, "someone-else", later)  # not its job
    lost = jobs.fail_lost(later, dt.timedelta(seconds=15))
    assert [j.id for j in lost] == [silent.id]
    assert lost[0].state == "failed"
    assert lost[0].failure_reason == "worker dead-worker lost: no heartbeat for 20 s"
    assert jobs.fail_lost(later, dt.timedelta(seconds=15)) == []  # decided once
    assert not jobs.heartbeat(silent.id, "dead-worker", later)  # its worker must stop
    assert queries.job(alive.id) is not None and queries.job(alive.id).state == "running"  # type: ignore[union-attr]


def test_a_probation_verdict_is_recorded_once(url: str) -> None:
    job, _ = jobs.enqueue("lstm", "manual", "", None, T0)
    decided = at_once(6, lambda i: jobs.decide_probation(job.id, "failed", T0, f"replica {i}"))
    assert sum(decided) == 1
    found = queries.job(job.id)
    assert found is not None and found.probation == "failed"
    assert not jobs.decide_probation(job.id, "passed", T0, "late")
