"""``make bench``: one table from one run, so that ratios compare figures taken side by side.

Rows: the in-process floor (``DataPlane.predict``: features + both ONNX sessions + fusion + Kelly,
no RPC), a bare gRPC unary round trip and a bare bidirectional stream carrying messages of the same
serialized sizes as the real ones, unary Predict and PredictStream against the real server
(persistence on), 8 concurrent unary clients in a separate process against the server with
persistence on and off, and the serving process's readiness, memory and imports.

The single-client latencies are taken in short bursts that take turns (floor, paced floor, bare
unary, control, unary Predict) and the two streams alternate over rounds, each from idle servers,
so that the machine's speed changes (on a shared VM it can halve and recover within seconds) hit
both sides of every ratio alike. The stream rows add the server process's CPU time per message.

Every server runs in its own process (``python -m server.main``, as in production) on a scratch
copy of the registry database, so the benchmark leaves no predictions behind. Without
``--repository`` the real default models are trained once into a temporary directory.
Exit status is 0 whether or not a target is met (each is printed as PASS/FAIL); non-zero only on a
crash.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.client import bars_from_arrays, channel_options, columns_from_arrays
from minhos.v1 import inference_pb2, inference_pb2_grpc

BARE_SERVICE = "bench.Bare"
SYMBOL = "SPX"
#: Modules the serving process must not load (torch, sklearn) or should not need (pandas).
FORBIDDEN = ("torch", "sklearn", "pandas")
#: Path fragments of those packages' shared libraries, looked up in the server's memory map.
FORBIDDEN_LIBS = {"torch": "/torch/", "sklearn": "/sklearn/", "pandas": "/pandas/"}
READY_TIMEOUT_S = 30.0
#: Streaming 20 years of bars advances the market clock past every retraining schedule; a training
#: job in the middle of a measurement would measure training, so the bench's servers only serve.
SERVER_DEFAULTS = {"MINHOS_RETRAIN_ENABLED": "false"}


@dataclass
class Row:
    name: str
    p50_us: float = float("nan")
    p99_us: float = float("nan")
    per_second: float = float("nan")
    note: str = ""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Settings:
    calls: int = 1000
    warmup: int = 50
    #: 0: the whole built-in S&P 500 series.
    stream_messages: int = 0
    clients: int = 8
    #: Seconds of each 8-client load round, per server; rounds alternate persistence on and off.
    load_seconds: float = 1.25
    rounds: int = 4
    #: Rounds of the bare stream and PredictStream, alternating which goes first.
    measure_rounds: int = 3
    repository: str = ""
    #: SQLite file holding ``repository``'s registry rows (which versions are deployed).
    database: str = ""
    #: Extra ``MINHOS_*`` settings for every server process (experiments, e.g. worker count).
    server_env: tuple[tuple[str, str], ...] = ()
    #: Also measure the Open Inference Protocol's ModelInfer beside Predict (``make bench`` does).
    oip: bool = False


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(samples_s: Sequence[float]) -> tuple[float, float]:
    if not samples_s:
        return float("nan"), float("nan")
    arr = np.asarray(samples_s) * 1e6
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def latency_row(name: str, samples_s: Sequence[float], note: str = "") -> Row:
    p50, p99 = percentiles(samples_s)
    return Row(name, p50, p99, 1e6 / p50 if p50 > 0 else float("nan"), note)


# --- the models: trained once unless given ---------------------------------------------------------


@dataclass(frozen=True)
class Models:
    repository: Path
    #: The registry database the repository was published into (never written by the bench).
    database: Path


def train_models(into: Path) -> Models:
    """The real default models, trained by ``python -m export.train`` in its own process (torch
    and scikit-learn stay out of the benchmark's processes)."""
    models = Models(into / "models", into / "registry.db")
    env = clean_env(
        {
            "MINHOS_STORAGE_DATABASE_URL": f"sqlite:///{models.database}",
            "MINHOS_STORAGE_MODEL_REPOSITORY": str(models.repository),
        }
    )
    log = into / "train.log"
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "export.train"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise RuntimeError(f"training failed ({done.returncode}):\n{tail(log)}")
    return models


def scratch_database(models: Models, target: Path) -> str:
    """A consistent copy of the registry database (SQLite's backup API, WAL included)."""
    source = sqlite3.connect(models.database)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    return f"sqlite:///{target}"


def clean_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The environment minus any MinhOS settings of the caller's shell, plus ``settings``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MINHOS_") and k != "DATABASE_URL"
    }
    env.update(settings)
    return env


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- messages of the real sizes ------------------------------------------------------------------


@dataclass(frozen=True)
class Messages:
    request: inference_pb2.PredictRequest
    response_size: int
    stream_requests: list[inference_pb2.StreamRequest]
    stream_response_size: int

    @property
    def request_bytes(self) -> bytes:
        return self.request.SerializeToString()


