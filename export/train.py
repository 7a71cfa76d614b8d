"""Training: features -> walk-forward split -> LSTM and ensemble -> ONNX (parity-checked) -> Kelly
component -> model repository, with the out-of-sample tables: probability scores beside naive
baselines, and the signal's IC and Kelly-sized returns beside buy-and-hold and a constant Kelly long.

``python -m export.train`` (``make train``) trains on the built-in S&P 500 series and deploys;
``--pool SPX,NASDAQ,AAPL,...`` trains one model set on several built-in series, each cut by the same
walk-forward dates (features are scale-free, so the series can share one model).
The functions per model kind are reused by retraining jobs (export/retrain_worker.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from export.data import SERIES, MarketData, load_csv, load_series, load_sp500
from export.ensemble import EnsembleSettings, predict_ensemble, train_ensemble
from export.evaluation import (
    Baseline,
    SpanForecasts,
    ic_year_table,
    score,
    score_rows,
    signal_reports,
    signal_table,
    table,
)
from export.lstm import LSTMSettings, predict_lstm, train_lstm
from export.onnx_export import (
    check_parity,
    export_ensemble,
    export_lstm,
    run_ensemble,
    run_lstm,
    session,
)
from export.serving_graph import graph_for_set
from export.split import IndexArray, Split, walk_forward_split
from server.core import features as F
from server.core.calibrator import KellyComponent, fit_kelly_component
from server.core.config import Config, load_config
from server.core.fusion import fuse
from server.core.manifest import FeatureSpec, Manifest
from server.storage.registry import ModelRepository, new_version
from server.storage.schema import close_database, open_database

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 7
    #: Feature vectors the LSTM reads per prediction.
    window: int = 20
    validation_start: str = "2011-01-01"
    test_start: str = "2013-01-01"
    calibrator: str = "platt"
    lstm: LSTMSettings = field(default_factory=LSTMSettings)
    ensemble: EnsembleSettings = field(default_factory=EnsembleSettings)


@dataclass(frozen=True)
class Dataset:
    """Everything the models are fitted and scored on, computed once by the shared feature code."""

    data: MarketData
    features: FloatArray
    y: FloatArray
    returns: FloatArray
    window: int

    @staticmethod
    def build(data: MarketData, window: int) -> Dataset:
        return Dataset(
            data,
            F.compute_features(data.ohlcv),
            F.labels(data.ohlcv),
            F.next_returns(data.ohlcv),
            window,
        )

    @property
    def first_sample(self) -> int:
        return F.bars_required(self.window) - 1

    def sequences(self, index: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
        return F.sequences(self.features, self.window, index)

    def rows(self, index: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
        rows: npt.NDArray[np.float32] = np.ascontiguousarray(self.features[index], dtype=np.float32)
        return rows

    def span(self, index: npt.NDArray[np.intp]) -> tuple[str, str]:
        # min and max, not first and last: a pooled dataset runs through its series one by one.
        times = self.data.times[index]
        return str(times.min())[:10], str(times.max())[:10]

    def forecasts(
        self, index: IndexArray, p_lstm: FloatArray, p_ensemble: FloatArray
    ) -> SpanForecasts:
        """The models' probabilities on the samples ``index`` with what followed each."""
        return SpanForecasts(
            self.data.symbol,
            p_lstm,
            p_ensemble,
            self.y[index],
            self.returns[index],
            self.data.times[index],
            self.data.times[index + 1],
        )


@dataclass(frozen=True)
class Member:
    """One series of a pooled dataset: its samples are ``offset + `` its own indices."""

    dataset: Dataset
    split: Split
    offset: int


def pool(members: Sequence[tuple[Dataset, Split]]) -> tuple[Dataset, Split, list[Member]]:
    """Several series' samples as one dataset. Features are computed per series (no window
    reaches across two series: every sample index is at least ``first_sample`` into its own
    series), then stacked; each span of the pooled split is the union of the series' spans, so
    the walk-forward discipline holds within every series."""
    placed: list[Member] = []
    offset = 0
    for ds, split in members:
        placed.append(Member(ds, split, offset))
        offset += len(ds.data)
    first = members[0][0]
    data = MarketData(
        "+".join(m.dataset.data.symbol for m in placed),
        np.concatenate([m.dataset.data.times for m in placed]),
        np.concatenate([m.dataset.data.ohlcv for m in placed]),
    )
    ds = Dataset(
        data,
        np.concatenate([m.dataset.features for m in placed]),
        np.concatenate([m.dataset.y for m in placed]),
        np.concatenate([m.dataset.returns for m in placed]),
        first.window,
    )

    def union(span: str) -> IndexArray:
        return np.concatenate([getattr(m.split, span) + m.offset for m in placed]).astype(np.intp)

    return ds, Split(union("train"), union("validation"), union("test")), placed


