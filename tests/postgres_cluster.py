"""The PostgreSQL tests' throwaway cluster (clients/throwaway_postgres.py), and the one place that
decides what a missing PostgreSQL means: a skip on a developer's machine, an error in CI (``CI`` set),
where these tests must never skip."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from clients.throwaway_postgres import BIN_ROOT, Cluster, available, throwaway_cluster
from server.storage.schema import close_database

__all__ = ["Cluster", "available", "need_postgres", "postgres_cluster", "postgres_database"]


def need_postgres() -> None:
    """Skips the calling test when PostgreSQL is not installed; fails it instead in CI."""
    if available():
        return
    message = f"PostgreSQL server binaries are not installed under {BIN_ROOT} (make postgres)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set and {message}", pytrace=False)
    pytest.skip(message)


@contextmanager
def postgres_cluster() -> Iterator[Cluster]:
    """A fresh throwaway cluster, started (see :func:`need_postgres`); stopped and removed on
    exit."""
    need_postgres()
    with throwaway_cluster() as cluster:
        yield cluster


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a fresh throwaway cluster; the test's database connection is closed, then the
    cluster stopped and removed, on exit."""
    with postgres_cluster() as cluster:
        try:
            yield cluster.url
        finally:
            close_database()
