"""Retraining duties of a serving replica: answering triggers and rollbacks (any replica), and,
in the one replica holding the duties lease (server/storage/leases.py), the periodic decisions:
schedules, degradation triggers, failing jobs whose worker was lost, probation of newly deployed
versions and pruning of expired backups.

Training never runs here: jobs are claimed and run by job runners (server/retraining/worker.py),
in ``minhos-worker`` processes or on a thread of each server, which deploy through the registry;
every replica's poller swaps the sessions by itself. Every decision that two replicas could make at
once (a trigger, a rollback, a probation verdict) is made once, in the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from server.core import scoring
from server.core.config import Config
from server.core.errors import FailedPrecondition, NotFound
from server.core.manifest import COMPONENT_OF_KIND, KINDS, REFERENCE_METRIC, check_kind
from server.core.records import Job, ModelVersion
from server.monitoring.alerts import AlertCandidate
from server.monitoring.degradation import CusumParams
from server.retraining.rules import (
    degradation_due,
    job_alert,
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


class Retraining:
    """Retraining for one replica (the database must be open): triggers and rollbacks from RPCs,
    and :meth:`tick`'s duties while the replica holds the lease."""

    def __init__(
        self,
        config: Config,
        repository: ModelRepository,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_alert: Callable[[AlertCandidate], None] | None = None,
    ) -> None:
        self.config = config
        self.repository = repository
        self.clock = clock
        self.on_alert = on_alert
        self._lock = threading.RLock()
        #: Where each (kind, market clock?) schedule counts from when the kind has no job yet.
        self._anchors: dict[tuple[str, bool], datetime] = {}
        self._last_prune: float | None = None
        self._market_now: datetime | None = None

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
        """The lease holder's periodic duties (the server's poller): fail jobs whose worker was
        lost, queue scheduled and degradation jobs, judge probations, prune backups."""
        with self._lock:
            if market_now is not None:
                self._market_now = market_now
            steps: list[tuple[str, Callable[[], None]]] = [
                ("lost jobs", self._fail_lost),
                ("schedule", lambda: self._schedule(market_now)),
                ("degradation", lambda: self._degradation(market_now, degraded or {})),
                ("probation", self._probation),
                ("prune", self._prune),
            ]
            for name, step in steps:
                try:
                    step()
                except Exception:  # one failing step must not stop the others
                    log.exception("retraining %s step failed", name)

    def _fail_lost(self) -> None:
        timeout = timedelta(seconds=self.config.retrain.heartbeat_timeout_s)
        for row in jobs.fail_lost(self.clock(), timeout):
            log.error("job lost its worker", extra={"job": row.id, "reason": row.failure_reason})
            self._alert(job_alert(row))

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
            if job is None or job.probation:
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
                jobs.decide_probation(job.id, "passed", self.clock(), verdict.reason)
            elif verdict.state == "failed" and jobs.decide_probation(
                job.id, "failed", self.clock(), verdict.reason
            ):
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
            # The kind's deploy lock: a rollback through two replicas at once happens once.
            with write_transaction(f"deploy:{kind}"):
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