def sp500_bars() -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.datetime64]
]:
    from export.data import load_sp500  # pandas stays in this (client) process only

    data = load_sp500()
    return data.times.astype(np.int64), data.ohlcv, data.times


# --- the in-process floor ------------------------------------------------------------------------


@dataclass(frozen=True)
class Floor:
    """``DataPlane.predict`` on the last ``bars_required`` bars, persistence off: the in-process
    floor, called between the RPC measurements of each round."""

    predict: Callable[[], object]
    bars: int


@contextmanager
def floor_plane(
    models: Models, scratch: Path, stream_count: int
) -> Iterator[tuple[Floor, Messages]]:
    """The floor, and the real messages (their serialized sizes drive the bare server)."""
    from server.core.config import load_config
    from server.core.records import outcome_of
    from server.serving.dataplane import DataPlane
    from server.serving.models import ModelHolder
    from server.storage.registry import ModelRepository
    from server.storage.schema import close_database, open_database
    from server.storage.writer import BatchWriter
    from server.transport import convert

    config = load_config(
        env={
            "MINHOS_STORAGE_DATABASE_URL": scratch_database(models, scratch),
            "MINHOS_STORAGE_MODEL_REPOSITORY": str(models.repository),
            "MINHOS_STORAGE_PERSIST": "false",
        }
    )
    open_database(config.storage.database_url)
    try:
        holder = ModelHolder(ModelRepository(models.repository), config)
        if not holder.reload():
            raise RuntimeError(f"cannot load the models: {holder.last_error}")
        plane = DataPlane(config, holder, BatchWriter(1.0, 1, enabled=False))
        need = holder.current.bars_required
        epoch, ohlcv, times = sp500_bars()
        window_t, window_x = epoch[-need:], ohlcv[-need:]
        prediction = plane.predict(SYMBOL, window_t, window_x)
        count = min(stream_count or len(epoch), len(epoch))
        request = inference_pb2.PredictRequest(
            symbol=SYMBOL, columns=columns_from_arrays(times[-need:], ohlcv[-need:])
        )
        response = convert.prediction_out(prediction)
        # A steady-state stream reply: the new prediction plus the previous one's outcome.
        stream_response = inference_pb2.StreamResponse(
            symbol=SYMBOL,
            bar_time=response.bar_time,
            prediction=response,
            resolved=convert.outcome_out(outcome_of(prediction, 0.01234, prediction.bar_time)),
        )
        all_bars = bars_from_arrays(times[:count], ohlcv[:count])
        messages = Messages(
            request=request,
            response_size=response.ByteSize(),
            stream_requests=[inference_pb2.StreamRequest(symbol=SYMBOL, bar=b) for b in all_bars],
            stream_response_size=stream_response.ByteSize(),
        )
        yield Floor(lambda: plane.predict(SYMBOL, window_t, window_x), need), messages
    finally:
        close_database()


# --- the bare server: same message sizes, no work ------------------------------------------------


_BUSY_ROWS = np.linspace(1.0, 2.0, 1000).reshape(20, 50)


def busy(steps: int) -> None:
    """A fixed amount of small numpy work, like the real handler's: ``steps`` rounds of it. A fixed
    amount, not a fixed time, slows down and speeds up with the machine as the floor does."""
    for _ in range(steps):
        np.log(_BUSY_ROWS).std(axis=1)


def busy_steps_like(call: Callable[[], object], samples: int) -> int:
    """How many :func:`busy` steps take as long as ``call``'s median, both timed in turns."""
    times = time_interleaved({"call": (call, 0.0), "step": (lambda: busy(10), 0.0)}, samples, 20)
    return max(1, round(10 * float(np.median(times["call"])) / float(np.median(times["step"]))))


