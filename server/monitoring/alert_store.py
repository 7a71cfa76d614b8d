"""Raised alerts: the cooldown decision (made in the database, so replicas agree), storage and
routing to sinks, listing and acknowledgement. The cooldown rule itself is pure
(alerts.in_cooldown)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from server.core.records import Alert, Severity
from server.monitoring.alerts import AlertCandidate, Sink, in_cooldown, route
from server.storage import alerts as alert_rows
from server.storage import queries
from server.storage.schema import write_transaction


class AlertNotFoundError(KeyError):
    """No alert has the given id."""


class AlertStore:
    def __init__(
        self, cooldown: timedelta, sinks: Sequence[Sink], wall_clock: Callable[[], datetime]
    ) -> None:
        self.cooldown = cooldown
        self.sinks = list(sinks)
        self.wall_clock = wall_clock

    def cooling_down(self, c: AlertCandidate, now: datetime) -> bool:
        last = queries.last_alert(c.kind, c.component)
        if last is None:
            return False
        # Both clocks must have moved on: market time alone lets a replay of daily bars raise the
        # same alert every bar, and wall time alone would let a live feed's bars pile up silently.
        wall = in_cooldown(
            c.severity, self.wall_clock(), last.severity, last.raised_at, self.cooldown
        )
        if last.market_time is not None:
            return wall or in_cooldown(
                c.severity, now, last.severity, last.market_time, self.cooldown
            )
        return wall

    def record(self, c: AlertCandidate, now: datetime) -> Alert | None:
        """Stores and routes one alert unless its kind is cooling down. The check and the insert
        are one transaction under the alert's lock, so two replicas (or a server and a worker)
        raising the same alert at the same instant store it once."""
        with write_transaction(f"alert:{c.kind}:{c.component}"):
            if self.cooling_down(c, now):
                return None
            alert = alert_rows.insert(
                c.kind,
                c.severity,
                c.component,
                c.message,
                c.value,
                c.threshold,
                self.wall_clock(),
                now,
            )
        route(alert, self.sinks)  # after the commit: a slow webhook must not hold the lock
        return alert

    def list(
        self,
        include_acknowledged: bool = False,
        min_severity: Severity | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """Newest first; ``limit`` 0 means 100, at most 1000."""
        return queries.alerts(include_acknowledged, min_severity, min(limit or 100, 1000))

    def acknowledge(self, alert_id: str, by: str = "") -> Alert:
        alert = alert_rows.acknowledge(alert_id, by, self.wall_clock())
        if alert is None:
            raise AlertNotFoundError(alert_id)
        return alert
