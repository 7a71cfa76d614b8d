"""gRPC servicers: each RPC converts the request to domain values, calls the core, converts back.

One decorator maps the core's errors to status codes and records every call (Prometheus and the
requests table the error rate is computed from).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration

from minhos.v1 import (
    calibration_pb2,
    calibration_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    monitoring_pb2,
    monitoring_pb2_grpc,
    retrain_pb2,
    retrain_pb2_grpc,
)
from server.core.calibration import MAX_BINS, MIN_BINS, Strategy
from server.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    MinhosError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from server.core.model_card import model_card
from server.monitoring import dashboard_reports
from server.monitoring import performance as perf
from server.monitoring.monitor import AlertNotFoundError, Monitor, Source
from server.serving.dataplane import SERVER_VERSION, DataPlane
from server.serving.stream import StreamSession
from server.storage import jobs, queries
from server.storage.schema import DATABASE_ERRORS
from server.transport import convert
from server.transport.handlers import Undecodable, deferral
from server.transport.pipeline import pipelined
from server.transport.telemetry import Telemetry

if TYPE_CHECKING:
    from server.retraining.coordinator import Retraining

log = logging.getLogger("minhos.rpc")

#: Most stream requests scored together. Only a pipelining client's requests batch up (a live
#: feed's arrive one by one); 256 cost 35 µs each to score in process, 64 cost 47, 16 cost 100.
MAX_STREAM_BATCH = 256
#: Most stream requests read but not yet answered, per stream.
MAX_IN_FLIGHT = 1024

CODES: dict[type[MinhosError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True)
class _Replies:
    """A stream batch's replies, and the error that ended the stream after them, if any."""

    replies: list[inference_pb2.StreamResponse]
    #: A bad request (MinhosError) or a failure of the server (any other exception).
    error: Exception | None
    #: When the batch's processing began: the latency an error is recorded with.
    began: float


def undecodable(request: Undecodable, field: str = "request") -> InvalidArgument:
    return InvalidArgument(
        f"the body does not parse as {request.message} ({request.reason})", field=field
    )


class Base:
    def __init__(self, plane: DataPlane, telemetry: Telemetry) -> None:
        self.plane = plane
        self.telemetry = telemetry

    def _done(self, method: str, code: grpc.StatusCode, began: float, messages: int = 1) -> None:
        """Accounts for ``messages`` requests served together (a stream's batch) in ``began``'s
        time: each is counted, and observed with the batch's latency."""
        self._account(method, code, time.perf_counter() - began, messages)

    def _account(
        self, method: str, code: grpc.StatusCode, elapsed: float, messages: int = 1
    ) -> None:
        self.telemetry.served(method, code.name, elapsed, messages)
        self.plane.record_request(method, code.name, elapsed, self.plane.market_now, messages)

    def _abort(
        self, context: grpc.ServicerContext, method: str, exc: Exception, began: float
    ) -> None:
        context.abort(*self._failed(method, exc, began))

    def _failed(self, method: str, exc: Exception, began: float) -> tuple[grpc.StatusCode, str]:
        """The status a failed call ends with (accounted for and, if the server's fault, logged)."""
        if isinstance(exc, MinhosError):
            code = CODES.get(type(exc), grpc.StatusCode.INTERNAL)
            message = str(exc)
        elif isinstance(exc, DATABASE_ERRORS):
            # Retryable by the caller (the typed client retries idempotent calls on it).
            code, message = grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}"
            log.warning("database unavailable", extra={"method": method, "error": str(exc)})
        else:
            code, message = (
                grpc.StatusCode.INTERNAL,
                f"internal error ({type(exc).__name__}); see the server log",
            )
            log.error("unhandled error", exc_info=exc, extra={"method": method})
        self._done(method, code, began)
        return code, message


def rpc(
    method: str,
) -> Callable[
    [Callable[[Any, Req, grpc.ServicerContext], Resp]],
    Callable[[Any, Req, grpc.ServicerContext], Resp],
]:
    """Unary RPC: status mapping and accounting."""

    def wrap(
        fn: Callable[[Any, Req, grpc.ServicerContext], Resp],
    ) -> Callable[[Any, Req, grpc.ServicerContext], Resp]:
        @functools.wraps(fn)
        def handler(self: Base, request: Req, context: grpc.ServicerContext) -> Resp:
            began = time.perf_counter()
            try:
                bad = convert.unknown_enum(request)  # type: ignore[arg-type]
                if bad is not None:
                    raise InvalidArgument(bad[1], field=bad[0])
                response = fn(self, request, context)
            except Exception as exc:
                self._abort(context, method, exc, began)
                raise  # unreachable: abort raises
            elapsed = time.perf_counter() - began
            deferral(context)(lambda: self._account(method, grpc.StatusCode.OK, elapsed))
            return response

        return handler

    return wrap


