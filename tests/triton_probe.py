"""Stock ``tritonclient`` against a MinhOS server, in a process of its own.

tritonclient's generated classes and ours (minhos.oip.v2) declare the same protobuf symbols
(``inference.ModelInferRequest``, ...), and one process's default descriptor pool refuses a
symbol twice; the server (and so every test process) loads ours. So the stock client runs here:
``python -m tests.triton_probe SCENARIO ARGS.json`` prints one JSON object of what it saw.

Nothing here imports the server or minhos.oip; tritonclient is imported inside the scenarios so
that the tests can import :func:`fill` from this module.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

MODELS = ("lstm", "ensemble", "minhos")


# --- wire: every field of every message, filled -------------------------------------------------


def _value(field: FieldDescriptor, item: int) -> Any:
    n = field.number + item
    kind = field.type
    if kind in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return -n  # negative: a 10-byte varint on the wire
    if kind in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return -(2**40) - n
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return 2**31 + n
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return 2**63 + n
    if kind == FieldDescriptor.TYPE_FLOAT:
        return n + 0.5
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return n + 0.25
    if kind == FieldDescriptor.TYPE_BOOL:
        return True
    if kind == FieldDescriptor.TYPE_STRING:
        return f"s{n}é"
    if kind == FieldDescriptor.TYPE_BYTES:
        return bytes([0, 255, n % 256])
    raise ValueError(f"no filler for {field.full_name} (type {kind})")


def fill(message: Message, variant: int = 0, depth: int = 0) -> Message:
    """Sets every field of ``message`` (nested messages, two entries of each repeated field and
    map), choosing member ``variant`` of each oneof, so a round trip through another set of
    classes loses nothing unnoticed."""
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None and oneof.fields[variant % len(oneof.fields)] is not field:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            mapping = getattr(message, field.name)
            value_field = field.message_type.fields_by_name["value"]
            for key in ("a", "b"):
                if value_field.message_type is not None:
                    fill(mapping[key], variant, depth + 1)
                else:
                    mapping[key] = _value(value_field, len(key))
        elif field.message_type is not None:
            if depth > 3:
                continue
            if field.is_repeated:
                for _ in range(2):
                    fill(getattr(message, field.name).add(), variant, depth + 1)
            else:
                fill(getattr(message, field.name), variant, depth + 1)
        elif field.is_repeated:
            getattr(message, field.name).extend([_value(field, 0), _value(field, 1)])
        else:
            setattr(message, field.name, _value(field, 0))
    return message


def fields_of(descriptor: Descriptor) -> dict[str, list[Any]]:
    """Each message's fields (its nested messages too): name, number, type, label, message
    type and oneof, the facts the wire depends on."""
    out: dict[str, list[Any]] = {}

    def visit(d: Descriptor) -> None:
        out[d.full_name] = sorted(
            [
                f.name,
                f.number,
                f.type,
                f.is_repeated,
                f.message_type.full_name if f.message_type else "",
                f.containing_oneof.name if f.containing_oneof else "",
            ]
            for f in d.fields
        )
        for nested in d.nested_types:
            visit(nested)

    visit(descriptor)
    return out


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def wire(args: dict[str, Any]) -> dict[str, Any]:
    """Parses the test's serialized messages (ours) with tritonclient's classes, and serializes
    tritonclient's own fully filled messages for the test to parse with ours."""
    from tritonclient.grpc import service_pb2

    parsed: dict[str, dict[str, Any]] = {}
    theirs: dict[str, str] = {}
    dicts: dict[str, dict[str, Any]] = {}
    descriptors: dict[str, list[Any]] = {}
    for key, encoded in args["messages"].items():
        name, _, variant = key.partition("#")
        cls = getattr(service_pb2, name)
        parsed[key] = to_dict(cls.FromString(base64.b64decode(encoded)))
        mine = fill(cls(), int(variant))
        theirs[key] = base64.b64encode(mine.SerializeToString(deterministic=True)).decode()
        dicts[key] = to_dict(mine)
        descriptors.update(fields_of(cls.DESCRIPTOR))
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    methods = {
        m.name: [
            m.input_type.full_name,
            m.output_type.full_name,
            m.client_streaming,
            m.server_streaming,
        ]
        for m in service.methods
    }
    return {
        "parsed": parsed,
        "theirs": theirs,
        "dicts": dicts,
        "descriptors": descriptors,
        "methods": methods,
    }


# --- stock client scenarios ---------------------------------------------------------------------


def _error(call: Callable[[], Any]) -> list[str]:
    from tritonclient.utils import InferenceServerException

    try:
        call()
    except InferenceServerException as exc:
        return [str(exc.status()), str(exc.message())]
    return ["no error", ""]


