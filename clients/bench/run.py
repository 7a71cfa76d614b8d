"""The sequence of one ``make bench`` run, and its command line.

Servers first (three MinhOS servers: persistence on, off, and on with several serving processes;
the sync and aio controls; the bare echo server), all alive for the whole run so that each
measurement can take turns between them. Then: the Predict client's request form (the fastest of
bars, columns and raw), single-client latency in interleaved bursts, closed-loop loads in rounds
that rotate over the servers, stream rounds alternating with the bare stream, the Open Inference
Protocol beside Predict, and the serving processes' memory, imports and scoring path.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc

from clients.bench import procfs
from clients.bench.controls import BARE_SERVICE, SERVICE
from clients.bench.floor import Floor, floor_plane, request_read_us
from clients.bench.goals import (
    AIO,
    BARE,
    CONTROLS,
    GROUP,
    OFF,
    ON,
    STREAM,
    SYNC,
    Figures,
    goal_checks,
    goal_ratios,
)
from clients.bench.inputs import FORMS, Models, Requests, requests, train_models
from clients.bench.load import Load, LoadTotals, alternate
from clients.bench.measure import (
    StreamRounds,
    percentiles,
    stream_caller,
    time_interleaved,
    unary_caller,
)
from clients.bench.oip import oip_beside_predict
from clients.bench.report import Report, format_report, latency_row, load_row, stream_row
from clients.bench.servers import (
    ServerProcess,
    Standin,
    bare_server,
    control_server,
    real_server,
)
from clients.bench.serving_imports import serving_imports
from clients.bench.settings import Settings
from clients.client import channel_options
from minhos.v1 import inference_pb2

PREDICT = f"/{SERVICE}/Predict"
PREDICT_STREAM = f"/{SERVICE}/PredictStream"
BARE_UNARY = f"/{BARE_SERVICE}/Unary"
BARE_STREAM = f"/{BARE_SERVICE}/Stream"
CONTROL_NAMES = {SYNC: "control, sync grpcio", AIO: "control, grpc.aio"}

Progress = Callable[[str], None]


@dataclass
class Servers:
    minhos: dict[str, ServerProcess]
    controls: dict[str, Standin]
    bare: Standin
    #: Bytes of a Predict reply and of a steady-state PredictStream reply (the bare server's).
    reply_sizes: tuple[int, int]

    def label(self, key: str) -> str:
        server = self.minhos[key]
        return f"{server.processes} processes" if key == GROUP else key

    def idle(self) -> list[int]:
        pids = [pid for server in self.minhos.values() for pid in server.serving_pids()]
        return [*pids, *(c.pid for c in self.controls.values()), self.bare.pid]


def models_for(settings: Settings, scratch: Path, progress: Progress) -> Models:
    if settings.repository:
        return Models(Path(settings.repository), Path(settings.database))
    progress("training the default models once (about 40 s)")
    return train_models(scratch)


def reply_sizes(target: str, inputs: Requests) -> tuple[int, int]:
    """Sizes of a real Predict reply and of the largest reply of a short stream (a prediction
    with the previous one's outcome), from the server that stores nothing."""
    with grpc.insecure_channel(target, options=channel_options()) as channel:
        unary = channel.unary_unary(PREDICT, None, None)(inputs.predict["raw"], timeout=10)
        call = channel.stream_stream(PREDICT_STREAM, None, None)
        replies = list(call(iter(inputs.stream[: inputs.need + 2]), timeout=60))
    return len(unary), max(len(r) for r in replies)


def start_servers(
    stack: ExitStack,
    models: Models,
    scratch: Path,
    settings: Settings,
    inputs: Requests,
    progress: Progress,
) -> Servers:
    extra = dict(settings.server_env)
    minhos = {}
    # One at a time, so that each readiness time is the server's own.
    for key, file, persist, processes in (
        (ON, "persist-on", True, 1),
        (OFF, "persist-off", False, 1),
        (GROUP, f"processes-{settings.processes}", True, settings.processes),
    ):
        progress(f"MinhOS server: {file}")
        server = real_server(models, scratch, file, persist, extra, processes)
        minhos[key] = stack.enter_context(server)
    sizes = reply_sizes(minhos[OFF].target, inputs)
    progress("controls (sync, aio) and the bare server")
    controls = {
        kind: stack.enter_context(control_server(kind, models, scratch)) for kind in CONTROLS
    }
    bare = stack.enter_context(bare_server(*sizes))
    return Servers(minhos, controls, bare, sizes)


def choose_form(
    report: Report, servers: Servers, inputs: Requests, settings: Settings, progress: Progress
) -> str:
    """The request form the server reads fastest (parse and window into numpy, in process: a
    stable figure), beside each form's 1-client Predict p50 on the persistence-on server (the
    forms' p50s differ by less than this machine's noise from run to run)."""
    progress("Predict request forms (bars, columns, raw), interleaved")
    read = request_read_us(inputs.predict)
    form = min(FORMS, key=lambda f: read[f])
    target = servers.minhos[ON].target
    with grpc.insecure_channel(target, options=channel_options()) as channel:
        procfs.settle(servers.idle())
        calls = {f: unary_caller(channel, PREDICT, inputs.predict[f]) for f in FORMS}
        samples = time_interleaved(calls, settings.form_calls, settings.warmup)
    p50 = {f: percentiles(samples[f])[0] for f in FORMS}
    reads = ", ".join(f"{f} {read[f]:.0f} us" for f in FORMS)
    rpcs = ", ".join(f"{f} {p50[f]:.0f} us ({len(inputs.predict[f])} B)" for f in FORMS)
    report.notes += [
        f"Predict request form, for every server and control: {form}, the one the server reads "
        f"fastest (parse + window into numpy, in process: {reads})",
        f"  1-client Predict p50 by form, persistence-on server, {settings.form_calls} "
        f"interleaved calls each: {rpcs}",
    ]
    return form


def single_client(
    report: Report,
    floor: Floor,
    servers: Servers,
    body: bytes,
    form: str,
    settings: Settings,
    progress: Progress,
) -> dict[str, float]:
    """1-client p50 (us) of the persistence-on server and each control."""
    progress("1 client: floor, bare, sync and aio controls, Predict, interleaved")
    with ExitStack() as channels:

        def call(target: str, method: str) -> Callable[[], object]:
            channel = grpc.insecure_channel(target, options=channel_options())
            return unary_caller(channels.enter_context(channel), method, body)

        calls = {
            "floor": floor.predict,
            "bare": call(servers.bare.target, BARE_UNARY),
            **{kind: call(servers.controls[kind].target, PREDICT) for kind in CONTROLS},
            ON: call(servers.minhos[ON].target, PREDICT),
        }
        procfs.settle(servers.idle())
        samples = time_interleaved(calls, settings.calls, settings.warmup)
    path = "one ONNX run" if floor.one_run else "numpy features, two ONNX runs"
    unary_size = servers.reply_sizes[0]
    report.rows += [
        latency_row(
            "in-process floor (DataPlane.predict)",
            samples["floor"],
            f"{floor.need} bars, persistence off, {path}, no RPC",
        ),
        latency_row(
            "bare gRPC unary round trip",
            samples["bare"],
            f"echo, {len(body)} B in, {unary_size} B out",
        ),
        *(
            latency_row(
                f"{CONTROL_NAMES[kind]}, 1 client",
                samples[kind],
                "parse the window, the two ONNX sessions on fixed features",
            )
            for kind in CONTROLS
        ),
        latency_row(
            "unary Predict, 1 client", samples[ON], f"persistence and monitoring on, {form} form"
        ),
    ]
    return {name: percentiles(samples[name])[0] for name in (ON, *CONTROLS)}


def closed_loops(
    report: Report, servers: Servers, body: bytes, settings: Settings, progress: Progress
) -> dict[str, LoadTotals]:
    progress(
        f"{settings.clients} clients: {settings.rounds} rounds over the controls and the three "
        "MinhOS servers"
    )
    loads = {
        **{
            kind: Load(control.target, PREDICT, body, (control.pid,))
            for kind, control in servers.controls.items()
        },
        **{
            key: Load(server.target, PREDICT, body, tuple(server.serving_pids()))
            for key, server in servers.minhos.items()
        },
    }
    totals = alternate(
        loads, settings.clients, settings.load_seconds, settings.rounds, servers.idle()
    )
    names = {
        **CONTROL_NAMES,
        ON: "unary Predict, persistence on",
        OFF: "unary Predict, persistence off",
        GROUP: f"unary Predict, persistence on, {servers.label(GROUP)}",
    }
    report.rows += [load_row(names[name], totals[name], settings.clients) for name in names]
    report.errors.update({servers.label(key): len(totals[key].errors) for key in (ON, OFF, GROUP)})
    return totals


def stream_rounds(
    report: Report,
    servers: Servers,
    bodies: Sequence[bytes],
    settings: Settings,
    progress: Progress,
) -> dict[str, list[float]]:
    """Server CPU per message (us) of each round, of the bare stream and of PredictStream."""
    on, bare = servers.minhos[ON], servers.bare
    rounds = {BARE: StreamRounds(), STREAM: StreamRounds()}
    with (
        grpc.insecure_channel(bare.target, options=channel_options()) as bare_channel,
        grpc.insecure_channel(on.target, options=channel_options()) as channel,
    ):
        kinds = [
            (BARE, stream_caller(bare_channel, BARE_STREAM, bodies), bare.pid),
            (STREAM, stream_caller(channel, PREDICT_STREAM, bodies), on.pid),
        ]
        for i in range(settings.measure_rounds):
            progress(f"streams, round {i + 1} of {settings.measure_rounds}")
            for name, run_stream, pid in kinds[:: 1 if i % 2 == 0 else -1]:
                procfs.settle(servers.idle())
                rounds[name].run(run_stream, len(bodies), pid)
    report.rows += [
        stream_row("bare bidi stream, pipelined", rounds[BARE]),
        stream_row("PredictStream, pipelined, persistence on", rounds[STREAM]),
    ]
    return {name: r.cpu_us for name, r in rounds.items()}


def scoring_path_note(servers: Servers) -> str:
    flags = {servers.label(key): s.one_run() for key, s in servers.minhos.items()}
    every = [flag for per in flags.values() for flag in per]
    path = (
        "one ONNX run per request (the serving graph)"
        if every and all(every)
        else "numpy features and two ONNX runs in some or all processes"
    )
    logged = "; ".join(f"{name} {per}" for name, per in flags.items())
    return f"Scoring path: {path}; one_run of each 'models swapped' log line: {logged}"


def figures(
    servers: Servers,
    settings: Settings,
    p50_us: dict[str, float],
    loads: dict[str, LoadTotals],
    stream_cpu_us: dict[str, list[float]],
    forbidden: list[str],
    errors: dict[str, int],
) -> Figures:
    minhos = servers.minhos
    return Figures(
        clients=settings.clients,
        processes=settings.processes,
        p50_us=p50_us,
        loads=loads,
        stream_cpu_us=stream_cpu_us,
        errors=errors,
        ready_s={key: s.ready_s for key, s in minhos.items()},
        forbidden=forbidden,
        memory={
            key: list(zip(s.rss_at_ready, s.serving_rss_mb(), strict=True))
            for key, s in minhos.items()
        },
        group_cpu_s=[procfs.cpu_seconds(pid) for pid in minhos[GROUP].serving_pids()],
    )


def forbidden_found(
    servers: Servers, models: Models, scratch: Path, body: bytes, settings: Settings
) -> list[str]:
    imported = serving_imports(models, scratch, body, dict(settings.server_env))
    found = {name for name, yes in imported.items() if yes}
    for server in servers.minhos.values():
        found.update(server.mapped_forbidden())
    return sorted(found)


def run(settings: Settings, progress: Progress = lambda _: None) -> Report:
    report = Report()
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="minhos-bench-")))
        models = models_for(settings, scratch, progress)
        progress("in-process floor")
        floor = stack.enter_context(floor_plane(models, scratch / "floor.db"))
        inputs = requests(floor.need, settings.stream_messages)
        servers = start_servers(stack, models, scratch, settings, inputs, progress)
        form = choose_form(report, servers, inputs, settings, progress)
        body = inputs.predict[form]
        p50 = single_client(report, floor, servers, body, form, settings, progress)
        loads = closed_loops(report, servers, body, settings, progress)
        stream_cpu = stream_rounds(report, servers, inputs.stream, settings, progress)
        if settings.oip:
            progress("ModelInfer (Open Inference Protocol) beside Predict, alternating")
            oip = oip_beside_predict(
                servers.minhos[ON].target,
                inference_pb2.PredictRequest.FromString(body),
                settings,
                servers.idle(),
            )
            report.rows += oip.rows
            report.ratios.update(oip.ratios)
            report.errors.update(oip.errors)
            report.checks += oip.checks
        progress("imports and memory of the serving processes")
        forbidden = forbidden_found(servers, models, scratch, body, settings)
        report.notes.append(scoring_path_note(servers))
        found = figures(servers, settings, p50, loads, stream_cpu, forbidden, report.errors)
    report.ratios = {**goal_ratios(found), **report.ratios}
    report.checks = [*goal_checks(found), *report.checks]
    return report


