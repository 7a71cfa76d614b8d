"""The retraining worker: ``python -m export.retrain_worker JOB_ID``, one process per job.

Started by a job runner (server/retraining/worker.py) with its configuration in the environment,
after the runner claimed the job. It builds the data window (built-in history or a CSV, extended by the bars the server
stored, nothing after the job's market time), retrains the job's kind with the first training's
walk-forward discipline counted from the end (the last ``holdout_bars`` labelled bars are never
trained on), publishes the challenger as a candidate, and runs the gate: champion and challenger
scored on that same held-out span, the challenger reloaded through the registry (SHA-256) and
checked for parity. It then deploys (the champion becomes a backup; the server's poller swaps by
itself) or rejects with the reason. Every step is written to the job row. This module imports torch
and scikit-learn: it must never be imported by the serving process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from export.data import MarketData, load_csv, load_sp500
from export.ensemble import EnsembleSettings
from export.lstm import LSTMSettings
from export.onnx_export import ParityError, check_parity, run_ensemble, run_lstm, session
from export.serving_graph import graph_for_challenger
from export.split import Split, trailing_split
from export.train import Dataset, Fitted, TrainSettings, fit_ensemble, fit_kelly, fit_lstm
from server.core.bars import validate_ohlcv
from server.core.calibrator import KellyComponent, fit_kelly_component
from server.core.config import Config, load_config
from server.core.fusion import fuse
from server.core.scoring import Scores, gate_decision, score
from server.core.signal_report import kelly_positions, signal_report
from server.storage import jobs, queries
from server.storage.registry import IntegrityError, ModelRepository, RegistryError, new_version
from server.storage.schema import (
    close_database,
    open_database,
    utcnow,
    write_transaction,
)

FloatArray = npt.NDArray[np.float64]
#: LSTM window used when no LSTM is deployed to read it from.
DEFAULT_WINDOW = TrainSettings.window


# -- data window ---------------------------------------------------------------------------------


def merge_bars(
    history: MarketData,
    stored_times: npt.NDArray[np.datetime64],
    stored_ohlcv: FloatArray,
    cutoff: dt.datetime | None,
) -> MarketData:
    """History and stored bars merged by time (a stored bar replaces a history bar of the same
    time: it is what the server saw), without any bar after ``cutoff``."""
    times = np.concatenate([stored_times.astype("datetime64[s]"), history.times])
    ohlcv = np.concatenate([stored_ohlcv.reshape(-1, 5), history.ohlcv])
    # np.unique keeps the first occurrence: the stored bar, which comes first.
    unique_times, first = np.unique(times, return_index=True)
    merged_ohlcv = ohlcv[first]
    if cutoff is not None:
        keep = unique_times <= np.datetime64(cutoff, "s")
        unique_times, merged_ohlcv = unique_times[keep], merged_ohlcv[keep]
    validate_ohlcv(merged_ohlcv, unique_times)
    return MarketData(history.symbol, unique_times, merged_ohlcv)


def load_window(config: Config, cutoff: dt.datetime | None) -> tuple[MarketData, int]:
    """The job's data window and how many of its bars came from the server's store."""
    retrain = config.retrain
    history = load_csv(retrain.history_csv) if retrain.history_csv else load_sp500()
    symbol = retrain.symbol or history.symbol
    stored_times, stored = queries.stored_bars(symbol, cutoff)
    return merge_bars(history, stored_times, stored, cutoff), len(stored)


def settings_of(config: Config, window: int) -> TrainSettings:
    r = config.retrain
    return TrainSettings(
        seed=r.seed,
        window=window,
        calibrator=r.calibrator,
        lstm=LSTMSettings(hidden=r.lstm_hidden, epochs=r.lstm_epochs, patience=r.lstm_patience),
        ensemble=EnsembleSettings(
            trees=r.ensemble_trees, boosting_iterations=r.ensemble_boosting_iterations
        ),
    )


def deployed_window(repository: ModelRepository) -> int:
    version = repository.deployed().get("lstm")
    if version is None:
        return DEFAULT_WINDOW
    return repository.read_manifest("lstm", version).feature_spec.window


# -- held-out span and gate ----------------------------------------------------------------------


@dataclass(frozen=True)
class Holdout:
    """What a version of ``kind`` is scored on: the held-out span's inputs and labels. For the
    Kelly component the inputs are the deployed models' probabilities (it calibrates their fusion)."""

    kind: str
    y: FloatArray
    x: npt.NDArray[np.float32] = field(default_factory=lambda: np.empty((0,), np.float32))
    p_lstm: FloatArray = field(default_factory=lambda: np.empty(0))
    p_ensemble: FloatArray = field(default_factory=lambda: np.empty(0))
    span: tuple[str, str] = ("", "")
    #: Next-bar returns of the span, for the signal figures (none: no figures).
    returns: FloatArray = field(default_factory=lambda: np.empty(0))


