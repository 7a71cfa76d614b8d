"""What every server is fed: the trained models (and a scratch copy of their registry per server)
and the request bytes, serialized once so that every server gets the same bytes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from clients.client import bars_from_arrays, columns_from_arrays, raw_from_arrays
from minhos.v1 import inference_pb2

SYMBOL = "SPX"
#: The forms a Predict request can carry its window in (``PredictRequest``'s oneof-like fields).
FORMS = ("bars", "columns", "raw")


@dataclass(frozen=True)
class Models:
    repository: Path
    #: The registry database the repository was published into (never written by the bench).
    database: Path


def clean_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The environment minus any MinhOS settings of the caller's shell, plus ``settings``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MINHOS_") and k != "DATABASE_URL"
    }
    env.update(settings)
    return env


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def train_models(into: Path) -> Models:
    """The real default models (and their serving graph), trained by ``python -m export.train`` in
    its own process (torch and scikit-learn stay out of the benchmark's processes)."""
    models = Models(into / "models", into / "registry.db")
    env = clean_env(
        {
            "MINHOS_STORAGE_DATABASE_URL": f"sqlite:///{models.database}",
            "MINHOS_STORAGE_MODEL_REPOSITORY": str(models.repository),
        }
    )
    log = into / "train.log"
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "export.train"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise RuntimeError(f"training failed ({done.returncode}):\n{tail(log)}")
    return models


def scratch_database(models: Models, target: Path) -> str:
    """A consistent copy of the registry database (SQLite's backup API, WAL included)."""
    source = sqlite3.connect(models.database)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    return f"sqlite:///{target}"


def sp500_bars() -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.datetime64]
]:
    """The built-in S&P 500 series: (epoch seconds, (n, 5) OHLCV, datetime64 times)."""
    from export.data import load_sp500  # pandas stays in this (client) process only

    data = load_sp500()
    return data.times.astype(np.int64), data.ohlcv, data.times


@dataclass(frozen=True)
class Requests:
    """Serialized requests: one Predict window in each form, and one stream of bars."""

    predict: dict[str, bytes]
    stream: list[bytes]
    #: Bars in each Predict window (the deployed set's ``bars_required``).
    need: int


def requests(need: int, stream_messages: int) -> Requests:
    """The last ``need`` bars as a Predict request in each of :data:`FORMS`; the first
    ``stream_messages`` bars (0: all) as StreamRequests."""
    _, ohlcv, times = sp500_bars()
    t, x = times[-need:], ohlcv[-need:]
    windows = {
        "bars": inference_pb2.PredictRequest(symbol=SYMBOL, bars=bars_from_arrays(t, x)),
        "columns": inference_pb2.PredictRequest(symbol=SYMBOL, columns=columns_from_arrays(t, x)),
        "raw": inference_pb2.PredictRequest(symbol=SYMBOL, raw=raw_from_arrays(t, x)),
    }
    count = min(stream_messages or len(times), len(times))
    stream = [
        inference_pb2.StreamRequest(symbol=SYMBOL, bar=bar).SerializeToString()
        for bar in bars_from_arrays(times[:count], ohlcv[:count])
    ]
    return Requests({form: windows[form].SerializeToString() for form in FORMS}, stream, need)
