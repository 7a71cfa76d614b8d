"""The job runner: claims queued retraining jobs from the database and runs each as a child
process, ``python -m export.retrain_worker JOB_ID --parent PID`` (torch and scikit-learn live only
there), one at a time.

It runs in ``minhos-worker`` (server/worker.py, a machine of its own if need be) or, with
``retrain.local_worker``, on a thread of a server. Any number of runners may share one database: a
claim is a row lock (server/storage/jobs.py), and while a job runs its runner writes a heartbeat to
the job row. A runner that dies stops the heartbeat; the job process notices its parent is gone
and exits; the replica holding the duties lease fails the job once the heartbeat is older than
``retrain.heartbeat_timeout_s``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from server.core.config import Config, as_env
from server.core.errors import NotFound
from server.core.jobs import RUNNING_STATES
from server.core.records import Job, Severity
from server.monitoring.alerts import AlertCandidate
from server.retraining.rules import job_alert
from server.storage import jobs, queries
from server.storage.schema import utcnow

log = logging.getLogger("minhos.worker")


def process_identity() -> str:
    """Who holds a job or a lease: host, pid, and a random part (a pid is reused after a
    restart, and two containers may both be pid 1)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def default_job_argv(job_id: str) -> list[str]:
    return [sys.executable, "-m", "export.retrain_worker", job_id, "--parent", str(os.getpid())]


def _job(job_id: str) -> Job:
    found = queries.job(job_id)
    if found is None:
        raise NotFound(f"no job {job_id!r}", field="job_id")
    return found


@dataclass
class JobProcess:
    job_id: str
    process: subprocess.Popen[bytes]
    started: float  # monotonic
    stderr: IO[bytes]
    last_beat: float  # monotonic
    #: The job reached its verdict; the process is finishing up.
    concluded: bool = False

    def stderr_tail(self, lines: int = 3) -> str:
        try:
            self.stderr.seek(0)
            text = self.stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        finally:
            self.stderr.close()
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class JobRunner:
    """Claims and runs jobs; :meth:`step` is one turn (tests drive it), :meth:`run` loops."""

    def __init__(
        self,
        config: Config,
        *,
        holder: str | None = None,
        job_argv: Callable[[str], list[str]] | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_alert: Callable[[AlertCandidate], None] | None = None,
    ) -> None:
        self.config = config
        self.holder = holder or process_identity()
        self.job_argv = job_argv or default_job_argv
        self.clock = clock
        self.on_alert = on_alert
        self._lock = threading.Lock()
        self._current: JobProcess | None = None

    @property
    def running_job(self) -> str | None:
        current = self._current
        return current.job_id if current is not None else None

    def step(self) -> None:
        """Watches the running job (heartbeat, timeout, exit), or claims the next one."""
        with self._lock:
            if self._current is not None:
                self._watch(self._current)
            if self._current is None:
                self._claim()

    def run(self, stop: threading.Event) -> None:
        """Steps until ``stop`` is set, then kills a running job (see :meth:`close`)."""
        cfg = self.config.retrain
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # the database may be away; the next turn tries again
                log.exception("job runner step failed")
            busy = self._current is not None
            stop.wait(min(cfg.heartbeat_interval_s, 0.5) if busy else cfg.worker_poll_s)
        self.close()

    def close(self) -> None:
        """Kills a running job and marks it failed: an operator stopping the worker is not a
        failure of the job's code, so the alert is info."""
        with self._lock:
            current, self._current = self._current, None
            if current is None:
                return
            if current.process.poll() is None:
                current.kill()
                self._fail(current, "worker shutting down", severity="info")
            else:
                self._finish(current)

    # -- one job ---------------------------------------------------------------------------------

    def _claim(self) -> None:
        cfg = self.config.retrain
        job = jobs.claim_next(self.holder, self.clock(), max(cfg.max_running_jobs, 1))
        if job is None:
            return
        env = {**os.environ, **as_env(self.config)}
        threads = str(max(cfg.worker_threads, 1))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1")
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed when the job is reaped
        try:
            process = subprocess.Popen(
                self.job_argv(job.id),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        except OSError as exc:
            stderr.close()
            jobs.transition(job.id, "failed", self.clock(), reason=f"cannot start the job: {exc}")
            self._alert(job_alert(_job(job.id)))
            return
        now = time.monotonic()
        self._current = JobProcess(job.id, process, now, stderr, now)
        log.info("job started", extra={"job": job.id, "kind": job.kind, "pid": process.pid})

    def _watch(self, current: JobProcess) -> None:
        cfg = self.config.retrain
        if current.process.poll() is not None:
            self._current = None
            self._finish(current)
            return
        now = time.monotonic()
        if now - current.started > cfg.job_timeout_s:
            current.kill()
            self._current = None
            self._fail(current, f"timed out after {cfg.job_timeout_s:g} s; worker killed")
            return
        if not current.concluded and now - current.last_beat >= cfg.heartbeat_interval_s:
            current.last_beat = now
            if jobs.heartbeat(current.job_id, self.holder, self.clock()):
                return
            if _job(current.job_id).state in ("deployed", "rejected"):
                # The job process has concluded and is finishing up (pruning, closing): no more
                # heartbeats; it is reaped when it exits.
                current.concluded = True
                return
            # Failed as lost by the duties holder (this runner was cut off from the database for
            # too long): no longer ours to finish, let alone deploy.
            current.kill()
            self._current = None
            current.stderr_tail()
            log.warning("job taken from this worker; stopped", extra={"job": current.job_id})

    def _finish(self, current: JobProcess) -> None:
        code = current.process.returncode
        tail = current.stderr_tail()
        row = _job(current.job_id)
        if row.state in RUNNING_STATES:
            reason = f"worker exited with code {code}" if code else "worker exited unfinished"
            jobs.transition(
                row.id, "failed", self.clock(), reason=reason + (f": {tail}" if tail else "")
            )
            row = _job(current.job_id)
        self._alert(job_alert(row))

    def _fail(self, current: JobProcess, reason: str, severity: Severity | None = None) -> None:
        current.stderr_tail()
        if jobs.transition(current.job_id, "failed", self.clock(), reason=reason):
            self._alert(job_alert(_job(current.job_id), severity))

    def _alert(self, candidate: AlertCandidate) -> None:
        if self.on_alert is None:
            return
        try:
            self.on_alert(candidate)
        except Exception:
            log.exception("alert callback failed")
