"""The retraining coordinator, living in the server process: triggers (manual, schedule,
degradation), one worker process at a time, crash and timeout handling, probation of newly deployed
versions, rollback, and pruning of expired backups.

Training itself never runs here: each job is a ``python -m export.retrain_worker JOB_ID`` child
process (torch and scikit-learn stay out of the serving process), which writes its progress to the
job row and deploys through the registry; the server's poller swaps the sessions by itself.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO

from server.core import scoring
from server.core.config import Config, as_env
from server.core.errors import FailedPrecondition, NotFound
from server.core.jobs import ACTIVE_STATES
from server.core.manifest import COMPONENT_OF_KIND, KINDS, REFERENCE_METRIC, check_kind
from server.core.records import Job, ModelVersion, Severity
from server.monitoring.alerts import AlertCandidate
from server.monitoring.degradation import CusumParams
from server.retraining.rules import (
    degradation_due,
    probation_verdict,
    schedule_due,
)
from server.storage import jobs, queries
from server.storage.registry import ModelRepository, RegistryError
from server.storage.schema import utcnow, write_transaction

log = logging.getLogger("minhos.retraining")


def _job(job_id: str) -> Job:
    found = queries.job(job_id)
    if found is None:
        raise NotFound(f"no job {job_id!r}", field="job_id")
    return found


def default_worker_argv(job_id: str) -> list[str]:
    return [sys.executable, "-m", "export.retrain_worker", job_id]


@dataclass
class _Worker:
    job_id: str
    process: subprocess.Popen[bytes]
    started: float  # monotonic
    stderr: IO[bytes]

    def stderr_tail(self, lines: int = 3) -> str:
        try:
            self.stderr.seek(0)
            text = self.stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        finally:
            self.stderr.close()
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


class Retraining:
    """Coordinates retraining jobs for one server (the database must be open)."""

    def __init__(
        self,
        config: Config,
        repository: ModelRepository,
        *,
        worker_argv: Callable[[str], list[str]] | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_alert: Callable[[AlertCandidate], None] | None = None,
        coordinate: bool = True,
    ) -> None:
        """``coordinate`` False: this process answers triggers (queued in the database) and
        rollbacks (guarded there too) but runs no workers, schedules or probation: another serving
        process of the same group coordinates."""
        self.coordinate = coordinate
        self.config = config
        self.repository = repository
        self.worker_argv = worker_argv or default_worker_argv
        self.clock = clock
        self.on_alert = on_alert
        self._lock = threading.RLock()
        self._worker: _Worker | None = None
        #: Where each (kind, market clock?) schedule counts from when the kind has no job yet.
        self._anchors: dict[tuple[str, bool], datetime] = {}
        self._probation_done: set[str] = set()
        self._last_prune: float | None = None
        self._market_now: datetime | None = None
        if coordinate:
            self._fail_orphans()

    # -- RPC-facing ------------------------------------------------------------------------------

    def trigger(
        self,
        kind: str,
        reason: str = "manual",
        note: str = "",
        market_time: datetime | None = None,
    ) -> tuple[Job, bool]:
        """Queues a job for ``kind``, or returns its queued/running job (merged=True)."""
        with self._lock:
            job, merged = jobs.enqueue(kind, reason, note, market_time, self.clock())
        if not merged:
            log.info("retrain queued", extra={"kind": kind, "job": job.id, "trigger": reason})
        return job, merged

    def job(self, job_id: str) -> Job:
        return _job(job_id)

    def jobs(
        self, kind: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[Job]:
        return queries.jobs(kind, state, limit)

    def rollback(
        self, kind: str, to_version: str = "", reason: str = ""
    ) -> tuple[ModelVersion, ModelVersion]:
        """Deploys ``to_version`` (default: the newest backup) in place of the deployed version,
        which becomes a backup. Recorded as a rolled-back job and a "rollback" alert."""
        return self._rollback(kind, to_version, reason or "manual rollback", "manual", "backup")

    def tick(self, market_now: datetime | None, degraded: Mapping[str, bool] | None = None) -> None:
        """Periodic work (the server's poller): reap/kill the worker, queue scheduled and
        degradation jobs, start the next job, judge probations, prune backups."""
        if not self.coordinate:
            return
        with self._lock:
            if market_now is not None:
                self._market_now = market_now
            steps: list[tuple[str, Callable[[], None]]] = [
                ("reap", self._reap),
                ("schedule", lambda: self._schedule(market_now)),
                ("degradation", lambda: self._degradation(market_now, degraded or {})),
                ("start", self._start_next),
                ("probation", self._probation),
                ("prune", self._prune),
            ]
            for name, step in steps:
                try:
                    step()
                except Exception:  # one failing step must not stop the others
                    log.exception("retraining %s step failed", name)

    def close(self) -> None:
        """Kills a running worker and marks its job failed."""
        with self._lock:
            worker, self._worker = self._worker, None
            if worker is None:
                return
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
                # An operator stopping the server is not a failure of the job's code: info.
                self._fail(worker, "server shutting down", severity="info")
            else:
                self._finish(worker)

    @property
    def running_job(self) -> str | None:
        worker = self._worker
        return worker.job_id if worker is not None else None

    # -- workers ---------------------------------------------------------------------------------

    def _fail_orphans(self) -> None:
        """Jobs left running by a previous server process have no worker any more."""
        for row in queries.jobs_in_states(("running", "validating")):
            jobs.transition(row.id, "failed", self.clock(), reason="server restarted while it ran")

    def _start_next(self) -> None:
        if self._worker is not None:
            return
        job = queries.next_queued_job()
        if job is None:
            return
        now = self.clock()
        champion = self.repository.deployed().get(job.kind, "")
        if not jobs.transition(
            job.id,
            "running",
            now,
            message="starting worker",
            fields={"champion_version": champion},
        ):
            return
        env = {**os.environ, **as_env(self.config)}
        threads = str(max(self.config.retrain.worker_threads, 1))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1")
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed when the worker is reaped
        try:
            process = subprocess.Popen(
                self.worker_argv(job.id),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        except OSError as exc:
            stderr.close()
            jobs.transition(job.id, "failed", now, reason=f"cannot start the worker: {exc}")
            self._alert_final(_job(job.id))
            return
        self._worker = _Worker(job.id, process, time.monotonic(), stderr)
        log.info("retrain worker started", extra={"job": job.id, "pid": process.pid})

    def _reap(self) -> None:
        worker = self._worker
        if worker is None:
            return
        if worker.process.poll() is None:
            timeout = self.config.retrain.job_timeout_s
            if time.monotonic() - worker.started > timeout:
                worker.process.kill()
                worker.process.wait()
                self._worker = None
                self._fail(worker, f"timed out after {timeout:g} s; worker killed")
            return
        self._worker = None
        self._finish(worker)

    def _finish(self, worker: _Worker) -> None:
        code = worker.process.returncode
        tail = worker.stderr_tail()
        row = _job(worker.job_id)
        if row.state in ACTIVE_STATES:
            reason = (
                f"worker exited with code {code}"
                if code
                else "worker exited without finishing the job"
            )
            jobs.transition(
                row.id, "failed", self.clock(), reason=reason + (f": {tail}" if tail else "")
            )
            row = _job(worker.job_id)
        self._alert_final(row)

    def _fail(self, worker: _Worker, reason: str, severity: Severity | None = None) -> None:
        worker.stderr_tail()
        jobs.transition(worker.job_id, "failed", self.clock(), reason=reason)
        self._alert_final(_job(worker.job_id), severity)

    def _alert_final(self, row: Job, severity: Severity | None = None) -> None:
        # A rejected challenger is the gate working (the champion serves on): info. A job that
        # crashed or hung is an error someone should read.
        if severity is None:
            severity = "info" if row.state in ("deployed", "rejected") else "error"
        detail = row.failure_reason or row.challenger_version
        self._alert(
            AlertCandidate(
                kind="retrain",
                severity=severity,
                component=COMPONENT_OF_KIND.get(row.kind, row.kind),
                message=f"{row.kind} retrain job {row.id[:8]} {row.state}: {detail}"[:500],
                value=0.0,
                threshold=0.0,
            )
        )

    def _alert(self, candidate: AlertCandidate) -> None:
        if self.on_alert is None:
            return
        try:
            self.on_alert(candidate)
        except Exception:
            log.exception("alert callback failed")

    # -- triggers --------------------------------------------------------------------------------

    def _reference_time(self, market_now: datetime | None) -> tuple[datetime, bool]:
        return (market_now, True) if market_now is not None else (self.clock(), False)

    def _job_time(self, row: Job | None, market: bool, now: datetime) -> datetime | None:
        if row is None:
            return None
        at: datetime | None = row.market_time if market else row.queued_at
        # A replay restarted from an earlier date: older jobs are in its future.
        return at if at is not None and at <= now else None

    def _schedule(self, market_now: datetime | None) -> None:
        now, market = self._reference_time(market_now)
        for kind in KINDS:
            every = float(getattr(self.config.retrain, f"{kind}_every_days"))
            if every <= 0:
                continue
            last = self._job_time(queries.latest_job(kind, market=market), market, now)
            if last is None:
                anchor = self._anchors.get((kind, market))
                if anchor is None or anchor > now:
                    self._anchors[(kind, market)] = now
                    continue
                last = anchor
            if schedule_due(now, last, every):
                self.trigger(kind, "schedule", f"every {every:g} days", market_now)

    def _degradation(self, market_now: datetime | None, degraded: Mapping[str, bool]) -> None:
        now, market = self._reference_time(market_now)
        for kind, flag in degraded.items():
            if kind not in KINDS or not flag:
                continue
            last = self._job_time(
                queries.latest_job(kind, "degradation", market=market), market, now
            )
            if degradation_due(True, now, last, self.config.retrain.degradation_cooldown_days):
                self.trigger(kind, "degradation", "health monitor: degraded", market_now)

    # -- probation and rollback ------------------------------------------------------------------

    def _hits(self, kind: str, version: str, limit: int) -> list[float]:
        """Hits of the first ``limit`` resolved predictions made with the version, by the one
        rule, on the component the kind answers for (the Kelly component: the fused call)."""
        rows = queries.version_outcomes(kind, version, limit)
        p = {"lstm": rows.lstm_p, "ensemble": rows.ensemble_p}.get(kind, rows.p_up)
        hits = scoring.hits(scoring.predicts_up(p), rows.realized_return)
        return [float(h) for h in hits]

    def _reference(self, kind: str, version: str) -> float:
        try:
            found = queries.model_version(kind, version)
        except ValueError:  # a malformed manifest
            return 0.5
        if found is None:
            return 0.5
        return float(found.manifest.metrics.get(REFERENCE_METRIC[kind], 0.5))

    def _probation(self) -> None:
        cfg = self.config.retrain
        if cfg.probation_outcomes <= 0:
            return
        deployed = self.repository.deployed()
        for kind, version in deployed.items():
            job = queries.job_that_deployed(kind, version)
            if job is None or job.id in self._probation_done:
                continue
            reference = self._reference(kind, job.champion_version or version)
            mon = self.config.monitoring
            verdict = probation_verdict(
                self._hits(kind, version, cfg.probation_outcomes),
                reference,
                cfg.probation_outcomes,
                cfg.probation_z,
                CusumParams.for_model(reference, mon.cusum_drop, mon.cusum_arl0),
            )
            if verdict.state == "passed":
                self._probation_done.add(job.id)
                jobs.append_log(job.id, f"probation passed: {verdict.reason}", self.clock())
            elif verdict.state == "failed":
                self._probation_done.add(job.id)
                try:
                    self._rollback(
                        kind, "", f"probation failed: {verdict.reason}", "degradation", "rejected"
                    )
                except (FailedPrecondition, NotFound) as exc:
                    jobs.append_log(job.id, f"probation failed, no rollback: {exc}", self.clock())

    def _rollback_target(self, kind: str, to_version: str) -> tuple[ModelVersion, ModelVersion]:
        """(deployed now, the version to deploy instead), or why there is none."""
        deployed = queries.deployed_versions().get(kind)
        current = queries.model_version(kind, deployed) if deployed else None
        if current is None:
            raise FailedPrecondition(f"no deployed {kind} version to roll back", field="kind")
        if not to_version:
            backup = queries.newest_backup(kind)
            if backup is None:
                raise FailedPrecondition(f"no {kind} backup to roll back to", field="to_version")
            return current, backup
        target = queries.model_version(kind, to_version)
        if target is None:
            raise NotFound(f"no {kind} version {to_version!r}", field="to_version")
        if target.version == current.version:
            raise FailedPrecondition(f"{to_version} is deployed already", field="to_version")
        if target.stage == "retired":
            raise FailedPrecondition(
                f"{to_version} was pruned (retired); its files are gone", field="to_version"
            )
        return current, target

    def _rollback(
        self, kind: str, to_version: str, reason: str, trigger: str, replaced_stage: str
    ) -> tuple[ModelVersion, ModelVersion]:
        check_kind(kind)
        with self._lock:
            current, target = self._rollback_target(kind, to_version)
            # Hash the files before taking the database's write lock: the batched writer and
            # every replica wait on that lock.
            try:
                self.repository.load_verified(kind, target.version)
            except (RegistryError, OSError) as exc:
                raise FailedPrecondition(
                    f"{target.version} cannot be loaded: {exc}", field="to_version"
                ) from None
            with write_transaction():
                if queries.deployed_versions().get(kind) != current.version:
                    raise FailedPrecondition(
                        f"the deployed {kind} version changed during the rollback; try again",
                        field="kind",
                    )
                self.repository.deploy(kind, target.version)
                if replaced_stage != "backup":
                    self.repository.set_stage(kind, current.version, replaced_stage)
                job = jobs.record_rollback(
                    kind,
                    target.version,
                    current.version,
                    reason,
                    trigger,
                    self.clock(),
                    self._market_now,
                )
        log.warning(
            "rolled back",
            extra={"kind": kind, "deployed": target.version, "replaced": current.version},
        )
        self._alert(
            AlertCandidate(
                kind="rollback",
                severity="warning",
                component=COMPONENT_OF_KIND[kind],
                message=f"{kind} rolled back from {current.version} to {target.version} "
                f"(job {job.id[:8]}): {reason}"[:500],
                value=0.0,
                threshold=0.0,
            )
        )
        deployed = queries.model_version(kind, target.version)
        replaced = queries.model_version(kind, current.version)
        assert deployed is not None and replaced is not None  # rows are never deleted
        return deployed, replaced

    # -- housekeeping ----------------------------------------------------------------------------

    def _prune(self) -> None:
        now = time.monotonic()
        if (
            self._last_prune is not None
            and now - self._last_prune < self.config.retrain.prune_interval_s
        ):
            return
        self._last_prune = now
        self.prune()

    def prune(self) -> list[str]:
        """Retires backups older than ``storage.backup_retention_days`` (by the injected clock)."""
        cutoff = self.clock() - timedelta(days=self.config.storage.backup_retention_days)
        pruned = self.repository.prune_backups(cutoff)
        if pruned:
            log.info("pruned expired backups", extra={"pruned": pruned})
        return pruned
