"""gRPC servicers: each RPC converts the request to domain values, calls the core, converts back.

One decorator maps the core's errors to status codes and records every call (Prometheus and the
requests table the error rate is computed from).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from minhos.v1 import inference_pb2, inference_pb2_grpc
from server import convert
from server.dataplane import DataPlane
from server.errors import FailedPrecondition, InvalidArgument, MinhosError, NotFound, Unavailable
from server.telemetry import Telemetry

log = logging.getLogger("minhos.rpc")

CODES: dict[type[MinhosError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Base:
    def __init__(self, plane: DataPlane, telemetry: Telemetry) -> None:
        self.plane = plane
        self.telemetry = telemetry

    def _done(self, method: str, code: grpc.StatusCode, began: float) -> None:
        elapsed = time.perf_counter() - began
        self.telemetry.requests.labels(method, code.name).inc()
        self.telemetry.latency.labels(method).observe(elapsed)
        self.plane.record_request(method, code.name, elapsed, self.plane.market_now)

    def _abort(
        self, context: grpc.ServicerContext, method: str, exc: Exception, began: float
    ) -> None:
        if isinstance(exc, MinhosError):
            code = CODES.get(type(exc), grpc.StatusCode.INTERNAL)
            message = str(exc)
        else:
            code, message = (
                grpc.StatusCode.INTERNAL,
                f"internal error ({type(exc).__name__}); see the server log",
            )
            log.exception("unhandled error", extra={"method": method})
        self._done(method, code, began)
        context.abort(code, message)


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
                response = fn(self, request, context)
            except Exception as exc:
                self._abort(context, method, exc, began)
                raise  # unreachable: abort raises
            self._done(method, grpc.StatusCode.OK, began)
            return response

        return handler

    return wrap


class InferenceServicer(Base, inference_pb2_grpc.InferenceServiceServicer):
    @rpc("Predict")
    def Predict(
        self, request: inference_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> inference_pb2.PredictResponse:
        times, ohlcv = convert.bars_in(request.bars)
        return convert.prediction_out(self.plane.predict(request.symbol, times, ohlcv))

    def PredictStream(
        self, request_iterator: Iterator[inference_pb2.StreamRequest], context: grpc.ServicerContext
    ) -> Iterator[inference_pb2.StreamResponse]:
        session = self.plane.stream()
        for index, request in enumerate(request_iterator):
            began = time.perf_counter()
            try:
                time_s, bar = convert.bar_in(request.bar)
                step = session.step(request.symbol, time_s, bar, index)
            except Exception as exc:
                self._abort(context, "PredictStream", exc, began)
                return
            self._done("PredictStream", grpc.StatusCode.OK, began)
            yield inference_pb2.StreamResponse(
                symbol=step.symbol,
                bar_time=convert.timestamp(step.bar_time),
                prediction=convert.prediction_out(step.prediction) if step.prediction else None,
                bars_needed=step.bars_needed,
                resolved=convert.outcome_out(step.resolved) if step.resolved else None,
            )

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
        models, names = self.plane.serving_info()
        return inference_pb2.GetServingInfoResponse(
            bars_required=models.bars_required,
            feature_names=list(names),
            deployed=[convert.model_version_out(row) for row in self.plane.deployed_rows(models)],
            server_version=self.plane.server_version,
        )

    @rpc("ListPredictions")
    def ListPredictions(
        self, request: inference_pb2.ListPredictionsRequest, context: grpc.ServicerContext
    ) -> inference_pb2.ListPredictionsResponse:
        records = self.plane.list_predictions(request.symbol, request.limit, request.resolved_only)
        return inference_pb2.ListPredictionsResponse(
            records=[convert.record_out(r) for r in records]
        )
