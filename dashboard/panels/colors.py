"""The colours the panels share, so a status looks the same everywhere."""

from __future__ import annotations

STATUS = {
    "healthy": "#2e7d32",
    "degraded": "#b36b00",
    "unhealthy": "#b00020",
    "unknown": "#757575",
}
SEVERITY = {"info": "#1565c0", "warning": "#b36b00", "error": "#b00020", "critical": "#b00020"}
BAND = {"healthy": "#e3f1e4", "degraded": "#fff1d6", "unhealthy": "#f9dede"}
SERIES = {
    "fusion": "#1f77b4",
    "lstm": "#9467bd",
    "ensemble": "#8c564b",
    "kelly": "#1f77b4",
    "buy and hold": "#7f7f7f",
}


def for_score(score: float, warn: float, critical: float) -> str:
    if score != score:  # NaN
        return STATUS["unknown"]
    if score >= warn:
        return STATUS["healthy"]
    return STATUS["degraded"] if score >= critical else STATUS["unhealthy"]
