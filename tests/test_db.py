"""The database layer: a database made by an older schema gains the nullable columns added since."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.storage.schema import JobRow, close_database, open_database, utcnow

pytestmark = pytest.mark.serving


def test_missing_nullable_column_is_added(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    open_database(url)
    close_database()
    with sqlite3.connect(path) as raw:  # recreate job_row as the first release had it
        raw.execute("DROP TABLE job_row")
        raw.execute(
            "CREATE TABLE job_row (id VARCHAR(36) PRIMARY KEY, kind VARCHAR(16), state VARCHAR(16), "
            "trigger VARCHAR(16), note TEXT, queued_at DATETIME, started_at DATETIME, "
            "finished_at DATETIME, champion_version VARCHAR(64), challenger_version VARCHAR(64), "
            "gate_metrics TEXT, failure_reason TEXT, log TEXT)"
        )
        raw.execute(
            "INSERT INTO job_row VALUES ('a', 'lstm', 'deployed', 'manual', '', '2020-01-01', "
            "NULL, NULL, '', '', '[]', '', '')"
        )
    try:
        open_database(url)
        old = JobRow.get_by_id("a")
        assert old.state == "deployed" and old.market_time is None  # kept, and readable
        JobRow.create(
            id="b", kind="kelly", state="queued", trigger="schedule", market_time=utcnow()
        )
        assert JobRow.get_by_id("b").market_time is not None
    finally:
        close_database()
