"""The serving image for real (deploy/Dockerfile, built by clients/image.py like ``make image``):
built once per module, then run the way it is deployed: as its non-root user, with a read-only
root filesystem, the model set in a mounted directory, published on 127.0.0.1 only. It must answer
health, Predict (the host's server's answer) and a stock tritonclient, and drain on ``docker
stop``. Docker is installed and started if missing; in CI (``CI`` set) these tests fail rather than
skip without it. Every container is removed at the end."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.client import MinhosClient
from clients.image import (
    IMAGES,
    Built,
    DockerUnavailable,
    build,
    ensure_base,
    ensure_docker,
)
from export.data import MarketData
from minhos.v1 import inference_pb2
from server.app import STOP_BEYOND_GRACE_S
from server.core.config import load_config
from server.core.features import window_features_batch
from server.storage.schema import PredictionRow, close_database, open_database
from tests.conftest import TINY_WINDOW, Trained, register_in
from tests.server_harness import live_index, running
from tests.test_oip import NEED, predict, probe, windows

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SERVING = IMAGES["serving"]
#: The image's writable directory: its working directory's ``var/`` (default database and model
#: repository paths are relative to it).
DATA = "/srv/minhos/var"
GRPC_PORT = 50051
METRICS_PORT = 9464
#: Bounds: start-up (imports, ONNX sessions) and ``docker stop``'s wait before SIGKILL.
READY_S = 60.0
STOP_TIMEOUT_S = 30
DRAIN_LIMIT_S = load_config(env={}).server.shutdown_grace_s + STOP_BEYOND_GRACE_S
#: Labels every one of our containers carries, to find leftovers of an interrupted run.
LABEL = "org.minhos.test=image"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def serving_image() -> Iterator[Built]:
    try:
        ensure_docker()
        ensure_base()
    except DockerUnavailable as exc:
        if in_ci():
            pytest.fail(f"CI is set and docker is unavailable: {exc}", pytrace=False)
        pytest.skip(f"docker is unavailable: {exc}")
    built = build(SERVING)
    print(f"\n{built.tag}: {built.size_mb:.0f} MB, built in {built.seconds:.1f} s")
    yield built
    for leftover in docker("ps", "--all", "--quiet", "--filter", f"label={LABEL}").split():
        docker("rm", "--force", leftover, check=False)


def user_of(tag: str) -> int:
    """The numeric uid the image runs as (its ``USER uid:gid``)."""
    user = docker("image", "inspect", "--format", "{{.Config.User}}", tag)
    return int(user.split(":")[0])


def data_dir(root: Path, trained: Trained, uid: int) -> Path:
    """The mounted directory: a SQLite database with the trained set registered and deployed, and
    its model files, owned by the image's user (the server writes its rows and WAL there)."""
    root.mkdir(parents=True)
    register_in(f"sqlite:///{root}/minhos.db", trained, root / "models")
    for path in [root, *root.rglob("*")]:
        os.chown(path, uid, uid)
    return root


@dataclass(frozen=True)
class Container:
    id: str
    target: str
    metrics: str

    def logs(self) -> str:
        done = subprocess.run(
            ["docker", "logs", self.id], capture_output=True, text=True, timeout=60
        )
        return done.stdout + done.stderr

    def state(self, field: str) -> str:
        return docker("inspect", "--format", "{{.State." + field + "}}", self.id)


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
    return int(reply.status)


