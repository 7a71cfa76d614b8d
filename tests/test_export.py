"""Training, ONNX export and the registry: parity with the frameworks, every ensemble member
exportable, metrics beside baselines, and a tampered model refused at load."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.base import clone

from export.data import MarketData
from export.ensemble import build_ensemble
from export.onnx_export import ParityError, check_parity, export_ensemble, run_ensemble, session
from server.core import features as F
from server.storage.registry import IntegrityError, ModelRepository
from server.storage.schema import ModelVersionRow, open_database
from tests.conftest import Trained
from tests.tiny_models import TINY


def _rows(sp500: MarketData, n: int = 800) -> tuple[np.ndarray, np.ndarray]:
    feats = F.compute_features(sp500.ohlcv[:n])[F.LOOKBACK - 1 : -1].astype(np.float32)
    y = F.labels(sp500.ohlcv[:n])[F.LOOKBACK - 1 : -1].astype(np.int64)
    return feats, y


@pytest.mark.parametrize("member", ["logistic", "forest", "boosting"])
def test_every_ensemble_member_exports_with_parity(sp500: MarketData, member: str) -> None:
    """Guards the pinned dependency set: skl2onnx under protobuf 7 fails on the boosting member."""
    x, y = _rows(sp500)
    estimator = clone(dict(build_ensemble(TINY.ensemble, seed=0).estimators)[member]).fit(x, y)
    p_onnx = run_ensemble(session(export_ensemble(estimator, x.shape[1])), x)
    check_parity(member, estimator.predict_proba(x)[:, 1], p_onnx)


def test_onnx_batch_axis_is_dynamic(trained: Trained) -> None:
    open_database(trained.database_url)
    repo = ModelRepository(trained.root / "models")
    for kind, shape in (
        ("lstm", (TINY.window, len(F.FEATURE_NAMES))),
        ("ensemble", (len(F.FEATURE_NAMES),)),
    ):
        _, payload = repo.load_verified(kind, repo.deployed()[kind])
        sess = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
        for batch in (1, 3, 64):
            out = sess.run(None, {"features": np.zeros((batch, *shape), dtype=np.float32)})
            assert out[-1].shape[0] == batch


def test_parity_check_catches_a_difference() -> None:
    with pytest.raises(ParityError):
        check_parity("x", np.zeros(3), np.array([0.0, 0.0, 1e-4]))


def test_training_publishes_metrics_and_manifests(trained: Trained) -> None:
    report = trained.report
    assert set(report.manifests) == {"lstm", "ensemble", "kelly"}
    for kind in ("lstm", "ensemble"):
        metrics = report.manifests[kind].metrics
        for name in ("accuracy", "log_loss", "brier", "ece", "auc"):
            assert 0.0 <= metrics[f"test_{name}"] <= 1.0
        assert metrics["onnx_parity_max_abs"] <= 1e-5
        # A model that scores perfectly out of sample on daily direction is a leak, not a model.
        assert 0.35 < metrics["test_accuracy"] < 0.65
    spec = report.manifests["lstm"].feature_spec
    assert spec.feature_names == F.FEATURE_NAMES
    assert spec.bars_required == F.bars_required(TINY.window)
    assert spec.train_end < TINY.validation_start
    for line in ("always up", "train up-rate", "lstm", "ensemble", "average (fused)"):
        assert line in report.table
    open_database(trained.database_url)
    repo = ModelRepository(trained.root / "models")
    assert set(repo.deployed()) == {"lstm", "ensemble", "kelly"}
    row = ModelVersionRow.get(ModelVersionRow.kind == "lstm")
    assert json.loads(row.manifest)["sha256"] == row.sha256
    beside = repo.directory("lstm", row.version) / "metrics.json"
    assert json.loads(beside.read_text()) == report.manifests["lstm"].metrics


def test_tampered_model_is_refused(trained: Trained) -> None:
    open_database(trained.database_url)
    repo = ModelRepository(trained.root / "models")
    version = repo.deployed()["ensemble"]
    path = repo.directory("ensemble", version) / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="SHA-256"):
        repo.load_verified("ensemble", version)


def test_training_is_reproducible(trained: Trained, sp500: MarketData) -> None:
    """Same seed, same data -> the same model bytes' predictions."""
    from export.train import fit_ensemble, prepare

    data = sp500.slice(0, int(sp500.times.searchsorted(np.datetime64("2007-01-01"))))
    ds, split = prepare(data, TINY)
    a, b = fit_ensemble(ds, split, TINY), fit_ensemble(ds, split, TINY)
    np.testing.assert_array_equal(a.p_test, b.p_test)
    assert (
        a.metrics["test_log_loss"] == trained.report.manifests["ensemble"].metrics["test_log_loss"]
    )
