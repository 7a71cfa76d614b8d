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
from typing import Any, ClassVar, Literal, Protocol

Severity = Literal["info", "warning", "error", "critical"]
SEVERITY_RANK: dict[Severity, int] = {"info": 1, "warning": 2, "error": 3, "critical": 4}
RANK_SEVERITY: dict[int, Severity] = {v: k for k, v in SEVERITY_RANK.items()}
ALERT_KINDS = (
    "low_accuracy",
    "low_confidence",
    "low_agreement",
    "high_error_rate",
    "latency_anomaly",
    "degradation",
    "miscalibration",
    "retrain",
    "rollback",
    "low_health_score",
)
log = logging.getLogger("minhos.alerts")


@dataclass(frozen=True)
class AlertCandidate:
    kind: str
    severity: Severity
    component: str
    message: str
    value: float
    threshold: float


@dataclass(frozen=True)
class Alert:
    """A raised (stored) alert."""

    id: str
    kind: str
    severity: Severity
    component: str
    message: str
    value: float
    threshold: float
    raised_at: datetime
    market_time: datetime | None = None
    acknowledged: bool = False
    acknowledged_at: datetime | None = None
    acknowledged_by: str = ""

    def to_json(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() + "Z" if t is not None else None

        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "component": self.component,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
            "raised_at": iso(self.raised_at),
            "market_time": iso(self.market_time),
            "acknowledged": self.acknowledged,
        }


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


class Cooldown:
    """In-memory cooldown over (kind, component), with an injectable clock."""

    def __init__(self, cooldown: timedelta, clock: Callable[[], datetime]) -> None:
        self.cooldown = cooldown
        self.clock = clock
        self._last: dict[tuple[str, str], tuple[Severity, datetime]] = {}

    def allow(self, candidate: AlertCandidate) -> bool:
        """Whether the candidate may be raised now; records it when it may."""
        now = self.clock()
        key = (candidate.kind, candidate.component)
        last_sev, last_at = self._last.get(key, (None, None))
        if in_cooldown(candidate.severity, now, last_sev, last_at, self.cooldown):
            return False
        self._last[key] = (candidate.severity, now)
        return True


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
