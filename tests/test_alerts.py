"""Alert cooldown and delivery (log always, webhook for critical alerts with retries)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest

from server.core.records import Alert
from server.monitoring.alerts import (
    LogSink,
    Sink,
    WebhookSink,
    in_cooldown,
    route,
)

pytestmark = pytest.mark.serving

T0 = datetime(2024, 1, 2, 9, 30)


def _alert(severity: Any = "critical", id_: str = "a1") -> Alert:
    return Alert(
        id=id_,
        kind="high_error_rate",
        severity=severity,
        component="server",
        message="error rate 7% >= 5%",
        value=0.07,
        threshold=0.05,
        raised_at=T0,
        market_time=T0,
    )


def test_in_cooldown_rule() -> None:
    cool = timedelta(minutes=30)
    assert not in_cooldown("info", T0, None, None, cool)
    assert in_cooldown("warning", T0 + timedelta(minutes=29), "warning", T0, cool)
    assert not in_cooldown("warning", T0 + timedelta(minutes=30), "warning", T0, cool)
    assert in_cooldown("info", T0, "critical", T0, cool)
    assert not in_cooldown("critical", T0, "error", T0, cool)


class _Receiver(BaseHTTPRequestHandler):
    failures_left = 0
    bodies: ClassVar[list[dict[str, Any]]] = []
    attempts = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).attempts += 1
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            self.send_response(500)
            self.end_headers()
            return
        type(self).bodies.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Handler", (_Receiver,), {"failures_left": 1, "bodies": [], "attempts": 0})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()


def test_webhook_retries_after_500_then_delivers(receiver: tuple[str, type[_Receiver]]) -> None:
    url, handler = receiver
    sleeps: list[float] = []
    sink = WebhookSink(url, retries=3, timeout=2.0, backoff_s=0.05, sleep=sleeps.append)
    assert sink.send(_alert())
    assert handler.attempts == 2 and sink.attempts == 2
    assert sleeps == [0.05]
    body = handler.bodies[0]["alert"]
    assert body["id"] == "a1" and body["severity"] == "critical" and body["value"] == 0.07
    assert body["raised_at"] == "2024-01-02T09:30:00Z"


def test_webhook_gives_up_after_retries(receiver: tuple[str, type[_Receiver]]) -> None:
    url, handler = receiver
    handler.failures_left = 10
    sleeps: list[float] = []
    sink = WebhookSink(url, retries=2, backoff_s=0.01, sleep=sleeps.append)
    assert not sink.send(_alert())
    assert handler.attempts == 3
    assert sleeps == [0.01, 0.02]


def test_webhook_unreachable_returns_false() -> None:
    sink = WebhookSink("http://127.0.0.1:9/none", retries=1, timeout=0.5, sleep=lambda s: None)
    assert not sink.send(_alert())
    assert sink.attempts == 2


def test_route_sends_only_critical_to_webhook(
    receiver: tuple[str, type[_Receiver]], caplog: pytest.LogCaptureFixture
) -> None:
    url, handler = receiver
    handler.failures_left = 0
    sinks: list[Sink] = [LogSink(), WebhookSink(url, retries=0)]
    with caplog.at_level(logging.INFO, logger="minhos.alerts"):
        assert route(_alert("warning", "w1"), sinks) == [True]
        assert route(_alert("critical", "c1"), sinks) == [True, True]
    assert [b["alert"]["id"] for b in handler.bodies] == ["c1"]
    logged = [r for r in caplog.records if "alert" in r.getMessage()]
    assert {r.levelno for r in logged} == {logging.WARNING, logging.CRITICAL}
