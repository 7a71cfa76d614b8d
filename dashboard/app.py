"""Plotly Dash dashboard. Reads everything through gRPC (the typed client), never the database, so
it shows what any remote client would see and works against any replica.

The page (dashboard.layout) holds the panels (dashboard.panels: health, alerts, trends,
calibration, performance and the Kelly component, recent predictions, models, jobs); the callbacks
(dashboard.callbacks) refresh them from one snapshot of the server (dashboard.snapshot) and act on
it: acknowledge, retrain, roll back.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from dash import Dash

from clients.client import DEFAULT_TARGET, MinhosClient
from dashboard import callbacks, layout

REFRESH_MS = 5000
#: RPC deadline: a hung server must not hold a refresh past the next one.
TIMEOUT_S = 4.0


def create_app(
    client: MinhosClient,
    refresh_ms: int = REFRESH_MS,
    target: str = "",
    clock: callbacks.Clock = callbacks.utcnow,
) -> Dash:
    app = Dash(__name__, title="MinhOS")
    app.index_string = app.index_string.replace(
        "{%css%}", "{%css%}<style>" + layout.CSS + "</style>"
    )
    app.layout = layout.page(target or "the server", refresh_ms)
    callbacks.register(app, client, target or "the server", clock)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minhos-dashboard", description=__doc__)
    parser.add_argument(
        "--target",
        default=os.environ.get("MINHOS_TARGET", DEFAULT_TARGET),
        help="host:port, a comma-separated list of replicas (balanced round-robin), or a gRPC "
        "name such as dns:///minhos-headless:50051 (default: $MINHOS_TARGET, then %(default)s)",
    )
    parser.add_argument("--token", default=os.environ.get("MINHOS_TOKEN") or None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    parser.add_argument("--refresh-ms", type=int, default=REFRESH_MS)
    args = parser.parse_args(argv)
    # The page polls: one request line per refresh would bury everything else the log says.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    client = MinhosClient(
        args.target,
        token=args.token,
        timeout=TIMEOUT_S,
        max_attempts=2,
        max_reconnect_backoff_s=args.refresh_ms / 1000,
    )
    app = create_app(client, args.refresh_ms, args.target)
    print(f"dashboard on http://{args.host}:{args.port}/ (server {args.target})", flush=True)
    # As a container's PID 1 the process gets no default SIGTERM handler: without this one,
    # `docker stop` and a pod's termination wait out their grace and kill it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    app.run(host=args.host, port=args.port, debug=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