class InferenceServicer(Base, inference_pb2_grpc.InferenceServiceServicer):
    @rpc("Predict")
    def Predict(
        self, request: inference_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> inference_pb2.PredictResponse:
        times, ohlcv, form = convert.window_in(request)
        prediction = self.plane.predict(request.symbol, times, ohlcv, form, deferral(context))
        return convert.prediction_out(prediction)

    async def PredictStream(
        self,
        request_iterator: AsyncIterator[inference_pb2.StreamRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[inference_pb2.StreamResponse]:
        session = StreamSession(self.plane)
        index = 0

        def score(requests: list[inference_pb2.StreamRequest]) -> tuple[_Replies, bool]:
            nonlocal index
            began = time.perf_counter()
            broken: MinhosError | None = None
            for i, request in enumerate(requests):
                if isinstance(request, Undecodable):
                    broken = undecodable(request, f"requests[{index + i}]")
                    requests = requests[:i]
                    break
            try:
                steps, error = session.step_many(convert.stream_bars(requests, index))
                error = error or broken
            except Exception as exc:
                return _Replies([], exc, began), False
            index += len(steps)
            if steps:
                self._done("PredictStream", grpc.StatusCode.OK, began, len(steps))
            replies = [convert.stream_response_out(step) for step in steps]
            return _Replies(replies, error, began), error is None

        async for out in pipelined(
            request_iterator, score, max_batch=MAX_STREAM_BATCH, max_in_flight=MAX_IN_FLIGHT
        ):
            for reply in out.replies:
                yield reply
            if out.error is not None:  # the last batch: the pipeline stopped after it
                await context.abort(*self._failed("PredictStream", out.error, out.began))

    @rpc("RecordOutcome")
    def RecordOutcome(
        self, request: inference_pb2.RecordOutcomeRequest, context: grpc.ServicerContext
    ) -> inference_pb2.RecordOutcomeResponse:
        outcome, already = self.plane.record_outcome(
            request.prediction_id,
            request.realized_return,
            convert.from_timestamp(request.resolved_at),
        )
        return inference_pb2.RecordOutcomeResponse(
            outcome=convert.outcome_out(outcome), already_recorded=already
        )

    @rpc("GetServingInfo")
    def GetServingInfo(
        self, request: inference_pb2.GetServingInfoRequest, context: grpc.ServicerContext
    ) -> inference_pb2.GetServingInfoResponse:
        models = self.plane.models()
        return inference_pb2.GetServingInfoResponse(
            bars_required=models.bars_required,
            feature_names=list(models.feature_names),
            deployed=[convert.model_version_out(v) for v in self.plane.deployed_versions(models)],
            server_version=SERVER_VERSION,
        )

    @rpc("ListPredictions")
    def ListPredictions(
        self, request: inference_pb2.ListPredictionsRequest, context: grpc.ServicerContext
    ) -> inference_pb2.ListPredictionsResponse:
        records = self.plane.list_predictions(request.symbol, request.limit, request.resolved_only)
        return inference_pb2.ListPredictionsResponse(
            records=[convert.record_out(r) for r in records]
        )


def _window(duration: Duration, field: str) -> dt.timedelta | None:
    if duration.seconds < 0 or duration.nanos < 0:
        raise InvalidArgument("must not be negative", field=field)
    if duration.seconds == 0 and duration.nanos == 0:
        return None
    if duration.seconds > MAX_WINDOW_S:
        raise InvalidArgument(f"{duration.seconds} s is longer than 1000 years", field=field)
    return duration.ToTimedelta()


#: The longest window a caller may ask for: far beyond any data, and still a date when
#: subtracted from the market clock.
MAX_WINDOW_S = 1000 * 365 * 86_400


class MonitoringServicer(Base, monitoring_pb2_grpc.MonitoringServiceServicer):
    def __init__(self, plane: DataPlane, telemetry: Telemetry, monitor: Monitor) -> None:
        super().__init__(plane, telemetry)
        self.monitor = monitor

    @rpc("GetHealth")
    def GetHealth(
        self, request: monitoring_pb2.GetHealthRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.GetHealthResponse:
        window = _window(request.window, "window")
        reply = convert.health_out(
            self.monitor.health(window=window, last_n=request.last_n or None)
        )
        reply.warn_health_score = self.monitor.config.warn_health_score
        reply.critical_health_score = self.monitor.config.critical_health_score
        return reply

    @rpc("ListAlerts")
    def ListAlerts(
        self, request: monitoring_pb2.ListAlertsRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.ListAlertsResponse:
        if request.limit > 1000:
            raise InvalidArgument(f"{request.limit} is above the maximum of 1000", field="limit")
        alerts = self.monitor.alerts(
            include_acknowledged=request.include_acknowledged,
            min_severity=convert.SEVERITY_NAME.get(request.min_severity),
            limit=request.limit,
        )
        return monitoring_pb2.ListAlertsResponse(alerts=[convert.alert_out(a) for a in alerts])

    @rpc("AcknowledgeAlert")
    def AcknowledgeAlert(
        self, request: monitoring_pb2.AcknowledgeAlertRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.Alert:
        if not request.alert_id:
            raise InvalidArgument("must be set", field="alert_id")
        try:
            return convert.alert_out(
                self.monitor.acknowledge(request.alert_id, request.acknowledged_by)
            )
        except AlertNotFoundError:
            raise NotFound(f"no alert {request.alert_id!r}", field="alert_id") from None

    @rpc("GetMetricSeries")
    def GetMetricSeries(
        self, request: monitoring_pb2.GetMetricSeriesRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.GetMetricSeriesResponse:
        cfg = self.monitor.config
        window = _bounded(request.window, cfg.last_n, 20_000, "window")
        points = _bounded(request.points, 60, 500, "points")
        span = _bounded(request.span, 2000, 20_000, "span")
        report = dashboard_reports.series_report(cfg, self.monitor.reference, window, points, span)
        return convert.metric_series_out(report)

    @rpc("GetKellyStatus")
    def GetKellyStatus(
        self, request: monitoring_pb2.GetKellyStatusRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.GetKellyStatusResponse:
        last_n = _bounded(request.last_n, 500, 20_000, "last_n")
        bins = _bounded(request.bins, 10, 50, "bins")
        models = self.plane.models()
        manifest = models.manifests["kelly"]
        report = dashboard_reports.kelly_report(
            models.kelly, manifest, self.plane.config.kelly, last_n, bins
        )
        version = next(
            (v for v in queries.model_versions("kelly") if v.version == manifest.version), None
        )
        return convert.kelly_status_out(report, version)

    @rpc("GetPerformance")
    def GetPerformance(
        self, request: monitoring_pb2.GetPerformanceRequest, context: grpc.ServicerContext
    ) -> monitoring_pb2.GetPerformanceResponse:
        threshold = request.high_agreement or perf.HIGH_AGREEMENT
        if not 0 < threshold <= 1:
            raise InvalidArgument(f"{threshold} is not in (0, 1]", field="high_agreement")
        points = _bounded(request.points, 300, 2000, "points")
        last_n = _bounded(request.last_n, 20_000, 100_000, "last_n")
        if request.symbol:
            self.plane.check_symbol(request.symbol)
        report = dashboard_reports.performance_report(request.symbol, threshold, points, last_n)
        return convert.performance_out(report)


class CalibrationServicer(Base, calibration_pb2_grpc.CalibrationServiceServicer):
    def __init__(self, plane: DataPlane, telemetry: Telemetry, monitor: Monitor) -> None:
        super().__init__(plane, telemetry)
        self.monitor = monitor

    @rpc("GetCalibration")
    def GetCalibration(
        self, request: calibration_pb2.GetCalibrationRequest, context: grpc.ServicerContext
    ) -> calibration_pb2.GetCalibrationResponse:
        bins = request.bins or 10
        if not MIN_BINS <= bins <= MAX_BINS:
            raise InvalidArgument(
                f"{bins} bins; between {MIN_BINS} and {MAX_BINS} are allowed", field="bins"
            )
        window = _window(request.window, "window")
        strategy: Strategy = (
            "quantile" if request.binning == calibration_pb2.BINNING_EQUAL_MASS else "uniform"
        )
        sources: list[Source] = (
            [convert.SOURCE_NAME[request.source]]
            if request.source != calibration_pb2.PROBABILITY_SOURCE_UNSPECIFIED
            else ["fused", "lstm", "ensemble"]
        )
        reports = [
            self.monitor.calibration(
                source, last_n=request.last_n or None, window=window, n_bins=bins, strategy=strategy
            )
            for source in sources
        ]
        return calibration_pb2.GetCalibrationResponse(
            reports=[convert.calibration_out(r) for r in reports]
        )


def _kind(kind: int, field: str = "kind") -> str:
    if kind not in convert.KIND_NAME:
        raise InvalidArgument(
            "must be MODEL_KIND_LSTM, MODEL_KIND_ENSEMBLE or MODEL_KIND_KELLY", field=field
        )
    return convert.KIND_NAME[kind]  # type: ignore[index]


class RetrainServicer(Base, retrain_pb2_grpc.RetrainServiceServicer):
    """Served by every replica alike: reads come from the shared database, a trigger is queued
    there (merged into its kind's active job, decided under the kind's lock), and a rollback is
    guarded there. ``retraining`` is None when the deployment has retraining off."""

    def __init__(
        self, plane: DataPlane, telemetry: Telemetry, retraining: Retraining | None
    ) -> None:
        super().__init__(plane, telemetry)
        self.retraining = retraining

    @rpc("TriggerRetrain")
    def TriggerRetrain(
        self, request: retrain_pb2.TriggerRetrainRequest, context: grpc.ServicerContext
    ) -> retrain_pb2.TriggerRetrainResponse:
        kind, market_now = _kind(request.kind), self.plane.market_now
        if self.retraining is not None:
            job, merged = self.retraining.trigger(kind, "manual", request.note, market_now)
        else:
            job, merged = jobs.enqueue(kind, "manual", request.note, market_now, self.plane.clock())
        return retrain_pb2.TriggerRetrainResponse(job=convert.job_out(job), merged=merged)

    @rpc("GetJob")
    def GetJob(
        self, request: retrain_pb2.GetJobRequest, context: grpc.ServicerContext
    ) -> retrain_pb2.Job:
        if not request.job_id:
            raise InvalidArgument("must be set", field="job_id")
        job = queries.job(request.job_id)
        if job is None:
            raise NotFound(f"no job {request.job_id!r}", field="job_id")
        return convert.job_out(job)

    @rpc("ListJobs")
    def ListJobs(
        self, request: retrain_pb2.ListJobsRequest, context: grpc.ServicerContext
    ) -> retrain_pb2.ListJobsResponse:
        kind = _kind(request.kind) if request.kind else None
        state = convert.JOB_STATE_NAME.get(request.state) if request.state else None
        if request.limit > 1000:
            raise InvalidArgument(f"{request.limit} is above the maximum of 1000", field="limit")
        found = queries.jobs(kind, state, request.limit or 100)
        return retrain_pb2.ListJobsResponse(jobs=[convert.job_out(j) for j in found])

    @rpc("ListModelVersions")
    def ListModelVersions(
        self, request: retrain_pb2.ListModelVersionsRequest, context: grpc.ServicerContext
    ) -> retrain_pb2.ListModelVersionsResponse:
        kind = _kind(request.kind) if request.kind else None
        stage = convert.STAGE_NAME.get(request.stage) if request.stage else None
        rows = queries.model_versions(kind, stage)
        return retrain_pb2.ListModelVersionsResponse(
            versions=[convert.model_version_out(r) for r in rows]
        )

    @rpc("Rollback")
    def Rollback(
        self, request: retrain_pb2.RollbackRequest, context: grpc.ServicerContext
    ) -> retrain_pb2.RollbackResponse:
        kind = _kind(request.kind)
        if self.retraining is None:
            raise FailedPrecondition(
                "retraining is off on this server (retrain.enabled=false), rollbacks included",
                field="kind",
            )
        deployed, replaced = self.retraining.rollback(kind, request.to_version, request.reason)
        return retrain_pb2.RollbackResponse(
            deployed=convert.model_version_out(deployed),
            replaced=convert.model_version_out(replaced),
        )

    @rpc("GetModelDetails")
    def GetModelDetails(
        self, request: retrain_pb2.GetModelDetailsRequest, context: grpc.ServicerContext
    ) -> retrain_pb2.GetModelDetailsResponse:
        kind = _kind(request.kind) if request.kind else None
        limit = _bounded(request.limit, 50, 1000, "limit")
        versions = queries.model_versions()
        # A model's validation span is recorded by the Kelly component fitted beside it.
        kelly = [v.manifest for v in versions if v.kind == "kelly"]
        chosen = [
            v
            for v in versions
            if (kind is None or v.kind == kind)
            and (request.include_retired or v.stage != "retired")
        ][:limit]
        active = [job for state in ACTIVE_JOB_STATES for job in queries.jobs(kind, state, 1000)]
        active.sort(key=lambda job: job.queued_at, reverse=True)
        return retrain_pb2.GetModelDetailsResponse(
            models=[convert.model_details_out(v, model_card(v.manifest, kelly)) for v in chosen],
            active_jobs=[convert.job_out(job) for job in active],
        )


#: Job states in which a kind is "training now".
ACTIVE_JOB_STATES = ("queued", "running", "validating")


def _bounded(value: int, default: int, maximum: int, field: str) -> int:
    """A count from a request: ``default`` when 0, refused above ``maximum``."""
    if value > maximum:
        raise InvalidArgument(f"{value} is above the maximum of {maximum}", field=field)
    return value or default
