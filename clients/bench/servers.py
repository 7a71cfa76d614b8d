"""The server processes of one run: MinhOS as production runs it (``python -m server.main``, one
process or a group sharing a port), and the stand-ins of controls.py (bare echo, sync and aio
controls), each in a spawned process. Every MinhOS server gets its own copy of the registry
database, so the bench leaves no predictions behind."""

from __future__ import annotations

import json
import multiprocessing
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.bench import procfs
from clients.bench.controls import serve_bare, serve_control
from clients.bench.inputs import Models, clean_env, scratch_database, tail

READY_TIMEOUT_S = 30.0
#: Streaming 20 years of bars advances the market clock past every retraining schedule; a training
#: job in the middle of a measurement would measure training, so the bench's servers only serve.
SERVER_DEFAULTS = {"MINHOS_RETRAIN_ENABLED": "false"}
#: Path fragments of the packages a serving process must not load, looked up in its memory map.
FORBIDDEN_LIBS = {"torch": "/torch/", "sklearn": "/sklearn/", "pandas": "/pandas/"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_serving(target: str, timeout: float) -> bool:
    # A fresh channel per probe: a reused one would wait out gRPC's reconnect backoff (1 s+).
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM (a MinhOS server drains its writes), then a kill after ``grace`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_events(log: Path, message: str) -> list[dict[str, object]]:
    """The server's JSON log lines whose message is ``message``."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("message") == message:
            found.append(entry)
    return found


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    target: str
    ready_s: float
    log: Path = Path()
    #: Serving processes (1: the process itself serves; N: a supervisor and N children).
    processes: int = 1
    #: VmRSS (MB) of each serving process when it became ready.
    rss_at_ready: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def serving_pids(self) -> list[int]:
        return [self.pid] if self.processes == 1 else procfs.children(self.pid)

    def rss_mb(self) -> float:
        return procfs.rss_mb(self.pid)

    def serving_rss_mb(self) -> list[float]:
        return [procfs.rss_mb(pid) for pid in self.serving_pids()]

    def peak_rss_mb(self) -> list[float]:
        return [procfs.status_kb(pid, "VmHWM") / 1024 for pid in self.serving_pids()]

    def mapped_forbidden(self) -> list[str]:
        """Forbidden packages whose shared libraries are mapped into any serving process."""
        found: set[str] = set()
        for pid in self.serving_pids():
            found.update(procfs.mapped(pid, FORBIDDEN_LIBS))
        return sorted(found)

    def one_run(self) -> list[bool]:
        """Per "models swapped" line of the log (one per serving process): whether that process
        scores in one ONNX run (the serving graph)."""
        return [bool(e.get("one_run")) for e in log_events(self.log, "models swapped")]


@contextmanager
def real_server(
    models: Models,
    scratch: Path,
    name: str,
    persist: bool,
    extra: dict[str, str],
    processes: int = 1,
    *,
    stop_grace_s: float = 20.0,
) -> Iterator[ServerProcess]:
    """``python -m server.main`` on a free loopback port and its own database copy
    (``scratch/<name>.db``). Ready when health answers SERVING and every serving process has logged
    "serving"; the clock starts just before the process is spawned. Stopped with SIGTERM (it
    drains), killed if still running ``stop_grace_s`` later."""
    port = free_port()
    # The bench's own settings win over ``extra``: the persistence on / off pair must hold.
    env = clean_env(
        {
            **SERVER_DEFAULTS,
            **extra,
            "MINHOS_SERVER_PORT": str(port),
            "MINHOS_SERVER_METRICS_PORT": "0",
            "MINHOS_SERVER_PROCESSES": str(processes),
            "MINHOS_STORAGE_DATABASE_URL": scratch_database(models, scratch / f"{name}.db"),
            "MINHOS_STORAGE_MODEL_REPOSITORY": str(models.repository),
            "MINHOS_STORAGE_PERSIST": "true" if persist else "false",
        }
    )
    log = scratch / f"{name}.log"
    target = f"127.0.0.1:{port}"
    with log.open("wb") as out:
        began = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "server.main"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        while len(log_events(log, "serving")) < processes or not health_serving(target, 0.5):
            if process.poll() is not None:
                raise RuntimeError(f"server {name} exited ({process.returncode}):\n{tail(log)}")
            if time.perf_counter() - began > READY_TIMEOUT_S:
                raise RuntimeError(f"server {name} not SERVING after {READY_TIMEOUT_S} s")
            time.sleep(0.01)
        server = ServerProcess(process, target, time.perf_counter() - began, log, processes)
        server.rss_at_ready = server.serving_rss_mb()
        yield server
    finally:
        terminate(process, stop_grace_s)


@dataclass(frozen=True)
class Standin:
    """A bare or control server: where it listens and its process id."""

    target: str
    pid: int


@contextmanager
def spawned(what: str, serve: Callable[..., None], *args: object) -> Iterator[Standin]:
    """``serve(*args, ready)`` in a spawned process: it sends its port on ``ready`` and stops when
    the parent sends or closes its end."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=serve, args=(*args, child), daemon=True)
    process.start()
    try:
        if not parent.poll(READY_TIMEOUT_S * 2):
            raise RuntimeError(f"the {what} did not start")
        assert process.pid is not None
        yield Standin(f"127.0.0.1:{parent.recv()}", process.pid)
    finally:
        parent.send(None)
        process.join(5)
        if process.is_alive():
            process.kill()


def bare_server(unary_size: int, stream_size: int) -> AbstractContextManager[Standin]:
    return spawned("bare server", serve_bare, unary_size, stream_size)


def control_server(kind: str, models: Models, scratch: Path) -> AbstractContextManager[Standin]:
    """The ``kind`` ("sync" or "aio") control, reading the deployed versions from its own copy
    of the registry."""
    url = scratch_database(models, scratch / f"control-{kind}.db")
    return spawned(f"{kind} control", serve_control, kind, str(models.repository), url)
