"""The Open Inference Protocol's ModelInfer on the ``minhos`` model beside Predict on the same
window and server: single-client latency in interleaved bursts, then closed-loop clients in
alternating rounds."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np

from clients.bench import procfs
from clients.bench.load import Load, alternate
from clients.bench.measure import time_interleaved, unary_caller
from clients.bench.report import Check, Report, latency_row, load_row
from clients.bench.settings import Settings
from clients.client import channel_options
from minhos.v1 import inference_pb2

PREDICT_METHOD = "/minhos.v1.InferenceService/Predict"
MODEL_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
#: ModelInfer on ``minhos`` may cost at most this many times Predict (p50 up, throughput down).
OIP_TOLERANCE = 1.2


def model_infer_request(request: inference_pb2.PredictRequest) -> bytes:
    """ModelInfer on ``minhos`` for Predict's window (in any form), in the raw form tritonclient's
    ``set_data_from_numpy`` sends: bars FP64 [1, n, 5], time_seconds INT64 [1, n], the symbol as
    a request parameter."""
    from minhos.oip.v2 import open_inference_pb2 as oip  # never together with tritonclient's
    from server.transport.convert import window_in  # the server's own reading of the window

    seconds, ohlcv, _ = window_in(request)
    times = np.ascontiguousarray(seconds, dtype="<i8")
    bars = np.ascontiguousarray(ohlcv, dtype="<f8")
    out = oip.ModelInferRequest(model_name="minhos")
    out.parameters["symbol"].string_param = request.symbol
    out.inputs.add(name="bars", datatype="FP64", shape=[1, *bars.shape])
    out.inputs.add(name="time_seconds", datatype="INT64", shape=[1, len(times)])
    out.raw_input_contents.extend([bars.tobytes(), times.tobytes()])
    return out.SerializeToString()


def oip_beside_predict(
    target: str, request: inference_pb2.PredictRequest, settings: Settings, pids: Sequence[int]
) -> Report:
    bodies = {"Predict": request.SerializeToString(), "ModelInfer": model_infer_request(request)}
    methods = {"Predict": PREDICT_METHOD, "ModelInfer": MODEL_INFER_METHOD}
    with grpc.insecure_channel(target, options=channel_options()) as channel:
        procfs.settle(pids)
        samples = time_interleaved(
            {name: unary_caller(channel, methods[name], bodies[name]) for name in methods},
            settings.calls,
            settings.warmup,
        )
    totals = alternate(
        {name: Load(target, methods[name], bodies[name]) for name in methods},
        settings.clients,
        settings.load_seconds,
        settings.rounds,
        pids,
    )
    infer_note = (
        f"minhos model, raw tensors, {len(bodies['ModelInfer'])} B in; interleaved with Predict"
    )
    report = Report()
    report.rows += [
        latency_row("OIP ModelInfer, 1 client", samples["ModelInfer"], infer_note),
        latency_row("unary Predict, 1 client, beside ModelInfer", samples["Predict"]),
        load_row("OIP ModelInfer", totals["ModelInfer"], settings.clients),
        load_row("unary Predict, beside ModelInfer", totals["Predict"], settings.clients),
    ]
    infer_p50, predict_p50 = report.rows[0].p50_us, report.rows[1].p50_us
    p50 = infer_p50 / predict_p50
    rate = totals["ModelInfer"].throughput / totals["Predict"].throughput
    report.ratios["ModelInfer / Predict p50, 1 client"] = p50
    report.ratios[f"ModelInfer / Predict throughput, {settings.clients} clients"] = rate
    report.errors = {
        "OIP ModelInfer": len(totals["ModelInfer"].errors),
        "Predict beside it": len(totals["Predict"].errors),
    }
    errors = sum(report.errors.values())
    report.checks.append(
        Check(
            f"ModelInfer within {OIP_TOLERANCE} x of Predict "
            f"(p50, {settings.clients}-client throughput)",
            p50 <= OIP_TOLERANCE and rate >= 1 / OIP_TOLERANCE and not errors,
            f"p50 {infer_p50:.0f} vs {predict_p50:.0f} us ({p50:.2f} x); "
            f"{totals['ModelInfer'].throughput:.0f} vs {totals['Predict'].throughput:.0f} req/s "
            f"({rate:.2f} x); {errors} errors",
        )
    )
    return report
