"""How the dashboard writes the contract's values: enum names, numbers, shares, times."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

DASH = "–"


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """``HEALTH_STATUS_DEGRADED`` -> "degraded"."""
    return str(enum.Name(value)).removeprefix(prefix).lower().replace("_", " ")


def number(value: float, digits: int = 3) -> str:
    return DASH if math.isnan(value) else f"{value:.{digits}f}"


def percent(value: float, digits: int = 1, signed: bool = False) -> str:
    if math.isnan(value):
        return DASH
    return f"{value:+.{digits}%}" if signed else f"{value:.{digits}%}"


def when(stamp: Timestamp, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A timestamp in UTC; unset ones as a dash."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return DASH
    return stamp.ToDatetime().strftime(fmt)


def day(stamp: Timestamp) -> str:
    return when(stamp, "%Y-%m-%d")
