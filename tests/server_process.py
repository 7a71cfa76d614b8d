"""The server as deployed (``python -m server.main``) in its own process, for fault tests: started on
a free loopback port with ``MINHOS_*`` settings, its log in a file, stopped by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.bench import free_port


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def health(self, timeout: float = 1.0, service: str = "") -> str:
        """The standard health service's status name for ``service`` (the whole server by
        default), or the error code's name."""
        with grpc.insecure_channel(self.target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout
                )
            except grpc.RpcError as exc:
                return str(exc.code().name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def wait_serving(self, timeout: float = 30.0) -> float:
        """Seconds until the health service says SERVING."""
        began = time.monotonic()
        while self.health(0.5) != "SERVING":
            assert self.process.poll() is None, f"server exited:\n{self.log_text()[-3000:]}"
            assert time.monotonic() - began < timeout, f"not SERVING within {timeout} s"
            time.sleep(0.05)
        return time.monotonic() - began

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (the server drains its write queue) and its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def server_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The test's environment minus MinhOS settings, plus ``settings``; retraining off unless
    asked for (a job would compete for the two cores), one serving process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINHOS_")}
    env.pop("DATABASE_URL", None)
    # One serving process: the pid a test kills or watches is the one that serves.
    defaults = {
        "MINHOS_RETRAIN_ENABLED": "false",
        "MINHOS_SERVER_METRICS_PORT": "0",
        "MINHOS_SERVER_PROCESSES": "1",
    }
    return {**defaults, **env, **settings}


def spawn(settings: Mapping[str, str], log: Path, port: int | None = None) -> ServerProcess:
    port = port or free_port()
    env = server_env({**settings, "MINHOS_SERVER_PORT": str(port)})
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.main"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return ServerProcess(process, port, log)


@contextmanager
def serving(settings: Mapping[str, str], log: Path) -> Iterator[ServerProcess]:
    """A started server, SERVING; killed at the end if the test did not stop it."""
    server = spawn(settings, log)
    try:
        server.wait_serving()
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)