def main(argv: Sequence[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m clients.bench", description=__doc__)
    parser.add_argument(
        "--calls", type=int, default=defaults.calls, help="timed 1-client calls per server"
    )
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument(
        "--form-calls",
        type=int,
        default=defaults.form_calls,
        help="timed calls per request form when choosing the fastest",
    )
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
        help="seconds per closed-loop round and server",
    )
    parser.add_argument(
        "--rounds", type=int, default=defaults.rounds, help="closed-loop rounds per server"
    )
    parser.add_argument(
        "--measure-rounds",
        type=int,
        default=defaults.measure_rounds,
        help="rounds of the bare stream and PredictStream (alternating)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=defaults.processes,
        help="serving processes of the multi-process server",
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
        help="extra setting for the MinhOS server processes (repeatable)",
    )
    parser.add_argument("--no-oip", action="store_true", help="skip ModelInfer beside Predict")
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
        form_calls=args.form_calls,
        stream_messages=args.stream_messages,
        clients=args.clients,
        load_seconds=args.load_seconds,
        rounds=args.rounds,
        measure_rounds=args.measure_rounds,
        processes=args.processes,
        repository=args.repository,
        database=database,
        server_env=extra,
        oip=not args.no_oip,
    )
    began = time.perf_counter()
    report = run(settings, progress=lambda text: print(f"bench: {text}", file=sys.stderr))
    print(format_report(report))
    print(f"\n(one run, {time.perf_counter() - began:.0f} s, {os.cpu_count()} cores)")
    return 0
