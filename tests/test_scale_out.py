"""Scale-out on real parts: a throwaway PostgreSQL cluster, three replicas as ``python -m
server.main`` processes (same settings, each with its own cache directory and no shared model
directory) and ``minhos-worker`` processes. Replicas and workers are killed with SIGKILL, as a
machine that dies would be. Figures are printed for README "Scale-out" (run with ``-s``)."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg2
import pytest

from clients.client import MinhosClient
from export.data import MarketData
from minhos.v1 import common_pb2
from server.storage import queries
from server.storage.registry import ModelRepository
from server.storage.schema import (
    AlertRow,
    ArtifactRow,
    JobRow,
    MetricRow,
    close_database,
    open_database,
)
from tests.conftest import Trained, register_in
from tests.postgres_cluster import Cluster, postgres_cluster
from tests.reliability_record import record
from tests.server_harness import window
from tests.server_process import ServerProcess, server_env, spawn

pytestmark = pytest.mark.slow

LEASE_TTL_S = 2.0
RELOAD_S = 0.25
HEARTBEAT_S = 0.5
HEARTBEAT_TIMEOUT_S = 3.0
#: The job's market time: two months after the tiny models' training data ends.
MARKET_TIME = dt.datetime(2007, 3, 1)
#: What every replica and worker is given: the same settings for all, none special.
SETTINGS = {
    "MINHOS_RETRAIN_ENABLED": "true",
    "MINHOS_RETRAIN_LOCAL_WORKER": "false",
    "MINHOS_RETRAIN_LEASE_TTL_S": str(LEASE_TTL_S),
    "MINHOS_RETRAIN_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
    "MINHOS_RETRAIN_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
    "MINHOS_RETRAIN_WORKER_POLL_S": "0.2",
    "MINHOS_SERVER_RELOAD_INTERVAL_S": str(RELOAD_S),
    "MINHOS_MONITORING_EVALUATE_INTERVAL_S": "0.5",
    # Tiny jobs (as tests/test_retraining.py), and no schedule unless a test sets one.
    "MINHOS_RETRAIN_LSTM_EPOCHS": "2",
    "MINHOS_RETRAIN_LSTM_HIDDEN": "8",
    "MINHOS_RETRAIN_LSTM_PATIENCE": "2",
    "MINHOS_RETRAIN_ENSEMBLE_TREES": "10",
    "MINHOS_RETRAIN_ENSEMBLE_BOOSTING_ITERATIONS": "10",
    "MINHOS_RETRAIN_HOLDOUT_BARS": "100",
    "MINHOS_RETRAIN_VALIDATION_BARS": "200",
    "MINHOS_RETRAIN_LSTM_EVERY_DAYS": "0",
    "MINHOS_RETRAIN_ENSEMBLE_EVERY_DAYS": "0",
    "MINHOS_RETRAIN_KELLY_EVERY_DAYS": "0",
    "MINHOS_RETRAIN_JOB_TIMEOUT_S": "120",
}


def wait_for(check: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> float:
    """Seconds until ``check()`` holds."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout, f"{what}: not within {timeout} s"
        time.sleep(step)
    return time.monotonic() - began


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with postgres_cluster() as found:
        yield found