@dataclass
class Fitted:
    """One trained model: its ONNX bytes, what it scores, and its probabilities per span."""

    kind: str
    payload: bytes
    file: str
    feature_spec: FeatureSpec
    metrics: dict[str, float]
    info: dict[str, Any]
    #: ONNX probabilities on the validation and test spans (what serving will produce).
    p_validation: FloatArray
    p_test: FloatArray


def _metrics(prefix: str, p: FloatArray, y: FloatArray) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in score(p, y).items()}


def prepare(data: MarketData, settings: TrainSettings) -> tuple[Dataset, Split]:
    """The samples of ``data`` and their walk-forward split, with a gap of ``window + 1`` bars
    between spans so that no input window or label reaches across a boundary."""
    ds = Dataset.build(data, settings.window)
    split = walk_forward_split(
        data.times,
        first_sample=ds.first_sample,
        validation_start=settings.validation_start,
        test_start=settings.test_start,
        gap=settings.window + 1,
    )
    return ds, split


def fit_lstm(ds: Dataset, split: Split, settings: TrainSettings, progress: bool = True) -> Fitted:
    x_train, x_val, x_test = (
        ds.sequences(ix) for ix in (split.train, split.validation, split.test)
    )
    y_train, y_val, y_test = ds.y[split.train], ds.y[split.validation], ds.y[split.test]
    began = time.perf_counter()
    model, history = train_lstm(
        x_train, y_train, x_val, y_val, settings.lstm, settings.seed, progress
    )
    seconds = time.perf_counter() - began
    payload = export_lstm(model, ds.window, len(F.FEATURE_NAMES))
    sess = session(payload)
    p_val, p_test = run_lstm(sess, x_val), run_lstm(sess, x_test)
    parity = max(
        check_parity("lstm validation", predict_lstm(model, x_val), p_val),
        check_parity("lstm test", predict_lstm(model, x_test), p_test),
    )
    p_train = run_lstm(sess, x_train)
    metrics = {
        **_metrics("train", p_train, y_train),
        **_metrics("val", p_val, y_val),
        **_metrics("test", p_test, y_test),
        "onnx_parity_max_abs": parity,
        "train_seconds": seconds,
    }
    return Fitted(
        kind="lstm",
        payload=payload,
        file="model.onnx",
        feature_spec=_spec(ds, split, ds.window),
        metrics=metrics,
        info={
            "seed": settings.seed,
            "settings": asdict(settings.lstm),
            "epochs_run": len(history),
            "input": "features",
            "output": "probability_up",
        },
        p_validation=p_val,
        p_test=p_test,
    )


def fit_ensemble(ds: Dataset, split: Split, settings: TrainSettings) -> Fitted:
    x_train, x_val, x_test = (ds.rows(ix) for ix in (split.train, split.validation, split.test))
    y_train, y_val, y_test = ds.y[split.train], ds.y[split.validation], ds.y[split.test]
    began = time.perf_counter()
    model = train_ensemble(x_train, y_train, settings.ensemble, settings.seed)
    seconds = time.perf_counter() - began
    payload = export_ensemble(model, len(F.FEATURE_NAMES))
    sess = session(payload)
    p_val, p_test = run_ensemble(sess, x_val), run_ensemble(sess, x_test)
    parity = max(
        check_parity("ensemble validation", predict_ensemble(model, x_val), p_val),
        check_parity("ensemble test", predict_ensemble(model, x_test), p_test),
    )
    metrics = {
        **_metrics("train", run_ensemble(sess, x_train), y_train),
        **_metrics("val", p_val, y_val),
        **_metrics("test", p_test, y_test),
        "onnx_parity_max_abs": parity,
        "train_seconds": seconds,
    }
    return Fitted(
        kind="ensemble",
        payload=payload,
        file="model.onnx",
        feature_spec=_spec(ds, split, 1),
        metrics=metrics,
        info={
            "seed": settings.seed,
            "settings": asdict(settings.ensemble),
            "members": ["logistic", "forest", "boosting"],
            "input": "features",
            "output": "probabilities",
        },
        p_validation=p_val,
        p_test=p_test,
    )


