"""``python -m clients.graph_bench``: ``ModelSet.score`` of the deployed set, by its parts (numpy
features, two sessions) and in one run of the serving graph, in process, side by side.

Both paths score the same S&P 500 windows with the same sessions' threading (one intra-op thread,
no spinning). Rounds alternate the paths (and which goes first), so that the machine's swings in
speed hit both alike; each round gives a p50, and the table prints the median and the range of the
per-round p50s. The two-thread line runs two scoring threads at once for a fixed time: a path that
holds the GIL for most of a request cannot use the second core, so its throughput stays near one
thread's. Fusion and Kelly sizing (numpy) are in both paths. When the deployed set carries no
serving graph, it is built here in memory from the deployed pair (nothing is written).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from export.data import load_sp500
from export.serving_graph import build_serving_graph
from server.core.config import load_config
from server.core.manifest import KINDS, Manifest
from server.serving.models import ModelSet, serving_graph_of
from server.storage.registry import ModelRepository
from server.storage.schema import close_database, open_database

FloatArray = npt.NDArray[np.float64]


def p50_us(call: Callable[[], object], calls: int) -> float:
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e6


def two_thread_rate(call: Callable[[], object], seconds: float) -> float:
    """Scores per second with two threads calling at once."""
    counts = [0, 0]
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            call()
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def deployed_sets(config_path: str | None) -> tuple[ModelSet, ModelSet, str]:
    """(by parts, one run, where the graph came from) of the deployed set."""
    config = load_config(config_path)
    open_database(config.storage.database_url)
    try:
        repository = ModelRepository.from_config(config.storage)
        versions = repository.deployed()
        missing = [k for k in KINDS if k not in versions]
        if missing:
            raise SystemExit(f"no deployed {', '.join(missing)}; run `make train` first")
        manifests: dict[str, Manifest] = {}
        payloads: dict[str, bytes] = {}
        for kind in KINDS:
            manifests[kind], payloads[kind] = repository.load_verified(kind, versions[kind])
        graph = serving_graph_of(repository, manifests)
        source = "stored beside the deployed version"
        if graph is None:
            window = manifests["lstm"].feature_spec.window
            graph = build_serving_graph(payloads["lstm"], payloads["ensemble"], window)
            source = "built here from the deployed pair"
    finally:
        close_database()
    parts = ModelSet(manifests, payloads, config)
    one_run = ModelSet(manifests, payloads, config, graph)
    if not one_run.one_run:
        raise SystemExit("the serving graph does not load for the deployed set")
    return parts, one_run, source


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.graph_bench", description=__doc__)
    parser.add_argument("--config", default=None, help="TOML config file (model repository)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per path and round")
    parser.add_argument(
        "--thread-seconds", type=float, default=0.5, help="seconds per two-thread measurement"
    )
    args = parser.parse_args(argv)
    parts, one_run, source = deployed_sets(args.config)
    data = load_sp500()
    need = parts.bars_required
    windows = np.ascontiguousarray(sliding_window_view(data.ohlcv, (need, 5))[:, 0])
    batches = {1: windows[2000:2001], 64: windows[2000:2064]}
    paths = {"parts": parts, "one run": one_run}
    # The same numbers from both before timing anything.
    for bars in batches.values():
        a, b = parts.score(bars), one_run.score(bars)
        diff = float(np.max(np.abs(a.fused.probability_up - b.fused.probability_up)))
        assert diff <= 1e-6, f"the paths disagree by {diff:.2e}"
    p50: dict[tuple[str, int], list[float]] = {}
    rate: dict[str, list[float]] = {}
    for r in range(args.rounds):
        order = list(paths.items()) if r % 2 == 0 else list(reversed(paths.items()))
        for batch, bars in batches.items():
            for name, models in order:
                p50.setdefault((name, batch), []).append(
                    p50_us(functools.partial(models.score, bars), args.calls)
                )
        for name, models in order:
            rate.setdefault(name, []).append(
                two_thread_rate(functools.partial(models.score, batches[1]), args.thread_seconds)
            )
    print(
        f"ModelSet.score, window {parts.window} ({need} bars), versions {parts.versions}; "
        f"serving graph {source}; {args.rounds} interleaved rounds of {args.calls} calls"
    )
    print(f"{'':24}{'p50 µs (median of rounds)':>28}{'range':>18}")
    for batch in batches:
        for name in paths:
            values = p50[(name, batch)]
            low, high = min(values), max(values)
            label = f"batch {batch:<3} {name}"
            print(f"{label:24}{statistics.median(values):>28.0f}{f'{low:.0f}-{high:.0f}':>18}")
        before = statistics.median(p50[("parts", batch)])
        after = statistics.median(p50[("one run", batch)])
        per_round = [
            a / b for a, b in zip(p50[("parts", batch)], p50[("one run", batch)], strict=True)
        ]
        print(
            f"{'':24}speed-up {before / after:.2f}x "
            f"(per round {min(per_round):.2f}-{max(per_round):.2f}x)"
        )
    print(f"{'two threads, batch 1':24}{'scores/s (median)':>28}{'range':>18}")
    for name in paths:
        values = rate[name]
        low, high = min(values), max(values)
        print(f"{name:24}{statistics.median(values):>28.0f}{f'{low:.0f}-{high:.0f}':>18}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