@dataclass
class Deployment:
    url: str
    tmp: Path
    settings: dict[str, str]
    replicas: list[ServerProcess] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def replica_settings(self, index: int) -> dict[str, str]:
        return {
            **self.settings,
            "DATABASE_URL": self.url,
            "MINHOS_STORAGE_MODEL_REPOSITORY": str(self.tmp / f"cache-{index}"),
        }

    def start_replica(self, index: int) -> ServerProcess:
        replica = spawn(self.replica_settings(index), self.tmp / f"replica-{index}.log")
        self.replicas.append(replica)
        return replica

    def start_worker(self, **settings: str) -> subprocess.Popen[bytes]:
        env = server_env({**self.replica_settings(len(self.workers) + 100), **settings})
        log = (self.tmp / f"worker-{len(self.workers)}.log").open("ab")
        worker = subprocess.Popen(
            [sys.executable, "-m", "server.worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.workers.append(worker)
        return worker

    @property
    def targets(self) -> str:
        return ",".join(r.target for r in self.replicas)

    def versions(self, replica: ServerProcess) -> dict[str, str]:
        with MinhosClient(replica.target) as client:
            info = client.serving_info()
        names = {
            common_pb2.MODEL_KIND_LSTM: "lstm",
            common_pb2.MODEL_KIND_ENSEMBLE: "ensemble",
            common_pb2.MODEL_KIND_KELLY: "kelly",
        }
        return {names[m.kind]: m.version for m in info.deployed}

    def serves(self, replica: ServerProcess, kind: str, version: str) -> Callable[[], bool]:
        return lambda: self.versions(replica)[kind] == version

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
            for p in sorted(self.tmp.glob("*.log"))
        )


def fresh_database(cluster: Cluster) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(cluster.url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    admin.close()
    return cluster.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def deployment(
    cluster: Cluster, trained: Trained, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Deployment]:
    """A model set registered in a fresh database (its bytes there, no directory shared with the
    replicas), three replicas SERVING it; everything killed at the end."""
    url = fresh_database(cluster)
    register_in(url, trained, tmp_path / "publisher")
    marker = request.node.get_closest_marker("settings")
    extra: dict[str, str] = marker.args[0] if marker else {}
    found = Deployment(url, tmp_path, {**SETTINGS, **extra})
    try:
        for index in range(3):
            found.start_replica(index)
        for replica in found.replicas:
            replica.wait_serving(60)
        open_database(url)
        yield found
    finally:
        for process in [*(r.process for r in found.replicas), *found.workers]:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        close_database()


def predict_at(target: str, sp500: MarketData, when: dt.datetime) -> str:
    end = int(sp500.times.searchsorted(sp500.times.dtype.type(when), side="right"))
    with MinhosClient(target) as client:
        need = client.serving_info().bars_required
        return client.predict("SPX", window(sp500, end, need)).prediction_id


def lease_holder_pid() -> int | None:
    lease = queries.lease("duties")
    if lease is None or lease.expires_at < dt.datetime.now(dt.UTC).replace(tzinfo=None):
        return None
    return int(lease.holder.split(":")[1])


def replica_of(deployment: Deployment, pid: int) -> ServerProcess:
    return next(r for r in deployment.replicas if r.process.pid == pid)


@pytest.mark.settings({"MINHOS_RETRAIN_ENSEMBLE_EVERY_DAYS": "1"})
def test_a_killed_lease_holder_is_replaced_and_the_duties_go_on(
    deployment: Deployment, sp500: MarketData
) -> None:
    predict_at(deployment.replicas[0].target, sp500, MARKET_TIME)
    wait_for(lambda: lease_holder_pid() is not None, 10, "a lease holder")
    wait_for(lambda: MetricRow.select().count() > 0, 10, "a health evaluation")
    old = lease_holder_pid()
    assert old is not None
    holder = replica_of(deployment, old)
    holder.process.send_signal(signal.SIGKILL)
    holder.process.wait(10)
    killed_at = time.monotonic()
    killed_wall = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    wait_for(lambda: lease_holder_pid() not in (None, old), 15, "another lease holder")
    takeover = time.monotonic() - killed_at
    print(f"\nlease failover: {takeover:.2f} s (TTL {LEASE_TTL_S} s, renewal {RELOAD_S} s)")
    record(
        "scale-out: kill -9 the duties lease holder (3 replicas, PostgreSQL)",
        f"another replica holds the lease within TTL + one renewal ({LEASE_TTL_S:g} + {RELOAD_S:g} s); evaluations and schedules go on; no alert twice",
        f"taken over in {takeover:.2f} s",
    )
    assert takeover <= LEASE_TTL_S + RELOAD_S + 1.0  # one renewal, plus a slow VM's second
    # Health evaluation goes on in the new holder.
    wait_for(
        lambda: MetricRow.select().where(MetricRow.created_at > killed_wall).count() > 0,
        10,
        "an evaluation by the new holder",
    )
    # So do schedules: the market moves three days on, and one scheduled job is queued.
    survivor = next(r for r in deployment.replicas if r is not holder)
    predict_at(survivor.target, sp500, MARKET_TIME + dt.timedelta(days=4))
    scheduled = JobRow.select().where((JobRow.trigger == "schedule") & (JobRow.kind == "ensemble"))
    wait_for(lambda: scheduled.count() > 0, 10, "a scheduled job")
    time.sleep(2 * RELOAD_S)
    assert scheduled.count() == 1
    # No alert was raised twice: none repeats its kind, component and severity.
    keys = [(a.kind, a.component, a.severity) for a in AlertRow.select()]
    assert len(keys) == len(set(keys)), keys


def job_process_alive(job_id: str) -> bool:
    found = subprocess.run(["pgrep", "-f", f"export.retrain_worker {job_id}"], capture_output=True)
    return found.returncode == 0


def test_a_killed_worker_fails_its_job_and_a_new_worker_takes_the_next(
    deployment: Deployment,
) -> None:
    before = deployment.versions(deployment.replicas[0])
    worker = deployment.start_worker()
    with MinhosClient(deployment.replicas[2].target) as client:
        job = client.trigger_retrain("lstm", note="to be killed").job
    row = JobRow.select().where(JobRow.id == job.id)
    wait_for(lambda: row.get().state == "running", 30, "the worker's claim")
    # Mid-job: the job process has written progress beyond the claim.
    wait_for(lambda: row.get().log.count("\n") >= 3, 60, "job progress")
    assert job_process_alive(job.id)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    killed_at = time.monotonic()
    wait_for(lambda: row.get().state == "failed", 30, "the lost job failed", step=0.1)
    failed_in = time.monotonic() - killed_at
    print(f"\nworker loss: job failed {failed_in:.2f} s after kill -9 ({row.get().failure_reason})")
    record(
        "scale-out: kill -9 the worker mid-job",
        f"job failed with the reason within the heartbeat timeout ({HEARTBEAT_TIMEOUT_S:g} s); champion serves; a new worker takes the next job",
        f"failed {failed_in:.2f} s after the kill: {row.get().failure_reason}",
    )
    assert "lost: no heartbeat for" in row.get().failure_reason
    assert failed_in <= HEARTBEAT_TIMEOUT_S + LEASE_TTL_S + 2.0
    # The job process went with its worker, so it cannot deploy later.
    wait_for(lambda: not job_process_alive(job.id), 5, "the job process to exit")
    # The champion serves on, on every replica.
    for replica in deployment.replicas:
        assert deployment.versions(replica) == before
    # A new worker takes the next job (a quick one: the gate rejects it).
    deployment.start_worker(MINHOS_RETRAIN_MIN_LOG_LOSS_IMPROVEMENT="10")
    with MinhosClient(deployment.replicas[0].target) as client:
        nxt = client.trigger_retrain("ensemble", note="next").job
    done = JobRow.select().where(JobRow.id == nxt.id)
    wait_for(lambda: done.get().state in ("rejected", "failed"), 120, "the next job", step=0.2)
    assert done.get().state == "rejected", done.get().failure_reason + deployment.logs()
    assert done.get().holder != row.get().holder


@pytest.mark.settings(
    {
        "MINHOS_RETRAIN_MIN_LOG_LOSS_IMPROVEMENT": "-1",
        "MINHOS_RETRAIN_MIN_BRIER_IMPROVEMENT": "-1",
    }
)
def test_a_set_deployed_by_the_worker_and_a_rollback_reach_every_replica(
    deployment: Deployment,
) -> None:
    champion = deployment.versions(deployment.replicas[0])["lstm"]
    deployment.start_worker()
    with MinhosClient(deployment.replicas[2].target) as client:
        job = client.trigger_retrain("lstm", note="deploy").job
    row = JobRow.select().where(JobRow.id == job.id)
    wait_for(lambda: row.get().state in ("deployed", "rejected", "failed"), 120, "the job", 0.2)
    assert row.get().state == "deployed", row.get().failure_reason + deployment.logs()
    challenger = row.get().challenger_version
    deployed_at = time.monotonic()
    serves = deployment.serves
    for replica in deployment.replicas:
        wait_for(serves(replica, "lstm", challenger), 10, "the swap")
    reached = time.monotonic() - deployed_at
    print(f"\ndeploy reached all three replicas within {reached:.2f} s of the job's end")
    # Each replica fetched the bytes from the database into its own cache.
    blobs = ArtifactRow.select().where(ArtifactRow.version == challenger).count()
    assert blobs >= 1
    for index in range(3):
        cached = list((deployment.tmp / f"cache-{index}" / "lstm" / challenger).iterdir())
        assert cached, f"replica {index} has no cached copy"
    # A rollback through one replica reaches all three.
    with MinhosClient(deployment.replicas[1].target) as client:
        rolled = client.rollback("lstm", reason="test")
    assert rolled.deployed.version == champion
    began = time.monotonic()
    for replica in deployment.replicas:
        wait_for(serves(replica, "lstm", champion), 10, "the rollback")
    print(f"rollback reached all three replicas within {time.monotonic() - began:.2f} s")


def test_clients_balance_over_replicas_and_lose_no_predict_when_one_dies(
    deployment: Deployment, sp500: MarketData
) -> None:
    with MinhosClient(deployment.targets) as probe:
        need = probe.serving_info().bars_required
    end = int(sp500.times.searchsorted(sp500.times.dtype.type(MARKET_TIME), side="right"))
    bars = window(sp500, end, need)
    stop = threading.Event()
    served: list[float] = []
    failed: list[str] = []
    lock = threading.Lock()

    def client_loop() -> None:
        with MinhosClient(deployment.targets) as client:
            for _ in range(2000):  # bounded in count, and in time by ``stop``
                if stop.is_set():
                    return
                try:
                    client.predict("SPX", bars, timeout=5)
                    with lock:
                        served.append(time.monotonic())
                except grpc.RpcError as exc:
                    with lock:
                        failed.append(f"{exc.code().name}: {exc.details()}")

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    victim = deployment.replicas[0]
    victim.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    time.sleep(2.5)
    stop.set()
    for t in threads:
        t.join(30)
    after = sum(1 for t in served if t > killed_at)
    print(
        f"\nreplica loss under load: {len(served)} Predicts served ({after} after the kill), "
        f"{len(failed)} failed"
    )
    record(
        "scale-out: 8 clients round-robin over 3 replicas, one killed (-9) mid-load",
        "failed Predicts (goal 0, with retries); survivors serve the rest",
        f"{len(failed)} failed of {len(served) + len(failed)} ({after} served after the kill)",
    )
    assert after > 0  # the survivors served the rest
    assert not failed, failed[:5]


def test_triggers_and_alerts_on_several_replicas_at_once_happen_once(
    deployment: Deployment,
) -> None:
    for round_ in range(4):
        replies = trigger_at_once(deployment.replicas, f"round {round_}")
        assert len(replies) == 3 and len({j for j, _ in replies}) == 1, replies
        assert sorted(m for _, m in replies) == [False, True, True]
        JobRow.update(state="failed").where(JobRow.id == replies[0][0]).execute()
    # A set that no replica can load (its bytes in the database corrupted after registration):
    # every replica refuses it at the same poll, and one alert is stored.
    deploy_corrupt_copy(deployment, "lstm", deployment.versions(deployment.replicas[0])["lstm"])
    refused = AlertRow.select().where(AlertRow.kind == "model_load_failed")
    wait_for(lambda: refused.count() > 0, 10, "the refusal alert")
    wait_for(
        lambda: all("cannot load deployed models" in r.log_text() for r in deployment.replicas),
        10,
        "every replica's refusal",
    )
    time.sleep(4 * RELOAD_S)
    record(
        "scale-out: the same trigger on 3 replicas at once (4 rounds); a set all 3 refuse",
        "jobs queued; model_load_failed alerts stored",
        f"1 job a round ({4 * 3} triggers, {4 * 2} merged); {refused.count()} alert",
    )
    assert refused.count() == 1


def trigger_at_once(replicas: list[ServerProcess], note: str) -> list[tuple[str, bool]]:
    """A kelly trigger through each replica, released together: (job id, merged) each."""
    barrier = threading.Barrier(len(replicas))
    replies: list[tuple[str, bool]] = []

    def trigger(replica: ServerProcess) -> None:
        with MinhosClient(replica.target) as client:
            client.serving_info()  # connected before the barrier
            barrier.wait()
            reply = client.trigger_retrain("kelly", note=note)
            replies.append((reply.job.id, reply.merged))

    threads = [threading.Thread(target=trigger, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return replies


def deploy_corrupt_copy(deployment: Deployment, kind: str, version: str) -> str:
    repository = ModelRepository(deployment.tmp / "publisher")
    manifest, payload = repository.load_verified(kind, version)
    copy = repository.publish(
        kind, payload, file=manifest.file, feature_spec=manifest.feature_spec
    ).version
    ArtifactRow.update(data=b"not an onnx file").where(
        (ArtifactRow.kind == kind) & (ArtifactRow.version == copy)
    ).execute()
    repository.deploy(kind, copy)
    return copy
