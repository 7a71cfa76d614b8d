"""What one ``make bench`` run measures, and for how long."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    #: Timed single-client calls per server (in bursts that take turns).
    calls: int = 1000
    warmup: int = 50
    #: Timed calls per request form (bars, columns, raw) when choosing the Predict client's form.
    form_calls: int = 500
    #: Bars per stream; 0: the whole built-in S&P 500 series.
    stream_messages: int = 0
    clients: int = 8
    #: Seconds of each closed-loop load round, per server; the servers take turns every round.
    load_seconds: float = 2.0
    rounds: int = 6
    #: Rounds of the bare stream and PredictStream, alternating which goes first.
    measure_rounds: int = 5
    #: Serving processes of the multi-process line (``MINHOS_SERVER_PROCESSES``).
    processes: int = 2
    repository: str = ""
    #: SQLite file holding ``repository``'s registry rows (which versions are deployed).
    database: str = ""
    #: Extra ``MINHOS_*`` settings for every MinhOS server process (experiments).
    server_env: tuple[tuple[str, str], ...] = ()
    #: Also measure the Open Inference Protocol's ModelInfer beside Predict (``make bench`` does).
    oip: bool = False
