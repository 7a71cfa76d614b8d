"""The serving Deployment's pod, run for real with ``podman kube play`` (no Kubernetes API can run
here). The Deployment is the base's, as ``kubectl kustomize`` renders it, with its ConfigMap,
securityContext, read-only root, emptyDirs, resources and command; only what a laptop lacks is
changed (:func:`pod_for_podman`): the image is never pulled, the gRPC port is published on
127.0.0.1, and a SQLite database with its model directory on a hostPath stands in for PostgreSQL
and the Secret. The pod must answer the gRPC health check its probes make, and Predict, as the
host's own server does on the same window; run as the manifest's non-root user on a read-only
root; and drain and exit 0 when stopped within its grace period."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.bench import free_port
from clients.client import MinhosClient
from clients.image import IMAGES, DockerUnavailable, build, ensure_base, ensure_docker
from export.data import MarketData
from tests.conftest import Trained
from tests.server_harness import live_index, running, window
from tests.test_manifests import Doc, need, render

CONTAINERS_CONF = Path("/etc/containers/containers.conf")
#: Where the pod sees the test's database and model directory (a hostPath volume).
DATA = "/data"
TOKEN = "pod-test-token"
READY_S = 90.0


def podman(*argv: str, timeout: float = 300, check: bool = True) -> str:
    done = subprocess.run(["podman", *argv], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def docker(*argv: str, timeout: float = 300) -> str:
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"docker {' '.join(argv)}: {done.stderr}"
    return done.stdout


def need_podman() -> None:
    need(
        shutil.which("podman") is not None,
        "podman is not installed (make podman installs Debian's)",
    )
    conf = CONTAINERS_CONF.read_text() if CONTAINERS_CONF.is_file() else ""
    need(
        "default_ulimits" in conf,
        f"{CONTAINERS_CONF} sets no default_ulimits: every podman run fails with"
        " 'error setting rlimit' (make podman writes it)",
    )


@pytest.fixture(scope="module")
def serving_image() -> str:
    """The serving image as `make image` builds it (docker's layer cache makes this quick when
    nothing changed), copied into podman's storage unless podman already has that very image."""
    need_podman()
    try:
        ensure_docker()
        ensure_base()
        tag = build(IMAGES["serving"]).tag
    except DockerUnavailable as exc:
        need(False, f"the serving image cannot be built: {exc}")
        raise
    wanted = docker("image", "inspect", "--format", "{{.Id}}", tag).strip().removeprefix("sha256:")
    held = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False).strip()
    if held != wanted:
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        try:
            loaded = subprocess.run(
                ["podman", "load"], stdin=save.stdout, capture_output=True, text=True, timeout=600
            )
        finally:
            assert save.stdout is not None
            save.stdout.close()
            save.wait(timeout=60)
        assert loaded.returncode == 0 and save.returncode == 0, loaded.stderr
    return tag


def pod_for_podman(docs: list[Doc], data_dir: Path, grpc_port: int) -> list[Doc]:
    """The base's serving Deployment and its ConfigMap, for one pod on this machine."""
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    deployment = copy.deepcopy(
        next(
            d
            for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"] == "minhos-serving"
        )
    )
    deployment["spec"]["replicas"] = 1
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["imagePullPolicy"] = "Never"
    for port in container["ports"]:
        if port["name"] == "grpc":
            port.update(hostPort=grpc_port, hostIP="127.0.0.1")
    # What the Secret gives in a cluster, and a database and models that need no PostgreSQL.
    secret_values = {"DATABASE_URL": f"sqlite:///{DATA}/minhos.db", "MINHOS_SERVER_TOKEN": TOKEN}
    container["env"] = [
        {"name": e["name"], "value": secret_values[e["name"]]} if "valueFrom" in e else e
        for e in container["env"]
    ] + [
        {"name": "MINHOS_STORAGE_ARTIFACTS", "value": "directory"},
        {"name": "MINHOS_STORAGE_MODEL_REPOSITORY", "value": f"{DATA}/models"},
    ]
    container["volumeMounts"].append({"name": "data", "mountPath": DATA})
    pod["volumes"].append(
        {"name": "data", "hostPath": {"path": str(data_dir), "type": "Directory"}}
    )
    return [config, deployment]


def health(target: str, service: str) -> str:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0
            )
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


