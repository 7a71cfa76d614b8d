"""Domain errors of the core, each naming the field at fault. The transport maps them to status
codes (server/transport/servicers.py); the core itself knows nothing of gRPC."""

from __future__ import annotations


class MinhosError(Exception):
    """Base class. ``field`` names the request field at fault, when there is one."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class InvalidArgument(MinhosError):
    """The request is malformed (wrong window length, NaN, high < low, ...)."""


class NotFound(MinhosError):
    """An unknown prediction, alert, job, model version or symbol."""


class FailedPrecondition(MinhosError):
    """The request is well-formed but the system is not in a state to serve it."""


class ResourceExhausted(MinhosError):
    """A per-call limit is reached (e.g. symbols in one stream)."""


class Unavailable(MinhosError):
    """No model is loaded, or the database cannot be reached; retrying later may work."""
