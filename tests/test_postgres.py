"""PostgreSQL by URL, with two server replicas sharing it: a throwaway cluster (Debian's
PostgreSQL, run as the ``postgres`` user; tests/postgres_cluster.py) on a loopback port, both
replicas as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from clients.bench import free_port
from clients.client import MinhosClient
from clients.throwaway_postgres import as_postgres, bin_dir
from export.data import MarketData
from server.storage.registry import ModelRepository
from server.storage.schema import (
    OutcomeRow,
    PredictionRow,
    RequestRow,
    close_database,
    open_database,
)
from tests.conftest import Trained, register_in
from tests.postgres_cluster import postgres_database
from tests.server_harness import live_index, window

# The cluster's binaries and runuser wrapper, for tests that stop and start it themselves.
BIN = bin_dir()
_as_postgres = as_postgres


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


def test_two_replicas_share_one_postgres_database(
    postgres_url: str, trained: Trained, sp500: MarketData
) -> None:
    # Register the trained models in PostgreSQL (same files, rows copied from the SQLite registry).
    open_database(trained.database_url)
    deployed = ModelRepository(trained.root / "models").deployed()
    close_database()
    repo = register_in(postgres_url, trained, trained.root / "pg-models")
    open_database(postgres_url)
    assert repo.deployed() == deployed
    close_database()

    replicas = []
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports):
        env = {
            **os.environ,
            "DATABASE_URL": postgres_url,
            "MINHOS_SERVER_PORT": str(port),
            "MINHOS_SERVER_METRICS_PORT": "0",
            "MINHOS_STORAGE_MODEL_REPOSITORY": str(trained.root / "pg-models"),
            "MINHOS_RETRAIN_ENABLED": "true" if i == 0 else "false",  # one coordinator
            "MINHOS_RETRAIN_LSTM_EVERY_DAYS": "0",
            "MINHOS_RETRAIN_ENSEMBLE_EVERY_DAYS": "0",
            "MINHOS_RETRAIN_KELLY_EVERY_DAYS": "0",
        }
        replicas.append(
            subprocess.Popen([sys.executable, "-m", "server.main"], env=env, stderr=subprocess.PIPE)
        )
    try:
        ids = []
        end = live_index(sp500)
        for i, port in enumerate(ports):
            with MinhosClient(f"127.0.0.1:{port}") as client:
                client.wait_ready(30)
                need = client.serving_info().bars_required
                for k in range(10):
                    ids.append(
                        client.predict("SPX", window(sp500, end + 10 * i + k, need)).prediction_id
                    )
        # An outcome recorded on one replica for a prediction made on the other.
        with MinhosClient(f"127.0.0.1:{ports[1]}") as client:
            time.sleep(0.5)  # the first replica's batched writer flushes every 0.2 s
            assert not client.record_outcome(ids[0], 0.01).already_recorded
        for process in replicas:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0, (
                process.stderr.read().decode()[-2000:] if process.stderr else ""
            )
    finally:
        for process in replicas:
            if process.poll() is None:
                process.kill()
    open_database(postgres_url)
    assert PredictionRow.select().where(PredictionRow.id.in_(ids)).count() == 20
    assert RequestRow.select().where(RequestRow.method == "Predict").count() == 20
    outcome = OutcomeRow.get(OutcomeRow.prediction == ids[0])
    assert outcome.realized_return == pytest.approx(0.01)
