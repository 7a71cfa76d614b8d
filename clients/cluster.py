"""``make cluster``: the scale-out setup on loopback, to try and to break.

1. A throwaway PostgreSQL cluster (clients/throwaway_postgres.py).
2. The deployed set of ``make train`` (var/), else the default models trained once into a
   temporary directory, copied into it: its rows, and its files as the registry stores them on
   PostgreSQL (in the database).
3. ``--replicas`` (3) ``minhos-server`` replicas, each on its own gRPC and metrics port with its own
   cache directory (no shared model directory), all on the same ``DATABASE_URL`` and with
   ``retrain.local_worker`` off: the one ``minhos-worker`` runs the retraining jobs.
4. The dashboard, pointed at every replica (a comma-separated target).

Every part runs on the built-in defaults plus the settings above: the caller's ``MINHOS_*`` and
``DATABASE_URL`` variables are not passed on (a stray ``MINHOS_SERVER_PORT`` would put three
replicas on one port). It prints what runs where and the commands to try (kill a replica, the worker, the database), then
waits. Ctrl-C or SIGTERM stops everything: the dashboard, the worker, the replicas (SIGTERM, they
drain; killed after a grace period), PostgreSQL, and removes the temporary directories.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from clients.bench.inputs import Models, clean_env, tail
from clients.bench.servers import free_port, health_serving, terminate
from clients.reliability import default_models
from clients.throwaway_postgres import Cluster, throwaway_cluster
from server.core.manifest import Manifest
from server.storage.registry import ModelRepository
from server.storage.schema import close_database, open_database

READY_TIMEOUT_S = 120.0
#: SIGTERM, then a kill this much later: a replica drains its batched writes in well under this.
STOP_GRACE_S = 15.0
DASHBOARD_PORT = 8050
#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


@dataclass
class Part:
    """One process of the cluster, and where it listens."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    #: gRPC target (replicas) or URL (dashboard); empty for the worker.
    address: str = ""
    detail: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid


# --- the model set --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredVersion:
    manifest: Manifest
    payload: bytes
    #: Further files the manifest registers (the serving graph beside the LSTM): name -> bytes.
    files: dict[str, bytes]


def _registered_files(manifest: Manifest) -> list[str]:
    """Names of the files a manifest's ``info`` registers with a SHA-256, besides the model."""
    return [
        str(entry["file"])
        for entry in manifest.info.values()
        if isinstance(entry, dict) and isinstance(entry.get("file"), str) and "sha256" in entry
    ]


def read_deployed(database_url: str, repository: Path) -> dict[str, StoredVersion]:
    """The deployed set of a registry with every file, each checked against its SHA-256."""
    open_database(database_url)
    try:
        source = ModelRepository(repository)
        out = {}
        for kind, version in source.deployed().items():
            manifest, payload = source.load_verified(kind, version)
            files = {n: source.read_file(kind, version, n) for n in _registered_files(manifest)}
            out[kind] = StoredVersion(manifest, payload, files)
        return out
    finally:
        close_database()


def register_set(models: Models, database_url: str, cache: Path) -> dict[str, str]:
    """Copies ``models``' deployed set, under the same versions and bytes, into the registry at
    ``database_url`` and deploys it there in one transaction. Returns the versions."""
    stored = read_deployed(f"sqlite:///{models.database}", models.repository)
    open_database(database_url)
    try:
        target = ModelRepository(cache)
        for kind, one in stored.items():
            m = one.manifest
            target.publish(
                kind,
                one.payload,
                file=m.file,
                feature_spec=m.feature_spec,
                metrics=m.metrics,
                info=m.info,
                version=m.version,
            )
            for name, payload in one.files.items():
                target.write_file(kind, m.version, name, payload)
        versions = {kind: one.manifest.version for kind, one in stored.items()}
        target.deploy_set(versions)
        return versions
    finally:
        close_database()


# --- the processes --------------------------------------------------------------------------------


