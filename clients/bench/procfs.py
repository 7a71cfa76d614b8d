"""What Linux says about a process (``/proc``): CPU time, memory, mapped libraries, children, and
waiting until a set of processes is idle."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> float:
    """A ``/proc/<pid>/status`` figure in kB (``VmRSS``, ``VmHWM``), NaN when absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return float("nan")


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024


def mapped(pid: int, fragments: Mapping[str, str]) -> list[str]:
    """The names of ``fragments`` (name: path fragment) found in the process's memory map."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return [name for name, part in fragments.items() if part in maps]


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid``, in order of id."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def cpu_total(pids: Sequence[int]) -> float:
    """CPU seconds the processes have used, together."""
    return sum(cpu_seconds(pid) for pid in pids)


def settle(pids: Sequence[int], limit_s: float = 5.0) -> None:
    """Waits (up to ``limit_s``) until the processes are idle: below 5% of a core over 0.1 s. A
    server still writing a stream's rows or evaluating health would otherwise slow whatever is
    measured next on these shared cores."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        before = cpu_total(pids)
        time.sleep(0.1)
        if cpu_total(pids) - before < 0.005:
            return
