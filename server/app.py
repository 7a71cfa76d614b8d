"""Assembles the server: database, model holder with hot reload, batched writer, servicers, the
standard health and reflection services, auth, and the Prometheus endpoint."""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from minhos.oip.v2 import open_inference_pb2 as oip_pb2
from minhos.v1 import (
    calibration_pb2,
    inference_pb2,
    monitoring_pb2,
    retrain_pb2,
)
from server.core.config import Config, ServerConfig
from server.core.manifest import KIND_OF_COMPONENT
from server.core.records import Lease
from server.monitoring.alerts import AlertCandidate
from server.monitoring.monitor import Monitor, reference_of
from server.retraining.worker import JobRunner, process_identity
from server.serving.dataplane import DataPlane
from server.serving.models import ModelHolder, ModelSet
from server.storage import leases, queries
from server.storage.registry import ModelRepository
from server.storage.schema import DATABASE_ERRORS, close_database, open_database, utcnow
from server.storage.writer import BatchWriter
from server.transport import handlers
from server.transport.host import AioHost
from server.transport.oip import SERVICE_NAME as OIP_SERVICE
from server.transport.oip import OpenInferenceServicer
from server.transport.servicers import (
    CalibrationServicer,
    InferenceServicer,
    MonitoringServicer,
    RetrainServicer,
)
from server.transport.telemetry import Telemetry

log = logging.getLogger("minhos.server")

#: Services whose readiness the standard health service reports (plus "" for the whole server).
SERVICES = [
    inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
    monitoring_pb2.DESCRIPTOR.services_by_name["MonitoringService"].full_name,
    calibration_pb2.DESCRIPTOR.services_by_name["CalibrationService"].full_name,
    retrain_pb2.DESCRIPTOR.services_by_name["RetrainService"].full_name,
    OIP_SERVICE,
]
#: Services that answer from the loaded models alone: with the database away they still predict
#: (rows wait in the writer), so a readiness probe on one of them keeps a replica in its Service.
#: The whole server ("") and the others also need the database.
INFERENCE_SERVICES = (SERVICES[0], OIP_SERVICE)
#: SERVING from start until the drain begins, whatever the models and the database: what a
#: liveness probe asks, so an outage of the database restarts no pod.
LIVENESS = "minhos.liveness"
#: Unary methods cheap enough, and free of blocking I/O, to run on the event loop (host.py).
INLINE_METHODS = frozenset({"Predict", "ModelInfer"})
#: Reachable without a token: probes and discovery must work before credentials are set up.
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")
#: What :meth:`MinhosServer.stop` waits, beyond the RPCs' grace, for the registry poller and for
#: the writer's last batch; with a second of slack for the rest, the longest a drain may take.
POLLER_JOIN_S = 5.0
WRITER_CLOSE_S = 10.0
STOP_BEYOND_GRACE_S = POLLER_JOIN_S + WRITER_CLOSE_S + 1.0


if TYPE_CHECKING:
    from server.retraining.coordinator import Retraining

    Handler = grpc.RpcMethodHandler[Any, Any]
    AioInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    AioInterceptor = grpc.aio.ServerInterceptor


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name (or "" for every interface): it may be reachable from afar
        return False


def plaintext_warnings(srv: ServerConfig) -> list[str]:
    """What an operator must hear at start about a server without TLS."""
    if srv.tls_cert_file and srv.tls_key_file:
        return []
    warnings = []
    if srv.token:
        warnings.append(
            "server.token is set but TLS is off (server.tls_cert_file/server.tls_key_file unset):"
            " the bearer token travels in clear text"
        )
    if not is_loopback(srv.host):
        warnings.append(
            f"server.host={srv.host!r} is not a loopback address and TLS is off"
            " (server.tls_cert_file/server.tls_key_file unset): requests and replies, token"
            " included, are readable on the network"
        )
    return warnings


