"""``make cluster`` (clients/cluster.py) as a person runs it: a real PostgreSQL, three replicas, the
worker and the dashboard come up and answer; Ctrl-C stops every one of them and removes the
temporary directories."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO

from clients.bench.servers import health_serving
from tests.conftest import Trained
from tests.postgres_cluster import need_postgres

READY_S = 90.0


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # an unreaped zombie no longer runs


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):
        into.put(line)


def test_cluster_starts_every_part_and_ctrl_c_stops_them(trained: Trained) -> None:
    need_postgres()
    cluster = subprocess.Popen(
        [
            *(sys.executable, "-m", "clients.cluster", "--dashboard-port", "0"),
            *("--repository", str(trained.root / "models")),
            *("--database", str(trained.root / "minhos.db")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(cluster.stdout, lines), daemon=True).start()
    out: list[str] = []
    try:
        deadline = time.monotonic() + READY_S
        while not any("cluster ready" in line for line in out):
            assert cluster.poll() is None, "".join(out)
            assert time.monotonic() < deadline, "not ready in time:\n" + "".join(out)
            try:
                out.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        # The layout follows the ready line: read until the commands to try.
        while not any("Try:" in line for line in out):
            out.append(lines.get(timeout=10))
        text = "".join(out)
        rows = {m[1]: m for m in re.finditer(r"^ +(\S+) +pid (\d+) +(\S*)(.*)$", text, re.M)}
        assert {"postgres", "replica-1", "replica-2", "replica-3", "dashboard"} <= set(rows), text
        pids = {name: int(m[2]) for name, m in rows.items()}
        assert not [name for name, pid in pids.items() if _gone(pid)], text
        targets = [rows[f"replica-{i}"][3] for i in (1, 2, 3)]
        assert len(set(targets)) == 3
        assert all(health_serving(target, 5) for target in targets)
        with urllib.request.urlopen(rows["dashboard"][3], timeout=10) as page:
            assert page.status == 200
        # Each replica its own cache directory; all of them, and PostgreSQL's data, temporary.
        caches = {re.findall(r"cache (\S+)", rows[f"replica-{i}"][4])[0] for i in (1, 2, 3)}
        assert len(caches) == 3, text
        # The replicas' caches hold the set they serve (fetched from the database).
        dirs = [Path(re.findall(r"data (\S+)", rows["postgres"][4])[0]), *map(Path, caches)]
        assert all(d.is_dir() and any(d.iterdir()) for d in dirs), text
        dirs.append(Path(next(iter(caches))).parents[1])  # the cluster's scratch directory

        began = time.monotonic()
        cluster.send_signal(signal.SIGINT)
        assert cluster.wait(timeout=40) == 0
        stop_s = time.monotonic() - began
    finally:
        if cluster.poll() is None:  # a failed check: still stop everything it started
            cluster.send_signal(signal.SIGTERM)
            try:
                cluster.wait(timeout=40)
            except subprocess.TimeoutExpired:
                cluster.kill()
                cluster.wait()
    while not lines.empty():
        out.append(lines.get())
    text = "".join(out)
    assert "stopped" in text, text
    deadline = time.monotonic() + 5  # the postmaster's children leave after it
    while not all(_gone(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [name for name, pid in pids.items() if not _gone(pid)] == [], text
    assert not [d for d in dirs if d.exists()], text
    assert stop_s < 30, f"stopping took {stop_s:.1f} s"
    assert os.path.exists(trained.root / "minhos.db")  # the source registry is left alone