def serve_bare(unary_size: int, stream_size: int, work_steps: int, ready: Connection) -> None:
    """Runs in its own process: echoes fixed payloads of the real response sizes; "Work" first
    does ``work_steps`` of :func:`busy` (as long as the floor), a control for what any grpcio
    server pays on this machine around a handler that does that much work."""
    unary_payload, stream_payload = b"x" * unary_size, b"x" * stream_size

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        return unary_payload

    def work(request: bytes, context: grpc.ServicerContext) -> bytes:
        busy(work_steps)
        return unary_payload

    def stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for _ in requests:
            yield stream_payload

    handler = grpc.method_handlers_generic_handler(
        BARE_SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Work": grpc.unary_unary_rpc_method_handler(work),
            "Stream": grpc.stream_stream_rpc_method_handler(stream),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready.send(port)
    ready.recv()  # the parent closes its end (or dies): stop
    server.stop(0)


@contextmanager
def bare_server(
    unary_size: int, stream_size: int, work_steps: int = 0
) -> Iterator[tuple[str, int]]:
    """The bare server's target and process id."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(
        target=serve_bare, args=(unary_size, stream_size, work_steps, child), daemon=True
    )
    process.start()
    try:
        if not parent.poll(READY_TIMEOUT_S):
            raise RuntimeError("the bare gRPC server did not start")
        assert process.pid is not None
        yield f"127.0.0.1:{parent.recv()}", process.pid
    finally:
        parent.send(None)
        process.join(5)
        if process.is_alive():
            process.kill()


def channel_call(channel: grpc.Channel, method: str, request: bytes) -> Callable[[], object]:
    call = channel.unary_unary(f"/{BARE_SERVICE}/{method}", None, None)
    return lambda: call(request, timeout=10)


def bare_stream(channel: grpc.Channel, request: bytes, count: int) -> Callable[[], int]:
    call = channel.stream_stream(f"/{BARE_SERVICE}/Stream", None, None)
    return lambda: sum(1 for _ in call(iter([request] * count), timeout=120))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pids: Sequence[int], limit_s: float = 5.0) -> None:
    """Waits (up to ``limit_s``) until the servers are idle: below 5% of a core over 0.1 s. A server
    still writing a stream's rows or evaluating health would otherwise slow whatever is measured
    next on these shared cores."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(0.1)
        if sum(cpu_seconds(pid) for pid in pids) - before < 0.005:
            return


@dataclass
class StreamTotals:
    """Rounds of one stream kind: messages/s (median of rounds) and the server's CPU per
    message, from its /proc counters (all threads: gRPC's, the handler's, the writer's), counted
    until the server is idle again (the writer's last rows of the stream included). Periodic
    work that falls in the window (the health evaluation every 10 s) is counted too."""

    rates: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    messages: int = 0

    def run(self, stream: Callable[[], int], count: int, pid: int) -> None:
        cpu = cpu_seconds(pid)
        began = time.perf_counter()
        got = stream()
        elapsed = time.perf_counter() - began
        settle([pid])
        self.cpu_s += cpu_seconds(pid) - cpu
        if got != count:
            raise RuntimeError(f"{got} replies to {count} messages")
        self.rates.append(count / elapsed)
        self.messages += count

    @property
    def rate(self) -> float:
        return float(np.median(self.rates))

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.messages * 1e6

    def row(self, name: str, count: int) -> Row:
        return Row(
            name,
            per_second=self.rate,
            note=(
                f"{count} messages, 1 stream, median of {len(self.rates)} rounds; server CPU "
                f"{self.cpu_us:.0f} us/msg"
            ),
        )


#: Idle before each paced floor call: about one bare round trip, the time a server's handler thread
#: waits between back-to-back unary calls. On this machine the same code runs up to twice as slow
#: after such a pause (caches and clocks cool down), so the back-to-back floor flatters the floor.
PACING_S = 0.0003

# --- timing loops ---------------------------------------------------------------------------------


def time_calls(
    call: Callable[[], object], n: int, warmup: int = 50, gap_s: float = 0.0
) -> list[float]:
    """Latency of ``n`` calls; ``gap_s`` of idle (untimed) before each one."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        if gap_s:
            time.sleep(gap_s)
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return samples


def time_interleaved(
    calls: Mapping[str, tuple[Callable[[], object], float]], n: int, warmup: int, burst: int = 10
) -> dict[str, list[float]]:
    """Latency of ``n`` calls of each ``name: (call, gap_s)``, in bursts of ``burst`` taking
    turns (in a rotating order), so that the machine's speed changes (on this VM it halves and
    recovers within seconds) hit every one of them alike; ``gap_s`` as in :func:`time_calls`."""
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        time_calls(calls[name][0], 0, warmup)
    turn = 0
    while any(len(samples[name]) < n for name in names):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            call, gap_s = calls[name]
            samples[name] += time_calls(call, min(burst, n - len(samples[name])), 0, gap_s)
        turn += 1
    return samples


# --- the real server, in its own process ----------------------------------------------------------


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    target: str
    ready_s: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        return proc_status_kb(self.pid, "VmRSS") / 1024

    def mapped_forbidden(self) -> list[str]:
        """Forbidden packages whose shared libraries are mapped into the live server."""
        maps = Path(f"/proc/{self.pid}/maps").read_text()
        return [name for name, part in FORBIDDEN_LIBS.items() if part in maps]


def proc_status_kb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return float("nan")


def health_serving(target: str, timeout: float) -> bool:
    # A fresh channel per probe: a reused one would wait out gRPC's reconnect backoff (1 s+).
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@contextmanager
def real_server(
    models: Models, scratch: Path, name: str, persist: bool, extra: dict[str, str]
) -> Iterator[ServerProcess]:
    """``python -m server.main`` on a free loopback port and its own database copy; the readiness
    clock starts just before the process is spawned."""
    port = free_port()
    # The bench's own settings win over ``extra``: the persistence on / off pair must hold.
    env = clean_env(
        {
            **SERVER_DEFAULTS,
            **extra,
            "MINHOS_SERVER_PORT": str(port),
            "MINHOS_SERVER_METRICS_PORT": "0",
            "MINHOS_STORAGE_DATABASE_URL": scratch_database(models, scratch / f"{name}.db"),
            "MINHOS_STORAGE_MODEL_REPOSITORY": str(models.repository),
            "MINHOS_STORAGE_PERSIST": "true" if persist else "false",
        }
    )
    log = scratch / f"{name}.log"
    target = f"127.0.0.1:{port}"
    with log.open("wb") as out:
        began = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "server.main"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        while not health_serving(target, 0.5):
            if process.poll() is not None:
                raise RuntimeError(f"server {name} exited ({process.returncode}):\n{tail(log)}")
            if time.perf_counter() - began > READY_TIMEOUT_S:
                raise RuntimeError(f"server {name} not SERVING after {READY_TIMEOUT_S} s")
            time.sleep(0.01)
        yield ServerProcess(process, target, time.perf_counter() - began)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- concurrent clients, in a separate process ----------------------------------------------------


def load(target: str, request_bytes: bytes, clients: int, seconds: float) -> dict[str, object]:
    """Runs in its own process: ``clients`` threads, each with its own channel and connection,
    calling Predict for ``seconds``. Returns the latencies (s) and error codes."""
    request = inference_pb2.PredictRequest.FromString(request_bytes)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop = [0.0]

    def worker(i: int) -> None:
        # A local subchannel pool: otherwise channels with equal arguments share one connection.
        options = [*channel_options(), ("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(target, options=options) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            stub.Predict(request, timeout=10)  # connect before the clock starts
            start.wait()
            while time.perf_counter() < stop[0]:
                began = time.perf_counter()
                try:
                    stub.Predict(request, timeout=10)
                    latencies[i].append(time.perf_counter() - began)
                except grpc.RpcError as exc:
                    errors[i].append(exc.code().name)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop[0] = time.perf_counter() + 3600
    start.wait()
    began = time.perf_counter()
    stop[0] = began + seconds
    for t in threads:
        t.join()
    return {
        "latencies": [x for per in latencies for x in per],
        "errors": [e for per in errors for e in per],
        "seconds": time.perf_counter() - began,
    }


@dataclass
class LoadTotals:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: dict[str, object]) -> None:
        self.latencies += result["latencies"]  # type: ignore[arg-type]
        self.errors += result["errors"]  # type: ignore[arg-type]
        self.seconds += float(result["seconds"])  # type: ignore[arg-type]

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else float("nan")

    def row(self, name: str, clients: int) -> Row:
        p50, p99 = percentiles(self.latencies)
        errors = f"{len(self.errors)} errors" + (
            f" ({', '.join(sorted(set(self.errors)))})" if self.errors else ""
        )
        note = f"{len(self.latencies)} calls in {self.seconds:.1f} s, {errors}"
        return Row(f"{name}, {clients} clients", p50, p99, self.throughput, note)


def concurrent_load(
    targets: dict[str, str], request_bytes: bytes, settings: Settings, pids: Sequence[int] = ()
) -> dict[str, LoadTotals]:
    """Alternates rounds between the servers (A B, B A, ...) so both see the same machine noise;
    each round starts once the servers ``pids`` are idle."""
    totals = {name: LoadTotals() for name in targets}
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        for round_ in range(settings.rounds):
            order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
            for name in order:
                settle(pids)
                args = (targets[name], request_bytes, settings.clients, settings.load_seconds)
                totals[name].add(pool.apply(load, args))
    return totals


# --- the Open Inference Protocol's ModelInfer beside Predict ---------------------------------------

PREDICT_METHOD = "/minhos.v1.InferenceService/Predict"
MODEL_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
#: ModelInfer on ``minhos`` may cost at most this many times Predict (p50 up, throughput down).
OIP_TOLERANCE = 1.2


def model_infer_request(request: inference_pb2.PredictRequest) -> bytes:
    """ModelInfer on ``minhos`` for Predict's window, in the raw form tritonclient's
    ``set_data_from_numpy`` sends: bars FP64 [1, n, 5], time_seconds INT64 [1, n], the symbol as
    a request parameter."""
    from minhos.oip.v2 import open_inference_pb2 as oip  # never together with tritonclient's

    columns = request.columns
    times = np.asarray(columns.time_seconds, dtype="<i8")
    bars = np.column_stack(
        [
            np.asarray(getattr(columns, c), dtype="<f8")
            for c in ("open", "high", "low", "close", "volume")
        ]
    )
    out = oip.ModelInferRequest(model_name="minhos")
    out.parameters["symbol"].string_param = request.symbol
    out.inputs.add(name="bars", datatype="FP64", shape=[1, *bars.shape])
    out.inputs.add(name="time_seconds", datatype="INT64", shape=[1, len(times)])
    out.raw_input_contents.extend([bars.tobytes(), times.tobytes()])
    return out.SerializeToString()


def load_method(
    target: str, method: str, request_bytes: bytes, clients: int, seconds: float
) -> dict[str, object]:
    """Runs in its own process, like :func:`load`, for any unary method: serialized bytes out, the
    reply's bytes not parsed (the same client work for every method compared)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop = [time.perf_counter() + 3600]

    def worker(i: int) -> None:
        options = [*channel_options(), ("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(target, options=options) as channel:
            call = channel.unary_unary(method, None, None)
            call(request_bytes, timeout=10)
            start.wait()
            while time.perf_counter() < stop[0]:
                began = time.perf_counter()
                try:
                    call(request_bytes, timeout=10)
                    latencies[i].append(time.perf_counter() - began)
                except grpc.RpcError as exc:
                    errors[i].append(exc.code().name)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    stop[0] = began + seconds
    for t in threads:
        t.join()
    return {
        "latencies": [x for per in latencies for x in per],
        "errors": [e for per in errors for e in per],
        "seconds": time.perf_counter() - began,
    }


def oip_beside_predict(
    target: str, request: inference_pb2.PredictRequest, settings: Settings, pids: Sequence[int]
) -> Report:
    """ModelInfer on ``minhos`` and Predict on the same window and server: single-client latency
    in interleaved bursts, then ``settings.clients`` concurrent clients in alternating rounds."""
    bodies = {"Predict": request.SerializeToString(), "ModelInfer": model_infer_request(request)}
    methods = {"Predict": PREDICT_METHOD, "ModelInfer": MODEL_INFER_METHOD}

    def caller(channel: grpc.Channel, name: str) -> Callable[[], object]:
        call = channel.unary_unary(methods[name], None, None)
        return lambda: call(bodies[name], timeout=10)

    with grpc.insecure_channel(target, options=channel_options()) as channel:
        settle(pids)
        samples = time_interleaved(
            {name: (caller(channel, name), 0.0) for name in methods},
            settings.calls,
            settings.warmup,
        )
    totals = {name: LoadTotals() for name in methods}
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        for round_ in range(settings.rounds):
            for name in list(methods)[:: 1 if round_ % 2 == 0 else -1]:
                settle(pids)
                args = (
                    target,
                    methods[name],
                    bodies[name],
                    settings.clients,
                    settings.load_seconds,
                )
                totals[name].add(pool.apply(load_method, args))
    report = Report()
    single = {name: latency_row(f"{name}, 1 client", samples[name]) for name in methods}
    note = f"minhos model, raw tensors, {len(bodies['ModelInfer'])} B in; interleaved with Predict"
    single["ModelInfer"].name, single["ModelInfer"].note = "OIP ModelInfer, 1 client", note
    single["Predict"].name = "unary Predict, 1 client, beside ModelInfer"
    loaded = {
        "ModelInfer": totals["ModelInfer"].row("OIP ModelInfer", settings.clients),
        "Predict": totals["Predict"].row("unary Predict, beside ModelInfer", settings.clients),
    }
    report.rows += [
        single["ModelInfer"],
        single["Predict"],
        loaded["ModelInfer"],
        loaded["Predict"],
    ]
    p50 = single["ModelInfer"].p50_us / single["Predict"].p50_us
    rate = totals["ModelInfer"].throughput / totals["Predict"].throughput
    report.ratios["ModelInfer / Predict p50, 1 client"] = p50
    report.ratios[f"ModelInfer / Predict throughput, {settings.clients} clients"] = rate
    errors = len(totals["ModelInfer"].errors) + len(totals["Predict"].errors)
    report.checks.append(
        Check(
            f"ModelInfer within {OIP_TOLERANCE} x of Predict (p50, {settings.clients}-client throughput)",
            p50 <= OIP_TOLERANCE and rate >= 1 / OIP_TOLERANCE and not errors,
            f"p50 {single['ModelInfer'].p50_us:.0f} vs {single['Predict'].p50_us:.0f} us "
            f"({p50:.2f} x); {totals['ModelInfer'].throughput:.0f} vs "
            f"{totals['Predict'].throughput:.0f} req/s ({rate:.2f} x); {errors} errors",
        )
    )
    return report


# --- what the serving process imports --------------------------------------------------------------

IMPORT_PROBE = """
import json, sys
from pathlib import Path
import grpc
from server.core.config import load_config
from server.app import MinhosServer
from minhos.v1 import inference_pb2, inference_pb2_grpc

server = MinhosServer(load_config()).start()
try:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        request = inference_pb2.PredictRequest.FromString(Path(sys.argv[1]).read_bytes())
        inference_pb2_grpc.InferenceServiceStub(channel).Predict(request, timeout=10)
finally:
    server.stop(grace=1.0)
print(json.dumps({name: name in sys.modules for name in sys.argv[2:]}))
"""


def serving_imports(
    models: Models, scratch: Path, request: bytes, extra: dict[str, str]
) -> dict[str, bool]:
    """Starts a MinhosServer in a fresh interpreter, serves one Predict, and reports which of
    :data:`FORBIDDEN` ended up in ``sys.modules``."""
    request_file = scratch / "request.bin"
    request_file.write_bytes(request)
    env = clean_env(
        {
            **SERVER_DEFAULTS,
            **extra,
            "MINHOS_SERVER_PORT": "0",
            "MINHOS_SERVER_METRICS_PORT": "0",
            "MINHOS_STORAGE_DATABASE_URL": scratch_database(models, scratch / "imports.db"),
            "MINHOS_STORAGE_MODEL_REPOSITORY": str(models.repository),
            "MINHOS_STORAGE_PERSIST": "false",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, str(request_file), *FORBIDDEN],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"import probe failed:\n{done.stderr[-2000:]}")
    found: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


# --- the run ---------------------------------------------------------------------------------------


def run(settings: Settings, progress: Callable[[str], None] = lambda _: None) -> Report:
    report = Report()
    rows = report.rows
    extra = dict(settings.server_env)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="minhos-bench-")))
        if settings.repository:
            models = Models(Path(settings.repository), Path(settings.database))
        else:
            progress("training the default models once (about 15 s)")
            models = train_models(scratch)

        progress("in-process floor")
        floor_call, messages = stack.enter_context(
            floor_plane(models, scratch / "floor.db", settings.stream_messages)
        )
        # The control's handler does numpy work as long as the floor (calibrated side by side).
        work_steps = busy_steps_like(floor_call.predict, min(200, settings.calls))
        stream_count = len(messages.stream_requests)
        stream_request = messages.stream_requests[-1].SerializeToString()
        progress("bare gRPC server")
        bare_target, bare_pid = stack.enter_context(
            bare_server(messages.response_size, messages.stream_response_size, work_steps)
        )
        progress("server, persistence on")
        on = stack.enter_context(
            real_server(models, scratch, "persist-on", persist=True, extra=extra)
        )
        ready_on, rss_on, maps_on = on.ready_s, on.rss_mb(), on.mapped_forbidden()
        progress("server, persistence off")
        off = stack.enter_context(
            real_server(models, scratch, "persist-off", persist=False, extra=extra)
        )
        bare_channel = stack.enter_context(grpc.insecure_channel(bare_target))
        channel = stack.enter_context(grpc.insecure_channel(on.target, options=channel_options()))
        # Like the bare server's client, this one sends bytes serialized beforehand and does not
        # parse the replies: the client's work is the same on both sides of each ratio, and the
        # server does all of its own (parsing, scoring, serializing).
        service = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
        predict_raw = channel.unary_unary(f"/{service}/Predict", None, None)
        stream_raw = channel.stream_stream(f"/{service}/PredictStream", None, None)
        request_bytes = messages.request_bytes
        stream_bytes = [r.SerializeToString() for r in messages.stream_requests]
        inference_pb2.PredictResponse.FromString(predict_raw(request_bytes, timeout=10))

        def predict() -> object:
            return predict_raw(request_bytes, timeout=10)

        def predict_stream() -> int:
            return sum(1 for _ in stream_raw(iter(stream_bytes), timeout=300))

        bare_streaming = bare_stream(bare_channel, stream_request, stream_count)
        servers = [bare_pid, on.pid, off.pid]
        # Every measurement in every round, so that the machine's drift (large on a shared VM)
        # hits the numerator and the denominator of each ratio alike.
        bare_streams, streams = StreamTotals(), StreamTotals()
        progress("single-client latency: floor, bare unary, control, unary Predict, interleaved")
        settle(servers)
        bare_call = channel_call(bare_channel, "Unary", messages.request_bytes)
        work_call = channel_call(bare_channel, "Work", messages.request_bytes)
        samples = time_interleaved(
            {
                "floor": (floor_call.predict, 0.0),
                "paced": (floor_call.predict, PACING_S),
                "bare": (bare_call, 0.0),
                "work": (work_call, 0.0),
                "rpc": (predict, 0.0),
            },
            settings.calls,
            settings.warmup,
        )
        for i in range(settings.measure_rounds):
            progress(f"streams, round {i + 1} of {settings.measure_rounds}")
            # Alternating which goes first, each from idle servers.
            for totals, run_stream, pid in [
                (bare_streams, bare_streaming, bare_pid),
                (streams, predict_stream, on.pid),
            ][:: 1 if i % 2 == 0 else -1]:
                settle(servers)
                totals.run(run_stream, stream_count, pid)
        floor = latency_row(
            "in-process floor (DataPlane.predict)",
            samples["floor"],
            f"{floor_call.bars} bars, persistence off, back to back",
        )
        paced_floor = latency_row(
            "in-process floor, paced",
            samples["paced"],
            f"the same with {PACING_S * 1e3:.1f} ms idle before each call, as a server sees",
        )
        bare = latency_row(
            "bare gRPC unary round trip",
            samples["bare"],
            f"echo, {len(messages.request_bytes)} B in / same size out",
        )
        control = latency_row(
            "bare gRPC unary, busy handler",
            samples["work"],
            f"control: the echo after numpy work as long as the floor ({work_steps} steps)",
        )
        unary = latency_row(
            "unary Predict, 1 client", samples["rpc"], "server process, persistence on"
        )
        bare_rate = bare_streams.row("bare bidi stream, pipelined", stream_count)
        stream = streams.row("PredictStream, pipelined", stream_count)
        rows += [floor, paced_floor, bare, control, unary, bare_rate, stream]

        progress(f"{settings.clients} concurrent clients, persistence on / off")
        loads = concurrent_load(
            {"on": on.target, "off": off.target}, messages.request_bytes, settings, servers
        )
        rows.append(loads["on"].row("unary Predict, persistence on", settings.clients))
        rows.append(loads["off"].row("unary Predict, persistence off", settings.clients))
        if settings.oip:
            progress("ModelInfer (Open Inference Protocol) beside Predict, alternating")
            oip_report = oip_beside_predict(
                on.target, messages.request, settings, [on.pid, off.pid, bare_pid]
            )
            rows += oip_report.rows
            report.ratios.update(oip_report.ratios)
            report.checks += oip_report.checks
        rss_after = on.rss_mb()
        hwm = proc_status_kb(on.pid, "VmHWM") / 1024
        rows.append(
            Row(
                "server process",
                note=(
                    f"ready in {ready_on:.2f} s (persist off: {off.ready_s:.2f} s); VmRSS "
                    f"{rss_on:.0f} MB at ready, {rss_after:.0f} MB after load (peak {hwm:.0f} MB)"
                ),
            )
        )

        progress("imports of the serving process")
        imported = serving_imports(models, scratch, messages.request_bytes, extra)
        loaded = [name for name, yes in imported.items() if yes]
        rows.append(
            Row(
                "serving process imports",
                note=(
                    "sys.modules after one Predict: "
                    + ", ".join(f"{n} {'YES' if imported[n] else 'no'}" for n in FORBIDDEN)
                    + f"; libraries mapped in the live server: {', '.join(maps_on) or 'none'}"
                ),
            )
        )

    floor_plus_bare = floor.p50_us + bare.p50_us
    paced_plus_bare = paced_floor.p50_us + bare.p50_us
    on_total, off_total = loads["on"], loads["off"]
    r = report.ratios
    r["unary p50 / (floor p50 + bare unary p50)"] = unary.p50_us / floor_plus_bare
    r["unary p50 / (paced floor p50 + bare unary p50)"] = unary.p50_us / paced_plus_bare
    r["busy-handler control p50 / (floor p50 + bare unary p50)"] = control.p50_us / floor_plus_bare
    r["unary p50 / busy-handler control p50"] = unary.p50_us / control.p50_us
    r["PredictStream / bare stream msgs/s"] = stream.per_second / bare_rate.per_second
    r["PredictStream / bare stream server CPU per message"] = streams.cpu_us / bare_streams.cpu_us
    r["8 clients p99 / p50"] = (
        percentiles(on_total.latencies)[1] / percentiles(on_total.latencies)[0]
    )
    r["persistence on / off throughput"] = on_total.throughput / off_total.throughput
    report.checks += [
        Check(
            "unary p50 <= 1.3 x (floor + bare round trip)",
            r["unary p50 / (floor p50 + bare unary p50)"] <= 1.3,
            f"{unary.p50_us:.0f} us vs 1.3 x ({floor.p50_us:.0f} + {bare.p50_us:.0f}) = "
            f"{1.3 * floor_plus_bare:.0f} us",
        ),
        Check(
            "unary p50 <= 1.3 x (paced floor + bare round trip)",
            r["unary p50 / (paced floor p50 + bare unary p50)"] <= 1.3,
            f"{unary.p50_us:.0f} us vs 1.3 x ({paced_floor.p50_us:.0f} + {bare.p50_us:.0f}) = "
            f"{1.3 * paced_plus_bare:.0f} us",
        ),
        Check(
            "PredictStream >= 0.75 x bare stream",
            r["PredictStream / bare stream msgs/s"] >= 0.75,
            f"{stream.per_second:.0f} vs 0.75 x {bare_rate.per_second:.0f} = "
            f"{0.75 * bare_rate.per_second:.0f} msgs/s",
        ),
        Check(
            f"{settings.clients} clients: no errors, p99 <= 5 x p50",
            not on_total.errors and r["8 clients p99 / p50"] <= 5,
            f"{len(on_total.errors)} errors, p99/p50 = {r['8 clients p99 / p50']:.2f}",
        ),
        Check(
            "persistence on / off throughput >= 0.9",
            r["persistence on / off throughput"] >= 0.9,
            f"{on_total.throughput:.0f} / {off_total.throughput:.0f} req/s = "
            f"{r['persistence on / off throughput']:.3f}",
        ),
        Check(
            "ready (health SERVING) <= 3 s from process start",
            max(ready_on, off.ready_s) <= 3.0,
            f"{ready_on:.2f} s and {off.ready_s:.2f} s",
        ),
        Check(
            "no torch / sklearn in the serving process",
            not (imported["torch"] or imported["sklearn"] or {"torch", "sklearn"} & set(maps_on)),
            f"imported: {', '.join(loaded) or 'none of ' + '/'.join(FORBIDDEN)}",
        ),
    ]
    return report