class TokenInterceptor(AioInterceptor):
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "authorization: missing or wrong bearer token"
            )

        async def deny_stream(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await deny(None, context)
            yield  # pragma: no cover - abort raises; the yield makes this a stream handler

        self._deny = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(deny_stream)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        if method.startswith(OPEN_METHODS):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = metadata.get("authorization", "")
        given_bytes = given.encode() if isinstance(given, str) else given
        handler = await continuation(handler_call_details)
        if handler is None or hmac.compare_digest(given_bytes, self._expected):
            return handler
        # A denial of the method's own kind: a unary one on a stream (ModelStreamInfer's name does
        # not end in "Stream") would first wait for the client's first message.
        return self._deny_stream if handler.request_streaming else self._deny


@dataclass(frozen=True)
class ProcessSlot:
    """This process's place in a group of serving processes sharing one port
    (server.processes; server/process_group.py starts them). Only the port is shared: the group's
    processes are equals, like replicas."""

    index: int = 0
    count: int = 1


def _service(module: Any, name: str) -> ServiceDescriptor:
    found: ServiceDescriptor = module.DESCRIPTOR.services_by_name[name]
    return found


class MinhosServer:
    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        slot: ProcessSlot = ProcessSlot(),
    ) -> None:
        self.config = config
        self.slot = slot
        open_database(config.storage.database_url)
        self.repository = ModelRepository.from_config(config.storage)
        self.telemetry = Telemetry()
        self.holder = ModelHolder(
            self.repository, config, on_swap=self._swapped, on_refusal=self._refused
        )
        storage = config.storage
        self.writer = BatchWriter(
            storage.batch_interval_s, storage.batch_max_rows, enabled=storage.persist
        )
        self.telemetry.watch_writer(self.writer)
        self.plane = DataPlane(config, self.holder, self.writer, clock)
        self.monitor = Monitor(config.monitoring, reference={}, wall_clock=clock)
        #: Who this process is in leases and job claims.
        self.identity = process_identity()
        self.clock = clock
        self.retraining: Retraining | None = None
        self.runner: JobRunner | None = None
        if config.retrain.enabled:
            from server.retraining.coordinator import Retraining

            self.retraining = Retraining(config, self.repository, clock=clock, on_alert=self._alert)
            if config.retrain.local_worker:
                self.runner = JobRunner(
                    config, holder=self.identity, clock=clock, on_alert=self._alert
                )
        self.lease: Lease | None = None
        self._last_evaluation = 0.0
        self._degraded: dict[str, bool] = {}
        self.health = health.HealthServicer(experimental_non_blocking=True)
        srv = config.server
        self.server = AioHost(
            workers=srv.workers,
            interceptors=[TokenInterceptor(srv.token)] if srv.token else [],
            options=[
                ("grpc.max_receive_message_length", srv.max_message_bytes),
                ("grpc.max_send_message_length", srv.max_message_bytes),
                # Only a process group shares its port; alone, a taken port is an error.
                ("grpc.so_reuseport", 1 if slot.count > 1 else 0),
            ],
        )
        self.add_servicers()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server.server)
        reflection.enable_server_reflection(
            [*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server.server
        )
        address = f"{srv.host}:{srv.port}"
        if srv.tls_cert_file and srv.tls_key_file:
            credentials = grpc.ssl_server_credentials(
                [(Path(srv.tls_key_file).read_bytes(), Path(srv.tls_cert_file).read_bytes())]
            )
            self.port = self.server.add_secure_port(address, credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        self.metrics_port = 0
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="minhos-reload", daemon=True)
        self._runner_thread: threading.Thread | None = None
        if self.runner is not None:
            self._runner_thread = threading.Thread(
                target=self.runner.run, args=(self._stop,), name="minhos-worker", daemon=True
            )

    def add_servicers(self) -> None:
        """Each service from its descriptor, with requests parsed by the servicers' own rule (a
        body that does not parse is INVALID_ARGUMENT, not grpcio's INTERNAL)."""
        plane, telemetry = self.plane, self.telemetry
        services: list[tuple[object, ServiceDescriptor]] = [
            (InferenceServicer(plane, telemetry), _service(inference_pb2, "InferenceService")),
            (
                MonitoringServicer(plane, telemetry, self.monitor),
                _service(monitoring_pb2, "MonitoringService"),
            ),
            (
                CalibrationServicer(plane, telemetry, self.monitor),
                _service(calibration_pb2, "CalibrationService"),
            ),
            # Every replica answers RetrainService: reads from the shared database, triggers
            # queued there for the coordinator.
            (
                RetrainServicer(plane, telemetry, self.retraining),
                _service(retrain_pb2, "RetrainService"),
            ),
            # The Open Inference Protocol (KServe V2) over the same data plane, for Triton clients.
            (OpenInferenceServicer(plane, telemetry), _service(oip_pb2, "GRPCInferenceService")),
        ]
        for servicer, descriptor in services:
            handlers.register(self.server, servicer, descriptor, self.server.pool, INLINE_METHODS)

    def _swapped(self, models: ModelSet) -> None:
        self.telemetry.set_versions(models.versions)
        self.monitor.reference = reference_of(models.manifests)

    def _refused(self, reason: str) -> None:
        """A deployed set that cannot be loaded: the previous set keeps serving, and someone
        must look."""
        try:
            self._alert(
                AlertCandidate("model_load_failed", "error", "server", reason[:500], 0.0, 0.0)
            )
        except Exception:  # the database may be why; the refusal is in the log either way
            log.exception("could not record the model-load alert")

    def _alert(self, candidate: AlertCandidate) -> None:
        self.monitor.record(candidate, self.plane.market_now)

    def _set_health(self) -> None:
        loaded = self.holder.loaded
        ready = loaded and self.plane.database_ok()
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        for name in ["", *SERVICES]:
            up = loaded if name in INFERENCE_SERVICES else ready
            self.health.set(name, serving if up else not_serving)
        if not self._stop.is_set():
            self.health.set(LIVENESS, serving)
        self.telemetry.queue_depth.set(self.writer.depth)

    def _poll(self) -> None:
        while not self._stop.wait(self.config.server.reload_interval_s):
            self.holder.reload()
            self._set_health()
            self.tick()

    def holds_duties(self) -> bool:
        """Takes or renews the duties lease; True while this process holds it. Every replica
        asks at every poll, so a holder that dies is replaced once its lease expires."""
        ttl = dt.timedelta(seconds=self.config.retrain.lease_ttl_s)
        held = leases.hold(leases.DUTIES, self.identity, ttl, self.clock())
        if (held is None) != (self.lease is None):
            if held is not None:
                log.info("took the duties lease", extra={"generation": held.generation})
                self._last_evaluation = 0.0  # evaluate at once: the last holder may be long gone
            else:
                log.warning("lost the duties lease")
        self.lease = held
        return held is not None

    def tick(self) -> None:
        """Periodic work beside reloading, on the poller thread, never on a request, and only in
        the replica holding the duties lease: health evaluation and alerts every
        ``evaluate_interval_s``; retraining schedules, lost jobs and probation at every poll
        (cheap), with the degradation verdicts of the last evaluation."""
        try:
            if not self.holds_duties():
                return
            now = time.monotonic()
            due = now - self._last_evaluation >= self.config.monitoring.evaluate_interval_s
            # The holder may have served nothing itself, or less than the others: the stored bars
            # say how far the market has gone.
            market_now = max(
                (t for t in (self.plane.market_now, queries.latest_bar_time()) if t is not None),
                default=None,
            )
            if due and market_now is not None:
                self._last_evaluation = now
                self.writer.flush(timeout=2.0)
                report = self.monitor.health()
                self._degraded = {
                    KIND_OF_COMPONENT.get(c.component, c.component): True
                    for c in report.components
                    if c.degradation is not None
                    and c.degradation.severity in ("warning", "error", "critical")
                }
                self.monitor.evaluate(report=report)
            if self.retraining is not None:
                degraded, self._degraded = self._degraded, {}  # a verdict triggers once
                self.retraining.tick(market_now, degraded)
        except Exception:
            log.exception("periodic evaluation failed")

    def start(self) -> MinhosServer:
        for warning in plaintext_warnings(self.config.server):
            log.warning(warning)
        self.holder.reload()
        self._set_health()
        self.server.start()
        if self.config.server.metrics_port > 0:
            self.metrics_port = self.telemetry.serve(
                self.config.server.host, self.config.server.metrics_port
            )
        self._poller.start()
        if self._runner_thread is not None:
            self._runner_thread.start()
        log.info(
            "serving",
            extra={
                "port": self.port,
                "versions": self.holder.current.versions if self.holder.loaded else None,
            },
        )
        return self

    def stop(self, grace: float | None = None) -> None:
        """Drains in-flight RPCs for ``grace`` seconds, then the write queue, then closes."""
        self._stop.set()
        for name in ["", *SERVICES, LIVENESS]:
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(self.config.server.shutdown_grace_s if grace is None else grace)
        if self._poller.is_alive():
            self._poller.join(timeout=POLLER_JOIN_S)
        if self._runner_thread is not None and self._runner_thread.is_alive():
            self._runner_thread.join(timeout=POLLER_JOIN_S)  # it kills its job on the way out
        if self.lease is not None:
            # Another replica takes the duties at its next poll instead of after the expiry.
            try:
                leases.release(leases.DUTIES, self.identity)
            except DATABASE_ERRORS:
                log.warning("could not release the duties lease; it expires by itself")
        self.writer.close(WRITER_CLOSE_S)
        self.telemetry.close()
        close_database()
        log.info("stopped")

    def wait(self) -> None:
        self.server.wait()
