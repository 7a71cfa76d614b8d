"""ONNX export of both models, with a parity check against the framework they were trained in.

Input and output names are part of the contract with the server (server/serving/models.py):
  LSTM:      "features" float32 (batch, window, F)  ->  "probability_up" float32 (batch,)
  ensemble:  "features" float32 (batch, F)          ->  "probabilities"  float32 (batch, 2)
Both have a dynamic batch axis.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch

from export.lstm import DirectionLSTM

INPUT = "features"
LSTM_OUTPUT = "probability_up"
ENSEMBLE_OUTPUT = "probabilities"
PARITY_TOLERANCE = 1e-5


class ParityError(AssertionError):
    """The exported graph does not reproduce the framework's outputs."""


def export_lstm(model: DirectionLSTM, window: int, n_features: int) -> bytes:
    model.eval()
    # An example batch of 1 can pin the batch axis to 1 even when declared dynamic: use 2.
    example = torch.zeros((2, window, n_features), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=65536)
    # The exporter logs pages of deprecation notes from torch internals; none concern us.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "lstm.onnx"
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT],
            output_names=[LSTM_OUTPUT],
            dynamic_shapes={"features": {0: batch}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        assert program is not None
        program.save(str(path), external_data=False)
        return path.read_bytes()


def export_ensemble(model: Any, n_features: int) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(
        model,
        initial_types=[(INPUT, FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        final_types=None,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    # Name the probability output as the contract says, whatever skl2onnx called it.
    for output in onx.graph.output:
        if output.name == "probabilities":
            break
    else:
        old = onx.graph.output[1].name
        onx.graph.output[1].name = ENSEMBLE_OUTPUT
        for node in onx.graph.node:
            node.output[:] = [ENSEMBLE_OUTPUT if o == old else o for o in node.output]
    return bytes(onx.SerializeToString())


def session(payload: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # skl2onnx graphs carry an unused initializer ORT warns about
    options.intra_op_num_threads = 1
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


def run_lstm(sess: ort.InferenceSession, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    return np.asarray(sess.run([LSTM_OUTPUT], {INPUT: x})[0], dtype=np.float64).reshape(-1)


def run_ensemble(sess: ort.InferenceSession, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    return np.asarray(sess.run([ENSEMBLE_OUTPUT], {INPUT: x})[0], dtype=np.float64)[:, 1]


def check_parity(
    name: str, expected: npt.NDArray[np.float64], got: npt.NDArray[np.float64]
) -> float:
    """Max absolute difference; raises :class:`ParityError` above the tolerance."""
    diff = float(np.max(np.abs(expected - got))) if len(expected) else 0.0
    if not diff <= PARITY_TOLERANCE:
        raise ParityError(
            f"{name}: ONNX differs from the framework by {diff:.2e} > {PARITY_TOLERANCE:.0e}"
        )
    return diff
