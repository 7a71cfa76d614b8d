"""The tiny model set the tests serve: its settings, its training, and writing it to a directory.

``python -m tests.tiny_models DIR`` (on a Python with the training stack) writes the set the
``trained_once`` fixture would train, with the S&P 500 bars, for runs that have no torch: point
``MINHOS_TEST_MODELS`` at DIR (see ``tests/conftest.py`` and ``make test-py3.13``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export.data import MarketData, load_sp500
from export.ensemble import EnsembleSettings
from export.lstm import LSTMSettings
from export.train import TrainReport, TrainSettings, train_and_publish
from server.core.config import load_config
from server.storage.registry import ModelRepository
from server.storage.schema import close_database, open_database
from tests.conftest import TINY_WINDOW, TRAIN_END, save_bars

TINY = TrainSettings(
    seed=3,
    window=TINY_WINDOW,
    validation_start="2005-01-01",
    test_start="2006-01-01",
    lstm=LSTMSettings(hidden=8, epochs=2, patience=2),
    ensemble=EnsembleSettings(trees=10, boosting_iterations=10),
)


def train_tiny(root: Path, sp500: MarketData) -> TrainReport:
    """Trains the tiny set on the bars before :data:`TRAIN_END` into ``root`` (``minhos.db`` and
    ``models/``). Leaves no database open."""
    open_database(f"sqlite:///{root}/minhos.db")
    try:
        end = int(sp500.times.searchsorted(np.datetime64(TRAIN_END)))
        return train_and_publish(
            sp500.slice(0, end),
            ModelRepository(root / "models"),
            TINY,
            load_config(env={}),
            progress=False,
        )
    finally:
        close_database()


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m tests.tiny_models DIR (a new or empty directory)")
    root = Path(args[0])
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise SystemExit(f"{root} is not empty")
    sp500 = load_sp500()
    train_tiny(root, sp500)
    save_bars(root, sp500)
    print(f"tiny model set written to {root}")


if __name__ == "__main__":
    main()
