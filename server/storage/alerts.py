"""Writes of alerts: a raised alert stored, an acknowledgement recorded (reads are in queries.py)."""

from __future__ import annotations

import datetime as dt
import math
import uuid

from server.core.records import SEVERITY_RANK, Alert, Severity
from server.storage.queries import alert_of
from server.storage.schema import AlertRow


def insert(
    kind: str,
    severity: Severity,
    component: str,
    message: str,
    value: float,
    threshold: float,
    raised_at: dt.datetime,
    market_time: dt.datetime | None,
) -> Alert:
    row = AlertRow.create(
        id=uuid.uuid4().hex,
        kind=kind,
        severity=SEVERITY_RANK[severity],
        component=component,
        message=message,
        value=value if math.isfinite(value) else 0.0,
        threshold=threshold if math.isfinite(threshold) else 0.0,
        raised_at=raised_at,
        market_time=market_time,
    )
    return alert_of(row)


def acknowledge(alert_id: str, by: str, at: dt.datetime) -> Alert | None:
    """The alert, acknowledged now unless it was already; None if there is no such alert."""
    row = AlertRow.get_or_none(AlertRow.id == alert_id)
    if row is None:
        return None
    if not row.acknowledged:
        row.acknowledged = True
        row.acknowledged_at = at
        row.acknowledged_by = by
        row.save()
    return alert_of(row)
