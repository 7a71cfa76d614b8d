"""Generated bad input against a real server process (issue 11): every request message of every
served RPC, filled with random and adversarial values, plus targeted malformed windows, enums out of
range, unknown ids, bodies beyond max_message_bytes, wrong wire types and random bytes. Never
INTERNAL or UNKNOWN, never a crash; a refusal names the field. ``hypothesis`` is not installed in
the project's venv, so the cases come from a seeded numpy generator (MINHOS_FUZZ_CASES of them;
``make reliability`` asks for 10,000)."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from clients.client import MinhosClient, bars_from_arrays, columns_from_arrays
from clients.reliability import FUZZ_CASES_ENV
from export.data import MarketData
from minhos.v1 import inference_pb2
from tests.conftest import Trained
from tests.reliability_record import record
from tests.rpc_catalog import Rpc, parse, registered_rpcs
from tests.server_harness import live_index
from tests.server_process import ServerProcess, serving

pytestmark = pytest.mark.serving

#: Cases in ``make test``; MINHOS_FUZZ_CASES overrides.
DEFAULT_CASES = 600
MAX_MESSAGE_BYTES = 65_536
STREAM_MAX_SYMBOLS = 8
T = TypeVar("T")
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
#: Statuses whose message must name the request field at fault (``field: what is wrong``).
NAMING = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
}
FIELD_PREFIX = re.compile(r"^(?P<path>[A-Za-z_][\w.\[\]'\"-]*): ")

DOUBLES = [0.0, -0.0, -1.0, 1.0, 1e-320, 1e308, -1e308, math.nan, math.inf, -math.inf, 3.5]
INT32 = [0, 1, -1, 2**31 - 1, -(2**31), 7, 100, 101, 1000, 1001]
INT64 = [0, 1, -1, 2**63 - 1, -(2**63), 2**40, 86_400]
UINT32 = [0, 1, 2**32 - 1]
UINT64 = [0, 1, 2**64 - 1]
STRINGS = ["", "SPX", "spx", "ÄÖ∑😀", "\x00", "../../etc/passwd", "a b", "x" * 33, "-", "^GSPC"]


@dataclass(frozen=True)
class Case:
    category: str
    rpc: Rpc
    body: bytes | list[bytes]
    #: The status expected, when the case is built to provoke one (None: anything but NEVER).
    code: grpc.StatusCode | None = None
    #: A field path the error must start with (prefix match), when known.
    field: str = ""


@dataclass
class Answer:
    code: grpc.StatusCode
    details: str


# -- random messages -------------------------------------------------------------------------------


def _pick(pool: Sequence[T], rng: np.random.Generator) -> T:
    return pool[int(rng.integers(len(pool)))]


def _scalar(f: FieldDescriptor, rng: np.random.Generator) -> object:
    t = f.type
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _pick(DOUBLES, rng) if rng.random() < 0.7 else float(rng.normal(0, 1e4))
    if t in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return _pick(INT32, rng)
    if t in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return _pick(INT64, rng)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return _pick(UINT32, rng)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return _pick(UINT64, rng)
    if t == FieldDescriptor.TYPE_BOOL:
        return bool(rng.random() < 0.5)
    if t == FieldDescriptor.TYPE_ENUM:
        assert f.enum_type is not None
        known = [v.number for v in f.enum_type.values]
        return _pick(known, rng) if rng.random() < 0.6 else int(rng.integers(-3, 60))
    if t == FieldDescriptor.TYPE_STRING:
        if rng.random() < 0.1:
            return "y" * int(rng.integers(100, 20_000))
        return _pick(STRINGS, rng)
    if t == FieldDescriptor.TYPE_BYTES:
        return rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes()
    raise AssertionError(f"unhandled field type {t}")


def random_message(message: Message, rng: np.random.Generator, depth: int = 0) -> Message:
    """Fills ``message`` in place: each field set with probability 1/2, repeated ones 0-3 times,
    nested messages to depth 3."""
    descriptor = message.DESCRIPTOR
    for f in descriptor.fields:
        if rng.random() < 0.5:
            continue
        if f.message_type is not None:
            if depth >= 3:
                continue
            if f.message_type.GetOptions().map_entry:
                target = getattr(message, f.name)
                value_field = f.message_type.fields_by_name["value"]
                for _ in range(int(rng.integers(0, 3))):
                    key = _scalar(f.message_type.fields_by_name["key"], rng)
                    if value_field.message_type is not None:
                        random_message(target[key], rng, depth + 1)
                    else:
                        target[key] = _scalar(value_field, rng)
            elif f.is_repeated:
                for _ in range(int(rng.integers(0, 4))):
                    random_message(getattr(message, f.name).add(), rng, depth + 1)
            else:
                random_message(getattr(message, f.name), rng, depth + 1)
                getattr(message, f.name).SetInParent()
        elif f.is_repeated:
            getattr(message, f.name).extend(_scalar(f, rng) for _ in range(int(rng.integers(0, 4))))
        else:
            setattr(message, f.name, _scalar(f, rng))
    return message


# -- targeted cases --------------------------------------------------------------------------------


class Cases:
    """The case generator: a share of each category, seeded."""

    def __init__(self, rpcs: list[Rpc], data: MarketData, need: int, seed: int) -> None:
        self.rpcs = {rpc.path: rpc for rpc in rpcs}
        self.rng = np.random.default_rng(seed)
        self.data = data
        self.need = need
        self.live = live_index(data)

    def rpc(self, path: str) -> Rpc:
        return self.rpcs[path]

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        end = int(self.rng.integers(self.live, len(self.data.times)))
        return self.data.times[end - self.need : end], self.data.ohlcv[end - self.need : end].copy()

    def predict(self, request: inference_pb2.PredictRequest, category: str, field: str) -> Case:
        rpc = self.rpc("/minhos.v1.InferenceService/Predict")
        return Case(
            category, rpc, request.SerializeToString(), grpc.StatusCode.INVALID_ARGUMENT, field
        )

    def bad_price(self) -> Case:
        times, ohlcv = self.window()
        row = int(self.rng.integers(self.need))
        col = int(self.rng.integers(5 if self.rng.random() < 0.2 else 4))
        value = [math.nan, math.inf, -math.inf, 0.0, -1.0, -1e300][int(self.rng.integers(6))]
        if col == 4 and value == 0.0:
            value = -1.0  # a zero volume is a valid bar
        ohlcv[row, col] = value
        if self.rng.random() < 0.5:
            request = inference_pb2.PredictRequest(
                symbol="SPX", bars=bars_from_arrays(times, ohlcv)
            )
            return self.predict(request, "NaN, inf, zero or negative price", f"bars[{row}]")
        request = inference_pb2.PredictRequest(
            symbol="SPX", columns=columns_from_arrays(times, ohlcv)
        )
        return self.predict(request, "NaN, inf, zero or negative price", "columns.")

    def high_below_low(self) -> Case:
        times, ohlcv = self.window()
        row = int(self.rng.integers(self.need))
        ohlcv[row, 1], ohlcv[row, 2] = ohlcv[row, 2] * 0.9, ohlcv[row, 1] * 1.1
        request = inference_pb2.PredictRequest(symbol="SPX", bars=bars_from_arrays(times, ohlcv))
        return self.predict(request, "high < low", f"bars[{row}]")

    def bad_times(self) -> Case:
        times, ohlcv = self.window()
        times = times.copy()
        row = int(self.rng.integers(1, self.need))
        times[row] = (
            times[row - 1] if self.rng.random() < 0.5 else times[0] - np.timedelta64(1, "D")
        )
        request = inference_pb2.PredictRequest(symbol="SPX", bars=bars_from_arrays(times, ohlcv))
        return self.predict(request, "unsorted or duplicate times", "bars[")

    def short_window(self) -> Case:
        times, ohlcv = self.window()
        keep = int(self.rng.integers(0, self.need))
        request = inference_pb2.PredictRequest(
            symbol="SPX", bars=bars_from_arrays(times[:keep], ohlcv[:keep])
        )
        return self.predict(request, "empty or short window", "bars")

    def ragged_columns(self) -> Case:
        times, ohlcv = self.window()
        columns = columns_from_arrays(times, ohlcv)
        name = ["open", "high", "low", "close", "volume"][int(self.rng.integers(5))]
        del getattr(columns, name)[int(self.rng.integers(self.need))]
        request = inference_pb2.PredictRequest(symbol="SPX", columns=columns)
        return self.predict(request, "wrong column lengths", f"columns.{name}")

    def bad_symbol(self) -> Case:
        times, ohlcv = self.window()
        choices = ["", "a b", "ÄÖ", "x" * int(self.rng.integers(33, 50_000)), "SPX\n", "$$"]
        symbol = choices[int(self.rng.integers(len(choices)))]
        request = inference_pb2.PredictRequest(symbol=symbol, bars=bars_from_arrays(times, ohlcv))
        return self.predict(request, "bad or enormous symbol", "symbol")

    def huge_window(self) -> Case:
        """More bars than max_message_bytes holds: refused by gRPC itself."""
        bars = int(self.rng.integers(2000, 4000))  # 45 bytes a bar: 90 KB and more
        end = len(self.data.times)
        columns = columns_from_arrays(self.data.times[end - bars :], self.data.ohlcv[end - bars :])
        request = inference_pb2.PredictRequest(symbol="SPX", columns=columns)
        rpc = self.rpc("/minhos.v1.InferenceService/Predict")
        return Case(
            "window beyond max_message_bytes",
            rpc,
            request.SerializeToString(),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )

    def stream(self) -> Case:
        """A stream with a bad bar after good ones, or too many symbols."""
        rpc = self.rpc("/minhos.v1.InferenceService/PredictStream")
        count = int(self.rng.integers(2, 12))
        times, ohlcv = self.window()
        bars = bars_from_arrays(times[:count], ohlcv[:count])
        if self.rng.random() < 0.5:
            bad = int(self.rng.integers(count))
            bars[bad].close = [math.nan, -1.0, math.inf][int(self.rng.integers(3))]
            requests = [inference_pb2.StreamRequest(symbol="SPX", bar=b) for b in bars]
            return Case(
                "stream: bad bar",
                rpc,
                [r.SerializeToString() for r in requests],
                grpc.StatusCode.INVALID_ARGUMENT,
                f"requests[{bad}].bar",
            )
        symbols = [f"S{i}" for i in range(STREAM_MAX_SYMBOLS + 1)]
        requests = [inference_pb2.StreamRequest(symbol=s, bar=bars[0]) for s in symbols]
        return Case(
            "stream: too many symbols",
            rpc,
            [r.SerializeToString() for r in requests],
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"requests[{STREAM_MAX_SYMBOLS}].symbol",
        )

    def unknown_enum(self) -> Case:
        """One enum field of a request set to a number the contract does not define."""
        candidates = [
            (rpc, f)
            for rpc in self.rpcs.values()
            if rpc.service.startswith("minhos.")
            for f in rpc.request.DESCRIPTOR.fields
            if f.enum_type is not None and not f.is_repeated
        ]
        rpc, f = candidates[int(self.rng.integers(len(candidates)))]
        assert f.enum_type is not None
        top = max(v.number for v in f.enum_type.values)
        message = rpc.request()
        setattr(message, f.name, int(self.rng.integers(top + 1, top + 1000)))
        body = message.SerializeToString()
        return Case(
            "enum value out of range",
            rpc,
            [body] if rpc.client_streaming else body,
            grpc.StatusCode.INVALID_ARGUMENT,
            f.name,
        )

    def unknown_id(self) -> Case:
        ident = ["nope", "0" * 36, "x" * 200, "' OR 1=1 --"][int(self.rng.integers(4))]
        pick = int(self.rng.integers(3))
        if pick == 0:
            rpc = self.rpc("/minhos.v1.InferenceService/RecordOutcome")
            body = rpc.request(prediction_id=ident, realized_return=0.01)
            field = "prediction_id"
        elif pick == 1:
            rpc = self.rpc("/minhos.v1.MonitoringService/AcknowledgeAlert")
            body = rpc.request(alert_id=ident)
            field = "alert_id"
        else:
            rpc = self.rpc("/minhos.v1.RetrainService/GetJob")
            body = rpc.request(job_id=ident)
            field = "job_id"
        return Case("unknown id", rpc, body.SerializeToString(), grpc.StatusCode.NOT_FOUND, field)

    def bad_return(self) -> Case:
        rpc = self.rpc("/minhos.v1.InferenceService/RecordOutcome")
        value = [math.nan, math.inf, -math.inf, -1.0, -5.0][int(self.rng.integers(5))]
        body = rpc.request(prediction_id="whatever", realized_return=value)
        return Case(
            "NaN or impossible realized return",
            rpc,
            body.SerializeToString(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "realized_return",
        )

    def wrong_wire_type(self) -> Case:
        """Predict's symbol (field 1, a string) sent as a varint: parsed as an unknown field, so
        the symbol is missing."""
        times, ohlcv = self.window()
        valid = inference_pb2.PredictRequest(columns=columns_from_arrays(times, ohlcv))
        body = bytes([1 << 3 | 0, int(self.rng.integers(1, 127))]) + valid.SerializeToString()
        return Case(
            "wrong wire type",
            self.rpc("/minhos.v1.InferenceService/Predict"),
            body,
            grpc.StatusCode.INVALID_ARGUMENT,
            "symbol",
        )

    def generic(self) -> Case:
        """Any served RPC with a random message (or a few, for a stream)."""
        rpcs = list(self.rpcs.values())
        rpc = rpcs[int(self.rng.integers(len(rpcs)))]
        if rpc.client_streaming:
            count = int(self.rng.integers(1, 4))
            bodies = [
                random_message(rpc.request(), self.rng).SerializeToString() for _ in range(count)
            ]
            return Case("random message, any RPC", rpc, bodies)
        return Case(
            "random message, any RPC",
            rpc,
            random_message(rpc.request(), self.rng).SerializeToString(),
        )

    def random_bytes(self) -> Case:
        """Random bytes as the body (of the first message, for a stream): INVALID_ARGUMENT when
        they do not parse (almost always), anything but INTERNAL/UNKNOWN when they happen to."""
        rpcs = list(self.rpcs.values())
        rpc = rpcs[int(self.rng.integers(len(rpcs)))]
        body = self.rng.integers(0, 256, int(self.rng.integers(1, 300)), dtype=np.uint8).tobytes()
        case = Case("random bytes", rpc, [body] if rpc.client_streaming else body)
        if decodable(case):
            return case
        return Case(case.category, rpc, case.body, grpc.StatusCode.INVALID_ARGUMENT)

    def generate(self, count: int) -> Iterator[Case]:
        makers: list[tuple[float, Callable[[], Case]]] = [
            (0.27, self.generic),
            (0.10, self.bad_price),
            (0.05, self.high_below_low),
            (0.05, self.bad_times),
            (0.05, self.short_window),
            (0.05, self.ragged_columns),
            (0.06, self.bad_symbol),
            (0.01, self.huge_window),
            (0.08, self.stream),
            (0.08, self.unknown_enum),
            (0.06, self.unknown_id),
            (0.04, self.bad_return),
            (0.04, self.wrong_wire_type),
            (0.06, self.random_bytes),
        ]
        weights = np.array([w for w, _ in makers])
        picks = self.rng.choice(len(makers), size=count, p=weights / weights.sum())
        for pick in picks:
            yield makers[int(pick)][1]()


# -- running and judging ---------------------------------------------------------------------------


def decodable(case: Case) -> bool:
    bodies = [case.body] if isinstance(case.body, bytes) else case.body
    try:
        for body in bodies:
            case.rpc.request.FromString(body)
    except DecodeError:
        return False
    return True


def answer(channel: grpc.Channel, case: Case) -> Answer:
    try:
        replies = case.rpc.call(channel, case.body, timeout=20)
    except grpc.RpcError as exc:
        return Answer(exc.code(), exc.details() or "")
    if case.rpc.name == "ModelStreamInfer":  # Triton's stream answers errors in-band
        for reply in replies:
            message = parse(case.rpc, reply).error_message
            if message:
                return Answer(grpc.StatusCode.INVALID_ARGUMENT, message)
    return Answer(grpc.StatusCode.OK, "")


def judge(case: Case, got: Answer) -> str:
    """ "" when the answer is right, else what is wrong."""
    if got.code in NEVER:
        return f"{got.code.name}: {got.details}"
    if case.code is not None and got.code != case.code:
        return f"expected {case.code.name}, got {got.code.name}: {got.details}"
    if got.code in NAMING or (case.field and got.code == case.code):
        match = FIELD_PREFIX.match(got.details)
        if match is None:
            return f"{got.code.name} without a field: {got.details!r}"
        if case.field and not match["path"].startswith(case.field):
            return f"names {match['path']!r}, expected {case.field!r}: {got.details}"
    return ""


def cases_wanted() -> int:
    return int(os.environ.get(FUZZ_CASES_ENV, DEFAULT_CASES))


@pytest.fixture(scope="module")
def fuzz_server(
    trained_once: Trained, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(trained_once.root, root / "repo")
    settings = {
        "MINHOS_STORAGE_DATABASE_URL": f"sqlite:///{root / 'repo' / 'minhos.db'}",
        "MINHOS_STORAGE_MODEL_REPOSITORY": str(root / "repo" / "models"),
        "MINHOS_SERVER_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "MINHOS_SERVER_STREAM_MAX_SYMBOLS": str(STREAM_MAX_SYMBOLS),
    }
    with serving(settings, root / "server.log") as server:
        yield server
        assert server.stop() == 0


def test_bad_input_gets_the_documented_status_naming_the_field(
    fuzz_server: ServerProcess, sp500: MarketData
) -> None:
    server = fuzz_server
    count = cases_wanted()
    with grpc.insecure_channel(server.target) as channel:
        rpcs = registered_rpcs(channel)
        with MinhosClient(server.target) as client:
            need = client.serving_info().bars_required
        generator = Cases(rpcs, sp500, need, seed=20261130)
        tried: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        wrong: list[str] = []
        for case in generator.generate(count):
            got = answer(channel, case)
            tried[case.category] += 1
            codes[got.code.name] += 1
            verdict = judge(case, got)
            if verdict:
                wrong.append(f"{case.category} {case.rpc.path}: {verdict}")
        # Still serving: a valid prediction, and the process alive.
        with MinhosClient(server.target) as client:
            end = live_index(sp500)
            times, ohlcv = sp500.times[end - need : end], sp500.ohlcv[end - need : end]
            assert client.predict("SPX", columns_from_arrays(times, ohlcv)).prediction_id
    assert server.process.poll() is None and server.health() == "SERVING"
    unhandled = server.log_text().count('"unhandled error"')
    record(
        "bad input: generated requests",
        "every served RPC (" + ", ".join(sorted({r.service for r in rpcs})) + "): never "
        "INTERNAL/UNKNOWN, the expected status with the field named; still serving",
        f"{sum(tried.values()):,} cases ({', '.join(f'{k} {v}' for k, v in sorted(tried.items()))});"
        f" statuses {dict(sorted(codes.items()))}; {len(wrong)} wrong; {unhandled} unhandled "
        "errors logged",
    )
    assert not wrong, f"{len(wrong)} of {sum(tried.values())} wrong:\n" + "\n".join(wrong[:40])
    assert unhandled == 0
    assert {"random message, any RPC", "enum value out of range", "random bytes"} <= set(tried)


def test_an_undecodable_body_is_invalid_argument(fuzz_server: ServerProcess) -> None:
    """A body that does not parse is the caller's mistake: grpcio alone answers INTERNAL before
    any handler runs (server/transport/handlers.py parses requests instead)."""
    rng = np.random.default_rng(7)
    with grpc.insecure_channel(fuzz_server.target) as channel:
        # Unary RPCs only: on a stream, see the test below.
        rpcs = [r for r in registered_rpcs(channel) if not r.client_streaming]
        codes: Counter[str] = Counter()
        for i in range(40):
            body = b"\x00" + rng.integers(0, 256, 20, dtype=np.uint8).tobytes()
            codes[answer(channel, Case("random bytes", rpcs[i % len(rpcs)], body)).code.name] += 1
    assert fuzz_server.process.poll() is None
    assert codes == Counter({"INVALID_ARGUMENT": 40}), codes


def test_undecodable_stream_requests_do_not_block_the_drain(
    trained: Trained, tmp_path: Path
) -> None:
    """After stream messages grpcio could not deserialize, its Server.stop(grace).wait() never
    returned (grpcio 1.81, a bare server too): the server must still drain and exit on SIGTERM."""
    settings = {
        "MINHOS_STORAGE_DATABASE_URL": trained.database_url,
        "MINHOS_STORAGE_MODEL_REPOSITORY": str(trained.root / "models"),
    }
    with serving(settings, tmp_path / "server.log") as server:
        with grpc.insecure_channel(server.target) as channel:
            streams = [r for r in registered_rpcs(channel) if r.client_streaming]
            for i in range(12):
                with contextlib.suppress(grpc.RpcError):
                    streams[i % len(streams)].call(channel, [b"\x00\x01"], timeout=5)
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            code = None
    assert code == 0, "the server did not exit within 15 s of SIGTERM"


def test_a_huge_window_is_invalid_argument(fuzz_server: ServerProcess) -> None:
    """A Duration past datetime.timedelta's range (servicers._window) is refused, not INTERNAL."""
    with grpc.insecure_channel(fuzz_server.target) as channel:
        rpc = next(r for r in registered_rpcs(channel) if r.name == "GetHealth")
        request = rpc.request()
        request.window.seconds = 2**62  # type: ignore[attr-defined]
        got = answer(channel, Case("huge window", rpc, request.SerializeToString()))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT and got.details.startswith("window")


