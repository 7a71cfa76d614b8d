"""The serving graph of a deployed pair: bars -> features -> LSTM and ensemble, one ``session.run``.

The server may not import onnx, so it cannot compose graphs; the graph is composed here, when a
version is published, for one (LSTM, ensemble) pair, and stored beside one of them as
``serving.onnx`` with its SHA-256 and the pair it was built for in that version's manifest
(``info["serving_graph"]``). A set trained together carries it beside the LSTM; a retraining job
builds it for its challenger and the deployed counterpart. The server runs it only when the deployed
pair is exactly the pair it names and every hash matches; otherwise (a rollback, a version published
before this existed) it runs today's parts, numpy features and two sessions. The graph is a cache
of the pair: it holds no decision of its own, and a parity check against the parts is the condition
of writing it.

  input   "bars"        float64 (batch, bars_required(window), 5)
  outputs "p_lstm"      float64 (batch,)   the LSTM's P(up), as its own session gives it
          "p_ensemble"  float64 (batch,)   the ensemble's P(up), column 1 of its probabilities
          "bar_check"   float64 (batch,)   >= 0 when the window's bars pass server/core/bars.py's
                                           rule (export/feature_graph.py)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, compose, helper, version_converter

from export.feature_graph import (
    BAR_CHECK,
    BARS,
    FEATURES,
    FeatureGraphError,
    check_bar_rule,
    check_feature_parity,
    export_feature_graph,
    planted_defects,
    random_bars,
)
from server.core.features import FEATURE_NAMES, bars_required, window_features_batch
from server.core.manifest import FeatureSpec
from server.storage.registry import ModelRepository, RegistryError, new_version, sha256_bytes

log = logging.getLogger("minhos.export")
FloatArray = npt.NDArray[np.float64]

#: The names server/serving/models.py reads (it cannot import this module; a test ties them).
FILE = "serving.onnx"
INFO_KEY = "serving_graph"
P_LSTM = "p_lstm"
P_ENSEMBLE = "p_ensemble"
#: What export/onnx_export.py names the models' inputs and outputs.
MODEL_INPUT = "features"
LSTM_OUTPUT = "probability_up"
ENSEMBLE_OUTPUT = "probabilities"
#: Largest |graph - parts| accepted at build time on random bars.
PARITY_TOLERANCE = 1e-6
PARITY_WINDOWS = 256

_DEFAULT_DOMAINS = ("", "ai.onnx")


class Published(Protocol):
    """A model about to be published (export.train.Fitted)."""

    @property
    def kind(self) -> str: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def feature_spec(self) -> FeatureSpec: ...


@dataclass(frozen=True)
class ServingGraph:
    """A composed graph, the pair it was built for, and the version directory it goes in."""

    payload: bytes
    lstm: str
    ensemble: str
    lstm_sha256: str
    ensemble_sha256: str
    #: The kind whose version directory and manifest carry it.
    beside: str

    @property
    def version(self) -> str:
        return self.lstm if self.beside == "lstm" else self.ensemble

    def entry(self) -> dict[str, Any]:
        """The manifest entry (``info["serving_graph"]``) the server checks before using it."""
        return {
            "file": FILE,
            "sha256": sha256_bytes(self.payload),
            "lstm": self.lstm,
            "ensemble": self.ensemble,
            "lstm_sha256": self.lstm_sha256,
            "ensemble_sha256": self.ensemble_sha256,
        }

    def info_for(self, kind: str, info: Mapping[str, Any]) -> dict[str, Any]:
        """``info`` of a version of ``kind`` published with this graph: the entry beside its
        version, no (copied, stale) entry on the others."""
        out = {k: v for k, v in info.items() if k != INFO_KEY}
        if kind == self.beside:
            out[INFO_KEY] = self.entry()
        return out

    def write(self, repository: ModelRepository) -> None:
        """Adds the file to its (published, not yet deployed) version, whole or not at all, checked
        against the entry registered with it: the server falls back to the parts when it is
        missing."""
        repository.write_file(self.beside, self.version, FILE, self.payload)


def _at_opset(model: onnx.ModelProto, opset: int, ir_version: int) -> onnx.ModelProto:
    if any(o.domain in _DEFAULT_DOMAINS and o.version != opset for o in model.opset_import):
        model = version_converter.convert_version(model, opset)
    model.ir_version = ir_version
    return model


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
    name: str,
    opset: int,
    ir_version: int,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version
    )


def _between(window: int, n_features: int, opset: int, ir_version: int) -> onnx.ModelProto:
    """float64 features -> the LSTM's float32 sequences and the ensemble's last rows."""
    return _model(
        [
            helper.make_node("Cast", ["features64"], ["sequences"], to=TensorProto.FLOAT),
            helper.make_node("Gather", ["sequences", "last_row"], ["rows"], axis=1),
        ],
        [
            helper.make_tensor_value_info(
                "features64", TensorProto.DOUBLE, ["batch", window, n_features]
            )
        ],
        [
            helper.make_tensor_value_info(
                "sequences", TensorProto.FLOAT, ["batch", window, n_features]
            ),
            helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", n_features]),
        ],
        [helper.make_tensor("last_row", TensorProto.INT64, [], [window - 1])],
        "between",
        opset,
        ir_version,
    )


def _after(opset: int, ir_version: int) -> onnx.ModelProto:
    """The models' float32 outputs -> float64 P(up) of each, as the server reads them."""
    return _model(
        [
            helper.make_node("Cast", ["lstm_up"], [P_LSTM], to=TensorProto.DOUBLE),
            helper.make_node("Gather", ["ensemble_both", "up_column"], ["ensemble_up"], axis=1),
            helper.make_node("Cast", ["ensemble_up"], [P_ENSEMBLE], to=TensorProto.DOUBLE),
        ],
        [
            helper.make_tensor_value_info("lstm_up", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("ensemble_both", TensorProto.FLOAT, ["batch", 2]),
        ],
        [
            helper.make_tensor_value_info(P_LSTM, TensorProto.DOUBLE, ["batch"]),
            helper.make_tensor_value_info(P_ENSEMBLE, TensorProto.DOUBLE, ["batch"]),
        ],
        [helper.make_tensor("up_column", TensorProto.INT64, [], [1])],
        "after",
        opset,
        ir_version,
    )


def compose_serving_graph(lstm: bytes, ensemble: bytes, window: int) -> bytes:
    """One graph of the feature graph, the LSTM and the ensemble (the models' bytes as the registry
    stores them). Every part is brought to the highest default-domain opset among them."""
    parts = {
        "features": onnx.load_from_string(export_feature_graph(window)),
        "lstm": onnx.load_from_string(lstm),
        "ensemble": onnx.load_from_string(ensemble),
    }
    opset = max(
        o.version for m in parts.values() for o in m.opset_import if o.domain in _DEFAULT_DOMAINS
    )
    ir_version = max(m.ir_version for m in parts.values())
    parts = {k: _at_opset(m, opset, ir_version) for k, m in parts.items()}
    # Inner names of each part under its own prefix, so that no two parts can share one.
    parts["features"] = compose.add_prefix(
        parts["features"], "features/", rename_inputs=False, rename_outputs=False
    )
    n_features = len(FEATURE_NAMES)
    graph = compose.merge_models(
        parts["features"],
        _between(window, n_features, opset, ir_version),
        io_map=[(FEATURES, "features64")],
    )
    graph = compose.merge_models(
        graph, parts["lstm"], io_map=[("sequences", MODEL_INPUT)], prefix2="lstm/"
    )
    # The ensemble's other domains (ai.onnx.ml) join the opset imports before the merge checks them.
    for entry in parts["ensemble"].opset_import:
        if entry.domain not in {o.domain for o in graph.opset_import}:
            graph.opset_import.append(entry)
    graph = compose.merge_models(
        graph,
        parts["ensemble"],
        io_map=[("rows", MODEL_INPUT)],
        prefix2="ensemble/",
        outputs=[f"lstm/{LSTM_OUTPUT}", f"ensemble/{ENSEMBLE_OUTPUT}", BAR_CHECK],
    )
    graph = compose.merge_models(
        graph,
        _after(opset, ir_version),
        io_map=[
            (f"lstm/{LSTM_OUTPUT}", "lstm_up"),
            (f"ensemble/{ENSEMBLE_OUTPUT}", "ensemble_both"),
        ],
    )
    unique = {(o.domain, o.version): o for o in graph.opset_import}
    del graph.opset_import[:]
    graph.opset_import.extend(unique.values())
    onnx.checker.check_model(graph)
    return bytes(graph.SerializeToString())


def _session(payload: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


def run_parts(
    lstm: ort.InferenceSession, ensemble: ort.InferenceSession, windows: FloatArray, window: int
) -> tuple[FloatArray, FloatArray]:
    """(p_lstm, p_ensemble) as the server computes them without the graph."""
    sequences = window_features_batch(windows, window).astype(np.float32)
    p_lstm = np.asarray(lstm.run([LSTM_OUTPUT], {MODEL_INPUT: sequences})[0], np.float64)
    rows = np.ascontiguousarray(sequences[:, -1, :])
    p_ens = np.asarray(ensemble.run([ENSEMBLE_OUTPUT], {MODEL_INPUT: rows})[0], np.float64)
    return p_lstm.reshape(-1), p_ens[:, 1]


def check_serving_parity(
    payload: bytes, lstm: bytes, ensemble: bytes, window: int, windows: FloatArray
) -> float:
    """Max |graph - parts| of both probabilities on ``windows``; raises above tolerance."""
    graph = _session(payload)
    p_lstm, p_ens = graph.run([P_LSTM, P_ENSEMBLE], {BARS: windows})
    e_lstm, e_ens = run_parts(_session(lstm), _session(ensemble), windows, window)
    diff = max(float(np.max(np.abs(p_lstm - e_lstm))), float(np.max(np.abs(p_ens - e_ens))))
    if not diff <= PARITY_TOLERANCE:
        raise FeatureGraphError(
            f"serving graph differs from the parts by {diff:.2e} > {PARITY_TOLERANCE:.0e}"
        )
    return diff


def build_serving_graph(lstm: bytes, ensemble: bytes, window: int, *, seed: int = 0) -> bytes:
    """The composed graph, checked: its features against server/core/features.py and its outputs
    against the two sessions, on random bars with the reference's edge cases, and its bar check
    against server/core/bars.py on bars with planted defects."""
    windows = random_bars(np.random.default_rng(seed), PARITY_WINDOWS, bars_required(window))
    features = _session(export_feature_graph(window))
    check_feature_parity(lambda b: features.run([FEATURES], {BARS: b})[0], windows, window)
    payload = compose_serving_graph(lstm, ensemble, window)
    check_serving_parity(payload, lstm, ensemble, window, windows)
    graph = _session(payload)
    defective = planted_defects(np.random.default_rng(seed), PARITY_WINDOWS, windows.shape[1])
    check_bar_rule(lambda b: graph.run([BAR_CHECK], {BARS: b})[0], defective)
    return payload


def graph_for_pair(
    lstm: tuple[str, bytes],
    ensemble: tuple[str, bytes],
    lstm_spec: FeatureSpec,
    ensemble_spec: FeatureSpec,
    beside: str,
) -> ServingGraph | None:
    """The serving graph of (version, bytes) of each model, or None (logged) when the pair does
    not share one feature set or the graph fails to build or to match the parts: the server then
    runs the parts, which is slower and otherwise the same."""
    if lstm_spec.feature_names != FEATURE_NAMES or ensemble_spec.feature_names != FEATURE_NAMES:
        log.warning("no serving graph: the pair reads other features than the feature graph")
        return None
    try:
        payload = build_serving_graph(lstm[1], ensemble[1], lstm_spec.window)
    except Exception as exc:  # torch, onnx and onnxruntime raise their own types; none is fatal
        log.warning("no serving graph for lstm %s + ensemble %s: %s", lstm[0], ensemble[0], exc)
        return None
    return ServingGraph(
        payload,
        lstm[0],
        ensemble[0],
        sha256_bytes(lstm[1]),
        sha256_bytes(ensemble[1]),
        beside,
    )


def graph_for_set(
    models: Sequence[Published], versions: Mapping[str, str]
) -> tuple[ServingGraph | None, dict[str, str]]:
    """The graph of a set published together (beside its LSTM), and the versions to publish it
    under (any missing LSTM or ensemble version drawn now, since the graph names them)."""
    by_kind = {m.kind: m for m in models}
    chosen = dict(versions)
    if "lstm" not in by_kind or "ensemble" not in by_kind:
        return None, chosen
    for kind in ("lstm", "ensemble"):
        chosen[kind] = chosen.get(kind) or new_version()
    lstm, ensemble = by_kind["lstm"], by_kind["ensemble"]
    graph = graph_for_pair(
        (chosen["lstm"], lstm.payload),
        (chosen["ensemble"], ensemble.payload),
        lstm.feature_spec,
        ensemble.feature_spec,
        beside="lstm",
    )
    return graph, chosen


def graph_for_challenger(
    repository: ModelRepository, kind: str, version: str, payload: bytes, spec: FeatureSpec
) -> ServingGraph | None:
    """The graph of a retrained ``kind`` (to be published as ``version``) with the deployed
    counterpart, beside the challenger; None when there is no counterpart to pair it with."""
    other = {"lstm": "ensemble", "ensemble": "lstm"}.get(kind)
    if other is None:
        return None
    deployed = repository.deployed().get(other)
    if deployed is None:
        return None
    try:
        other_manifest, other_payload = repository.load_verified(other, deployed)
    except (RegistryError, OSError) as exc:
        log.warning("no serving graph: deployed %s %s cannot be loaded: %s", other, deployed, exc)
        return None
    mine = (version, payload)
    theirs = (deployed, other_payload)
    if kind == "lstm":
        return graph_for_pair(mine, theirs, spec, other_manifest.feature_spec, beside=kind)
    return graph_for_pair(theirs, mine, other_manifest.feature_spec, spec, beside=kind)
