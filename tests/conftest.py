"""Shared fixtures: one tiny model set trained once per test session on a slice of the built-in data.

Tests that change the registry work on a copy (``repository``), so they cannot disturb each other.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from export.data import MarketData, load_sp500
from export.ensemble import EnsembleSettings
from export.lstm import LSTMSettings
from export.train import Fitted, TrainReport, TrainSettings, publish_set, train_and_publish
from server.core.config import Config, StorageConfig, load_config
from server.storage.registry import ModelRepository
from server.storage.schema import close_database, open_database

TINY = TrainSettings(
    seed=3,
    window=5,
    validation_start="2005-01-01",
    test_start="2006-01-01",
    lstm=LSTMSettings(hidden=8, epochs=2, patience=2),
    ensemble=EnsembleSettings(trees=10, boosting_iterations=10),
)
#: The tiny models are trained on bars up to here; later bars are "live" data for replays.
TRAIN_END = "2007-01-01"


@dataclass(frozen=True)
class Trained:
    root: Path
    database_url: str
    report: TrainReport

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
    return load_sp500()


@pytest.fixture(scope="session")
def trained_once(tmp_path_factory: pytest.TempPathFactory, sp500: MarketData) -> Trained:
    root = tmp_path_factory.mktemp("trained")
    url = f"sqlite:///{root}/minhos.db"
    open_database(url)
    try:
        end = int(sp500.times.searchsorted(np.datetime64(TRAIN_END)))
        report = train_and_publish(
            sp500.slice(0, end),
            ModelRepository(root / "models"),
            TINY,
            load_config(env={}),
            progress=False,
        )
    finally:
        close_database()
    return Trained(root, url, report)


@pytest.fixture
def trained(tmp_path: Path, trained_once: Trained) -> Iterator[Trained]:
    """A private copy of the trained repository and its database."""
    root = tmp_path / "repo"
    shutil.copytree(trained_once.root, root)
    yield Trained(root, f"sqlite:///{root}/minhos.db", trained_once.report)
    close_database()


def deployed_as_fitted(repository: ModelRepository) -> list[Fitted]:
    """The deployed set, as if just trained again (same bytes), ready for ``publish_set`` under
    new versions: a hot swap without training. The repository's database must be open."""
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
