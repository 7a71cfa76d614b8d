"""The Open Inference Protocol (inference.GRPCInferenceService) on the real server: stock
tritonclient (in a process of its own, see tests/triton_probe.py) and hand-built requests in both
tensor forms, results equal to Predict on the same window, errors naming the input, the token,
reflection, hot swaps, and the wire format held against tritonclient's own generated classes."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from clients.client import columns_from_arrays
from export.data import MarketData
from minhos.oip.v2 import open_inference_pb2 as oip
from minhos.oip.v2 import open_inference_pb2_grpc as oip_grpc
from minhos.v1 import common_pb2, inference_pb2
from server.core.features import FEATURE_NAMES, bars_required, window_features_batch
from server.storage.registry import ModelRepository
from tests.conftest import TINY_WINDOW, Trained
from tests.server_harness import live_index, running
from tests.triton_probe import fields_of, fill

pytestmark = pytest.mark.serving

ROOT = Path(__file__).resolve().parent.parent
NEED = bars_required(TINY_WINDOW)
F = len(FEATURE_NAMES)
CONTENTS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT64": "int64_contents",
    "INT32": "int_contents",
    "BYTES": "bytes_contents",
}
LAYOUT = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4"}
Tensor = tuple[str, npt.NDArray[Any], str]


def probe(scenario: str, args: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / f"{scenario}.json"
    path.write_text(json.dumps(args))
    done = subprocess.run(
        [sys.executable, "-m", "tests.triton_probe", scenario, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def windows(data: MarketData, ends: list[int]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """(len(ends), NEED, 5) bars and (len(ends), NEED) epoch seconds of the windows ending there."""
    bars = np.stack([data.ohlcv[end - NEED : end] for end in ends])
    times = np.stack(
        [data.times[end - NEED : end].astype("datetime64[s]").astype(np.int64) for end in ends]
    )
    return bars, times


def predict(stub: Any, data: MarketData, end: int) -> inference_pb2.PredictResponse:
    columns = columns_from_arrays(data.times[end - NEED : end], data.ohlcv[end - NEED : end])
    reply: inference_pb2.PredictResponse = stub.predict("SPX", columns)
    return reply


def request(model: str, tensors: list[Tensor], raw: bool, **fields: Any) -> oip.ModelInferRequest:
    """A ModelInferRequest built by hand: typed ``contents`` or ``raw_input_contents``."""
    out = oip.ModelInferRequest(model_name=model, **fields)
    for name, array, datatype in tensors:
        tensor = out.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        flat = array.reshape(-1)
        if raw and datatype == "BYTES":
            out.raw_input_contents.append(
                b"".join(len(v).to_bytes(4, "little") + v for v in flat.tolist())
            )
        elif raw:
            out.raw_input_contents.append(flat.astype(LAYOUT[datatype]).tobytes())
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(flat.tolist())
    return out


def outputs(response: oip.ModelInferResponse) -> dict[str, npt.NDArray[Any]]:
    """Output arrays by name, from whichever form the response used."""
    values = {}
    for i, out in enumerate(response.outputs):
        if response.raw_output_contents:
            raw = response.raw_output_contents[i]
            if out.datatype == "BYTES":
                items, at = [], 0
                while at < len(raw):
                    n = int.from_bytes(raw[at : at + 4], "little")
                    items.append(raw[at + 4 : at + 4 + n])
                    at += 4 + n
                array = np.array(items, dtype=object)
            else:
                array = np.frombuffer(raw, dtype=LAYOUT[out.datatype])
        else:
            typed = getattr(out.contents, CONTENTS[out.datatype])
            array = np.array(list(typed), dtype=object if out.datatype == "BYTES" else None)
        values[out.name] = array.reshape(list(out.shape))
    return values


def fails(call: Any, *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    error = info.value
    assert isinstance(error, grpc.Call)
    return error.code(), error.details() or ""


def test_stock_tritonclient_gets_what_predict_gets(
    trained: Trained, sp500: MarketData, tmp_path: Path
) -> None:
    with running(trained.config()) as (srv, client):
        end = live_index(sp500) + 10
        typed = predict(client, sp500, end)
        bars, times = windows(sp500, [end])
        sequences = window_features_batch(bars, TINY_WINDOW).astype(np.float32)
        arrays = tmp_path / "arrays.npz"
        np.savez(arrays, bars=bars, times=times, sequences=sequences, rows=sequences[:, -1, :])
        seen = probe(
            "stock",
            {"target": f"127.0.0.1:{srv.port}", "arrays": str(arrays), "symbol": "SPX"},
            tmp_path,
        )
        versions = srv.holder.current.versions
        fused_version = "+".join(versions[k] for k in ("lstm", "ensemble", "kelly"))
        listed = {p.prediction.prediction_id for p in client.list_predictions("SPX", limit=10)}

    assert seen["live"] and seen["ready"] and all(seen["model_ready"].values())
    assert not seen["ready_other_version"] and not seen["ready_unknown"]
    assert seen["server"]["name"] == "minhos"
    meta = seen["metadata"]
    assert meta["lstm"]["inputs"] == [
        {"name": "features", "datatype": "FP32", "shape": ["-1", str(TINY_WINDOW), str(F)]}
    ]
    assert meta["ensemble"]["inputs"][0]["shape"] == ["-1", str(F)]
    assert meta["lstm"]["versions"] == [versions["lstm"]]
    assert meta["minhos"]["versions"] == [fused_version]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["minhos"]["inputs"][:2]] == [
        ("bars", "FP64", ["-1", str(NEED), "5"]),
        ("time_seconds", "INT64", ["-1", str(NEED)]),
    ]
    assert {t["name"] for t in meta["minhos"]["outputs"]} == {
        "probability_up",
        "confidence",
        "agreement",
        "kelly_fraction",
        "direction",
        "prediction_id",
    }
    assert {(m["name"], m["version"], m["state"]) for m in seen["index"]["models"]} == {
        ("lstm", versions["lstm"], "READY"),
        ("ensemble", versions["ensemble"], "READY"),
        ("minhos", fused_version, "READY"),
    }

    # Each model's answer is Predict's on the same window; replies are raw, as the requests were.
    lstm, ensemble = seen["lstm"], seen["ensemble"]
    assert lstm["id"] == "r-lstm" and lstm["model_version"] == versions["lstm"] and lstm["raw"] == 1
    assert lstm["values"]["probability_up"] == pytest.approx([typed.lstm.probability_up], abs=1e-7)
    assert ensemble["values"]["probability_up"] == pytest.approx(
        [typed.ensemble.probability_up], abs=1e-7
    )
    for reply in (seen["minhos"], seen["minhos_versioned"], seen["stream"][0]):
        values = reply["values"]
        assert reply["model_version"] == fused_version and reply["raw"] == 6
        assert values["probability_up"] == [typed.probability_up]
        assert values["confidence"] == [typed.confidence]
        assert values["agreement"] == [typed.agreement]
        assert values["kelly_fraction"] == [typed.kelly_fraction]
        up = typed.direction == common_pb2.DIRECTION_UP
        assert values["direction"] == [1 if up else -1]
        (prediction_id,) = values["prediction_id"]
        assert len(prediction_id) == 32 and prediction_id != typed.prediction_id
        assert prediction_id in listed  # stored like Predict's
    assert seen["minhos"]["id"] == "r-1" and seen["stream"][0]["id"] == "s-1"

    # A failed stream request is answered in its place and the stream goes on.
    assert seen["stream"][1]["error"].startswith("time_seconds: datatype FP64")
    assert seen["stream"][2]["id"] == "s-3"
    assert seen["stream"][2]["values"] == lstm["values"]

    errors = seen["errors"]
    assert errors["unknown_model"][0] == "StatusCode.NOT_FOUND"
    assert errors["unknown_model"][1].startswith("model_name: no model 'nope'")
    assert errors["other_version"][0] == "StatusCode.NOT_FOUND"
    assert "'not-a-version' of lstm is not deployed" in errors["other_version"][1]
    assert errors["wrong_datatype"] == [
        "StatusCode.INVALID_ARGUMENT",
        f"time_seconds: datatype FP64; the model takes INT64 [N, {NEED}]",
    ]
    assert errors["metadata_unknown"][0] == "StatusCode.NOT_FOUND"


def test_hand_built_requests_in_both_forms(trained: Trained, sp500: MarketData) -> None:
    with (
        running(trained.config(), symbols="SPX,NDX") as (srv, client),
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel,
    ):
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        start = live_index(sp500)
        ends = [start + 5, start + 40]
        expected = [predict(client, sp500, end) for end in ends]
        bars, times = windows(sp500, ends)
        sequences = window_features_batch(bars, TINY_WINDOW).astype(np.float32)

        for raw in (False, True):
            lstm = stub.ModelInfer(request("lstm", [("features", sequences, "FP32")], raw))
            assert bool(lstm.raw_output_contents) == raw
            assert not raw or not lstm.outputs[0].HasField("contents")
            assert outputs(lstm)["probability_up"].tolist() == pytest.approx(
                [e.lstm.probability_up for e in expected], abs=1e-7
            )
            rows = np.ascontiguousarray(sequences[:, -1, :])
            ensemble = stub.ModelInfer(request("ensemble", [("features", rows, "FP32")], raw))
            assert outputs(ensemble)["probability_up"].tolist() == pytest.approx(
                [e.ensemble.probability_up for e in expected], abs=1e-7
            )
            # Two rows, the symbol as a BYTES input (one per row); outputs in the order asked.
            symbols = np.array([b"SPX", b"NDX"], dtype=object)
            fused = stub.ModelInfer(
                request(
                    "minhos",
                    [
                        ("bars", bars, "FP64"),
                        ("time_seconds", times, "INT64"),
                        ("symbol", symbols, "BYTES"),
                    ],
                    raw,
                    id="two",
                    outputs=[
                        oip.ModelInferRequest.InferRequestedOutputTensor(name=name)
                        for name in ("direction", "probability_up", "prediction_id")
                    ],
                )
            )
            assert fused.id == "two" and [o.name for o in fused.outputs] == [
                "direction",
                "probability_up",
                "prediction_id",
            ]
            got = outputs(fused)
            assert got["probability_up"].tolist() == [e.probability_up for e in expected]
            assert got["direction"].tolist() == [
                1 if e.direction == common_pb2.DIRECTION_UP else -1 for e in expected
            ]
            ids = [bytes(v).decode() for v in got["prediction_id"]]
            listed = client.list_predictions("NDX", limit=5)
            assert ids[1] in {p.prediction.prediction_id for p in listed}
            assert listed[0].prediction.bar_time == expected[1].bar_time

        def bad(tensors: list[Tensor], model: str = "minhos", **fields: Any) -> str:
            code, text = fails(stub.ModelInfer, request(model, tensors, True, **fields))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, text
            return text

        one = [("bars", bars[:1], "FP64"), ("time_seconds", times[:1], "INT64")]
        spx: dict[str, Any] = {"parameters": {"symbol": oip.InferParameter(string_param="SPX")}}
        assert bad(one[:1], **spx) == f"time_seconds: missing input (INT64 [N, {NEED}])"
        assert bad([one[0], ("time_seconds", times[:1, 1:], "INT64")], **spx) == (
            f"time_seconds: shape [1, {NEED - 1}]; the model takes INT64 [N, {NEED}]"
        )
        assert bad([("bars", bars[:1].astype(np.float32), "FP32"), one[1]], **spx).startswith(
            "bars: datatype FP32; the model takes FP64"
        )
        assert bad([*one, ("extra", times[:1], "INT64")], **spx).startswith(
            "extra: not an input of minhos"
        )
        assert bad(one).startswith("symbol: missing")
        assert bad([*one, ("symbol", symbols[:1], "BYTES")], **spx).startswith("symbol: given both")
        assert bad(
            one, outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name="nope")], **spx
        ).startswith("outputs[0]: 'nope' is not an output of minhos")
        short = request("minhos", one, True, **spx)
        short.raw_input_contents[0] = short.raw_input_contents[0][:-8]
        code, text = fails(stub.ModelInfer, short)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and text.startswith(
            f"bars: {NEED * 40 - 8} bytes of raw contents; shape [1, {NEED}, 5] of FP64 takes"
        )
        typed = request("minhos", one, False, **spx)
        del typed.inputs[1].contents.int64_contents[-1]
        assert fails(stub.ModelInfer, typed)[1].startswith(
            f"time_seconds: {NEED - 1} values in contents.int64_contents"
        )
        typed.raw_input_contents.append(b"")
        assert fails(stub.ModelInfer, typed)[1].startswith("raw_input_contents: 1 entries for 2")
        # The data plane's checks, named by tensor element: row 0, bar 3.
        broken = bars[:1].copy()
        broken[0, 3, 1] = broken[0, 3, 2] - 1.0  # high below low
        assert bad([("bars", broken, "FP64"), one[1]], **spx).startswith("bars[0][3].high")
        swapped = times[:1].copy()
        swapped[0, [5, 6]] = swapped[0, [6, 5]]
        assert bad([one[0], ("time_seconds", swapped, "INT64")], **spx).startswith(
            "time_seconds[0][6]"
        )
        code, text = fails(
            stub.ModelInfer,
            request(
                "minhos", one, True, parameters={"symbol": oip.InferParameter(string_param="AAPL")}
            ),
        )
        assert code == grpc.StatusCode.NOT_FOUND and text.startswith("symbol: unknown symbol")
        code, text = fails(stub.ModelInfer, request("minhos", one, True, model_version="x", **spx))
        assert code == grpc.StatusCode.NOT_FOUND and text.startswith("model_version:")
        code, text = fails(stub.ModelMetadata, oip.ModelMetadataRequest(name="lstm", version="x"))
        assert code == grpc.StatusCode.NOT_FOUND and text.startswith("version:")
        # Calls were recorded like the typed contract's, the answered and the refused.
        srv.writer.flush()
        metrics = _metrics(srv)
        assert 'minhos_requests_total{code="OK",method="ModelInfer"}' in metrics
        assert 'minhos_requests_total{code="INVALID_ARGUMENT",method="ModelInfer"}' in metrics


def _metrics(srv: Any) -> str:
    from prometheus_client import generate_latest

    return generate_latest(srv.telemetry.registry).decode()


def test_token_reflection_and_health(trained: Trained, sp500: MarketData, tmp_path: Path) -> None:
    end = live_index(sp500) + 3
    bars, _ = windows(sp500, [end])
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, sequences=window_features_batch(bars, TINY_WINDOW).astype(np.float32))
    with running(trained.config(), token="s3cret") as (srv, client):
        target = f"127.0.0.1:{srv.port}"
        seen = probe(
            "token", {"target": target, "arrays": str(arrays), "token": "s3cret"}, tmp_path
        )
        expected = predict(client, sp500, end).lstm.probability_up
        with grpc.insecure_channel(target) as channel:
            services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
            status = (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
                .status
            )
            stream = oip_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(
                iter([oip.ModelInferRequest(model_name="lstm")]), timeout=5
            )
            code, _ = fails(list, stream)
    assert "inference.GRPCInferenceService" in services and "minhos.v1.InferenceService" in services
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert seen["no_token"][0] == "StatusCode.UNAUTHENTICATED"
    assert seen["wrong_token"][0] == "StatusCode.UNAUTHENTICATED"
    assert "UNAUTHENTICATED" in " ".join(seen["stream_without_token"])
    assert seen["ready_with_token"]
    assert seen["infer_with_token"]["values"]["probability_up"] == pytest.approx(
        [expected], abs=1e-7
    )
    assert seen["stream_with_token"]["values"] == seen["infer_with_token"]["values"]


def test_model_ready_follows_a_hot_swap(trained: Trained) -> None:
    config = trained.config()
    with (
        running(config) as (srv, _),
        grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel,
    ):
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        old = dict(srv.holder.current.versions)

        def ready(name: str, version: str = "") -> bool:
            reply = stub.ModelReady(oip.ModelReadyRequest(name=name, version=version))
            return bool(reply.ready)

        assert ready("lstm") and ready("lstm", old["lstm"]) and ready("minhos")
        repository = ModelRepository(config.storage.model_repository)
        manifest, payload = repository.load_verified("lstm", old["lstm"])
        new = repository.publish(
            "lstm",
            payload,
            file=manifest.file,
            feature_spec=manifest.feature_spec,
            metrics=manifest.metrics,
            deploy=True,
        ).version
        deadline = time.monotonic() + 10
        while srv.holder.current.versions["lstm"] != new and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready("lstm", new) and not ready("lstm", old["lstm"]) and ready("lstm")
        fused = f"{new}+{old['ensemble']}+{old['kelly']}"
        assert ready("minhos", fused)
        assert not ready("minhos", f"{old['lstm']}+{old['ensemble']}+{old['kelly']}")
        meta = stub.ModelMetadata(oip.ModelMetadataRequest(name="lstm"))
        assert list(meta.versions) == [new]
        index = stub.RepositoryIndex(oip.RepositoryIndexRequest(ready=True))
        assert {(m.name, m.version) for m in index.models} >= {("lstm", new), ("minhos", fused)}
        stale = request(
            "lstm",
            [("features", np.zeros((1, TINY_WINDOW, F), np.float32), "FP32")],
            True,
            model_version=old["lstm"],
        )
        assert fails(stub.ModelInfer, stale)[0] == grpc.StatusCode.NOT_FOUND


def test_wire_format_matches_tritonclients_classes(tmp_path: Path) -> None:
    """Every message we declare, with every field set, parses into tritonclient's class of the same
    name field for field, and theirs into ours, and re-serializes to the same bytes; the service's
    methods carry the same types."""
    names = list(oip.DESCRIPTOR.message_types_by_name)
    ours: dict[str, Any] = {}
    for name in names:
        for variant in range(5):
            ours[f"{name}#{variant}"] = fill(getattr(oip, name)(), variant)
    seen = probe(
        "wire",
        {
            "messages": {
                key: base64.b64encode(m.SerializeToString(deterministic=True)).decode()
                for key, m in ours.items()
            }
        },
        tmp_path,
    )
    for key, mine in ours.items():
        as_dict = MessageToDict(mine, preserving_proto_field_name=True)
        assert seen["parsed"][key] == as_dict, key
        theirs = base64.b64decode(seen["theirs"][key])
        parsed = type(mine).FromString(theirs)
        assert MessageToDict(parsed, preserving_proto_field_name=True) == seen["dicts"][key], key
        assert parsed.SerializeToString(deterministic=True) == theirs, key
    descriptors: dict[str, list[Any]] = {}
    for name in names:
        descriptors.update(fields_of(oip.DESCRIPTOR.message_types_by_name[name]))
    for full_name, fields in descriptors.items():
        assert json.loads(json.dumps(fields)) == seen["descriptors"][full_name], full_name
    service = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        assert seen["methods"][method.name] == [
            method.input_type.full_name,
            method.output_type.full_name,
            method.client_streaming,
            method.server_streaming,
        ], method.name


def test_bench_line_measures_model_infer_beside_predict(
    trained: Trained, sp500: MarketData
) -> None:
    """``make bench``'s OIP rows run end to end (timings are the bench's to judge, not a test's)."""
    from clients.bench import Settings, model_infer_request, oip_beside_predict

    end = live_index(sp500) + 7
    columns = columns_from_arrays(sp500.times[end - NEED : end], sp500.ohlcv[end - NEED : end])
    typed = inference_pb2.PredictRequest(symbol="SPX", columns=columns)
    body = oip.ModelInferRequest.FromString(model_infer_request(typed))
    bars, times = windows(sp500, [end])
    assert [(t.name, t.datatype, list(t.shape)) for t in body.inputs] == [
        ("bars", "FP64", [1, NEED, 5]),
        ("time_seconds", "INT64", [1, NEED]),
    ]
    assert body.raw_input_contents[0] == bars.astype("<f8").tobytes()
    assert body.raw_input_contents[1] == times.astype("<i8").tobytes()
    settings = Settings(calls=20, warmup=5, clients=2, load_seconds=0.3, rounds=2)
    with running(trained.config()) as (srv, _):
        report = oip_beside_predict(f"127.0.0.1:{srv.port}", typed, settings, [])
    assert [r.name.split(",")[0] for r in report.rows] == [
        "OIP ModelInfer",
        "unary Predict",
        "OIP ModelInfer",
        "unary Predict",
    ]
    assert all(r.p50_us > 0 and r.per_second > 0 for r in report.rows)
    assert all("0 errors" in r.note for r in report.rows[2:])
    (check,) = report.checks
    assert check.name.startswith("ModelInfer within 1.2 x of Predict")
    assert len(report.ratios) == 2 and all(v > 0 for v in report.ratios.values())
