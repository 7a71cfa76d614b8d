"""Shared fixtures: one tiny model set trained once per test session on a slice of the built-in data.

Tests that change the registry work on a copy (``repository``), so they cannot disturb each other.

Importing this module never imports the training stack (torch, scikit-learn, pandas, onnx), so the
tests marked ``serving`` also run on a Python without it (``make test-py3.13``). There the set comes
prebuilt: :data:`PREBUILT_ENV` names a directory that ``python -m tests.tiny_models DIR`` wrote on
a Python that trains (the same training as here, see :mod:`tests.tiny_models`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from export.data import MarketData, load_sp500
from server.core.config import Config, StorageConfig, load_config
from server.storage.registry import ModelRepository
from server.storage.schema import close_database, open_database

if TYPE_CHECKING:
    from export.train import Fitted, TrainReport

#: A directory holding a prebuilt tiny set (``minhos.db``, ``models/``, ``sp500.npz``): used
#: instead of training when set.
PREBUILT_ENV = "MINHOS_TEST_MODELS"
#: The tiny models' feature window (``tests.tiny_models.TINY.window``), for tests that must not
#: import the training stack.
TINY_WINDOW = 5
#: The tiny models are trained on bars up to here; later bars are "live" data for replays.
TRAIN_END = "2007-01-01"
BARS_FILE = "sp500.npz"


def save_bars(directory: Path, data: MarketData) -> None:
    np.savez(directory / BARS_FILE, symbol=data.symbol, times=data.times, ohlcv=data.ohlcv)


def load_bars(directory: Path) -> MarketData:
    with np.load(directory / BARS_FILE) as saved:
        return MarketData(str(saved["symbol"]), saved["times"], saved["ohlcv"])


def prebuilt_set() -> Path | None:
    value = os.environ.get(PREBUILT_ENV)
    if not value:
        return None
    root = Path(value)
    if not (root / "minhos.db").is_file() or not (root / BARS_FILE).is_file():
        raise pytest.UsageError(f"{PREBUILT_ENV}={value} holds no tiny model set")
    return root


@dataclass(frozen=True)
class Trained:
    root: Path
    database_url: str
    #: None for a prebuilt set: only training tests read it, and they never run on one.
    train_report: TrainReport | None

    @property
    def report(self) -> TrainReport:
        if self.train_report is None:
            raise LookupError(f"a prebuilt set ({PREBUILT_ENV}) has no training report")
        return self.train_report

    def config(self, **storage: object) -> Config:
        base = load_config(env={})
        return Config(
            server=base.server,
            storage=StorageConfig(
                database_url=self.database_url,
                model_repository=str(self.root / "models"),
                **storage,  # type: ignore[arg-type]
            ),
            fusion=base.fusion,
            kelly=base.kelly,
            monitoring=base.monitoring,
            # Schedules off: a test replaying years of bars must not start training jobs unless it
            # asks for them (tests/test_retraining.py does).
            retrain=dataclasses.replace(
                base.retrain, lstm_every_days=0.0, ensemble_every_days=0.0, kelly_every_days=0.0
            ),
        )


@pytest.fixture(scope="session")
def sp500() -> MarketData:
    prebuilt = prebuilt_set()
    return load_sp500() if prebuilt is None else load_bars(prebuilt)


@pytest.fixture(scope="session")
def trained_once(tmp_path_factory: pytest.TempPathFactory, sp500: MarketData) -> Trained:
    root = tmp_path_factory.mktemp("trained")
    prebuilt = prebuilt_set()
    report = None
    if prebuilt is None:
        from tests.tiny_models import train_tiny

        report = train_tiny(root, sp500)
    else:
        # A copy: no test can change the directory another run reads.
        shutil.copytree(prebuilt, root, dirs_exist_ok=True)
    return Trained(root, f"sqlite:///{root}/minhos.db", report)


@pytest.fixture
def trained(tmp_path: Path, trained_once: Trained) -> Iterator[Trained]:
    """A private copy of the trained repository and its database."""
    root = tmp_path / "repo"
    shutil.copytree(trained_once.root, root)
    yield Trained(root, f"sqlite:///{root}/minhos.db", trained_once.train_report)
    close_database()


def deployed_as_fitted(repository: ModelRepository) -> list[Fitted]:
    """The deployed set, as if just trained again (same bytes), ready for ``publish_set`` under
    new versions: a hot swap without training. The repository's database must be open."""
    from export.train import Fitted

    out = []
    for kind, version in repository.deployed().items():
        manifest, payload = repository.load_verified(kind, version)
        out.append(
            Fitted(
                kind=kind,
                payload=payload,
                file=manifest.file,
                feature_spec=manifest.feature_spec,
                metrics=manifest.metrics,
                info=manifest.info,
                p_validation=np.zeros(1),
                p_test=np.zeros(1),
            )
        )
    return out


def register_in(url: str, trained: Trained, root: Path) -> ModelRepository:
    """The trained set published again under its versions, deployed, in the database at ``url``
    (same files and its serving graph, under ``root``): the registry a server on that database
    reads. Leaves no database open."""
    from export.train import publish_set

    open_database(trained.database_url)
    try:
        source = ModelRepository(trained.root / "models")
        fitted, versions = deployed_as_fitted(source), source.deployed()
    finally:
        close_database()
    open_database(url)
    target = ModelRepository(root)
    try:
        publish_set(target, fitted, versions, deploy=True)
    finally:
        close_database()
    return target
