"""A throwaway PostgreSQL cluster that a test can stop and start again (the fixture of
tests/test_postgres.py, as a context manager a module-scoped fixture can use)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clients.bench import free_port
from tests.test_postgres import BIN, _as_postgres


@dataclass(frozen=True)
class Cluster:
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://minhos@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        done = subprocess.run(
            _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), *args),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr + done.stdout

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("start", "-w", "-l", str(self.data / "server.log"), "-o", options)


def available() -> bool:
    return (BIN / "postgres").exists()


@contextmanager
def postgres_cluster() -> Iterator[Cluster]:
    # Outside pytest's tmp tree, whose root-only parents the postgres user cannot traverse.
    data = Path(tempfile.mkdtemp(prefix="minhos-pg-"))
    shutil.chown(data, "postgres", "postgres")
    done = subprocess.run(
        _as_postgres(str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "minhos"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    cluster = Cluster(data, free_port())
    try:
        cluster.start()
        deadline = time.monotonic() + 30
        while subprocess.run(
            [str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(cluster.port)],
            capture_output=True,
        ).returncode:
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.2)
        yield cluster
    finally:
        subprocess.run(
            _as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "stop", "-m", "fast"),
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)