def test_an_impossible_resolved_at_is_invalid_argument(fuzz_server: ServerProcess) -> None:
    """A Timestamp outside years 1-9999 (convert.from_timestamp) is refused, not INTERNAL."""
    with grpc.insecure_channel(fuzz_server.target) as channel:
        rpc = next(r for r in registered_rpcs(channel) if r.name == "RecordOutcome")
        request = inference_pb2.RecordOutcomeRequest(prediction_id="x", realized_return=0.01)
        request.resolved_at.seconds = 2**40
        got = answer(channel, Case("bad time", rpc, request.SerializeToString()))
    assert got.code == grpc.StatusCode.INVALID_ARGUMENT and got.details.startswith("resolved_at")


def test_the_judge_sees_a_wrong_answer() -> None:
    """The judge is not vacuous: a field-less message and a wrong field fail it."""
    rpc = Rpc("minhos.v1.InferenceService", "Predict", inference_pb2.PredictRequest, False, False)
    case = Case("x", rpc, b"", grpc.StatusCode.INVALID_ARGUMENT, "symbol")
    assert judge(case, Answer(grpc.StatusCode.INTERNAL, "boom"))
    assert judge(case, Answer(grpc.StatusCode.INVALID_ARGUMENT, "no field here"))
    assert judge(case, Answer(grpc.StatusCode.INVALID_ARGUMENT, "bars: too short"))
    assert not judge(case, Answer(grpc.StatusCode.INVALID_ARGUMENT, "symbol: must be set"))
