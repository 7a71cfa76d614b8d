"""Retraining end to end on real parts: a private SQLite copy of the tiny trained repository, real
worker subprocesses (tiny settings), a real server hot-swapping under concurrent load."""

from __future__ import annotations

import dataclasses
import datetime as dt
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from clients.client import MinhosClient
from export import retrain_worker
from export.data import MarketData
from minhos.v1 import common_pb2
from server.core.config import Config
from server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from server.core.records import Job
from server.monitoring.alerts import AlertCandidate
from server.retraining.coordinator import Retraining
from server.retraining.worker import JobRunner
from server.serving.models import load_model_set
from server.storage import jobs
from server.storage.registry import ModelRepository
from server.storage.schema import (
    ModelVersionRow,
    OutcomeRow,
    PredictionRow,
    open_database,
    utcnow,
)
from tests.conftest import Trained
from tests.server_harness import running, window
from tests.tiny_models import TINY

#: The job's market time: two months after the tiny models' training data ends.
MARKET_TIME = dt.datetime(2007, 3, 1)
FINAL = ("deployed", "rejected", "failed", "rolled_back")


def tiny_config(trained: Trained, **retrain: Any) -> Config:
    config = trained.config()
    settings: dict[str, Any] = {
        "lstm_epochs": 2,
        "lstm_hidden": 8,
        "lstm_patience": 2,
        "ensemble_trees": 10,
        "ensemble_boosting_iterations": 10,
        "holdout_bars": 100,
        "validation_bars": 200,
        "lstm_every_days": 0.0,
        "ensemble_every_days": 0.0,
        "kelly_every_days": 0.0,
        "job_timeout_s": 120.0,
        **retrain,
    }
    return dataclasses.replace(config, retrain=dataclasses.replace(config.retrain, **settings))


@dataclasses.dataclass
class Rig:
    """A replica's retraining duties and a job runner on one database, stepped by the test."""

    retraining: Retraining
    runner: JobRunner

    def tick(self, market_now: dt.datetime | None, degraded: dict[str, bool] | None = None) -> None:
        self.retraining.tick(market_now, degraded)
        self.runner.step()


