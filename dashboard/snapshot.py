"""One refresh's worth of data: every RPC the page needs, read through the typed client. A server
that does not answer is told apart from one that answers with an error, so the page can say
plainly that it is down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from clients.client import MinhosClient
from minhos.v1 import calibration_pb2, inference_pb2, monitoring_pb2, retrain_pb2

#: Codes meaning "no server answered" rather than "the server refused".
DOWN_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
#: Newest predictions listed in the feed.
FEED_SIZE = 100
#: Agreement at or above which a prediction is marked "high agreement" (the server's default).
HIGH_AGREEMENT = 0.8

T = TypeVar("T")


def describe(exc: grpc.RpcError) -> str:
    if isinstance(exc, grpc.Call):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def is_down(exc: grpc.RpcError) -> bool:
    return isinstance(exc, grpc.Call) and exc.code() in DOWN_CODES


@dataclass
class Snapshot:
    health: monitoring_pb2.GetHealthResponse | None = None
    alerts: list[monitoring_pb2.Alert] = field(default_factory=list)
    calibration: list[calibration_pb2.CalibrationReport] = field(default_factory=list)
    series: monitoring_pb2.GetMetricSeriesResponse | None = None
    kelly: monitoring_pb2.GetKellyStatusResponse | None = None
    performance: monitoring_pb2.GetPerformanceResponse | None = None
    predictions: list[inference_pb2.PredictionRecord] = field(default_factory=list)
    models: retrain_pb2.GetModelDetailsResponse | None = None
    jobs: list[retrain_pb2.Job] = field(default_factory=list)
    #: Errors of RPCs the server answered with an error, one line each.
    errors: list[str] = field(default_factory=list)
    #: Why the server is unreachable; "" when it answered.
    down: str = ""


def fetch(client: MinhosClient) -> Snapshot:
    """Reads everything; stops at the first sign that no server answers."""
    snap = Snapshot()

    def grab(name: str, call: Callable[[], T], default: T) -> T:
        if snap.down:
            return default
        try:
            return call()
        except grpc.RpcError as exc:
            if is_down(exc):
                snap.down = describe(exc)
            else:
                snap.errors.append(f"{name}: {describe(exc)}")
            return default

    snap.health = grab("health", client.health, None)
    snap.alerts = grab("alerts", client.alerts, [])
    snap.calibration = grab("calibration", client.calibration, [])
    snap.series = grab("metric series", client.metric_series, None)
    snap.kelly = grab("Kelly status", client.kelly_status, None)
    snap.performance = grab(
        "performance", lambda: client.performance(high_agreement=HIGH_AGREEMENT), None
    )
    snap.predictions = grab("predictions", lambda: client.list_predictions(limit=FEED_SIZE), [])
    snap.models = grab("model details", client.model_details, None)
    snap.jobs = grab("jobs", lambda: client.jobs(limit=200), [])
    return snap