def version_probabilities(
    repository: ModelRepository, kind: str, version: str, holdout: Holdout, config: Config
) -> FloatArray:
    """P(up) of a registered version on the held-out span, loaded through the SHA-256 check and run
    as serving runs it (onnxruntime; the Kelly component's calibration of the fused probability)."""
    _, payload = repository.load_verified(kind, version)
    if kind == "lstm":
        return run_lstm(session(payload), holdout.x)
    if kind == "ensemble":
        return run_ensemble(session(payload), holdout.x)
    component = KellyComponent.from_json(payload.decode())
    return component.calibrate(
        fuse(holdout.p_lstm, holdout.p_ensemble, config.fusion).probability_up
    )


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    metrics: list[dict[str, float | str]]


def _metric_rows(champion: Scores | None, challenger: Scores) -> list[dict[str, float | str]]:
    rows: list[dict[str, float | str]] = []
    for name in ("log_loss", "brier", "accuracy", "n"):
        value = float(getattr(challenger, name))
        rows.append(
            {
                "name": name,
                "champion": float(getattr(champion, name)) if champion else float("nan"),
                "challenger": value,
            }
        )
    return rows


def gate(
    repository: ModelRepository,
    kind: str,
    champion: str | None,
    challenger: str,
    holdout: Holdout,
    expected: FloatArray,
    config: Config,
) -> GateResult:
    """Champion against challenger on the same held-out span. The challenger is reloaded from the
    registry: a file that fails its SHA-256 check, or that no longer computes what training
    computed (parity), is refused whatever its scores."""
    try:
        p_challenger = version_probabilities(repository, kind, challenger, holdout, config)
    except IntegrityError as exc:
        return GateResult(False, f"SHA-256 check failed: {exc}", [])
    except (RegistryError, OSError, ValueError) as exc:
        return GateResult(False, f"challenger cannot be loaded: {exc}", [])
    try:
        check_parity(f"{kind} challenger reloaded", expected, p_challenger)
    except ParityError as exc:
        return GateResult(False, f"parity check failed: {exc}", [])
    challenger_scores = score(p_challenger, holdout.y)
    champion_scores: Scores | None = None
    p_champion: FloatArray | None = None
    if champion is not None:
        try:
            p_champion = version_probabilities(repository, kind, champion, holdout, config)
        except (RegistryError, OSError, ValueError) as exc:
            return GateResult(False, f"champion {champion} cannot be scored: {exc}", [])
        champion_scores = score(p_champion, holdout.y)
    passed, reason = gate_decision(
        champion_scores,
        challenger_scores,
        config.retrain.min_log_loss_improvement,
        config.retrain.min_brier_improvement,
    )
    rows = _metric_rows(champion_scores, challenger_scores)
    if len(holdout.returns) == len(holdout.y):
        rows += _signal_rows(kind, p_champion, p_challenger, holdout, config)
    return GateResult(passed, reason, rows)


#: Signal figures reported beside the gate's scores (information only: the gate decides on the
#: proper scores).
SIGNAL_ROWS = ("ic_spearman", "ic_spearman_t", "sharpe", "total_return", "max_drawdown")


def _signal_rows(
    kind: str,
    champion: FloatArray | None,
    challenger: FloatArray,
    holdout: Holdout,
    config: Config,
) -> list[dict[str, float | str]]:
    """IC and the Kelly-sized strategy of champion and challenger on the held-out span, both sized
    by the same rule (the configured default payoff ratio; for the Kelly component, on the fused
    direction as serving does), so the figures compare the signals."""
    direction = (
        fuse(holdout.p_lstm, holdout.p_ensemble, config.fusion).direction
        if kind == "kelly"
        else None
    )

    def figures(p: FloatArray) -> dict[str, float]:
        b = config.kelly.default_payoff_ratio
        positions = kelly_positions(p, b, config.kelly, direction)
        return signal_report(kind, p, holdout.returns, positions).figures()

    new = figures(challenger)
    old = figures(champion) if champion is not None else None
    return [
        {"name": name, "champion": old[name] if old else float("nan"), "challenger": new[name]}
        for name in SIGNAL_ROWS
    ]


# -- fitting -------------------------------------------------------------------------------------