def _inputs(spec: list[tuple[str, np.ndarray[Any, Any], str]]) -> list[Any]:
    import tritonclient.grpc as triton

    inputs = []
    for name, array, datatype in spec:
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _outputs(result: Any) -> dict[str, Any]:
    response = result.get_response()
    values: dict[str, Any] = {}
    for out in response.outputs:
        array = result.as_numpy(out.name)
        values[out.name] = (
            [v.decode() for v in array.reshape(-1)] if out.datatype == "BYTES" else array.tolist()
        )
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "raw": len(response.raw_output_contents),
        "values": values,
    }


def stock(args: dict[str, Any]) -> dict[str, Any]:
    """Health, metadata, index, unary and streaming inference and errors, all through stock
    ``tritonclient.grpc``; inputs from the .npz the test wrote."""
    import tritonclient.grpc as triton

    arrays = np.load(args["arrays"])
    client = triton.InferenceServerClient(args["target"])
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": {name: client.is_model_ready(name) for name in MODELS},
        "ready_other_version": client.is_model_ready("lstm", "not-a-version"),
        "ready_unknown": client.is_model_ready("nope"),
        "server": client.get_server_metadata(as_json=True),
        "metadata": {name: client.get_model_metadata(name, as_json=True) for name in MODELS},
        "index": client.get_model_repository_index(as_json=True),
    }
    lstm = _inputs([("features", arrays["sequences"], "FP32")])
    ensemble = _inputs([("features", arrays["rows"], "FP32")])
    fused = _inputs([("bars", arrays["bars"], "FP64"), ("time_seconds", arrays["times"], "INT64")])
    symbol = {"symbol": args["symbol"]}
    out["lstm"] = _outputs(client.infer("lstm", lstm, request_id="r-lstm"))
    out["ensemble"] = _outputs(client.infer("ensemble", ensemble))
    out["minhos"] = _outputs(client.infer("minhos", fused, parameters=symbol, request_id="r-1"))
    version = out["metadata"]["minhos"]["versions"][0]
    out["minhos_versioned"] = _outputs(
        client.infer("minhos", fused, model_version=version, parameters=symbol)
    )
    wrong_type = _inputs(
        [
            ("bars", arrays["bars"], "FP64"),
            ("time_seconds", arrays["times"].astype(np.float64), "FP64"),
        ]
    )
    out["errors"] = {
        "unknown_model": _error(lambda: client.infer("nope", lstm)),
        "other_version": _error(lambda: client.infer("lstm", lstm, model_version="not-a-version")),
        "wrong_datatype": _error(lambda: client.infer("minhos", wrong_type, parameters=symbol)),
        "metadata_unknown": _error(lambda: client.get_model_metadata("nope")),
    }
    replies: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    client.async_stream_infer("minhos", fused, parameters=symbol, request_id="s-1")
    client.async_stream_infer("minhos", wrong_type, parameters=symbol, request_id="s-2")
    client.async_stream_infer("lstm", lstm, request_id="s-3")
    stream = []
    for _ in range(3):
        result, error = replies.get(timeout=30)
        stream.append({"error": str(error.message())} if error else _outputs(result))
    client.stop_stream()
    out["stream"] = stream
    client.close()
    return out


def token(args: dict[str, Any]) -> dict[str, Any]:
    """Calls without the bearer token, with a wrong one and with the right one."""
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    arrays = np.load(args["arrays"])
    client = triton.InferenceServerClient(args["target"])
    good = {"authorization": f"Bearer {args['token']}"}
    bad = {"authorization": "Bearer wrong"}
    lstm = _inputs([("features", arrays["sequences"], "FP32")])
    replies: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    # The denial may end the stream before the request goes out; the callback has it either way.
    with contextlib.suppress(InferenceServerException):
        client.async_stream_infer("lstm", lstm)
    result, error = replies.get(timeout=30)
    client.stop_stream()
    denied_stream = [str(error.status()), str(error.message())] if error else ["no error", ""]
    client.start_stream(callback=lambda result, error: replies.put((result, error)), headers=good)
    client.async_stream_infer("lstm", lstm)
    result, error = replies.get(timeout=30)
    client.stop_stream()
    out = {
        "no_token": _error(lambda: client.is_server_ready()),
        "wrong_token": _error(lambda: client.infer("lstm", lstm, headers=bad)),
        "ready_with_token": client.is_server_ready(headers=good),
        "infer_with_token": _outputs(client.infer("lstm", lstm, headers=good)),
        "stream_without_token": denied_stream,
        "stream_with_token": str(error.message()) if error else _outputs(result),
    }
    client.close()
    return out


SCENARIOS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "wire": wire,
    "stock": stock,
    "token": token,
}


def main(argv: list[str]) -> int:
    scenario, path = argv
    print(json.dumps(SCENARIOS[scenario](json.loads(Path(path).read_text()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