def fit_kelly(
    ds: Dataset,
    split: Split,
    p_lstm: tuple[FloatArray, FloatArray],
    p_ensemble: tuple[FloatArray, FloatArray],
    config: Config,
    method: str,
    versions: dict[str, str],
) -> tuple[KellyComponent, Fitted]:
    """Calibrator and payoff ratio fitted on the validation span's fused probabilities (as the
    deployed ONNX models produce them); scored on the test span before and after calibration."""
    fused_val = fuse(p_lstm[0], p_ensemble[0], config.fusion).probability_up
    fused_test = fuse(p_lstm[1], p_ensemble[1], config.fusion).probability_up
    y_val, y_test = ds.y[split.validation], ds.y[split.test]
    component = fit_kelly_component(
        fused_val,
        y_val,
        ds.returns[split.validation],
        method=method,
        default_payoff=config.kelly.default_payoff_ratio,
        info={"fitted_on": list(ds.span(split.validation)), "models": versions},
    )
    calibrated_test = component.calibrate(fused_test)
    baseline = Baseline.of(ds.y[split.train], ds.returns[split.train])
    metrics = {
        **_metrics("val_uncalibrated", fused_val, y_val),
        **_metrics("val", component.calibrate(fused_val), y_val),
        **_metrics("test_uncalibrated", fused_test, y_test),
        **_metrics("test", calibrated_test, y_test),
        "payoff_ratio": component.payoff_ratio,
        # What the constant-long baseline of the signal report is sized on.
        "train_up_rate": baseline.up_rate,
        "train_long_payoff_ratio": baseline.payoff_ratio,
        # What the health monitor expects of the pair on unseen data.
        "val_agreement_rate": float(np.mean((p_lstm[0] >= 0.5) == (p_ensemble[0] >= 0.5))),
    }
    fitted = Fitted(
        kind="kelly",
        payload=component.to_json().encode(),
        file="kelly.json",
        feature_spec=FeatureSpec((), 0, 0, *ds.span(split.validation)),
        metrics=metrics,
        info={"method": method, "models": versions},
        p_validation=component.calibrate(fused_val),
        p_test=calibrated_test,
    )
    return component, fitted


def _spec(ds: Dataset, split: Split, window: int) -> FeatureSpec:
    return FeatureSpec(F.FEATURE_NAMES, window, F.bars_required(window), *ds.span(split.train))


@dataclass
class TrainReport:
    manifests: dict[str, Manifest]
    table: str
    split: dict[str, str]
    seconds: float
    #: IC and the Kelly-sized strategy beside buy-and-hold and the constant Kelly long (test span).
    signals: str = ""
    #: Spearman IC by calendar year of the test span.
    ic_years: str = ""


def publish_set(
    repository: ModelRepository,
    models: Sequence[Fitted],
    versions: Mapping[str, str],
    *,
    deploy: bool,
) -> dict[str, Manifest]:
    """Registers a set trained together, then deploys it in one transaction (deploying kind by
    kind let the server's poller load a mix that was never validated together)."""
    # The pair's one-run serving graph goes beside the LSTM, written before the set can deploy.
    graph, versions = graph_for_set(models, versions)
    manifests = {
        fitted.kind: repository.publish(
            fitted.kind,
            fitted.payload,
            file=fitted.file,
            feature_spec=fitted.feature_spec,
            metrics=fitted.metrics,
            info=fitted.info if graph is None else graph.info_for(fitted.kind, fitted.info),
            version=versions.get(fitted.kind),
        )
        for fitted in models
    }
    if graph is not None:
        graph.write(repository)
    if deploy:
        repository.deploy_set({kind: m.version for kind, m in manifests.items()})
    return manifests


