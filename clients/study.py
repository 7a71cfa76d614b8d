"""How the degradation detector behaves on the real models and data (``make study``).

Scores the deployed models over the walk-forward test span exactly as the server would (the same
feature code, the same ONNX graphs, the same fusion), then runs the monitor's detectors over the
fused hit series:

* healthy: the test span as it is; any alarm above info is a false alarm;
* flipped: outcomes inverted from bar ``--change-at`` on (a model that has turned wrong);
* corrupted: the inputs of the LSTM and ensemble replaced by other days' features from bar
  ``--change-at`` on (a broken feed: the models still answer, but about the wrong day).

For each scenario it prints the first bar (after the change) at which each severity fires, for the
default "relative" profile (Bernoulli CUSUM against the model's validation accuracy) and for the
"fixed" profile (absolute thresholds), so the two can be compared on the same hits.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from export.data import load_sp500
from export.onnx_export import session
from server.core import features as F
from server.core.config import load_config
from server.core.fusion import fuse
from server.core.records import SEVERITIES, Severity
from server.monitoring.degradation import CusumParams, first_alarms, fixed_first_alarms
from server.storage.registry import ModelRepository
from server.storage.schema import open_database

FloatArray = npt.NDArray[np.float64]


def _fused_hits(
    repo: ModelRepository, versions: dict[str, str], seqs: npt.NDArray[np.float32], y: FloatArray
) -> FloatArray:
    config = load_config()
    _, lstm = repo.load_verified("lstm", versions["lstm"])
    _, ensemble = repo.load_verified("ensemble", versions["ensemble"])
    p_lstm = session(lstm).run(None, {"features": seqs})[0].reshape(-1)
    p_ens = session(ensemble).run(None, {"features": np.ascontiguousarray(seqs[:, -1, :])})[-1][
        :, 1
    ]
    fused = fuse(p_lstm.astype(np.float64), p_ens.astype(np.float64), config.fusion)
    hits: FloatArray = ((fused.direction > 0) == (y > 0.5)).astype(np.float64)
    return hits


def _row(name: str, alarms: Mapping[Severity, int | None], change_at: int) -> str:
    def cell(index: int | None) -> str:
        if index is None:
            return "never"
        return f"{index - change_at:+d}" if change_at else str(index)

    return f"{name:<34}" + "".join(f"{cell(alarms[s]):>10}" for s in SEVERITIES)


def replay_alerts(test_start: str, every: int) -> Counter[tuple[str, str]]:
    """Streams the test span through a real server (in process, on a scratch copy of the database,
    retraining off), then evaluates the monitor as of every ``every``-th bar, as the server's
    periodic evaluation would live, and counts the alerts raised by (kind, severity)."""
    import dataclasses
    import shutil
    import tempfile
    from pathlib import Path

    from clients.client import MinhosClient
    from clients.replay import replay
    from server.app import MinhosServer
    from server.storage import queries
    from server.storage.schema import close_database, delete_served_rows

    config = load_config()
    source = config.storage.database_url.removeprefix("sqlite:///")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "study.db"
        shutil.copy(source, copy)
        study = dataclasses.replace(
            config,
            server=dataclasses.replace(
                config.server, port=0, metrics_port=0, reload_interval_s=3600
            ),
            storage=dataclasses.replace(config.storage, database_url=f"sqlite:///{copy}"),
            retrain=dataclasses.replace(config.retrain, enabled=False),
        )
        close_database()
        # Only the registry is wanted from the copy: predictions, outcomes and alerts of earlier
        # runs (a demo, a bench) would be read as part of this replay.
        open_database(study.storage.database_url)
        delete_served_rows()
        close_database()
        server = MinhosServer(study).start()
        try:
            data = load_sp500()
            start = int(data.times.searchsorted(np.datetime64(test_start)))
            with MinhosClient(f"127.0.0.1:{server.port}") as client:
                replay(
                    client, data.symbol, data.times, data.ohlcv, start_index=start, progress=False
                )
            server.writer.flush()
            times = queries.prediction_bar_times()
            for now in times[every::every]:
                server.monitor.evaluate(now=now)
            return Counter(queries.alert_counts())
        finally:
            server.stop(grace=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detection-study", description=__doc__)
    parser.add_argument("--test-start", default="2013-01-01")
    parser.add_argument(
        "--change-at", type=int, default=300, help="bar of the test span where degradation starts"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--replay-every",
        type=int,
        default=5,
        help="evaluate the live monitor every N bars (0: skip)",
    )
    args = parser.parse_args(argv)
    config = load_config()
    open_database(config.storage.database_url)
    repo = ModelRepository.from_config(config.storage)
    versions = repo.deployed()
    manifests = {k: repo.read_manifest(k, v) for k, v in versions.items()}
    window = manifests["lstm"].feature_spec.window
    p0 = manifests["kelly"].metrics.get("val_uncalibrated_accuracy", 0.5)

    data = load_sp500()
    feats = F.compute_features(data.ohlcv)
    y = F.labels(data.ohlcv)
    test = np.arange(int(data.times.searchsorted(np.datetime64(args.test_start))), len(data) - 1)
    seqs = F.sequences(feats, window, test)
    healthy = _fused_hits(repo, versions, seqs, y[test])

    k = args.change_at
    flipped = healthy.copy()
    flipped[k:] = 1.0 - flipped[k:]
    rng = np.random.default_rng(args.seed)
    corrupted_seqs = seqs.copy()
    corrupted_seqs[k:] = seqs[rng.permutation(len(seqs))[: len(seqs) - k]]
    corrupted = _fused_hits(repo, versions, corrupted_seqs, y[test])

    mon = config.monitoring
    params = CusumParams.for_model(p0, mon.cusum_drop, mon.cusum_arl0)
    print(
        f"fused model, test span {str(data.times[test[0]])[:10]} .. {str(data.times[test[-1]])[:10]} "
        f"({len(test)} bars); validation accuracy p0 = {p0:.4f}; CUSUM p1 = {params.p1:.4f}, h = {params.h:.2f}"
    )
    print(
        f"accuracy: healthy {healthy.mean():.4f}; after bar {k}: flipped {flipped[k:].mean():.4f}, "
        f"corrupted {corrupted[k:].mean():.4f}"
    )
    print()
    print("first alarm, in bars (healthy: bar index; degraded: bars after the change)")
    print(f"{'scenario':<34}" + "".join(f"{s:>10}" for s in SEVERITIES))
    fixed_window = mon.last_n
    for name, hits, change in (
        ("healthy", healthy, 0),
        ("flipped outcomes", flipped, k),
        ("corrupted inputs", corrupted, k),
    ):
        print(_row(f"{name} / relative (CUSUM)", first_alarms(hits, params), change))
        print(
            _row(
                f"{name} / fixed (<{mon.fixed_min_accuracy:.2f}/{fixed_window})",
                fixed_first_alarms(hits, mon.fixed_min_accuracy, fixed_window),
                change,
            )
        )
    if args.replay_every:
        counts = replay_alerts(args.test_start, args.replay_every)
        print()
        print(
            f"alerts from the live monitor over a replay of the healthy test span "
            f"(evaluated every {args.replay_every} bars):"
        )
        for (kind, severity), n in sorted(counts.items()):
            print(f"  {kind:<18} {severity:<9} {n}")
        above = sum(n for (_, sev), n in counts.items() if sev != "info")
        print(f"  above info: {above}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
