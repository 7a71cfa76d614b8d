"""Several serving processes on one port (``server.processes``): each its own interpreter, ONNX
sessions and writer, the kernel spreading connections over them (SO_REUSEPORT). The parent starts
them, restarts one that dies, forwards SIGTERM for a drain, and serves one /metrics view: every
child's samples, labelled with its ``process`` index.

The children are equals, as replicas on several machines are: the duties lease in the database
decides which one evaluates health and runs the retraining duties (server/storage/leases.py).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from server.core.config import Config, as_env

log = logging.getLogger("minhos.group")

#: A child that dies is restarted at most this often.
RESTART_BACKOFF_S = 1.0


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def labelled(text: str, index: int) -> list[str]:
    """A child's exposition lines with ``process="index"`` added to every sample."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, brace, rest = line.partition("{")
        if brace:
            out.append(f'{name}{{process="{index}",{rest}')
        else:
            metric, _, value = line.partition(" ")
            out.append(f'{metric}{{process="{index}"}} {value}')
    return out


def merged_metrics(host: str, ports: Sequence[int]) -> str:
    """One view of every child's /metrics: the # HELP and # TYPE lines once (from the first child
    that answers), then each child's samples with its index."""
    headers: dict[str, list[str]] = {}
    samples: list[str] = []
    for index, port in enumerate(ports):
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as reply:
                text = reply.read().decode()
        except OSError:
            continue  # a restarting child: its samples are missing from this scrape
        for line in text.splitlines():
            if line.startswith("# "):
                headers.setdefault(" ".join(line.split()[1:3]), [line])
        samples.extend(labelled(text, index))
    return "\n".join([*(h[0] for h in headers.values()), *samples]) + "\n"


@dataclass
class Child:
    index: int
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0


@dataclass
class ProcessGroup:
    config: Config
    count: int
    children: list[Child] = field(default_factory=list)
    port: int = 0

    def _env(self, child: Child) -> dict[str, str]:
        env = {**os.environ, **as_env(self.config)}
        env["MINHOS_SERVER_PORT"] = str(self.port)
        env["MINHOS_SERVER_METRICS_PORT"] = str(child.metrics_port)
        env["MINHOS_SERVER_PROCESSES"] = "1"  # a child is a plain server in its slot
        return env

    def _spawn(self, child: Child) -> None:
        argv = [
            sys.executable,
            *("-m", "server.main", "--slot", f"{child.index}/{self.count}"),
            *("--parent", str(os.getpid())),
        ]
        child.process = subprocess.Popen(argv, env=self._env(child))
        child.started = time.monotonic()

    def start(self) -> ProcessGroup:
        host = self.config.server.host
        # Children must agree on the port before any binds it.
        self.port = self.config.server.port or free_port(host)
        self.children = [Child(i, free_port(host)) for i in range(self.count)]
        for child in self.children:
            self._spawn(child)
        return self

    def supervise(self, stop: threading.Event) -> None:
        """Restarts a child that exited on its own, until ``stop`` is set."""
        while not stop.wait(0.5):
            for child in self.children:
                if child.process is not None and child.process.poll() is not None:
                    if time.monotonic() - child.started < RESTART_BACKOFF_S:
                        continue
                    log.error(
                        "serving process exited; restarting",
                        extra={"process": child.index, "code": child.process.returncode},
                    )
                    self._spawn(child)

    def stop(self, timeout: float) -> None:
        """SIGTERM to every child (each drains), then SIGKILL for any still running."""
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()


def serve_metrics(group: ProcessGroup, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = merged_metrics(host, [c.metrics_port for c in group.children]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=httpd.serve_forever, name="minhos-metrics", daemon=True).start()
    return httpd


def run(config: Config, count: int) -> int:
    """Runs ``count`` serving processes until SIGTERM or Ctrl-C."""
    group = ProcessGroup(config, count).start()
    srv = config.server
    httpd = serve_metrics(group, srv.host, srv.metrics_port) if srv.metrics_port > 0 else None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal received, draining", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"minhos serving on {srv.host}:{group.port} with {count} processes", flush=True)
    group.supervise(stop)
    group.stop(srv.shutdown_grace_s + 10)
    if httpd is not None:
        httpd.shutdown()
    return 0