def worker_argv() -> list[str] | None:
    """How to start ``minhos-worker``: its console script, else its module; None when neither is
    installed."""
    script = Path(sys.executable).parent / "minhos-worker"
    if script.exists():
        return [str(script)]
    found = shutil.which("minhos-worker")
    if found:
        return [found]
    if importlib.util.find_spec("server.worker") is not None:
        return [sys.executable, "-m", "server.worker"]
    return None


def _term_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when this script dies, even by kill -9, so no
    replica outlives it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_term_with_parent if sys.platform == "linux" else None,
        )


def stop_parts(parts: Sequence[Part], grace: float) -> None:
    """SIGTERM to all at once (they drain side by side), then each is waited for, and killed if
    still running ``grace`` seconds later."""
    for part in parts:
        if part.process.poll() is None:
            part.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for part in parts:
        terminate(part.process, max(0.1, deadline - time.monotonic()))


@contextmanager
def running(parts: list[Part]) -> Iterator[list[Part]]:
    """Stops ``parts`` (as many as were started) on exit."""
    try:
        yield parts
    finally:
        stop_parts(parts, STOP_GRACE_S)


def _url_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def wait_ready(replicas: Sequence[Part], dashboard: Part | None, timeout: float) -> None:
    """Until every replica's health answers SERVING and the dashboard's page loads; raises if a
    part exits first or ``timeout`` passes."""
    waiting: list[Part] = [*replicas, *([dashboard] if dashboard else [])]
    deadline = time.monotonic() + timeout
    while waiting:
        for part in list(waiting):
            if part.process.poll() is not None:
                raise RuntimeError(
                    f"{part.name} exited ({part.process.returncode}) before it was ready:\n"
                    + tail(part.log)
                )
            ready = (
                _url_answers(part.address)
                if part is dashboard
                else health_serving(part.address, 0.5)
            )
            if ready:
                waiting.remove(part)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(p.name for p in waiting)
            raise RuntimeError(f"not ready after {timeout:.0f} s: {names}")
        if waiting:
            time.sleep(0.2)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# --- what runs where ------------------------------------------------------------------------------


def layout(
    postgres: Cluster, replicas: Sequence[Part], worker: Part | None, dashboard: Part | None
) -> str:
    targets = ",".join(r.address for r in replicas)
    rows = [
        (
            "postgres",
            f"pid {postgres.pid()}",
            postgres.url,
            f"data {postgres.data}  log {postgres.log}",
        )
    ]
    rows += [(r.name, f"pid {r.pid}", r.address, r.detail) for r in replicas]
    if worker is not None:
        rows.append((worker.name, f"pid {worker.pid}", "", worker.detail))
    else:
        rows.append(("worker", "-", "", "minhos-worker is not installed: no jobs will run"))
    if dashboard is not None:
        rows.append((dashboard.name, f"pid {dashboard.pid}", dashboard.address, ""))
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"   {name:<{w[0]}}  {pid:<{w[1]}}  {where:<{w[2]}}  {detail}".rstrip()
        for name, pid, where, detail in rows
    ]
    tries = [
        (
            "a replica dies; clients and the dashboard go on with the others",
            f"kill -9 {replicas[0].pid}",
        ),
        ("one client, balanced over every replica", f".venv/bin/minhos --target {targets} health"),
        (
            "a retraining job for the worker (an lstm job runs longest: time to kill the worker)",
            f".venv/bin/minhos --target {targets} retrain --kind lstm",
        ),
    ]
    if worker is not None:
        tries.append(
            (
                "the worker dies mid-job: the job fails after the heartbeat timeout",
                f"kill -9 {worker.pid}",
            )
        )
    tries += [
        (
            "the database goes away: replicas keep answering Predict",
            shlex.join(postgres.stop_argv()),
        ),
        ("and comes back", shlex.join(postgres.start_argv())),
    ]
    return "\n".join([*lines, "   Try:", *(f"     # {why}\n     {cmd}" for why, cmd in tries)])


# --- the command ----------------------------------------------------------------------------------


