"""The targets of issue 10 as checks over one run's figures: each compares MinhOS with a server
that does strictly less, measured in the same run by the same client code."""

from __future__ import annotations

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


@dataclass(frozen=True)
class Figures:
    clients: int
    processes: int
    #: 1-client p50 (us) of ON and of each control.
    p50_us: Mapping[str, float]
    #: Closed-loop loads of ON, OFF, GROUP and each control.
    loads: Mapping[str, LoadTotals]
    #: Median server CPU per stream message (us): "bare" and "PredictStream".
    stream_cpu_us: Mapping[str, float]
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


def label(f: Figures, key: str) -> str:
    return f"{f.processes} processes" if key == GROUP else key


def better_control(values: Mapping[str, float], higher: bool) -> str:
    return (max if higher else min)(CONTROLS, key=lambda name: values[name])


def throughput(f: Figures) -> Check:
    rates = {name: f.loads[name].throughput for name in (ON, *CONTROLS)}
    best = better_control(rates, higher=True)
    per_round = [
        on / max(sync, aio)
        for on, sync, aio in zip(
            f.loads[ON].rates, f.loads[SYNC].rates, f.loads[AIO].rates, strict=True
        )
    ]
    ratio = rates[ON] / rates[best]
    return Check(
        f"1 throughput: Predict, persistence and monitoring on, >= {THROUGHPUT_SHARE} x the "
        f"better control, {f.clients} clients",
        ratio >= THROUGHPUT_SHARE,
        f"{rates[ON]:.0f} vs {THROUGHPUT_SHARE} x {rates[best]:.0f} ({best}) = "
        f"{THROUGHPUT_SHARE * rates[best]:.0f} req/s: {ratio:.2f}; per round "
        f"{min(per_round):.2f}-{max(per_round):.2f}; sync {rates[SYNC]:.0f}, aio {rates[AIO]:.0f}",
    )


def latency(f: Figures) -> Check:
    best = better_control(f.p50_us, higher=False)
    ratio = f.p50_us[ON] / f.p50_us[best]
    return Check(
        f"2 latency: Predict p50 <= {LATENCY_FACTOR} x the better control's, 1 client",
        ratio <= LATENCY_FACTOR,
        f"{f.p50_us[ON]:.0f} vs {LATENCY_FACTOR} x {f.p50_us[best]:.0f} ({best}) = "
        f"{LATENCY_FACTOR * f.p50_us[best]:.0f} us: {ratio:.2f}; sync {f.p50_us[SYNC]:.0f}, "
        f"aio {f.p50_us[AIO]:.0f} us",
    )


def stream(f: Figures) -> Check:
    real, bare = f.stream_cpu_us["PredictStream"], f.stream_cpu_us["bare"]
    return Check(
        f"3 stream: PredictStream server CPU per message <= {STREAM_CPU_FACTOR} x the bare "
        "stream server's",
        real / bare <= STREAM_CPU_FACTOR,
        f"{real:.0f} vs {STREAM_CPU_FACTOR} x {bare:.0f} = {STREAM_CPU_FACTOR * bare:.0f} us: "
        f"{real / bare:.2f}",
    )


def every_core(f: Figures) -> Check:
    group, one = f.loads[GROUP].throughput, f.loads[ON].throughput
    cpu = ", ".join(f"{s:.1f}" for s in f.group_cpu_s)
    return Check(
        f"4 every core: {f.processes} vs 1 serving processes, persistence on, {f.clients} clients",
        None,
        f"{group:.0f} vs {one:.0f} req/s: {group / one:.2f} x; CPU s per serving process over "
        f"the run: {cpu}",
    )


def no_regression(f: Figures) -> list[Check]:
    on, off = f.loads[ON].throughput, f.loads[OFF].throughput
    errors = sum(f.errors.values())
    memory = "; ".join(
        f"{label(f, key)}: " + ", ".join(f"{a:.0f} -> {b:.0f}" for a, b in pairs)
        for key, pairs in f.memory.items()
    )
    return [
        Check(
            f"5 persistence on / off throughput >= {PERSISTENCE_SHARE}",
            on / off >= PERSISTENCE_SHARE,
            f"{on:.0f} / {off:.0f} req/s = {on / off:.2f}",
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
    best_rate = max(f.loads[name].throughput for name in CONTROLS)
    best_p50 = min(f.p50_us[name] for name in CONTROLS)
    on = f.loads[ON].throughput
    return {
        "Predict / better control throughput": on / best_rate,
        "Predict / better control p50": f.p50_us[ON] / best_p50,
        "PredictStream / bare stream server CPU per message": (
            f.stream_cpu_us["PredictStream"] / f.stream_cpu_us["bare"]
        ),
        f"{f.processes} / 1 serving processes throughput": f.loads[GROUP].throughput / on,
        "persistence on / off throughput": on / f.loads[OFF].throughput,
    }
