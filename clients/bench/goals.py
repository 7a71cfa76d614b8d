"""The targets of issue 10 as checks over one run's figures: each compares MinhOS with a server
that does strictly less, measured in the same run by the same client code.

Ratios of throughput and of stream CPU are paired: each round's MinhOS figure over the same
round's reference (the two ran next to each other), median over the rounds, so that the machine's
drift between rounds cancels. The better control is the one with the higher median throughput
(lower p50 for latency)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from clients.bench.load import LoadTotals
from clients.bench.report import Check

#: 1. 8-client Predict throughput (persistence and monitoring on) / the better control's.
THROUGHPUT_SHARE = 0.75
#: 2. 1-client Predict p50 / the better control's p50, at most.
LATENCY_FACTOR = 1.3
#: 3. PredictStream server CPU per message / the bare stream server's, at most.
STREAM_CPU_FACTOR = 1.6
#: 5. Throughput with persistence on / off, at least.
PERSISTENCE_SHARE = 0.9
#: 5. Seconds from process start to health SERVING, at most (the default single process; a group's
#: time is printed beside it).
READY_S = 3.0

# The names the figures are keyed by.
ON, OFF, GROUP, SYNC, AIO = "persistence on", "persistence off", "group", "sync", "aio"
CONTROLS = (SYNC, AIO)
BARE, STREAM = "bare", "PredictStream"


@dataclass(frozen=True)
class Figures:
    clients: int
    processes: int
    #: 1-client p50 (us) of ON and of each control.
    p50_us: Mapping[str, float]
    #: Closed-loop loads of ON, OFF, GROUP and each control (one rate per round, same rounds).
    loads: Mapping[str, LoadTotals]
    #: Server CPU per stream message (us) of each round, BARE and STREAM (same rounds).
    stream_cpu_us: Mapping[str, Sequence[float]]
    #: Errors of every MinhOS load (the OIP rounds included when run).
    errors: Mapping[str, int]
    #: Ready seconds of each MinhOS server (ON, OFF, GROUP).
    ready_s: Mapping[str, float]
    #: Forbidden packages found in a serving process (imported or mapped).
    forbidden: Sequence[str]
    #: Each MinhOS server's (ON, OFF, GROUP) serving processes: (VmRSS MB at ready, after the load).
    memory: Mapping[str, Sequence[tuple[float, float]]]
    #: CPU seconds each process of GROUP used over the run (did both serve?).
    group_cpu_s: Sequence[float]


@dataclass(frozen=True)
class Paired:
    """Median and range of per-round ratios a / b."""

    median: float
    low: float
    high: float

    @staticmethod
    def of(a: Sequence[float], b: Sequence[float]) -> Paired:
        ratios = [x / y for x, y in zip(a, b, strict=True)]
        return Paired(statistics.median(ratios), min(ratios), max(ratios))

    def __str__(self) -> str:
        return f"{self.median:.2f} (rounds {self.low:.2f}-{self.high:.2f})"


def label(f: Figures, key: str) -> str:
    return f"{f.processes} processes" if key == GROUP else key


def best_rate(f: Figures) -> str:
    return max(CONTROLS, key=lambda name: f.loads[name].throughput)


def best_p50(f: Figures) -> str:
    return min(CONTROLS, key=lambda name: f.p50_us[name])


def rates(f: Figures, a: str, b: str) -> Paired:
    return Paired.of(f.loads[a].rates, f.loads[b].rates)


def latency_ratio(f: Figures) -> float:
    return f.p50_us[ON] / f.p50_us[best_p50(f)]


def stream_ratio(f: Figures) -> Paired:
    return Paired.of(f.stream_cpu_us[STREAM], f.stream_cpu_us[BARE])


def throughput(f: Figures) -> Check:
    best = best_rate(f)
    ratio = rates(f, ON, best)
    on, ref = f.loads[ON].throughput, f.loads[best].throughput
    return Check(
        f"1 throughput: Predict, persistence and monitoring on, >= {THROUGHPUT_SHARE} x the "
        f"better control, {f.clients} clients",
        ratio.median >= THROUGHPUT_SHARE,
        f"{ratio} of {best}; medians {on:.0f} vs {ref:.0f} req/s; sync "
        f"{f.loads[SYNC].throughput:.0f}, aio {f.loads[AIO].throughput:.0f}",
    )


def latency(f: Figures) -> Check:
    best = best_p50(f)
    ratio = latency_ratio(f)
    return Check(
        f"2 latency: Predict p50 <= {LATENCY_FACTOR} x the better control's, 1 client",
        ratio <= LATENCY_FACTOR,
        f"{f.p50_us[ON]:.0f} vs {LATENCY_FACTOR} x {f.p50_us[best]:.0f} ({best}) = "
        f"{LATENCY_FACTOR * f.p50_us[best]:.0f} us: {ratio:.2f}; sync {f.p50_us[SYNC]:.0f}, "
        f"aio {f.p50_us[AIO]:.0f} us",
    )


def stream(f: Figures) -> Check:
    ratio = stream_ratio(f)
    real, bare = (statistics.median(f.stream_cpu_us[k]) for k in (STREAM, BARE))
    return Check(
        f"3 stream: PredictStream server CPU per message <= {STREAM_CPU_FACTOR} x the bare "
        "stream server's",
        ratio.median <= STREAM_CPU_FACTOR,
        f"{ratio}; medians {real:.0f} vs {bare:.0f} us",
    )


def every_core(f: Figures) -> Check:
    cpu = ", ".join(f"{s:.1f}" for s in f.group_cpu_s)
    return Check(
        f"4 every core: {f.processes} vs 1 serving processes, persistence on, {f.clients} clients",
        None,
        f"{rates(f, GROUP, ON)}; medians {f.loads[GROUP].throughput:.0f} vs "
        f"{f.loads[ON].throughput:.0f} req/s; CPU s of each serving process over the run: {cpu}",
    )


def no_regression(f: Figures) -> list[Check]:
    persistence = rates(f, ON, OFF)
    errors = sum(f.errors.values())
    memory = "; ".join(
        f"{label(f, key)}: " + ", ".join(f"{a:.0f} -> {b:.0f}" for a, b in pairs)
        for key, pairs in f.memory.items()
    )
    return [
        Check(
            f"5 persistence on / off throughput >= {PERSISTENCE_SHARE}",
            persistence.median >= PERSISTENCE_SHARE,
            f"{persistence}; medians {f.loads[ON].throughput:.0f} / "
            f"{f.loads[OFF].throughput:.0f} req/s",
        ),
        Check(
            "5 zero errors under load",
            errors == 0,
            ", ".join(f"{name} {n}" for name, n in f.errors.items()),
        ),
        Check(
            f"5 ready (health SERVING) <= {READY_S:.0f} s, one serving process",
            max(s for key, s in f.ready_s.items() if key != GROUP) <= READY_S,
            ", ".join(f"{key} {s:.2f} s" for key, s in f.ready_s.items() if key != GROUP)
            + f"; information: {f.processes} processes, every one up, {f.ready_s[GROUP]:.2f} s",
        ),
        Check(
            "5 no torch / sklearn in a serving process",
            not {"torch", "sklearn"} & set(f.forbidden),
            f"found: {', '.join(f.forbidden) or 'none'} (sys.modules after a Predict; libraries "
            "mapped in every serving process)",
        ),
        Check("5 memory: VmRSS MB per serving process, at ready -> after the load", None, memory),
    ]


def goal_checks(f: Figures) -> list[Check]:
    return [throughput(f), latency(f), stream(f), every_core(f), *no_regression(f)]


def goal_ratios(f: Figures) -> dict[str, float]:
    """The paired medians (and the latency ratio) the checks judge."""
    return {
        "Predict / better control throughput": rates(f, ON, best_rate(f)).median,
        "Predict / better control p50": latency_ratio(f),
        "PredictStream / bare stream server CPU per message": stream_ratio(f).median,
        f"{f.processes} / 1 serving processes throughput": rates(f, GROUP, ON).median,
        "persistence on / off throughput": rates(f, ON, OFF).median,
    }
