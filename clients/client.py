"""Typed Python client for MinhOS, sync and asyncio.

Deadlines on every call (``timeout``, overridable per call). A target is one address, a
comma-separated list of replicas (``10.0.0.5:50051,10.0.0.6:50051``; host names are resolved once,
when the channel is built), or any gRPC name such as ``dns:///minhos-headless:50051`` (re-resolved
by gRPC, which is what a Kubernetes headless Service needs). Calls are spread over every address
with gRPC's ``round_robin`` policy, and retried by gRPC's own retry policy (a service config on the
channel), on UNAVAILABLE only, for the RPCs that are safe to repeat (:data:`RETRIED`): every read;
RecordOutcome and AcknowledgeAlert (idempotent by id); Predict (its answer is a function of the
window and the deployed set, and its only side effect is a bookkeeping row, which a replica that
died mid-call has rarely written since writes are batched every 0.2 s: at worst one unresolved
prediction row); TriggerRetrain (a second trigger for a kind merges into its active job). Not
retried (:data:`NOT_RETRIED`): Rollback (a repeat would roll back twice) and PredictStream (its
per-symbol windows live on one replica: the caller reconnects and resends).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from numpy.typing import NDArray

from minhos.v1 import (
    calibration_pb2,
    calibration_pb2_grpc,
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    monitoring_pb2,
    monitoring_pb2_grpc,
    retrain_pb2,
    retrain_pb2_grpc,
)

DEFAULT_TARGET = "127.0.0.1:50051"

#: Retried on UNAVAILABLE (see the module's docstring for why each is safe to repeat).
RETRIED: dict[str, tuple[str, ...]] = {
    "minhos.v1.InferenceService": (
        "Predict",
        "RecordOutcome",
        "GetServingInfo",
        "ListPredictions",
    ),
    "minhos.v1.MonitoringService": (
        "GetHealth",
        "ListAlerts",
        "AcknowledgeAlert",
        "GetMetricSeries",
        "GetKellyStatus",
        "GetPerformance",
    ),
    "minhos.v1.CalibrationService": ("GetCalibration",),
    "minhos.v1.RetrainService": (
        "TriggerRetrain",
        "GetJob",
        "ListJobs",
        "ListModelVersions",
        "GetModelDetails",
    ),
}
#: Never retried: a repeat would act twice, or the call's state lives on one replica.
NOT_RETRIED: dict[str, tuple[str, ...]] = {
    "minhos.v1.InferenceService": ("PredictStream",),
    "minhos.v1.RetrainService": ("Rollback",),
}
#: gRPC name resolvers a target may name itself (passed to gRPC as given).
SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")

KINDS: dict[str, common_pb2.ModelKind.ValueType] = {
    "lstm": common_pb2.MODEL_KIND_LSTM,
    "ensemble": common_pb2.MODEL_KIND_ENSEMBLE,
    "kelly": common_pb2.MODEL_KIND_KELLY,
}


def _kind(name: str | None) -> common_pb2.ModelKind.ValueType:
    return KINDS[name] if name else common_pb2.MODEL_KIND_UNSPECIFIED


def service_config(max_attempts: int = 4) -> str:
    """gRPC service config: round-robin over every resolved address and, with ``max_attempts``
    of 2 or more, retries of :data:`RETRIED` on UNAVAILABLE."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if max_attempts >= 2:
        names = [
            {"service": service, "method": method}
            for service, methods in RETRIED.items()
            for method in methods
        ]
        policy = {
            "maxAttempts": max_attempts,
            "initialBackoff": "0.05s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
        config["methodConfig"] = [{"name": names, "retryPolicy": policy}]
    return json.dumps(config)


def channel_options(max_attempts: int = 4) -> list[tuple[str, Any]]:
    """``max_attempts`` below 2 turns retries off (gRPC refuses a retry policy of one attempt)."""
    return [
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.enable_retries", 1 if max_attempts >= 2 else 0),
        ("grpc.service_config", service_config(max_attempts)),
    ]


def _address(entry: str, target: str) -> tuple[str, str]:
    """(family, "host:port") of one entry of a list, a host name resolved to its first address."""
    host, sep, port = entry.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"target {target!r}: {entry!r} is not host:port")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ValueError(f"target {target!r}: cannot resolve {host!r}: {exc}") from None
        # IPv4 first: one list holds one family, and loopback names resolve to both.
        found.sort(key=lambda info: info[0] != socket.AF_INET)
        ip = ipaddress.ip_address(found[0][4][0])
    if ip.version == 6:
        return "ipv6", f"[{ip}]:{port}"
    return "ipv4", f"{ip}:{port}"


