"""Prediction ids are UUIDv7: unique, well-formed, and ordered by time (index inserts append)."""

from __future__ import annotations

import itertools
import uuid

import pytest

from server.serving.ids import new_ids

pytestmark = pytest.mark.serving


def test_ids_are_uuid7_unique_and_ordered_by_time() -> None:
    t0 = 1_790_000_000_000_000_000  # ns
    batches = [new_ids(50, t0 + k * 1_000_000) for k in range(20)]  # one batch a millisecond
    flat = [i for batch in batches for i in batch]
    assert len(set(flat)) == len(flat) == 1000
    for k, batch in enumerate(batches):
        for text in batch:
            assert len(text) == 32
            u = uuid.UUID(text)
            assert u.version == 7 and u.variant == uuid.RFC_4122
            assert int(text[:12], 16) == t0 // 10**6 + k  # the millisecond timestamp leads
    for earlier, later in itertools.pairwise(batches):
        assert max(earlier) < min(later)
