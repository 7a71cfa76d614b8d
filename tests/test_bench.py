"""Smoke test of ``make bench``: every measurement runs end to end on the tiny models (real server
processes, real gRPC) and yields numbers. No timing assertions: the targets are checked by the
bench itself, on a quiet machine."""

from __future__ import annotations

import math

from clients.bench import Settings, format_report, run
from tests.conftest import Trained


def test_bench_runs_every_measurement(trained: Trained) -> None:
    settings = Settings(
        calls=20,
        warmup=5,
        stream_messages=120,
        clients=2,
        load_seconds=0.3,
        rounds=1,
        measure_rounds=2,
        repository=str(trained.root / "models"),
        database=str(trained.root / "minhos.db"),
    )
    report = run(settings)

    rows = {row.name.split(",")[0]: row for row in report.rows}
    for name in ("in-process floor (DataPlane.predict)", "bare gRPC unary round trip"):
        assert math.isfinite(rows[name].p50_us) and rows[name].p50_us > 0
        assert rows[name].p99_us >= rows[name].p50_us
    timed = [r for r in report.rows if r.name.startswith("unary Predict")]
    assert len(timed) == 3  # single client, persistence on and off under load
    assert all(math.isfinite(r.p50_us) and r.per_second > 0 for r in timed)
    streams = [r for r in report.rows if "stream" in r.name.lower()]
    assert len(streams) == 2 and all(r.per_second > 0 for r in streams)
    assert all("median of 2 rounds; server CPU" in r.note for r in streams)
    assert "0 errors" in timed[1].note
    assert all(math.isfinite(v) and v > 0 for v in report.ratios.values())
    checks = {c.name: c for c in report.checks}
    assert len(checks) == 7
    assert checks["no torch / sklearn in the serving process"].ok
    text = format_report(report)
    assert "PASS" in text or "FAIL" in text
    assert "VmRSS" in text
