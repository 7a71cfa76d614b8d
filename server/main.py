"""``minhos-server`` / ``make serve``: runs the server until SIGTERM or Ctrl-C, then drains."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from server.core.config import ConfigError, load_config
from server.transport.telemetry import setup_logging

log = logging.getLogger("minhos.server")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minhos-server", description=__doc__)
    parser.add_argument(
        "--config", help="TOML config file (default: $MINHOS_CONFIG, then built-in defaults)"
    )
    parser.add_argument("--log-level", default="INFO")
    # Set by server/process_group.py for its children: "INDEX/COUNT" (the port is shared).
    parser.add_argument("--slot", default="0/1", help=argparse.SUPPRESS)
    # The group's pid, passed by it: a child that read its parent's pid only once it had started
    # would read its new parent's if the group died during its start-up, and never leave.
    parser.add_argument("--parent", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    index, count = (int(x) for x in args.slot.split("/"))
    if count > 1 and not args.parent:
        parser.error("--slot of a group needs the group's --parent")
    if count == 1 and config.server.process_count() > 1:
        from server import process_group

        return process_group.run(config, config.server.process_count())
    from server.app import (  # after logging is set up
        STOP_BEYOND_GRACE_S,
        MinhosServer,
        ProcessSlot,
    )

    server = MinhosServer(config, slot=ProcessSlot(index, count)).start()
    if not server.holder.loaded:
        log.warning(
            "no deployed models: Predict answers UNAVAILABLE until a model set is deployed (make train)"
        )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal received, draining", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if count == 1:
        print(f"minhos serving on {config.server.host}:{server.port}", flush=True)
        stop.wait()
    else:
        # A child of a process group drains and exits when its parent is gone, however the
        # parent ended (a kill -9 of the parent must not leave serving orphans on the port).
        parent = args.parent
        while os.getppid() == parent and not stop.wait(0.5):
            pass
        if not stop.is_set():
            log.warning("the process group's parent is gone; draining")
        # Bounded: with no parent left to kill a child stuck in its drain, it must go itself.
        drain = threading.Thread(target=server.stop, name="minhos-drain", daemon=True)
        drain.start()
        drain.join(config.server.shutdown_grace_s + STOP_BEYOND_GRACE_S)
        if drain.is_alive():
            log.error("drain did not finish; exiting")
            os._exit(1)
        return 0
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
