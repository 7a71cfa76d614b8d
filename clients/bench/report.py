"""The printed result: rows of figures, lines of information, ratios, and PASS/FAIL checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from clients.bench.load import LoadTotals
from clients.bench.measure import StreamRounds, percentiles


@dataclass
class Row:
    name: str
    p50_us: float = float("nan")
    p99_us: float = float("nan")
    per_second: float = float("nan")
    note: str = ""


@dataclass(frozen=True)
class Check:
    name: str
    #: None: a line of information, not a target.
    ok: bool | None
    detail: str

    @property
    def verdict(self) -> str:
        return "INFO" if self.ok is None else "PASS" if self.ok else "FAIL"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    #: Lines of information printed between the table and the ratios.
    notes: list[str] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    #: Failed calls of each MinhOS load (by the load's name).
    errors: dict[str, int] = field(default_factory=dict)


def latency_row(name: str, samples_s: Sequence[float], note: str = "") -> Row:
    p50, p99 = percentiles(samples_s)
    return Row(name, p50, p99, 1e6 / p50 if p50 > 0 else float("nan"), note)


def load_row(name: str, totals: LoadTotals, clients: int) -> Row:
    """Throughput is the median of the rounds; p50 and p99 over every call of every round."""
    p50, p99 = percentiles(totals.latencies)
    low, high = min(totals.rates, default=math.nan), max(totals.rates, default=math.nan)
    cpu = f"; server CPU {totals.cpu_per_call_us:.0f} us/call" if totals.cpu_s else ""
    note = (
        f"{len(totals.latencies)} calls in {totals.seconds:.1f} s, {totals.error_note}; "
        f"rounds {low:.0f}-{high:.0f}/s{cpu}"
    )
    return Row(f"{name}, {clients} clients", p50, p99, totals.throughput, note)


def stream_row(name: str, rounds: StreamRounds) -> Row:
    cpu = rounds.cpu_us
    return Row(
        name,
        per_second=rounds.rate,
        note=(
            f"{rounds.messages} messages, 1 stream, median of {len(rounds.rates)} rounds; server "
            f"CPU {rounds.cpu_per_message_us:.0f} us/msg (rounds {min(cpu):.0f}-{max(cpu):.0f})"
        ),
    )


def format_report(report: Report) -> str:
    width = max(len(row.name) for row in report.rows)
    header = f"{'measure':<{width}}  {'p50 us':>8}  {'p99 us':>8}  {'per s':>7}  note"
    lines = [header, "-" * (len(header) + 60)]

    def num(x: float, w: int) -> str:
        return f"{x:>{w}.0f}" if math.isfinite(x) else " " * w

    for row in report.rows:
        lines.append(
            f"{row.name:<{width}}  {num(row.p50_us, 8)}  {num(row.p99_us, 8)}  "
            f"{num(row.per_second, 7)}  {row.note}"
        )
    lines += ["", *report.notes, ""]
    lines += [f"{name}: {value:.3f}" for name, value in report.ratios.items()]
    lines.append("")
    lines += [f"{c.verdict}  {c.name}  ({c.detail})" for c in report.checks]
    return "\n".join(lines)
