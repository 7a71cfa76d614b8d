"""The ``minhos`` command line: predictions, health, calibration, retraining and model versions.

Every subcommand talks to a running server through :class:`clients.client.MinhosClient`; ``--json``
prints the raw reply (protobuf JSON) for scripts.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

import grpc
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from clients.client import DEFAULT_TARGET, KINDS, MinhosClient, columns_from_arrays
from minhos.v1 import calibration_pb2, common_pb2, monitoring_pb2, retrain_pb2


def _enum(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _print_json(messages: Sequence[Message]) -> None:
    for message in messages:
        print(MessageToJson(message, preserving_proto_field_name=True, indent=2))


def cmd_predict(client: MinhosClient, args: argparse.Namespace) -> None:
    from export.data import load_csv, load_sp500  # training-side loaders: pandas, arch

    data = load_csv(args.csv, symbol=args.symbol) if args.csv else load_sp500()
    need = client.serving_info().bars_required
    if len(data.ohlcv) < need:
        raise SystemExit(f"{len(data.ohlcv)} bars in the data; the server needs {need}")
    end = len(data.ohlcv) if args.end is None else args.end
    bars = columns_from_arrays(data.times[end - need : end], data.ohlcv[end - need : end])
    reply = client.predict(args.symbol or data.symbol, bars)
    if args.json:
        return _print_json([reply])
    direction = common_pb2.Direction.Name(reply.direction).removeprefix("DIRECTION_")
    print(
        f"prediction {reply.prediction_id} for {reply.symbol} after {reply.bar_time.ToDatetime():%Y-%m-%d}"
    )
    print(
        f"  direction   {direction}  p(up)={reply.probability_up:.4f}  confidence={reply.confidence:.4f}"
    )
    print(f"  lstm        p(up)={reply.lstm.probability_up:.4f}  ({reply.lstm.version})")
    print(f"  ensemble    p(up)={reply.ensemble.probability_up:.4f}  ({reply.ensemble.version})")
    print(f"  agreement   {reply.agreement:.4f}")
    print(f"  kelly       {reply.kelly_fraction:.4f} of capital  ({reply.kelly_version})")
    print(f"  latency     {reply.server_latency.ToMicroseconds() / 1000:.2f} ms (server side)")


def cmd_health(client: MinhosClient, args: argparse.Namespace) -> None:
    reply = client.health(window_hours=args.window_hours, last_n=args.last_n)
    if args.json:
        return _print_json([reply])
    status = _enum(monitoring_pb2.HealthStatus.Name(reply.status), "HEALTH_STATUS_")
    print(f"health score {reply.health_score:.1f}/100 ({status}) as of {reply.as_of.ToDatetime()}")
    for name, m in (("window", reply.window_metrics), ("last N", reply.last_n_metrics)):
        print(
            f"  {name:7} predictions={m.predictions} resolved={m.resolved} "
            f"accuracy={_fmt(m.accuracy)} confidence={_fmt(m.mean_confidence)} "
            f"agreement={_fmt(m.agreement_rate)} errors={_fmt(m.error_rate, 4)} "
            f"p50={_fmt(m.latency_p50_ms, 2)}ms p99={_fmt(m.latency_p99_ms, 2)}ms"
        )
    for c in reply.components:
        comp = _enum(common_pb2.Component.Name(c.component), "COMPONENT_")
        st = _enum(monitoring_pb2.HealthStatus.Name(c.status), "HEALTH_STATUS_")
        print(f"  {comp:10} {c.score:5.1f} {st:10} {c.detail}")
    for t in reply.trends:
        direction = _enum(monitoring_pb2.TrendDirection.Name(t.direction), "TREND_DIRECTION_")
        component = _enum(common_pb2.Component.Name(t.component), "COMPONENT_")
        print(
            f"  trend {component:<9} {t.metric}: {direction} "
            f"(slope {t.slope:+.2e}, now {_fmt(t.current)})"
        )
    _print_alerts(list(reply.active_alerts))


def _print_alerts(alerts: Sequence[monitoring_pb2.Alert]) -> None:
    if not alerts:
        print("  no active alerts")
    for a in alerts:
        sev = _enum(monitoring_pb2.Severity.Name(a.severity), "SEVERITY_")
        ack = " (acknowledged)" if a.acknowledged else ""
        print(f"  [{sev:8}] {a.id} {a.raised_at.ToDatetime():%Y-%m-%d %H:%M} {a.message}{ack}")


def cmd_alerts(client: MinhosClient, args: argparse.Namespace) -> None:
    alerts = client.alerts(include_acknowledged=args.all, limit=args.limit)
    if args.json:
        return _print_json(alerts)
    _print_alerts(alerts)


def cmd_ack(client: MinhosClient, args: argparse.Namespace) -> None:
    alert = client.acknowledge(args.alert_id, by=args.by)
    _print_json([alert]) if args.json else _print_alerts([alert])


def cmd_calibration(client: MinhosClient, args: argparse.Namespace) -> None:
    binning = calibration_pb2.BINNING_EQUAL_MASS if args.equal_mass else 0
    reports = client.calibration(
        last_n=args.last_n, bins=args.bins, binning=calibration_pb2.Binning.ValueType(binning)
    )
    if args.json:
        return _print_json(reports)
    for r in reports:
        src = _enum(calibration_pb2.ProbabilitySource.Name(r.source), "PROBABILITY_SOURCE_")
        d = r.brier_decomposition
        print(
            f"{src}: n={r.count} accuracy={_fmt(r.accuracy)} ECE={_fmt(r.ece, 4)} "
            f"MCE={_fmt(r.mce, 4)} ECE(mass)={_fmt(r.ece_equal_mass, 4)} brier={_fmt(r.brier, 4)} "
            f"(rel {_fmt(d.reliability, 4)}, res {_fmt(d.resolution, 4)}, unc {_fmt(d.uncertainty, 4)})"
        )
        print("  bin            mean p  observed  count")
        for b in r.bins:
            print(
                f"  [{b.lower:.2f}, {b.upper:.2f})  {_fmt(b.mean_confidence)}   {_fmt(b.observed_frequency)}  {b.count:6d}"
            )
        for z in r.zones:
            zone = _enum(calibration_pb2.ConfidenceZone.Name(z.zone), "CONFIDENCE_ZONE_")
            print(
                f"  zone {zone:9} [{z.lower:.2f}, {z.upper:.2f}) n={z.count:5d} accuracy={_fmt(z.accuracy)}"
            )
        for m in r.miscalibrations:
            print(f"  ! {m.evidence}")
        for rec in r.recommendations:
            print(f"  -> {rec}")


def _print_versions(versions: Sequence[common_pb2.ModelVersion]) -> None:
    for v in versions:
        kind = _enum(common_pb2.ModelKind.Name(v.kind), "MODEL_KIND_")
        stage = _enum(common_pb2.ModelStage.Name(v.stage), "MODEL_STAGE_")
        loss = v.metrics.get("test_log_loss", math.nan)
        acc = v.metrics.get("test_accuracy", math.nan)
        print(
            f"  {kind:9} {v.version:26} {stage:9} sha256={v.sha256[:12]} "
            f"test_accuracy={_fmt(acc)} test_log_loss={_fmt(loss, 4)}"
        )


def cmd_models(client: MinhosClient, args: argparse.Namespace) -> None:
    versions = client.model_versions(args.kind)
    _print_json(versions) if args.json else _print_versions(versions)


def _print_jobs(jobs: Sequence[retrain_pb2.Job]) -> None:
    for j in jobs:
        kind = _enum(common_pb2.ModelKind.Name(j.kind), "MODEL_KIND_")
        state = _enum(retrain_pb2.JobState.Name(j.state), "JOB_STATE_")
        trigger = _enum(retrain_pb2.TriggerReason.Name(j.trigger), "TRIGGER_REASON_")
        gate = ", ".join(f"{g.name} {g.champion:.4f}->{g.challenger:.4f}" for g in j.gate_metrics)
        print(
            f"  {j.id} {kind:9} {state:11} ({trigger}) {j.challenger_version} {gate} {j.failure_reason}"
        )


def cmd_retrain(client: MinhosClient, args: argparse.Namespace) -> None:
    reply = client.trigger_retrain(args.kind, note=args.note)
    if args.json:
        return _print_json([reply])
    print("merged into the queued job" if reply.merged else "queued")
    _print_jobs([reply.job])


def cmd_jobs(client: MinhosClient, args: argparse.Namespace) -> None:
    jobs = client.jobs(args.kind, limit=args.limit)
    _print_json(jobs) if args.json else _print_jobs(jobs)


def cmd_rollback(client: MinhosClient, args: argparse.Namespace) -> None:
    reply = client.rollback(args.kind, to_version=args.to, reason=args.reason)
    if args.json:
        return _print_json([reply])
    print(f"{args.kind}: {reply.replaced.version} -> {reply.deployed.version}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minhos", description=__doc__)
    parser.add_argument(
        "--target",
        default=os.environ.get("MINHOS_TARGET", DEFAULT_TARGET),
        help="host:port, a comma-separated list of replicas (balanced round-robin), or a gRPC "
        "name such as dns:///minhos-headless:50051 (default: $MINHOS_TARGET, then %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline per call (s)")
    parser.add_argument("--token", default=os.environ.get("MINHOS_TOKEN") or None)
    parser.add_argument("--tls-ca", default=None, help="CA bundle; enables TLS")
    parser.add_argument("--json", action="store_true", help="print raw replies as JSON")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="predict from the latest bars of a data set")
    p.add_argument("--csv", help="OHLCV CSV (date, open, high, low, close, volume)")
    p.add_argument("--symbol", default=None)
    p.add_argument("--end", type=int, default=None, help="use bars before this row index")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("health", help="health score, components, trends, active alerts")
    p.add_argument("--window-hours", type=float, default=0)
    p.add_argument("--last-n", type=int, default=0)
    p.set_defaults(run=cmd_health)

    p = sub.add_parser("alerts", help="list alerts")
    p.add_argument("--all", action="store_true", help="include acknowledged alerts")
    p.add_argument("--limit", type=int, default=0)
    p.set_defaults(run=cmd_alerts)

    p = sub.add_parser("ack", help="acknowledge an alert")
    p.add_argument("alert_id")
    p.add_argument("--by", default=os.environ.get("USER", ""))
    p.set_defaults(run=cmd_ack)

    p = sub.add_parser("calibration", help="ECE, MCE, Brier, reliability bins, zones")
    p.add_argument("--last-n", type=int, default=0)
    p.add_argument("--bins", type=int, default=0)
    p.add_argument("--equal-mass", action="store_true")
    p.set_defaults(run=cmd_calibration)

    p = sub.add_parser("retrain", help="queue a retraining job")
    p.add_argument("--kind", choices=sorted(KINDS), required=True)
    p.add_argument("--note", default="requested from the CLI")
    p.set_defaults(run=cmd_retrain)

    p = sub.add_parser("jobs", help="list retraining jobs")
    p.add_argument("--kind", choices=sorted(KINDS))
    p.add_argument("--limit", type=int, default=0)
    p.set_defaults(run=cmd_jobs)

    p = sub.add_parser("models", help="list model versions")
    p.add_argument("--kind", choices=sorted(KINDS))
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("rollback", help="deploy the previous (or a given) version of a kind")
    p.add_argument("--kind", choices=sorted(KINDS), required=True)
    p.add_argument("--to", default="", help="version; the latest backup if omitted")
    p.add_argument("--reason", default="requested from the CLI")
    p.set_defaults(run=cmd_rollback)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with MinhosClient(
        args.target, timeout=args.timeout, token=args.token, tls_ca_file=args.tls_ca
    ) as client:
        try:
            args.run(client, args)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            print(f"error: {code.name if code else 'RPC'}: {detail}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
