"""``minhos-worker``: claims retraining jobs from the database and runs them, until SIGTERM or
Ctrl-C (a running job is then killed and failed as "worker shutting down").

Run as many as you like, on any machine that reaches the database (PostgreSQL for several
machines) and has the training extras (``pip install minhos[train]``); they coordinate through
job rows alone. Servers then run with ``retrain.local_worker = false``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from types import FrameType

from server.core.config import ConfigError, load_config
from server.monitoring.alert_store import AlertStore
from server.monitoring.alerts import AlertCandidate, default_sinks
from server.retraining.worker import JobRunner
from server.storage import queries
from server.storage.schema import close_database, open_database, utcnow
from server.transport.telemetry import setup_logging

log = logging.getLogger("minhos.worker")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minhos-worker", description=__doc__)
    parser.add_argument(
        "--config", help="TOML config file (default: $MINHOS_CONFIG, then built-in defaults)"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    open_database(config.storage.database_url)
    mon = config.monitoring
    # Alerts of finished jobs go where the servers' go: the same table, cooldown and sinks.
    store = AlertStore(
        timedelta(minutes=mon.alert_cooldown_minutes),
        default_sinks(mon.critical_webhook_url, mon.webhook_retries, mon.webhook_timeout_s),
        utcnow,
    )

    def alert(candidate: AlertCandidate) -> None:
        store.record(candidate, queries.latest_bar_time() or utcnow())

    runner = JobRunner(config, on_alert=alert)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal received, stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"minhos worker {runner.holder} waiting for jobs", flush=True)
    try:
        runner.run(stop)
    finally:
        close_database()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
