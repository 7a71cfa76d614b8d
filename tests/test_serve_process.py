"""The server as it is deployed: ``python -m server.main`` in its own process. It becomes ready
quickly, never loads torch or scikit-learn, and drains its write queue on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.bench import free_port
from clients.client import MinhosClient
from export.data import MarketData
from server.storage.schema import PredictionRow, open_database
from tests.conftest import Trained
from tests.server_harness import live_index, window

pytestmark = pytest.mark.serving


def test_server_process_drains_on_sigterm_without_torch(
    trained: Trained, sp500: MarketData
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MINHOS_SERVER_PORT": str(port),
        "MINHOS_SERVER_METRICS_PORT": "0",
        "MINHOS_STORAGE_DATABASE_URL": trained.database_url,
        "MINHOS_STORAGE_MODEL_REPOSITORY": str(trained.root / "models"),
        # A long interval: rows are still queued when SIGTERM arrives, so draining is what saves them.
        "MINHOS_STORAGE_BATCH_INTERVAL_S": "30",
        "MINHOS_STORAGE_BATCH_MAX_ROWS": "100000",
    }
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "server.main"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() - began < 30, "server not ready within 30 s"
            time.sleep(0.05)
        ready_s = time.monotonic() - began
        with MinhosClient(f"127.0.0.1:{port}") as client:
            need = client.serving_info().bars_required
            end = live_index(sp500)
            for i in range(40):
                client.predict("SPX", window(sp500, end + i, need))
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        assert "libtorch" not in maps and "/sklearn/" not in maps and "/pandas/" not in maps
        assert "onnxruntime" in maps  # the check would see a library if it were loaded
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        channel.close()
    finally:
        if process.poll() is None:
            process.kill()
    open_database(trained.database_url)
    assert PredictionRow.select().count() == 40
    # Readiness is a bench figure (target 3 s); here only a generous bound against a hang.
    assert ready_s < 30