def _deployed_probabilities(
    repository: ModelRepository, ds: Dataset, spans: Sequence[npt.NDArray[np.intp]]
) -> tuple[list[tuple[FloatArray, FloatArray]], dict[str, str]]:
    """(LSTM, ensemble) probabilities of the deployed pair on each span, from one load of one
    pair of versions."""
    deployed = repository.deployed()
    versions: dict[str, str] = {k: deployed[k] for k in ("lstm", "ensemble") if k in deployed}
    if len(versions) < 2:
        raise RuntimeError("the Kelly component needs a deployed LSTM and ensemble")
    _, lstm = repository.load_verified("lstm", versions["lstm"])
    _, ensemble = repository.load_verified("ensemble", versions["ensemble"])
    lstm_session, ensemble_session = session(lstm), session(ensemble)
    probabilities = [
        (run_lstm(lstm_session, ds.sequences(ix)), run_ensemble(ensemble_session, ds.rows(ix)))
        for ix in spans
    ]
    return probabilities, versions


def fit_kelly_job(
    ds: Dataset,
    split: Split,
    repository: ModelRepository,
    config: Config,
    cutoff: dt.datetime | None,
) -> tuple[Fitted, Holdout, str]:
    """The Kelly component on resolved outcomes if there are enough, else on the deployed models'
    fused validation probabilities; scored on the held-out span either way."""
    [(p_lv, p_ev), (p_lt, p_et)], versions = _deployed_probabilities(
        repository, ds, (split.validation, split.test)
    )
    y_test = ds.y[split.test]
    holdout = Holdout(
        "kelly",
        y_test,
        p_lstm=p_lt,
        p_ensemble=p_et,
        span=ds.span(split.test),
        returns=ds.returns[split.test],
    )
    method = config.retrain.calibrator
    _, fitted = fit_kelly(ds, split, (p_lv, p_lt), (p_ev, p_et), config, method, versions)
    held_out_from = ds.data.times[split.test[0]].astype("datetime64[s]").astype(dt.datetime)
    p_out, r_out = queries.served_outcomes(ds.data.symbol, held_out_from, cutoff)
    source = f"fused validation probabilities ({len(split.validation)} bars)"
    if len(p_out) >= config.retrain.kelly_min_outcomes:
        component = fit_kelly_component(
            p_out,
            (r_out > 0).astype(np.float64),
            r_out,
            method=method,
            default_payoff=config.kelly.default_payoff_ratio,
            info={"fitted_on": "resolved outcomes", "outcomes": len(p_out), "models": versions},
        )
        fused_test = fuse(p_lt, p_et, config.fusion).probability_up
        calibrated = component.calibrate(fused_test)
        metrics = {k: v for k, v in fitted.metrics.items() if not k.startswith("test_")}
        metrics.update({f"test_{k}": v for k, v in score(calibrated, y_test).as_dict().items()})
        metrics.update(
            {f"test_uncalibrated_{k}": v for k, v in score(fused_test, y_test).as_dict().items()}
        )
        metrics["payoff_ratio"] = component.payoff_ratio
        fitted = Fitted(
            kind="kelly",
            payload=component.to_json().encode(),
            file="kelly.json",
            feature_spec=fitted.feature_spec,
            metrics=metrics,
            info={**fitted.info, "fitted_on": "resolved outcomes"},
            p_validation=fitted.p_validation,
            p_test=calibrated,
        )
        source = f"{len(p_out)} resolved outcomes"
    return fitted, holdout, source


# -- the job -------------------------------------------------------------------------------------