def train_and_publish(
    data: MarketData | Sequence[MarketData],
    repository: ModelRepository,
    settings: TrainSettings,
    config: Config,
    *,
    deploy: bool = True,
    progress: bool = True,
) -> TrainReport:
    """Trains both models and the Kelly component and publishes them (database must be open).
    Several series are pooled (see :func:`pool`); the report's tables are on the first one's
    test span."""
    from tqdm import tqdm

    began = time.perf_counter()
    series = [data] if isinstance(data, MarketData) else list(data)
    members = [prepare(one, settings) for one in series]
    placed: list[Member] | None = None
    if len(members) > 1:
        ds, split, placed = pool(members)
    else:
        ds, split = members[0]
    steps = tqdm(total=3, desc="training", unit="model", disable=not progress, file=sys.stderr)
    steps.set_postfix_str("lstm")
    lstm = fit_lstm(ds, split, settings, progress)
    steps.update()
    steps.set_postfix_str("ensemble")
    ensemble = fit_ensemble(ds, split, settings)
    steps.update()
    steps.set_postfix_str("kelly")
    versions = {"lstm": new_version(), "ensemble": new_version()}
    _, kelly = fit_kelly(
        ds,
        split,
        (lstm.p_validation, lstm.p_test),
        (ensemble.p_validation, ensemble.p_test),
        config,
        settings.calibrator,
        versions,
    )
    steps.update()
    steps.close()
    manifests = publish_set(repository, (lstm, ensemble, kelly), versions, deploy=deploy)
    component = KellyComponent.from_json(kelly.payload.decode())
    baseline = Baseline.of(ds.y[split.train], ds.returns[split.train])
    # The first series' test samples: the head of the (pooled) test span.
    first_ds, first_split = members[0]
    m = len(first_split.test)
    test = first_ds.forecasts(first_split.test, lstm.p_test[:m], ensemble.p_test[:m])
    rows = score_rows(test, component, config, ds.y[split.train])
    if placed is None:
        spans = split.describe(first_ds.data.times)
    else:
        spans = {
            f"{mem.dataset.data.symbol} {span}": text
            for mem in placed
            for span, text in mem.split.describe(mem.dataset.data.times).items()
        }
    described = first_split.describe(first_ds.data.times)["test"]
    trained_on = "" if placed is None else f" (trained on {ds.data.symbol})"
    title = f"Out-of-sample test span {described}, {first_ds.data.symbol}{trained_on}"
    reports = signal_reports(test, component, config, baseline)
    return TrainReport(
        manifests,
        table(rows, title),
        spans,
        time.perf_counter() - began,
        signals=signal_table(
            reports,
            "Signal and Kelly-sized strategy on the same span (IC: Spearman, of P(up) - 0.5)",
        ),
        ic_years=ic_year_table(test, component, config, "IC by year (Spearman, t in brackets)"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minhos-train", description=__doc__)
    parser.add_argument("--csv", help="OHLCV CSV to train on instead of the built-in S&P 500")
    parser.add_argument("--symbol", default=None)
    parser.add_argument(
        "--pool",
        default="",
        help=f"comma-separated built-in series to train one model set on ({', '.join(SERIES)}); "
        "the first one's test span is reported",
    )
    parser.add_argument("--seed", type=int, default=TrainSettings.seed)
    parser.add_argument("--validation-start", default=TrainSettings.validation_start)
    parser.add_argument("--test-start", default=TrainSettings.test_start)
    parser.add_argument("--no-deploy", action="store_true", help="register as candidates only")
    parser.add_argument("--config", default=None, help="TOML config file")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    data: MarketData | list[MarketData]
    if args.pool:
        if args.csv:
            parser.error("--pool and --csv do not go together")
        try:
            data = load_series([name.strip() for name in args.pool.split(",") if name.strip()])
        except ValueError as exc:
            parser.error(str(exc))
    else:
        data = load_csv(args.csv, symbol=args.symbol) if args.csv else load_sp500()
    settings = TrainSettings(
        seed=args.seed, validation_start=args.validation_start, test_start=args.test_start
    )
    open_database(config.storage.database_url)
    try:
        report = train_and_publish(
            data,
            ModelRepository.from_config(config.storage),
            settings,
            config,
            deploy=not args.no_deploy,
        )
    finally:
        close_database()
    print("walk-forward split: " + json.dumps(report.split))
    print(report.table)
    print()
    print(report.signals)
    print()
    print(report.ic_years)
    for kind, manifest in report.manifests.items():
        print(f"{kind:<9} {manifest.version}  sha256 {manifest.sha256[:16]}…")
    print(f"done in {report.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