class Stop(Exception):
    """Ctrl-C or SIGTERM."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Once: a second Ctrl-C must not cut the shutdown short and leave PostgreSQL running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stop


def start_cluster(
    stack: ExitStack, scratch: Path, models: Models, replicas: int, dashboard_port: int
) -> tuple[Cluster, list[Part], Part | None, Part | None]:
    """Starts every part, each stopped when ``stack`` closes (in reverse order: the dashboard and
    the worker, then the replicas, then PostgreSQL)."""
    postgres = stack.enter_context(throwaway_cluster())
    versions = register_set(models, postgres.url, scratch / "registrar")
    print(
        "   deployed in PostgreSQL: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        flush=True,
    )
    shared = {"DATABASE_URL": postgres.url, "MINHOS_RETRAIN_LOCAL_WORKER": "false"}
    servers = stack.enter_context(running([]))
    for i in range(1, replicas + 1):
        name = f"replica-{i}"
        port, metrics = free_port(), free_port()
        cache = scratch / name / "models"
        env = clean_env(
            {
                **shared,
                "MINHOS_SERVER_PORT": str(port),
                "MINHOS_SERVER_METRICS_PORT": str(metrics),
                "MINHOS_STORAGE_MODEL_REPOSITORY": str(cache),
            }
        )
        log = scratch / f"{name}.log"
        process = _spawn([sys.executable, "-m", "server.main"], env, log)
        detail = f"metrics http://127.0.0.1:{metrics}/metrics  cache {cache}  log {log}"
        servers.append(Part(name, process, log, f"127.0.0.1:{port}", detail))
    others = stack.enter_context(running([]))
    worker: Part | None = None
    argv = worker_argv()
    if argv is None:
        print("   minhos-worker is not installed: starting no worker", flush=True)
    else:
        cache = scratch / "worker" / "models"
        env = clean_env({**shared, "MINHOS_STORAGE_MODEL_REPOSITORY": str(cache)})
        log = scratch / "worker.log"
        worker = Part("worker", _spawn(argv, env, log), log, "", f"cache {cache}  log {log}")
        others.append(worker)
    board: Part | None = None
    if dashboard_port >= 0:
        port = dashboard_port or free_port()
        if not _port_free(port):
            port = free_port()
            print(f"   port {dashboard_port} is in use: the dashboard takes {port}", flush=True)
        targets = ",".join(s.address for s in servers)
        argv = [sys.executable, "-m", "dashboard.app", "--target", targets, "--port", str(port)]
        log = scratch / "dashboard.log"
        board = Part(
            "dashboard", _spawn(argv, clean_env({}), log), log, f"http://127.0.0.1:{port}/"
        )
        others.append(board)
    return postgres, servers, worker, board


def watch(parts: Sequence[Part]) -> None:
    """Reports each part that exits (a person killing them is the point), until interrupted."""
    reported: set[str] = set()
    while True:
        for part in parts:
            code = part.process.poll()
            if code is not None and part.name not in reported:
                reported.add(part.name)
                print(f"   {part.name} (pid {part.pid}) exited ({code})", flush=True)
        time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make cluster", description=__doc__)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument(
        "--dashboard-port",
        type=int,
        default=DASHBOARD_PORT,
        help="0: any free port; -1: no dashboard",
    )
    parser.add_argument("--repository", default="", help="model repository to copy the set from")
    parser.add_argument("--database", default="", help="SQLite registry of --repository")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    began = time.perf_counter()
    try:
        with ExitStack() as stack:
            scratch = Path(tempfile.mkdtemp(prefix="minhos-cluster-"))
            stack.callback(shutil.rmtree, scratch, ignore_errors=True)
            models = default_models(scratch, args.repository, args.database)
            print(
                f"   models from {models.database} ({time.perf_counter() - began:.1f} s)",
                flush=True,
            )
            postgres, replicas, worker, board = start_cluster(
                stack, scratch, models, args.replicas, args.dashboard_port
            )
            wait_ready(replicas, board, READY_TIMEOUT_S)
            print(
                f"\n== cluster ready in {time.perf_counter() - began:.1f} s. "
                "Ctrl-C stops everything.\n" + layout(postgres, replicas, worker, board),
                flush=True,
            )
            watch([*replicas, *([worker] if worker else []), *([board] if board else [])])
    except Stop:
        print("\n== stopped; temporary directories removed", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"\n== cluster failed: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