def channel_target(target: str) -> str:
    """The gRPC target for ``target``: one address or a gRPC name as given; a comma-separated
    list as an ``ipv4:``/``ipv6:`` list that gRPC balances over."""
    target = target.strip()
    if not target:
        raise ValueError("target is empty")
    if target.startswith(SCHEMES) or "," not in target:
        return target
    entries = [e.strip() for e in target.split(",")]
    if not all(entries):
        raise ValueError(f"target {target!r} has an empty entry")
    resolved = [_address(e, target) for e in entries]
    families = {family for family, _ in resolved}
    if len(families) > 1:
        raise ValueError(f"target {target!r} mixes IPv4 and IPv6 addresses")
    return f"{families.pop()}:{','.join(address for _, address in resolved)}"


def timestamp(value: dt.datetime | np.datetime64) -> Timestamp:
    ts = Timestamp()
    if isinstance(value, np.datetime64):
        ts.FromNanoseconds(int(value.astype("datetime64[ns]").astype(np.int64)))
    else:
        ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    return ts


def bar(
    time: dt.datetime | np.datetime64, o: float, h: float, lo: float, c: float, v: float
) -> common_pb2.Bar:
    return common_pb2.Bar(time=timestamp(time), open=o, high=h, low=lo, close=c, volume=v)


def bars_from_arrays(times: NDArray[Any], ohlcv: NDArray[np.float64]) -> list[common_pb2.Bar]:
    """Bars from a datetime64 array and an (n, 5) open/high/low/close/volume array."""
    if len(times) != len(ohlcv):
        raise ValueError(f"{len(times)} times but {len(ohlcv)} rows of prices")
    return [bar(t, *map(float, row)) for t, row in zip(times, ohlcv, strict=True)]


def columns_from_arrays(times: NDArray[Any], ohlcv: NDArray[np.float64]) -> common_pb2.BarColumns:
    """The columnar form of the same bars (faster to send and for the server to read)."""
    if len(times) != len(ohlcv):
        raise ValueError(f"{len(times)} times but {len(ohlcv)} rows of prices")
    seconds = np.asarray(times).astype("datetime64[s]").astype(np.int64)
    prices = np.asarray(ohlcv, dtype=np.float64)
    return common_pb2.BarColumns(
        time_seconds=seconds.tolist(),
        open=prices[:, 0].tolist(),
        high=prices[:, 1].tolist(),
        low=prices[:, 2].tolist(),
        close=prices[:, 3].tolist(),
        volume=prices[:, 4].tolist(),
    )


def raw_from_arrays(times: NDArray[Any], ohlcv: NDArray[np.float64]) -> common_pb2.RawBars:
    """The same bars as two little-endian buffers (the fastest form to send and to read)."""
    if len(times) != len(ohlcv):
        raise ValueError(f"{len(times)} times but {len(ohlcv)} rows of prices")
    seconds = np.asarray(times).astype("datetime64[s]").astype("<i8")
    prices = np.ascontiguousarray(ohlcv, dtype="<f8")
    return common_pb2.RawBars(time_seconds=seconds.tobytes(), ohlcv=prices.tobytes())


