"""A throwaway PostgreSQL cluster on loopback, for the PostgreSQL tests and ``make cluster``.

Debian's server binaries (``make postgres`` installs them), a fresh data directory under the system
temporary directory, a free port on 127.0.0.1, ``fsync`` off and trust authentication for the user
``minhos``. PostgreSQL refuses to run as root, so when we are root every binary runs as the
``postgres`` user (``runuser``). The cluster can be stopped and started again (fault tests) and is
removed on exit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clients.bench.servers import free_port

#: Where Debian installs each major version's server binaries (``<version>/bin``).
BIN_ROOT = Path("/usr/lib/postgresql")
#: The superuser initdb creates; the cluster's URL connects as it.
USER = "minhos"
START_TIMEOUT_S = 30


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries under :data:`BIN_ROOT`."""


def bin_dir() -> Path:
    """The newest installed major version's ``bin`` directory (it may not exist: check
    :func:`available`)."""
    found = [p.parent for p in BIN_ROOT.glob("*/bin/postgres")]
    if not found:
        return BIN_ROOT / "15" / "bin"
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)


def available() -> bool:
    return (bin_dir() / "postgres").exists()


def as_postgres(*argv: str) -> list[str]:
    """``argv`` as the ``postgres`` user when we are root (runuser does not forward signals: stop
    the server with pg_ctl, never by signalling runuser)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return list(argv)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-4:])} failed: {done.stderr.strip()} {done.stdout}")


@dataclass(frozen=True)
class Cluster:
    data: Path
    port: int
    bin: Path

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    @property
    def log(self) -> Path:
        return self.data / "server.log"

    def pg_ctl_argv(self, *args: str) -> list[str]:
        """The ``pg_ctl`` command line for this cluster (as the ``postgres`` user when root)."""
        return as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), *args)

    def start_argv(self) -> list[str]:
        # The socket goes in the data directory: /var/run/postgresql may not exist or be ours.
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        return self.pg_ctl_argv(
            "start", "-w", "-t", str(START_TIMEOUT_S), "-l", str(self.log), "-o", options
        )

    def stop_argv(self) -> list[str]:
        """Fast shutdown: open sessions are cut, not waited for."""
        return self.pg_ctl_argv("stop", "-m", "fast")

    def pg_ctl(self, *args: str) -> None:
        _run(self.pg_ctl_argv(*args))

    def start(self) -> None:
        """Starts the server and waits until it accepts connections."""
        _run(self.start_argv())

    def stop(self) -> None:
        _run(self.stop_argv())

    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


@contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """A new cluster, started; stopped and deleted on exit."""
    if not available():
        raise PostgresMissing(f"no PostgreSQL server binaries under {BIN_ROOT} (make postgres)")
    # Not under pytest's tmp tree, whose root-only parents the postgres user cannot traverse.
    data = Path(tempfile.mkdtemp(prefix="minhos-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        cluster = Cluster(data, free_port(), bin_dir())
        _run(as_postgres(str(cluster.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", USER))
        cluster.start()
        try:
            yield cluster
        finally:
            # Not cluster.stop(): it raises when the server is already down (stopped, or killed).
            subprocess.run(cluster.stop_argv(), capture_output=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)