@pytest.fixture
def played(
    serving_image: str, trained: Trained, tmp_path: Path
) -> Iterator[tuple[str, list[Doc], Path]]:
    """The pod, started by ``podman kube play``; torn down after the test."""
    # The pod's user (the manifest's runAsUser) writes the SQLite database and its WAL here.
    for folder, dirs, files in os.walk(trained.root):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chmod(name, os.stat(name).st_mode | 0o777)
    port = free_port()
    docs = pod_for_podman(render("base"), trained.root, port)
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    podman("kube", "play", str(manifest))
    try:
        yield f"127.0.0.1:{port}", docs, manifest
    finally:
        podman("kube", "down", str(manifest), check=False)


def container_name(docs: list[Doc]) -> str:
    deployment = docs[1]
    return f"{deployment['metadata']['name']}-pod-{deployment['spec']['template']['spec']['containers'][0]['name']}"


def test_the_serving_pod_answers_health_and_predict(
    played: tuple[str, list[Doc], Path], trained: Trained, sp500: MarketData
) -> None:
    target, docs, _ = played
    spec = docs[1]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    ctr = container_name(docs)
    # What the kubelet would ask: the readiness probe's service, on the probed port.
    probe = container["readinessProbe"]["grpc"]
    assert probe["port"] == 50051
    began = time.monotonic()
    while (status := health(target, probe.get("service", ""))) != "SERVING":
        state = podman("inspect", "--format", "{{.State.Status}}", ctr, check=False).strip()
        assert state in ("created", "configured", "running"), podman("logs", ctr, check=False)
        assert time.monotonic() - began < READY_S, f"{status} after {READY_S} s:\n" + podman(
            "logs", ctr, check=False
        )
        time.sleep(0.2)
    ready_s = time.monotonic() - began

    # The host's own server on the same files, for the answer the pod must give.
    end = live_index(sp500)
    with running(trained.config()) as (_, host):
        need_bars = host.serving_info().bars_required
        expected = host.predict("SPX", window(sp500, end, need_bars))
    with MinhosClient(target, token=TOKEN) as client:
        with pytest.raises(grpc.RpcError) as refused:
            MinhosClient(target).serving_info()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        got = client.predict("SPX", window(sp500, end, need_bars))
    for field in ("probability_up", "confidence", "agreement", "kelly_fraction"):
        assert getattr(got, field) == pytest.approx(getattr(expected, field), abs=1e-9), field
    assert got.direction == expected.direction
    assert got.kelly_version == expected.kelly_version

    # As the manifest says: its user, not root, and nothing written outside the volumes.
    inspect = json.loads(podman("inspect", ctr))[0]
    assert inspect["Config"]["User"].split(":")[0] == str(spec["securityContext"]["runAsUser"])
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    written = subprocess.run(
        ["podman", "exec", ctr, "touch", "/srv/minhos/written"], capture_output=True, timeout=60
    )
    assert written.returncode != 0 and b"Read-only file system" in written.stderr
    uid = podman("exec", ctr, "id", "-u").strip()
    assert uid == str(spec["securityContext"]["runAsUser"])

    # Stopped within the manifest's grace period, it drains and exits 0.
    grace = spec["terminationGracePeriodSeconds"]
    podman("stop", "--time", str(grace), ctr, timeout=grace + 30)
    assert podman("inspect", "--format", "{{.State.ExitCode}}", ctr).strip() == "0"
    print(f"pod ready in {ready_s:.1f} s")


def test_pod_for_podman_keeps_the_manifest_but_for_the_laptop(tmp_path: Path) -> None:
    """The adaptation touches only what it says: the rest is the base's Deployment."""
    docs = render("base")
    original = next(
        d for d in docs if d["metadata"]["name"] == "minhos-serving" and d["kind"] == "Deployment"
    )
    adapted = pod_for_podman(docs, tmp_path, 50999)[1]
    a = adapted["spec"]["template"]["spec"]
    o = original["spec"]["template"]["spec"]
    assert a["securityContext"] == o["securityContext"]
    assert a["terminationGracePeriodSeconds"] == o["terminationGracePeriodSeconds"]
    (ac,), (oc,) = a["containers"], o["containers"]
    for key in (
        "image",
        "command",
        "resources",
        "securityContext",
        "readinessProbe",
        "livenessProbe",
    ):
        assert ac.get(key) == oc.get(key), key
    assert oc["volumeMounts"] == ac["volumeMounts"][: len(oc["volumeMounts"])]
    literal = [e for e in oc["env"] if "value" in e]
    assert [e for e in ac["env"] if e in literal] == literal