@pytest.fixture
def coordinator(trained: Trained) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(
        config: Config,
        *,
        job_argv: Callable[[str], list[str]] | None = None,
        on_alert: Callable[[AlertCandidate], None] | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> Rig:
        open_database(config.storage.database_url)
        repository = ModelRepository(config.storage.model_repository)
        made.append(
            Rig(
                Retraining(config, repository, clock=clock, on_alert=on_alert),
                JobRunner(config, job_argv=job_argv, clock=clock, on_alert=on_alert),
            )
        )
        return made[-1]

    yield make
    for rig in made:
        rig.runner.close()


def run_to_end(rig: Rig, job_id: str, timeout: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rig.tick(MARKET_TIME)
        row = rig.retraining.job(job_id)
        if row.state in FINAL and rig.runner.running_job is None:
            return row
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {rig.retraining.job(job_id).log}")


def copy_version(repository: ModelRepository, kind: str, version: str, deploy: bool) -> str:
    """Publishes the same bytes as a new version (a distinct registry entry)."""
    manifest, payload = repository.load_verified(kind, version)
    return repository.publish(
        kind,
        payload,
        file=manifest.file,
        feature_spec=manifest.feature_spec,
        metrics=manifest.metrics,
        deploy=deploy,
    ).version


def test_triggers_merge_into_the_active_job(
    trained: Trained, coordinator: Callable[..., Rig]
) -> None:
    rig = coordinator(tiny_config(trained))
    retraining = rig.retraining
    first, merged = retraining.trigger("lstm", "manual", "first", MARKET_TIME)
    assert not merged and first.state == "queued" and first.market_time == MARKET_TIME
    again, merged = retraining.trigger("lstm", "degradation", "second")
    assert merged and again.id == first.id
    assert again.note == "first\nmerged degradation trigger: second"
    other, merged = retraining.trigger("ensemble")
    assert not merged and other.id != first.id
    assert [j.id for j in retraining.jobs(kind="lstm")] == [first.id]
    assert {j.id for j in retraining.jobs(state="queued")} == {first.id, other.id}
    with pytest.raises(InvalidArgument) as bad:
        retraining.trigger("forest")
    assert bad.value.field == "kind"
    with pytest.raises(NotFound) as missing:
        retraining.job("nope")
    assert missing.value.field == "job_id"
    # A finished job no longer absorbs triggers.
    jobs.transition(first.id, "failed", utcnow(), reason="test")
    assert not retraining.trigger("lstm")[1]


def test_schedules_run_on_market_time(trained: Trained, coordinator: Callable[..., Rig]) -> None:
    config = tiny_config(trained, lstm_every_days=7.0, ensemble_every_days=3.0)
    # A worker that cannot start fails its job at once: this test is about queueing only.
    rig = coordinator(config, job_argv=lambda job_id: ["/nonexistent/minhos-worker"])
    retraining = rig.retraining
    t0 = dt.datetime(2007, 3, 1)
    queued: dict[int, list[str]] = {}
    for day in (0, 2, 3, 5, 6, 7, 8):
        before = {j.id for j in retraining.jobs()}
        rig.tick(t0 + dt.timedelta(days=day))
        queued[day] = sorted(j.kind for j in retraining.jobs() if j.id not in before)
    assert queued == {
        0: [],
        2: [],
        3: ["ensemble"],
        5: [],
        6: ["ensemble"],
        7: ["lstm"],
        8: [],
    }
    rows = retraining.jobs()
    assert all(j.trigger == "schedule" and j.state == "failed" for j in rows)
    assert all("cannot start the job" in j.failure_reason for j in rows)
    assert {j.market_time for j in rows if j.kind == "ensemble"} == {
        t0 + dt.timedelta(days=3),
        t0 + dt.timedelta(days=6),
    }
    # A degraded kind queues a job, then not again within the cooldown.
    rig.tick(t0 + dt.timedelta(days=9), {"kelly": True, "fusion": True})
    rig.tick(t0 + dt.timedelta(days=10), {"kelly": True})
    degradation = [j for j in retraining.jobs() if j.trigger == "degradation"]
    assert [j.kind for j in degradation] == ["kelly"]


def test_rejected_challenger_keeps_the_champion(
    trained: Trained, coordinator: Callable[..., Rig]
) -> None:
    config = tiny_config(trained, min_log_loss_improvement=10.0)
    rig = coordinator(config)
    retraining = rig.retraining
    champion = retraining.repository.deployed()
    job, _ = retraining.trigger("ensemble", "manual", market_time=MARKET_TIME)
    row = run_to_end(rig, job.id)
    assert row.state == "rejected", row.failure_reason + "\n".join(row.log)
    assert "does not beat the champion on log-loss" in row.failure_reason
    assert row.champion_version == champion["ensemble"] and row.challenger_version
    assert retraining.repository.deployed() == champion
    stage = ModelVersionRow.get(ModelVersionRow.version == row.challenger_version).stage
    assert stage == "rejected"
    gate = {g.name: g for g in row.gate_metrics}
    assert {"log_loss", "brier", "accuracy", "n"} <= set(gate)
    assert gate["n"].challenger == config.retrain.holdout_bars
    assert 0.5 < gate["log_loss"].champion < 1.0 and 0.5 < gate["log_loss"].challenger < 1.0
    assert row.started_at is not None and row.finished_at is not None
    log = "\n".join(row.log)
    assert "data window:" in log and "2007-03-01" in log  # no bar after the market time
    manifest = retraining.repository.read_manifest("ensemble", row.challenger_version)
    assert manifest.metrics["retrain_seconds"] > 0
    assert manifest.info["held_out"][1] <= "2007-03-01"


def _holdout(sp500: MarketData, kind: str, bars: int = 100) -> retrain_worker.Holdout:
    from export.train import Dataset

    end = int(sp500.times.searchsorted(np.datetime64(MARKET_TIME), side="right"))
    ds = Dataset.build(sp500.slice(0, end), TINY.window)
    index = np.arange(end - 1 - bars, end - 1, dtype=np.intp)
    return retrain_worker.Holdout(kind, ds.y[index], x=ds.rows(index))


def test_corrupt_or_non_parity_challenger_is_refused(
    trained: Trained, sp500: MarketData, coordinator: Callable[..., Rig]
) -> None:
    config = tiny_config(trained, min_log_loss_improvement=-1.0, min_brier_improvement=-1.0)
    rig = coordinator(config)
    retraining = rig.retraining
    repository = retraining.repository
    champion = repository.deployed()["ensemble"]
    holdout = _holdout(sp500, "ensemble")
    expected = retrain_worker.version_probabilities(
        repository, "ensemble", champion, holdout, config
    )
    for tamper, reason in ((True, "SHA-256 check failed"), (False, "parity check failed")):
        job, _ = retraining.trigger("ensemble", market_time=MARKET_TIME)
        jobs.transition(job.id, "running", utcnow())
        jobs.transition(job.id, "validating", utcnow())
        challenger = copy_version(repository, "ensemble", champion, deploy=False)
        if tamper:
            path = repository.directory("ensemble", challenger) / "model.onnx"
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
        shifted = expected if tamper else expected + 1e-3
        state = retrain_worker.conclude(
            job.id, repository, "ensemble", champion, challenger, holdout, shifted, config
        )
        row = retraining.job(job.id)
        assert state == "rejected" and row.state == "rejected"
        assert row.failure_reason.startswith(reason), row.failure_reason
        assert repository.deployed()["ensemble"] == champion
        assert ModelVersionRow.get(ModelVersionRow.version == challenger).stage == "rejected"
    # The same untampered bytes with the margins waived pass and deploy; the champion is kept.
    job, _ = retraining.trigger("ensemble", market_time=MARKET_TIME)
    jobs.transition(job.id, "running", utcnow())
    jobs.transition(job.id, "validating", utcnow())
    challenger = copy_version(repository, "ensemble", champion, deploy=False)
    assert (
        retrain_worker.conclude(
            job.id, repository, "ensemble", champion, challenger, holdout, expected, config
        )
        == "deployed"
    )
    assert repository.deployed()["ensemble"] == challenger
    assert ModelVersionRow.get(ModelVersionRow.version == champion).stage == "backup"


def test_crashed_and_hung_jobs_fail_and_serving_is_unaffected(
    trained: Trained, coordinator: Callable[..., Rig]
) -> None:
    crash = [sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"]
    config = tiny_config(trained, job_timeout_s=0.5)
    alerts: list[AlertCandidate] = []
    rig = coordinator(config, job_argv=lambda job_id: crash, on_alert=alerts.append)
    retraining = rig.retraining
    before = retraining.repository.deployed()
    job, _ = retraining.trigger("lstm", market_time=MARKET_TIME)
    row = run_to_end(rig, job.id, timeout=10)
    assert row.state == "failed" and row.failure_reason == "worker exited with code 3: boom"
    assert alerts[-1].kind == "retrain" and alerts[-1].severity == "error"
    rig.runner.job_argv = lambda job_id: [sys.executable, "-c", "import time; time.sleep(60)"]
    job, _ = retraining.trigger("lstm", market_time=MARKET_TIME)
    rig.tick(MARKET_TIME)
    assert retraining.job(job.id).state == "running" and rig.runner.running_job == job.id
    began = time.monotonic()
    row = run_to_end(rig, job.id, timeout=10)
    assert time.monotonic() - began < 5
    assert row.state == "failed" and row.failure_reason.startswith("timed out after 0.5 s")
    assert retraining.repository.deployed() == before
    models = load_model_set(retraining.repository, before, config)  # still loads and scores
    assert models.versions == before


def test_a_job_finishing_up_after_its_verdict_is_reaped_not_killed(
    trained: Trained, coordinator: Callable[..., Rig]
) -> None:
    config = tiny_config(trained, heartbeat_interval_s=0.05)
    # A job process that reaches its verdict, then takes a while to finish (as pruning does):
    # the runner's heartbeats now find the job concluded and must let the process end.
    script = (
        "import sys, time\n"
        "from server.storage import jobs\n"
        "from server.storage.schema import open_database, utcnow\n"
        f"open_database({config.storage.database_url!r})\n"
        "jobs.transition(sys.argv[1], 'validating', utcnow())\n"
        "jobs.transition(sys.argv[1], 'rejected', utcnow(), reason='gate said no')\n"
        "time.sleep(1.0)\n"
    )
    alerts: list[AlertCandidate] = []
    rig = coordinator(
        config,
        job_argv=lambda job_id: [sys.executable, "-c", script, job_id],
        on_alert=alerts.append,
    )
    job, _ = rig.retraining.trigger("kelly", market_time=MARKET_TIME)
    rig.tick(MARKET_TIME)
    running = rig.runner._current
    assert running is not None
    row = run_to_end(rig, job.id, timeout=20)
    assert row.state == "rejected" and running.process.returncode == 0
    assert [(a.severity, "rejected" in a.message) for a in alerts] == [("info", True)]


def test_a_worker_killed_mid_job_fails_it_and_the_next_job_runs(
    trained: Trained, coordinator: Callable[..., Rig]
) -> None:
    config = tiny_config(trained, min_log_loss_improvement=10.0)  # the next job: quick, rejected
    rig = coordinator(config)
    retraining = rig.retraining
    before = retraining.repository.deployed()
    killed, _ = retraining.trigger("lstm", market_time=MARKET_TIME)
    queued, _ = retraining.trigger("ensemble", market_time=MARKET_TIME)
    rig.tick(MARKET_TIME)
    worker = rig.runner._current
    assert worker is not None and worker.job_id == killed.id
    deadline = time.monotonic() + 30
    while not retraining.job(killed.id).log:  # mid-job: the worker has reported progress
        assert worker.process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    worker.process.send_signal(signal.SIGKILL)
    row = run_to_end(rig, killed.id, timeout=10)
    assert row.state == "failed" and row.failure_reason.startswith("worker exited with code -9")
    assert retraining.repository.deployed() == before
    assert load_model_set(retraining.repository, before, config).versions == before
    assert run_to_end(rig, queued.id).state == "rejected"


def test_rollback_restores_the_backup_and_is_recorded(
    trained: Trained, coordinator: Callable[..., Rig]
) -> None:
    alerts: list[AlertCandidate] = []
    rig = coordinator(tiny_config(trained), on_alert=alerts.append)
    retraining = rig.retraining
    repository = retraining.repository
    original = repository.deployed()["ensemble"]
    with pytest.raises(FailedPrecondition):
        retraining.rollback("ensemble")  # no backup yet
    newer = copy_version(repository, "ensemble", original, deploy=True)
    with pytest.raises(NotFound) as missing:
        retraining.rollback("ensemble", "no-such-version")
    assert missing.value.field == "to_version"
    with pytest.raises(InvalidArgument):
        retraining.rollback("forest")
    deployed, replaced = retraining.rollback("ensemble", reason="bad fills")
    assert (deployed.version, deployed.stage) == (original, "deployed")
    assert (replaced.version, replaced.stage) == (newer, "backup")
    assert repository.deployed()["ensemble"] == original
    record = retraining.jobs(state="rolled_back")[0]
    assert record.kind == "ensemble" and record.failure_reason == "bad fills"
    assert (record.champion_version, record.challenger_version) == (newer, original)
    assert alerts[-1].kind == "rollback" and newer in alerts[-1].message
    # Back again, by name.
    deployed, replaced = retraining.rollback("ensemble", newer, "undo")
    assert (deployed.version, replaced.version) == (newer, original)


def _resolved(version: dict[str, str], hits: list[bool], start: dt.datetime) -> None:
    for i, hit in enumerate(hits):
        pid = uuid.uuid4().hex
        p = 0.6
        PredictionRow.create(
            id=pid,
            symbol="SPX",
            bar_time=start + dt.timedelta(days=i),
            direction=1,
            probability_up=p,
            confidence=p,
            lstm_probability=p,
            ensemble_probability=p,
            agreement=1.0,
            kelly_fraction=0.1,
            lstm_version=version["lstm"],
            ensemble_version=version["ensemble"],
            kelly_version=version["kelly"],
            latency_ms=1.0,
        )
        ret = 0.01 if hit else -0.01
        OutcomeRow.create(
            prediction=pid,
            realized_return=ret,
            hit=hit,
            position_return=0.1 * ret,
            resolved_at=start + dt.timedelta(days=i + 1),
        )


def test_probation_rolls_back_a_degrading_deployment(
    trained: Trained, coordinator: Callable[..., Rig]
) -> None:
    alerts: list[AlertCandidate] = []
    rig = coordinator(tiny_config(trained, probation_outcomes=40), on_alert=alerts.append)
    retraining = rig.retraining
    repository = retraining.repository
    original = repository.deployed()
    passes, _ = retraining.trigger("lstm", market_time=MARKET_TIME)
    good = copy_version(repository, "lstm", original["lstm"], deploy=False)
    jobs.transition(passes.id, "running", utcnow(), fields={"champion_version": original["lstm"]})
    jobs.transition(passes.id, "validating", utcnow(), fields={"challenger_version": good})
    jobs.transition(passes.id, "deployed", utcnow())
    repository.deploy("lstm", good)
    # 40 outcomes, 21 right: in line with the champion's validation accuracy -> probation passed.
    _resolved(repository.deployed(), [i % 2 == 0 for i in range(41)], MARKET_TIME)
    rig.tick(MARKET_TIME)
    assert repository.deployed()["lstm"] == good
    assert "probation passed" in "\n".join(retraining.job(passes.id).log)
    # The next deployment gets every direction wrong: rolled back before 40 outcomes.
    fails, _ = retraining.trigger("lstm", market_time=MARKET_TIME)
    bad = copy_version(repository, "lstm", original["lstm"], deploy=False)
    jobs.transition(fails.id, "running", utcnow(), fields={"champion_version": good})
    jobs.transition(fails.id, "validating", utcnow(), fields={"challenger_version": bad})
    jobs.transition(fails.id, "deployed", utcnow())
    repository.deploy("lstm", bad)
    _resolved(repository.deployed(), [False] * 10, MARKET_TIME + dt.timedelta(days=60))
    rig.tick(MARKET_TIME)
    assert repository.deployed()["lstm"] == bad  # 10 misses are not yet evidence
    _resolved(repository.deployed(), [False] * 30, MARKET_TIME + dt.timedelta(days=70))
    rig.tick(MARKET_TIME)
    row = retraining.job(fails.id)
    assert row.state == "rolled_back" and row.failure_reason.startswith("probation failed")
    assert repository.deployed()["lstm"] == good
    assert ModelVersionRow.get(ModelVersionRow.version == bad).stage == "rejected"
    assert alerts[-1].kind == "rollback"


def test_expired_backups_are_pruned(trained: Trained, coordinator: Callable[..., Rig]) -> None:
    config = tiny_config(trained)
    now = coordinator(config)
    repository = now.retraining.repository
    original = repository.deployed()["kelly"]
    copy_version(repository, "kelly", original, deploy=True)
    now.tick(None)
    assert ModelVersionRow.get(ModelVersionRow.version == original).stage == "backup"
    later = coordinator(config, clock=lambda: utcnow() + dt.timedelta(days=31))
    later.tick(None)
    assert ModelVersionRow.get(ModelVersionRow.version == original).stage == "retired"
    assert not repository.directory("kelly", original).exists()
    with pytest.raises(FailedPrecondition):
        later.retraining.rollback("kelly", original)


def test_retrain_deploys_and_hot_swaps_under_load_with_no_failed_request(
    trained: Trained, sp500: MarketData, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(trained, min_log_loss_improvement=-1.0, min_brier_improvement=-1.0)
    config = dataclasses.replace(
        config, monitoring=dataclasses.replace(config.monitoring, evaluate_interval_s=0.2)
    )
    with running(config) as (srv, client):
        need = client.serving_info().bars_required
        end = int(sp500.times.searchsorted(np.datetime64(MARKET_TIME), side="right"))
        bars = window(sp500, end, need)
        client.predict("SPX", bars)  # sets the server's market time
        champion = srv.holder.current.versions["lstm"]
        samples: list[tuple[float, float]] = []  # (monotonic time, latency s)
        errors: list[BaseException] = []
        stop = threading.Event()

        def hammer() -> None:
            with MinhosClient(f"127.0.0.1:{srv.port}", max_attempts=1) as own:
                while not stop.is_set():
                    began = time.perf_counter()
                    try:
                        own.predict("SPX", bars)
                        samples.append((time.monotonic(), time.perf_counter() - began))
                    except grpc.RpcError as exc:  # pragma: no cover - the assertion reports it
                        errors.append(exc)
                    # Steady load, not saturation: the 2 cores must leave the worker some time.
                    time.sleep(0.005)

        # Daemons: a failure before stop.set() must not keep the test session alive.
        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        trigger_at = time.monotonic()
        reply = client.trigger_retrain("lstm", note="test")
        assert not reply.merged
        assert client.trigger_retrain("lstm").merged
        deadline = time.monotonic() + 90
        swapped_at = None
        while time.monotonic() < deadline:
            if swapped_at is None and srv.holder.current.versions["lstm"] != champion:
                swapped_at = time.monotonic()
            job = client.job(reply.job.id)
            if swapped_at is not None and job.finished_at.seconds:
                break
            time.sleep(0.05)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        assert not errors
        assert swapped_at is not None, (srv.holder.last_error, srv.repository.deployed(), job.log)
        assert job.challenger_version == srv.holder.current.versions["lstm"]
        assert job.champion_version == champion
        assert [g.name for g in job.gate_metrics][:2] == ["log_loss", "brier"]
        versions = {v.version: v for v in client.model_versions("lstm")}
        assert versions[champion].stage == common_pb2.MODEL_STAGE_BACKUP
        # Rollback through the RPC: the champion serves again.
        rolled = client.rollback("lstm", reason="test rollback")
        assert rolled.deployed.version == champion
        deadline = time.monotonic() + 5
        while srv.holder.current.versions["lstm"] != champion and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.holder.current.versions["lstm"] == champion

    def p50(lo: float, hi: float) -> float:
        values = [lat for at, lat in samples if lo <= at < hi]
        return float(np.median(values)) * 1e3 if values else float("nan")

    with capsys.disabled():
        print(
            f"\nPredict p50: before trigger {p50(0, trigger_at):.2f} ms, during training "
            f"{p50(trigger_at, swapped_at - 0.5):.2f} ms, swap +-0.5 s "
            f"{p50(swapped_at - 0.5, swapped_at + 0.5):.2f} ms, after "
            f"{p50(swapped_at + 0.5, float('inf')):.2f} ms; requests {len(samples)}; "
            f"job {job.started_at.seconds and job.finished_at.seconds - job.started_at.seconds} s"
        )