Window = Sequence[common_pb2.Bar] | common_pb2.BarColumns | common_pb2.RawBars


def predict_request(symbol: str, bars: Window) -> inference_pb2.PredictRequest:
    if isinstance(bars, common_pb2.BarColumns):
        return inference_pb2.PredictRequest(symbol=symbol, columns=bars)
    if isinstance(bars, common_pb2.RawBars):
        return inference_pb2.PredictRequest(symbol=symbol, raw=bars)
    return inference_pb2.PredictRequest(symbol=symbol, bars=bars)


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromTimedelta(dt.timedelta(seconds=seconds))
    return d


def _credentials(tls_ca_file: str | None, token: str | None) -> grpc.ChannelCredentials | None:
    if not tls_ca_file:
        return None
    with open(tls_ca_file, "rb") as fh:
        creds = grpc.ssl_channel_credentials(root_certificates=fh.read())
    if token:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    return creds


class _Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.inference = inference_pb2_grpc.InferenceServiceStub(channel)
        self.monitoring = monitoring_pb2_grpc.MonitoringServiceStub(channel)
        self.calibration = calibration_pb2_grpc.CalibrationServiceStub(channel)
        self.retrain = retrain_pb2_grpc.RetrainServiceStub(channel)


class _AsyncStubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.inference = inference_pb2_grpc.InferenceServiceStub(channel)
        self.monitoring = monitoring_pb2_grpc.MonitoringServiceStub(channel)
        self.retrain = retrain_pb2_grpc.RetrainServiceStub(channel)


Metadata = tuple[tuple[str, str | bytes], ...]


def _metadata(token: str | None, tls: bool) -> Metadata | None:
    # Over TLS the token rides in call credentials; in plaintext (loopback, tests) as metadata.
    return (("authorization", f"Bearer {token}"),) if token and not tls else None


def _requests(
    symbol: str | None, items: Iterable[common_pb2.Bar | inference_pb2.StreamRequest]
) -> Iterator[inference_pb2.StreamRequest]:
    for item in items:
        if isinstance(item, inference_pb2.StreamRequest):
            yield item
        else:
            if symbol is None:
                raise ValueError("a symbol is needed to stream plain bars")
            yield inference_pb2.StreamRequest(symbol=symbol, bar=item)