@contextmanager
def serving(tag: str, data: Path, **env: str) -> Iterator[Container]:
    """The image running detached, as deployed: its own user, read-only root, ``data`` mounted at
    :data:`DATA`, gRPC and metrics published on 127.0.0.1 (free ports); removed on exit."""
    settings = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    cid = docker(
        "run",
        "--detach",
        "--pull=never",
        "--read-only",
        "--name",
        f"minhos-image-test-{uuid.uuid4().hex[:8]}",
        "--label",
        LABEL,
        "--volume",
        f"{data}:{DATA}",
        "--publish",
        f"127.0.0.1::{GRPC_PORT}",
        "--publish",
        f"127.0.0.1::{METRICS_PORT}",
        "--memory",
        "1g",
        *settings,
        tag,
    )
    try:
        published = {
            port: docker("port", cid, f"{port}/tcp").splitlines()[0]
            for port in (GRPC_PORT, METRICS_PORT)
        }
        assert all(p.startswith("127.0.0.1:") for p in published.values()), published
        box = Container(cid, published[GRPC_PORT], published[METRICS_PORT])
        began = time.monotonic()
        while True:
            assert box.state("Running") == "true", f"the container exited:\n{box.logs()}"
            try:
                if health(box.target) == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() - began < READY_S, f"not SERVING in {READY_S} s:\n{box.logs()}"
            time.sleep(0.2)
        print(f"\ncontainer SERVING {time.monotonic() - began:.1f} s after docker run")
        yield box
    finally:
        docker("rm", "--force", cid, check=False)


@pytest.fixture(scope="module")
def container(
    serving_image: Built, trained_once: Trained, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    data = data_dir(
        tmp_path_factory.mktemp("image") / "var", trained_once, user_of(serving_image.tag)
    )
    try:
        with serving(serving_image.tag, data) as box:
            yield box
    finally:
        close_database()


def test_the_serving_image_is_small_and_built_as_specified(serving_image: Built) -> None:
    tag = serving_image.tag
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", tag))
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "minhos-serving"
    assert labels["org.opencontainers.image.version"] == tag.split(":")[1]
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")
    assert config["StopSignal"] == "SIGTERM"
    assert user_of(tag) > 0 and config["User"].replace(":", "").isdigit()
    assert config["Cmd"] == ["minhos-server"]
    # No credentials in the image: they come from the environment at run time.
    names = {entry.split("=", 1)[0] for entry in config["Env"]}
    assert not {n for n in names if "TOKEN" in n or "DATABASE_URL" in n or "PASSWORD" in n}
    assert "MINHOS_SERVER_HOST=0.0.0.0" in config["Env"]
    # ONNX Runtime's telemetry (an upload, a device id on disk) is off.
    assert "ORT_DISABLE_TELEMETRY=1" in config["Env"]
    assert serving_image.tags[1].endswith(":latest")
    assert docker("image", "inspect", "--format", "{{.Id}}", serving_image.tags[1]) == docker(
        "image", "inspect", "--format", "{{.Id}}", tag
    )
    print(f"\nserving image {serving_image.size_mb:.0f} MB")
    assert serving_image.size_mb < 300


def test_the_serving_image_has_no_training_stack(serving_image: Built) -> None:
    probe_code = (
        "import importlib.util, json\n"
        "names = ['torch', 'sklearn', 'pandas', 'arch', 'onnxruntime', 'grpc', 'server.app']\n"
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in names}))\n"
    )
    run = ("run", "--rm", "--pull=never", "--network=none", "--read-only")
    found = json.loads(docker(*run, serving_image.tag, "python", "-c", probe_code))
    # The check sees what is there: the serving stack is found, the training stack is not.
    assert found == {
        "torch": False,
        "sklearn": False,
        "pandas": False,
        "arch": False,
        "onnxruntime": True,
        "grpc": True,
        "server.app": True,
    }


