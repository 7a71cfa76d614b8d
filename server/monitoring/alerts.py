"""Alerts: candidates, the cooldown rule, and the sinks they are delivered to.

Every alert goes to the log; critical alerts also go to every other sink (e.g. a webhook).
The cooldown rule is pure: the same kind + component is not raised again within the cooldown
unless its severity escalates.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Protocol

from server.core.records import SEVERITY_RANK, Alert, Severity

log = logging.getLogger("minhos.alerts")


@dataclass(frozen=True)
class AlertCandidate:
    kind: str
    severity: Severity
    component: str
    message: str
    value: float
    threshold: float


def in_cooldown(
    severity: Severity,
    now: datetime,
    last_severity: Severity | None,
    last_at: datetime | None,
    cooldown: timedelta,
) -> bool:
    """True when an alert of the same kind + component must be suppressed."""
    if last_severity is None or last_at is None:
        return False
    if SEVERITY_RANK[severity] > SEVERITY_RANK[last_severity]:
        return False
    return now - last_at < cooldown


class Sink(Protocol):
    #: True for sinks that receive every alert; others only get critical ones.
    every_alert: bool

    def send(self, alert: Alert) -> bool: ...


class LogSink:
    every_alert = True
    _LEVELS: ClassVar[dict[Severity, int]] = {
        "info": logging.INFO,
        "warning": logging.WARNING,
        "error": logging.ERROR,
        "critical": logging.CRITICAL,
    }

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    def send(self, alert: Alert) -> bool:
        self.logger.log(
            self._LEVELS[alert.severity],
            "alert %s [%s/%s] %s",
            alert.id,
            alert.kind,
            alert.component,
            alert.message,
        )
        return True


class WebhookSink:
    """POSTs the alert as JSON; retries with exponential backoff on network errors and 5xx."""

    every_alert = False

    def __init__(
        self,
        url: str,
        retries: int = 3,
        timeout: float = 2.0,
        backoff_s: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.retries = retries
        self.timeout = timeout
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.attempts = 0

    def send(self, alert: Alert) -> bool:
        body = json.dumps({"alert": alert.to_json()}).encode()
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
            self.attempts += 1
            request = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    if 200 <= response.status < 300:
                        return True
            except urllib.error.HTTPError as exc:
                if exc.code < 500:  # the receiver rejects the body: retrying will not help
                    log.error("webhook %s refused alert %s: HTTP %s", self.url, alert.id, exc.code)
                    return False
                log.warning("webhook %s: HTTP %s (attempt %d)", self.url, exc.code, attempt + 1)
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                log.warning("webhook %s: %s (attempt %d)", self.url, exc, attempt + 1)
        log.error("webhook %s: alert %s not delivered", self.url, alert.id)
        return False


def route(alert: Alert, sinks: Iterable[Sink]) -> list[bool]:
    """Delivers to every-alert sinks always and to the others when critical; never raises."""
    results: list[bool] = []
    for sink in sinks:
        if not (sink.every_alert or alert.severity == "critical"):
            continue
        try:
            results.append(sink.send(alert))
        except Exception:  # a broken sink must not stop monitoring
            log.exception("sink %r failed on alert %s", sink, alert.id)
            results.append(False)
    return results


def default_sinks(webhook_url: str, retries: int, timeout: float) -> Sequence[Sink]:
    sinks: list[Sink] = [LogSink()]
    if webhook_url:
        sinks.append(WebhookSink(webhook_url, retries=retries, timeout=timeout))
    return sinks