class MinhosClient:
    """Blocking client. Use as a context manager, or call :meth:`close`.

    ``max_reconnect_backoff_s`` caps gRPC's wait between reconnection attempts (120 s by
    default): a dashboard polling a restarted server should find it within one refresh."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 10.0,
        token: str | None = None,
        tls_ca_file: str | None = None,
        max_attempts: int = 4,
        max_reconnect_backoff_s: float | None = None,
    ) -> None:
        creds = _credentials(tls_ca_file, token)
        # Each client its own connection: gRPC otherwise shares one per target across channels,
        # and a server of several processes on one port (SO_REUSEPORT) sees a single connection.
        options = [*channel_options(max_attempts), ("grpc.use_local_subchannel_pool", 1)]
        if max_reconnect_backoff_s is not None:
            backoff_ms = max(int(max_reconnect_backoff_s * 1000), 100)
            options += [
                ("grpc.initial_reconnect_backoff_ms", min(1000, backoff_ms)),
                ("grpc.max_reconnect_backoff_ms", backoff_ms),
            ]
        target = channel_target(target)
        self._channel = (
            grpc.secure_channel(target, creds, options=options)
            if creds
            else grpc.insecure_channel(target, options=options)
        )
        self._stubs = _Stubs(self._channel)
        self._metadata = _metadata(token, creds is not None)
        self.timeout = timeout

    def __enter__(self) -> MinhosClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout)

    def _t(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    # Inference
    def predict(
        self,
        symbol: str,
        bars: Window,
        *,
        timeout: float | None = None,
    ) -> inference_pb2.PredictResponse:
        """``bars``: Bar messages, or the same window as columns (:func:`columns_from_arrays`) or
        raw buffers (:func:`raw_from_arrays`)."""
        request = predict_request(symbol, bars)
        return self._stubs.inference.Predict(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    def predict_stream(
        self,
        items: Iterable[common_pb2.Bar | inference_pb2.StreamRequest],
        *,
        symbol: str | None = None,
        timeout: float | None = None,
    ) -> grpc.CallIterator[inference_pb2.StreamResponse]:
        """Streams bars (of ``symbol``) or StreamRequests; yields one response per bar.

        ``timeout`` bounds the whole stream; None means no deadline (a live feed)."""
        return self._stubs.inference.PredictStream(
            _requests(symbol, items), timeout=timeout, metadata=self._metadata
        )

    def record_outcome(
        self,
        prediction_id: str,
        realized_return: float,
        resolved_at: dt.datetime | None = None,
        *,
        timeout: float | None = None,
    ) -> inference_pb2.RecordOutcomeResponse:
        request = inference_pb2.RecordOutcomeRequest(
            prediction_id=prediction_id, realized_return=realized_return
        )
        if resolved_at is not None:
            request.resolved_at.CopyFrom(timestamp(resolved_at))
        return self._stubs.inference.RecordOutcome(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    def serving_info(self, *, timeout: float | None = None) -> inference_pb2.GetServingInfoResponse:
        return self._stubs.inference.GetServingInfo(
            inference_pb2.GetServingInfoRequest(), timeout=self._t(timeout), metadata=self._metadata
        )

    def list_predictions(
        self,
        symbol: str = "",
        *,
        limit: int = 0,
        resolved_only: bool = False,
        timeout: float | None = None,
    ) -> list[inference_pb2.PredictionRecord]:
        request = inference_pb2.ListPredictionsRequest(
            symbol=symbol, limit=limit, resolved_only=resolved_only
        )
        reply = self._stubs.inference.ListPredictions(
            request, timeout=self._t(timeout), metadata=self._metadata
        )
        return list(reply.records)

    # Monitoring
    def health(
        self, *, window_hours: float = 0, last_n: int = 0, timeout: float | None = None
    ) -> monitoring_pb2.GetHealthResponse:
        request = monitoring_pb2.GetHealthRequest(last_n=last_n)
        if window_hours:
            request.window.CopyFrom(duration(window_hours * 3600))
        return self._stubs.monitoring.GetHealth(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    def alerts(
        self,
        *,
        include_acknowledged: bool = False,
        min_severity: monitoring_pb2.Severity.ValueType = monitoring_pb2.SEVERITY_UNSPECIFIED,
        limit: int = 0,
        timeout: float | None = None,
    ) -> list[monitoring_pb2.Alert]:
        request = monitoring_pb2.ListAlertsRequest(
            include_acknowledged=include_acknowledged, min_severity=min_severity, limit=limit
        )
        reply = self._stubs.monitoring.ListAlerts(
            request, timeout=self._t(timeout), metadata=self._metadata
        )
        return list(reply.alerts)

    def acknowledge(
        self, alert_id: str, by: str = "", *, timeout: float | None = None
    ) -> monitoring_pb2.Alert:
        request = monitoring_pb2.AcknowledgeAlertRequest(alert_id=alert_id, acknowledged_by=by)
        return self._stubs.monitoring.AcknowledgeAlert(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    # Calibration
    def calibration(
        self,
        *,
        source: calibration_pb2.ProbabilitySource.ValueType = (
            calibration_pb2.PROBABILITY_SOURCE_UNSPECIFIED
        ),
        last_n: int = 0,
        window_hours: float = 0,
        bins: int = 0,
        binning: calibration_pb2.Binning.ValueType = calibration_pb2.BINNING_UNSPECIFIED,
        timeout: float | None = None,
    ) -> list[calibration_pb2.CalibrationReport]:
        request = calibration_pb2.GetCalibrationRequest(
            source=source, last_n=last_n, bins=bins, binning=binning
        )
        if window_hours:
            request.window.CopyFrom(duration(window_hours * 3600))
        reply = self._stubs.calibration.GetCalibration(
            request, timeout=self._t(timeout), metadata=self._metadata
        )
        return list(reply.reports)

    # Retraining and versions
    def trigger_retrain(
        self, kind: str, note: str = "", *, timeout: float | None = None
    ) -> retrain_pb2.TriggerRetrainResponse:
        request = retrain_pb2.TriggerRetrainRequest(kind=KINDS[kind], note=note)
        return self._stubs.retrain.TriggerRetrain(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    def job(self, job_id: str, *, timeout: float | None = None) -> retrain_pb2.Job:
        return self._stubs.retrain.GetJob(
            retrain_pb2.GetJobRequest(job_id=job_id),
            timeout=self._t(timeout),
            metadata=self._metadata,
        )

    def jobs(
        self, kind: str | None = None, *, limit: int = 0, timeout: float | None = None
    ) -> list[retrain_pb2.Job]:
        request = retrain_pb2.ListJobsRequest(kind=_kind(kind), limit=limit)
        reply = self._stubs.retrain.ListJobs(
            request, timeout=self._t(timeout), metadata=self._metadata
        )
        return list(reply.jobs)

    def model_versions(
        self, kind: str | None = None, *, timeout: float | None = None
    ) -> list[common_pb2.ModelVersion]:
        request = retrain_pb2.ListModelVersionsRequest(kind=_kind(kind))
        reply = self._stubs.retrain.ListModelVersions(
            request, timeout=self._t(timeout), metadata=self._metadata
        )
        return list(reply.versions)

    def rollback(
        self, kind: str, to_version: str = "", reason: str = "", *, timeout: float | None = None
    ) -> retrain_pb2.RollbackResponse:
        request = retrain_pb2.RollbackRequest(
            kind=KINDS[kind], to_version=to_version, reason=reason
        )
        return self._stubs.retrain.Rollback(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    # Dashboard aggregates (computed by the server over the stored predictions)
    def metric_series(
        self, *, window: int = 0, points: int = 0, span: int = 0, timeout: float | None = None
    ) -> monitoring_pb2.GetMetricSeriesResponse:
        """Rolling ``window``-prediction series over the newest ``span`` predictions (0: the
        server's defaults)."""
        request = monitoring_pb2.GetMetricSeriesRequest(window=window, points=points, span=span)
        return self._stubs.monitoring.GetMetricSeries(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    def kelly_status(
        self, *, last_n: int = 0, bins: int = 0, timeout: float | None = None
    ) -> monitoring_pb2.GetKellyStatusResponse:
        request = monitoring_pb2.GetKellyStatusRequest(last_n=last_n, bins=bins)
        return self._stubs.monitoring.GetKellyStatus(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    def performance(
        self,
        symbol: str = "",
        *,
        high_agreement: float = 0.0,
        points: int = 0,
        last_n: int = 0,
        timeout: float | None = None,
    ) -> monitoring_pb2.GetPerformanceResponse:
        request = monitoring_pb2.GetPerformanceRequest(
            symbol=symbol, high_agreement=high_agreement, points=points, last_n=last_n
        )
        return self._stubs.monitoring.GetPerformance(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    def model_details(
        self,
        kind: str | None = None,
        *,
        include_retired: bool = False,
        limit: int = 0,
        timeout: float | None = None,
    ) -> retrain_pb2.GetModelDetailsResponse:
        request = retrain_pb2.GetModelDetailsRequest(
            kind=_kind(kind), include_retired=include_retired, limit=limit
        )
        return self._stubs.retrain.GetModelDetails(
            request, timeout=self._t(timeout), metadata=self._metadata
        )


class AsyncMinhosClient:
    """asyncio client (grpc.aio) for the hot paths; same deadlines and retry policy."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 10.0,
        token: str | None = None,
        tls_ca_file: str | None = None,
        max_attempts: int = 4,
    ) -> None:
        creds = _credentials(tls_ca_file, token)
        options = channel_options(max_attempts)
        target = channel_target(target)
        self._channel = (
            grpc.aio.secure_channel(target, creds, options=options)
            if creds
            else grpc.aio.insecure_channel(target, options=options)
        )
        self._stubs = _AsyncStubs(self._channel)
        self._metadata = _metadata(token, creds is not None)
        self.timeout = timeout

    async def __aenter__(self) -> AsyncMinhosClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    def _t(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    async def predict(
        self,
        symbol: str,
        bars: Window,
        *,
        timeout: float | None = None,
    ) -> inference_pb2.PredictResponse:
        request = predict_request(symbol, bars)
        return await self._stubs.inference.Predict(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    async def predict_stream(
        self,
        items: Iterable[common_pb2.Bar | inference_pb2.StreamRequest],
        *,
        symbol: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[inference_pb2.StreamResponse]:
        call = self._stubs.inference.PredictStream(
            _requests(symbol, items), timeout=timeout, metadata=self._metadata
        )
        async for response in call:
            yield response

    async def record_outcome(
        self, prediction_id: str, realized_return: float, *, timeout: float | None = None
    ) -> inference_pb2.RecordOutcomeResponse:
        request = inference_pb2.RecordOutcomeRequest(
            prediction_id=prediction_id, realized_return=realized_return
        )
        return await self._stubs.inference.RecordOutcome(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    async def serving_info(
        self, *, timeout: float | None = None
    ) -> inference_pb2.GetServingInfoResponse:
        return await self._stubs.inference.GetServingInfo(
            inference_pb2.GetServingInfoRequest(), timeout=self._t(timeout), metadata=self._metadata
        )

    async def health(self, *, timeout: float | None = None) -> monitoring_pb2.GetHealthResponse:
        return await self._stubs.monitoring.GetHealth(
            monitoring_pb2.GetHealthRequest(), timeout=self._t(timeout), metadata=self._metadata
        )

    async def metric_series(
        self, *, window: int = 0, points: int = 0, span: int = 0, timeout: float | None = None
    ) -> monitoring_pb2.GetMetricSeriesResponse:
        request = monitoring_pb2.GetMetricSeriesRequest(window=window, points=points, span=span)
        return await self._stubs.monitoring.GetMetricSeries(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    async def kelly_status(
        self, *, last_n: int = 0, bins: int = 0, timeout: float | None = None
    ) -> monitoring_pb2.GetKellyStatusResponse:
        request = monitoring_pb2.GetKellyStatusRequest(last_n=last_n, bins=bins)
        return await self._stubs.monitoring.GetKellyStatus(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    async def performance(
        self,
        symbol: str = "",
        *,
        high_agreement: float = 0.0,
        points: int = 0,
        last_n: int = 0,
        timeout: float | None = None,
    ) -> monitoring_pb2.GetPerformanceResponse:
        request = monitoring_pb2.GetPerformanceRequest(
            symbol=symbol, high_agreement=high_agreement, points=points, last_n=last_n
        )
        return await self._stubs.monitoring.GetPerformance(
            request, timeout=self._t(timeout), metadata=self._metadata
        )

    async def model_details(
        self,
        kind: str | None = None,
        *,
        include_retired: bool = False,
        limit: int = 0,
        timeout: float | None = None,
    ) -> retrain_pb2.GetModelDetailsResponse:
        request = retrain_pb2.GetModelDetailsRequest(
            kind=_kind(kind), include_retired=include_retired, limit=limit
        )
        return await self._stubs.retrain.GetModelDetails(
            request, timeout=self._t(timeout), metadata=self._metadata
        )