def run_job(job_id: str, config: Config, repository: ModelRepository) -> str:
    """Runs one queued (or just started) job to a final state, which it returns."""
    job = queries.job(job_id)
    if job is None:
        raise SystemExit(f"no job {job_id!r}")
    kind = str(job.kind)
    champion = repository.deployed().get(kind)
    jobs.transition(
        job_id,
        "running",
        utcnow(),
        message=f"worker {os.getpid()} training {kind}",
        fields={"champion_version": champion or ""},
    )

    def note(text: str) -> None:
        jobs.append_log(job_id, text, utcnow())

    began = time.perf_counter()
    cutoff: dt.datetime | None = job.market_time
    data, stored = load_window(config, cutoff)
    note(
        f"data window: {len(data)} bars {str(data.times[0])[:10]} .. {str(data.times[-1])[:10]}, "
        f"{stored} of them stored by the server"
    )
    window = deployed_window(repository)
    settings = settings_of(config, window)
    ds = Dataset.build(data, window)
    split = trailing_split(
        len(data),
        first_sample=ds.first_sample,
        validation_bars=config.retrain.validation_bars,
        test_bars=config.retrain.holdout_bars,
        gap=window + 1,
    )
    spans = split.describe(data.times)
    note(
        f"split: train {spans['train']}; validation {spans['validation']}; held out {spans['test']}"
    )
    try:
        if kind == "lstm":
            fitted = fit_lstm(ds, split, settings, progress=False)
            holdout = Holdout(
                kind,
                ds.y[split.test],
                x=ds.sequences(split.test),
                span=ds.span(split.test),
                returns=ds.returns[split.test],
            )
        elif kind == "ensemble":
            fitted = fit_ensemble(ds, split, settings)
            holdout = Holdout(
                kind,
                ds.y[split.test],
                x=ds.rows(split.test),
                span=ds.span(split.test),
                returns=ds.returns[split.test],
            )
        else:
            fitted, holdout, source = fit_kelly_job(ds, split, repository, config, cutoff)
            note(f"Kelly component fitted on {source}")
    except ParityError as exc:
        jobs.transition(job_id, "rejected", utcnow(), reason=f"parity check failed: {exc}")
        return "rejected"
    seconds = time.perf_counter() - began
    version = new_version()
    # The one-run serving graph of the challenger with the deployed counterpart, beside it.
    graph = graph_for_challenger(repository, kind, version, fitted.payload, fitted.feature_spec)
    info = {**fitted.info, "job": job_id, "held_out": list(holdout.span)}
    manifest = repository.publish(
        kind,
        fitted.payload,
        file=fitted.file,
        feature_spec=fitted.feature_spec,
        metrics={**fitted.metrics, "retrain_seconds": seconds},
        info=info if graph is None else graph.info_for(kind, info),
        version=version,
    )
    if graph is not None:
        graph.write(repository)
    challenger = manifest.version
    jobs.transition(
        job_id,
        "validating",
        utcnow(),
        message=f"trained challenger {challenger} in {seconds:.1f} s; gate on {holdout.span[0]} .. "
        f"{holdout.span[1]}",
        fields={"challenger_version": challenger},
    )
    return conclude(job_id, repository, kind, champion, challenger, holdout, fitted.p_test, config)


def conclude(
    job_id: str,
    repository: ModelRepository,
    kind: str,
    champion: str | None,
    challenger: str,
    holdout: Holdout,
    expected: FloatArray,
    config: Config,
) -> str:
    """The gate, then deploy (champion kept as a backup, expired backups pruned) or reject."""
    result = gate(repository, kind, champion, challenger, holdout, expected, config)
    jobs.set_gate_metrics(job_id, result.metrics)
    signal = {str(m["name"]): m for m in result.metrics if m["name"] in SIGNAL_ROWS}
    if signal:
        jobs.append_log(
            job_id,
            "signal on the held-out span (champion -> challenger): "
            + ", ".join(
                f"{k} {v['champion']:.4f} -> {v['challenger']:.4f}" for k, v in signal.items()
            ),
            utcnow(),
        )
    now = utcnow()
    if not result.passed:
        repository.set_stage(kind, challenger, "rejected")
        jobs.transition(job_id, "rejected", now, reason=result.reason)
        return "rejected"
    with write_transaction():
        # Deploy only if the job is still ours to finish (the coordinator may have failed it).
        if not jobs.transition(job_id, "deployed", now, message=f"deployed: {result.reason}"):
            repository.set_stage(kind, challenger, "rejected")
            found = queries.job(job_id)
            return found.state if found is not None else "failed"
        repository.deploy(kind, challenger)
    cutoff = now - dt.timedelta(days=config.storage.backup_retention_days)
    pruned = repository.prune_backups(cutoff)
    if pruned:
        jobs.append_log(job_id, f"pruned expired backups: {', '.join(pruned)}", utcnow())
    return "deployed"


def exit_with_parent(parent: int) -> None:
    """Ends this process when ``parent`` (its job runner) is gone, however it ended: a job whose
    runner was killed must not train on, let alone deploy, after its job was failed as lost."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parent = 0
    if len(args) == 3 and args[1] == "--parent" and args[2].isdigit():
        parent = int(args[2])
    elif len(args) != 1:
        print("usage: python -m export.retrain_worker JOB_ID [--parent PID]", file=sys.stderr)
        return 2
    job_id = args[0]
    if parent:
        exit_with_parent(parent)
    config = load_config()
    # Training yields the CPU to serving: lower priority, and no more threads than configured.
    with contextlib.suppress(OSError):
        os.nice(10)
    import torch

    torch.set_num_threads(max(config.retrain.worker_threads, 1))
    open_database(config.storage.database_url)
    try:
        state = run_job(job_id, config, ModelRepository.from_config(config.storage))
        print(f"job {job_id}: {state}", flush=True)
        return 0
    except Exception as exc:
        traceback.print_exc()
        jobs.transition(job_id, "failed", utcnow(), reason=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        close_database()


if __name__ == "__main__":
    raise SystemExit(main())
