"""The deployed models on instruments they were never trained on: ``python -m export.instruments``
(``make evaluate``).

Each built-in series (see :data:`export.data.SERIES`) is run through the deployed LSTM, ensemble
and Kelly component exactly as serving runs them (onnxruntime; the component's calibration and
sizing), and gets the training report's tables: probability scores, and the signal's IC with the
Kelly-sized strategy beside buy-and-hold and the constant Kelly long of the training span. Then the
same pooled over the series (IC over every series-bar, returns of the equal-weight portfolio), on
all their bars and on the bars after the last date any deployed component was fitted on.
Nothing is fitted here: this is evaluation only.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from export.data import SERIES, MarketData, load_series
from export.evaluation import (
    Baseline,
    SpanForecasts,
    pooled_reports,
    score,
    score_rows,
    signal_reports,
    signal_table,
    table,
)
from export.onnx_export import run_ensemble, run_lstm, session
from export.train import Dataset
from server.core.calibrator import KellyComponent
from server.core.config import Config, load_config
from server.core.fusion import fuse
from server.storage.registry import ModelRepository
from server.storage.schema import close_database, open_database

#: Series evaluated by default: every built-in one except the S&P 500 the models are trained on.
UNSEEN: tuple[str, ...] = tuple(name for name in SERIES if name != "SPX")


@dataclass(frozen=True)
class DeployedSet:
    """The deployed pair and Kelly component, loaded through the registry's SHA-256 check."""

    versions: dict[str, str]
    window: int
    lstm: bytes
    ensemble: bytes
    component: KellyComponent
    #: The constant long's sizing, from the Kelly component's manifest (None for models trained
    #: before it was recorded).
    baseline: Baseline | None
    #: The last date any component was fitted on (the Kelly component's validation span end).
    fitted_until: str

    @staticmethod
    def load(repository: ModelRepository) -> DeployedSet:
        versions = repository.deployed()
        missing = [k for k in ("lstm", "ensemble", "kelly") if k not in versions]
        if missing:
            raise RuntimeError(f"no deployed {', '.join(missing)}: run `make train` first")
        lstm_manifest, lstm = repository.load_verified("lstm", versions["lstm"])
        ensemble_manifest, ensemble = repository.load_verified("ensemble", versions["ensemble"])
        kelly_manifest, kelly = repository.load_verified("kelly", versions["kelly"])
        metrics = kelly_manifest.metrics
        baseline = (
            Baseline(metrics["train_up_rate"], metrics["train_long_payoff_ratio"])
            if "train_up_rate" in metrics and "train_long_payoff_ratio" in metrics
            else None
        )
        until = max(
            m.feature_spec.train_end for m in (lstm_manifest, ensemble_manifest, kelly_manifest)
        )
        return DeployedSet(
            versions,
            lstm_manifest.feature_spec.window,
            lstm,
            ensemble,
            KellyComponent.from_json(kelly.decode()),
            baseline,
            until,
        )


def forecasts(deployed: DeployedSet, data: MarketData) -> SpanForecasts:
    """The deployed pair's P(up) on every labelled bar of ``data`` with a complete window."""
    ds = Dataset.build(data, deployed.window)
    index = np.arange(ds.first_sample, len(data) - 1, dtype=np.intp)
    p_lstm = run_lstm(session(deployed.lstm), ds.sequences(index))
    p_ensemble = run_ensemble(session(deployed.ensemble), ds.rows(index))
    return ds.forecasts(index, p_lstm, p_ensemble)


def _span(f: SpanForecasts) -> str:
    return f"{str(f.times[0])[:10]} .. {str(f.times[-1])[:10]} ({len(f)} samples)"


def series_report(deployed: DeployedSet, f: SpanForecasts, config: Config) -> str:
    """The training report's two tables for one series."""
    rows = score_rows(f, deployed.component, config, None)
    up = float(np.mean(f.y))
    rows = {f"always up ({up:.3f})": score(np.full(len(f), 0.5 + 1e-6), f.y), **rows}
    return "\n\n".join(
        (
            table(rows, f"{f.symbol}: {_span(f)}"),
            signal_table(signal_reports(f, deployed.component, config, deployed.baseline)),
        )
    )


def pooled_report(
    deployed: DeployedSet, spans: Sequence[SpanForecasts], config: Config, title: str
) -> str:
    """Scores over every (series, bar) and the strategies as an equal-weight portfolio."""
    spans = [f for f in spans if len(f)]
    if not spans:
        return f"{title}: no samples"
    p_lstm = np.concatenate([f.p_lstm for f in spans])
    p_ensemble = np.concatenate([f.p_ensemble for f in spans])
    y = np.concatenate([f.y for f in spans])
    fused = fuse(p_lstm, p_ensemble, config.fusion).probability_up
    component = deployed.component
    rows = {
        f"always up ({np.mean(y):.3f})": score(np.full(len(y), 0.5 + 1e-6), y),
        "lstm": score(p_lstm, y),
        "ensemble": score(p_ensemble, y),
        "average (fused)": score(fused, y),
        f"fused + {component.method}": score(component.calibrate(fused), y),
    }
    names = ", ".join(f.symbol for f in spans)
    head = f"{title}: {names}, {len(y)} series-bars"
    return "\n\n".join(
        (
            table(rows, head),
            signal_table(pooled_reports(spans, component, config, deployed.baseline)),
        )
    )


def evaluate(
    repository: ModelRepository,
    config: Config,
    series: Sequence[MarketData],
    since: str | None = None,
) -> str:
    """The whole report as text (database must be open). ``since`` keeps only bars from that
    date on, for every table."""
    deployed = DeployedSet.load(repository)
    spans = [forecasts(deployed, data) for data in series]
    if since:
        spans = [f.since(since) for f in spans]
    after = str(np.datetime64(deployed.fitted_until) + np.timedelta64(1, "D"))
    parts = [
        f"Deployed: lstm {deployed.versions['lstm']}, ensemble {deployed.versions['ensemble']}, "
        f"kelly {deployed.versions['kelly']} ({deployed.component.method}, payoff ratio "
        f"{deployed.component.payoff_ratio:.3f}); fitted on data up to {deployed.fitted_until}."
    ]
    parts += [series_report(deployed, f, config) for f in spans if len(f)]
    if len(spans) > 1:
        parts.append(pooled_report(deployed, spans, config, "Pooled"))
    if not since or since < after:
        late = [f.since(after) for f in spans]
        parts.append(
            pooled_report(deployed, late, config, f"Pooled, bars from {after} (after every fit)")
        )
    return "\n\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.instruments", description=__doc__)
    parser.add_argument(
        "--series",
        default=",".join(UNSEEN),
        help=f"comma-separated built-in series ({', '.join(SERIES)}); default: all but SPX",
    )
    parser.add_argument("--since", default=None, help="only bars from this date on")
    parser.add_argument("--config", default=None, help="TOML config file")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    try:
        series = load_series([s.strip() for s in args.series.split(",") if s.strip()])
    except ValueError as exc:
        parser.error(str(exc))
    open_database(config.storage.database_url)
    try:
        print(evaluate(ModelRepository.from_config(config.storage), config, series, args.since))
    finally:
        close_database()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