def format_report(report: Report) -> str:
    width = max(len(row.name) for row in report.rows)
    header = f"{'measure':<{width}}  {'p50 us':>9}  {'p99 us':>9}  {'per s':>9}  note"
    lines = [header, "-" * (len(header) + 40)]

    def num(x: float) -> str:
        return f"{x:>9.0f}" if np.isfinite(x) else f"{'':>9}"

    for row in report.rows:
        lines.append(
            f"{row.name:<{width}}  {num(row.p50_us)}  {num(row.p99_us)}  {num(row.per_second)}"
            f"  {row.note}"
        )
    lines.append("")
    lines += [f"{name}: {value:.3f}" for name, value in report.ratios.items()]
    lines.append("")
    lines += [
        f"{'PASS' if check.ok else 'FAIL'}  {check.name}  ({check.detail})"
        for check in report.checks
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m clients.bench", description=__doc__)
    parser.add_argument("--calls", type=int, default=defaults.calls, help="timed unary calls")
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument(
        "--stream-messages",
        type=int,
        default=defaults.stream_messages,
        help="bars streamed (default: all 5031 S&P 500 bars)",
    )
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument(
        "--load-seconds",
        type=float,
        default=defaults.load_seconds,
        help="seconds per concurrent-load round and server",
    )
    parser.add_argument(
        "--rounds", type=int, default=defaults.rounds, help="concurrent-load rounds per server"
    )
    parser.add_argument(
        "--measure-rounds",
        type=int,
        default=defaults.measure_rounds,
        help="rounds of the bare stream and PredictStream (alternating)",
    )
    parser.add_argument(
        "--repository", default="", help="trained model repository (default: train one)"
    )
    parser.add_argument(
        "--database",
        default="",
        help="SQLite file holding --repository's registry (default: the configured database)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="MINHOS_X=VALUE",
        help="extra setting for the server processes (repeatable)",
    )
    args = parser.parse_args(argv)
    extra = tuple(tuple(item.split("=", 1)) for item in args.server_env)
    if any(len(pair) != 2 or not pair[0].startswith("MINHOS_") for pair in extra):
        parser.error("--server-env takes MINHOS_<SECTION>_<FIELD>=VALUE")
    database = args.database
    if args.repository and not database:
        from server.core.config import load_config

        url = load_config().storage.database_url
        if not url.startswith("sqlite:///"):
            parser.error("--database: the bench copies a SQLite registry; give its file")
        database = url[len("sqlite:///") :]
    settings = Settings(
        calls=args.calls,
        warmup=args.warmup,
        stream_messages=args.stream_messages,
        clients=args.clients,
        load_seconds=args.load_seconds,
        rounds=args.rounds,
        measure_rounds=args.measure_rounds,
        repository=args.repository,
        database=database,
        server_env=extra,
        oip=True,
    )
    began = time.perf_counter()
    report = run(settings, progress=lambda text: print(f"bench: {text}", file=sys.stderr))
    print(format_report(report))
    print(f"\n(one run, {time.perf_counter() - began:.0f} s, {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
