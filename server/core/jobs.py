"""The vocabulary of retraining jobs: what starts one, the states it moves through, and which job a
new trigger merges into. Storage writes jobs with these rules; the coordinator decides with them."""

from __future__ import annotations

from collections.abc import Sequence

TRIGGERS = ("schedule", "degradation", "manual")
#: A job in one of these states absorbs new triggers of its kind.
ACTIVE_STATES = ("queued", "running", "validating")
FINAL_STATES = ("deployed", "rejected", "failed", "rolled_back")
#: A worker holds the job in these states (and sends heartbeats).
RUNNING_STATES = ("running", "validating")
#: Allowed predecessors of each state.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "running": ("queued", "running"),
    "validating": ("running",),
    "deployed": ("validating",),
    "rejected": ("running", "validating"),
    "failed": ("queued", "running", "validating"),
    "rolled_back": ("deployed",),
}


def merge_target(jobs: Sequence[tuple[str, str]]) -> str | None:
    """Id of the job a new trigger merges into: the oldest active one of ``(id, state)`` pairs
    given oldest first; None when a new job must be queued."""
    for job_id, state in jobs:
        if state in ACTIVE_STATES:
            return job_id
    return None
