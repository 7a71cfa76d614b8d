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
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
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


def pod_for_podman(docs: list[Doc], data_dir: Path, ports: dict[str, int]) -> list[Doc]:
    """The base's serving Deployment and its ConfigMap, for one pod on this machine. ``ports``:
    host port of each named container port, published on 127.0.0.1 (podman publishes a port with
    no hostPort on every interface, on its own number: none is left so)."""
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
        port.update(hostPort=ports[port["name"]], hostIP="127.0.0.1")
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


def quantity(text: str) -> float:
    """A Kubernetes quantity of the forms the manifests use (2, 500m, 512Mi, 1Gi)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def health(target: str, service: str) -> str:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0
            )
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


@dataclass(frozen=True)
class Played:
    target: str
    metrics_url: str
    #: The Deployment as played.
    deployment: Doc
    container: str

    def logs(self) -> str:
        return podman("logs", self.container, check=False)[-4000:]


@pytest.fixture
def played(serving_image: str, trained: Trained, tmp_path: Path) -> Iterator[Played]:
    """The pod, started by ``podman kube play``; torn down after the test."""
    # The pod's user (the manifest's runAsUser) writes the SQLite database and its WAL here.
    for folder, dirs, files in os.walk(trained.root):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chmod(name, os.stat(name).st_mode | 0o777)
    ports = {"grpc": free_port(), "metrics": free_port()}
    docs = pod_for_podman(render("base"), trained.root, ports)
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    out = podman("kube", "play", str(manifest))
    try:
        # "Pod:\n<id>\nContainer:\n<id>"
        lines = out.split()
        container = lines[lines.index("Container:") + 1]
        yield Played(
            f"127.0.0.1:{ports['grpc']}",
            f"http://127.0.0.1:{ports['metrics']}/metrics",
            docs[1],
            container,
        )
    finally:
        podman("kube", "down", str(manifest), check=False)


def test_the_serving_pod_answers_health_and_predict(
    played: Played, trained: Trained, sp500: MarketData
) -> None:
    spec = played.deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    # What the kubelet asks: the readiness probe's service, on the probed port (published here).
    probe = container["readinessProbe"]["grpc"]
    assert (
        probe["port"] == next(p for p in container["ports"] if p["name"] == "grpc")["containerPort"]
    )
    began = time.monotonic()
    while (status := health(played.target, probe.get("service", ""))) != "SERVING":
        state = podman("inspect", "--format", "{{.State.Status}}", played.container).strip()
        assert state in ("created", "configured", "running"), played.logs()
        assert time.monotonic() - began < READY_S, f"{status} after {READY_S} s:\n{played.logs()}"
        time.sleep(0.2)
    ready_s = time.monotonic() - began
    liveness = container["livenessProbe"]["grpc"]
    assert health(played.target, liveness.get("service", "")) == "SERVING"

    # The host's own server on the same files gives the answer the pod must give.
    end = live_index(sp500)
    with running(trained.config()) as (_, host):
        bars = window(sp500, end, host.serving_info().bars_required)
        expected = host.predict("SPX", bars)
    with MinhosClient(played.target, token=TOKEN) as client:
        got = client.predict("SPX", bars)
    with (
        MinhosClient(played.target, max_attempts=1) as anonymous,
        pytest.raises(grpc.RpcError) as refused,
    ):
        anonymous.serving_info()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for field in ("probability_up", "confidence", "agreement", "kelly_fraction"):
        assert getattr(got, field) == pytest.approx(getattr(expected, field), abs=1e-9), field
    assert (got.direction, got.kelly_version) == (expected.direction, expected.kelly_version)
    with urllib.request.urlopen(played.metrics_url, timeout=5) as reply:
        assert "minhos_" in reply.read().decode()

    # As the manifest says: its user, a read-only root, its limits.
    inspect = json.loads(podman("inspect", played.container))[0]
    user = str(spec["securityContext"]["runAsUser"])
    assert podman("exec", played.container, "id", "-u").strip() == user
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    written = subprocess.run(
        ["podman", "exec", played.container, "touch", "/srv/minhos/written"],
        capture_output=True,
        timeout=60,
    )
    assert written.returncode != 0 and b"Read-only file system" in written.stderr
    limits = container["resources"]["limits"]
    assert inspect["HostConfig"]["Memory"] == quantity(limits["memory"])
    cpus = inspect["HostConfig"]["CpuQuota"] / inspect["HostConfig"]["CpuPeriod"]
    assert cpus == quantity(limits["cpu"])

    # Stopped as the kubelet stops it (SIGTERM, then SIGKILL after the grace period, which podman
    # does not take from the manifest): it drains and exits 0 well within the grace.
    grace = spec["terminationGracePeriodSeconds"]
    stop_began = time.monotonic()
    podman("stop", "--time", str(grace), played.container, timeout=grace + 30)
    stop_s = time.monotonic() - stop_began
    assert podman("inspect", "--format", "{{.State.ExitCode}}", played.container).strip() == "0"
    assert stop_s < grace
    print(f"pod SERVING {ready_s:.1f} s after kube play; stopped in {stop_s:.1f} s")


def test_pod_for_podman_changes_only_what_the_laptop_lacks(tmp_path: Path) -> None:
    docs = render("base")
    original = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "minhos-serving"
    )
    adapted = pod_for_podman(docs, tmp_path, {"grpc": 50999, "metrics": 50998})[1]
    a, o = adapted["spec"]["template"]["spec"], original["spec"]["template"]["spec"]
    for key in ("securityContext", "terminationGracePeriodSeconds", "affinity"):
        assert a[key] == o[key], key
    (ac,), (oc,) = a["containers"], o["containers"]
    for key in ("image", "command", "resources", "securityContext", "lifecycle"):
        assert ac[key] == oc[key], key
    for key in ("readinessProbe", "livenessProbe"):
        assert ac[key] == oc[key], key
    assert ac["volumeMounts"][: len(oc["volumeMounts"])] == oc["volumeMounts"]
    literal = [e for e in oc["env"] if "value" in e]
    assert [e for e in ac["env"] if e in literal] == literal