def test_it_runs_as_non_root_on_a_read_only_root(container: Container) -> None:
    uid = docker("exec", container.id, "id", "-u")
    assert uid.isdigit() and int(uid) != 0
    assert docker("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", container.id) == "true"
    denied = subprocess.run(
        ["docker", "exec", container.id, "touch", "/srv/minhos/written"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    # The mounted directory is where it writes (its database and model cache).
    docker("exec", container.id, "touch", f"{DATA}/written")
    docker("exec", container.id, "rm", f"{DATA}/written")


def test_health_serving_and_predict_as_the_hosts_server(
    container: Container, trained: Trained, sp500: MarketData
) -> None:
    assert health(container.target) == health_pb2.HealthCheckResponse.SERVING
    ends = [live_index(sp500) + k for k in (0, 7, 31)]
    with MinhosClient(container.target) as client:
        boxed = [predict(client, sp500, end) for end in ends]
    with running(trained.config()) as (_, host_client):
        hosted = [predict(host_client, sp500, end) for end in ends]

    def answer(reply: inference_pb2.PredictResponse) -> inference_pb2.PredictResponse:
        out = inference_pb2.PredictResponse()
        out.CopyFrom(reply)
        out.ClearField("prediction_id")
        out.ClearField("server_latency")
        return out

    for mine, theirs in zip(boxed, hosted, strict=True):
        assert mine.prediction_id and mine.lstm.version
        assert answer(mine) == answer(theirs), (mine, theirs)
    assert len({reply.probability_up for reply in boxed}) == len(ends)  # windows differ

    with urllib.request.urlopen(f"http://{container.metrics}/metrics", timeout=10) as page:
        metrics = page.read().decode()
    assert f'minhos_model_version_info{{kind="lstm",version="{boxed[0].lstm.version}"}} 1.0' in (
        metrics
    )


def test_stock_tritonclient_model_infer(
    container: Container, sp500: MarketData, tmp_path: Path
) -> None:
    end = live_index(sp500) + 12
    with MinhosClient(container.target) as client:
        typed = predict(client, sp500, end)
    bars, times = windows(sp500, [end])
    assert bars.shape == (1, NEED, 5)
    sequences = window_features_batch(bars, TINY_WINDOW).astype(np.float32)
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, bars=bars, times=times, sequences=sequences, rows=sequences[:, -1, :])
    seen = probe(
        "stock", {"target": container.target, "arrays": str(arrays), "symbol": "SPX"}, tmp_path
    )
    assert seen["live"] and seen["ready"] and all(seen["model_ready"].values())
    fused = seen["minhos"]["values"]
    assert fused["probability_up"] == [typed.probability_up]
    assert fused["confidence"] == [typed.confidence]
    assert fused["kelly_fraction"] == [typed.kelly_fraction]
    lstm = seen["lstm"]["values"]["probability_up"]
    assert lstm == pytest.approx([typed.lstm.probability_up], abs=1e-7)
    assert seen["lstm"]["model_version"] == typed.lstm.version
    assert seen["errors"]["unknown_model"][0] == "StatusCode.NOT_FOUND"


def test_docker_stop_drains_and_exits_0(
    serving_image: Built, trained: Trained, sp500: MarketData, tmp_path: Path
) -> None:
    data = data_dir(tmp_path / "var", trained, user_of(serving_image.tag))
    # Rows stay queued (no timed or size flush) until SIGTERM: draining is what saves them.
    slow_writes = {
        "MINHOS_STORAGE_BATCH_INTERVAL_S": "300",
        "MINHOS_STORAGE_BATCH_MAX_ROWS": "100000",
    }
    sent = 25
    with serving(serving_image.tag, data, **slow_writes) as box:
        with MinhosClient(box.target) as client:
            for k in range(sent):
                predict(client, sp500, live_index(sp500) + k)
        began = time.monotonic()
        docker("stop", "--time", str(STOP_TIMEOUT_S), box.id, timeout=STOP_TIMEOUT_S + 30)
        stopped_s = time.monotonic() - began
        exit_code, oom = box.state("ExitCode"), box.state("OOMKilled")
        logs = box.logs()
    print(f"\ndocker stop took {stopped_s:.1f} s (exit {exit_code})")
    assert exit_code == "0" and oom == "false", logs[-3000:]
    assert stopped_s < min(DRAIN_LIMIT_S, STOP_TIMEOUT_S), logs[-3000:]
    assert "draining" in logs and "telemetry" not in logs
    open_database(f"sqlite:///{data}/minhos.db")
    try:
        assert PredictionRow.select().count() == sent
    finally:
        close_database()
