"""``make demo``: the whole product end to end on the built-in data.

Trains and deploys the models if none is deployed, starts the server, replays the S&P 500 test
span through PredictStream (outcomes resolved and stored as it goes), prints the health and
calibration reports, then serves the dashboard until Ctrl-C; every child process is stopped on exit.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from clients import cli
from clients.client import MinhosClient
from clients.replay import DEFAULT_START
from server.core.config import load_config
from server.core.manifest import KINDS
from server.storage.registry import ModelRepository
from server.storage.schema import open_database


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def _deployed_kinds() -> set[str]:
    config = load_config()
    open_database(config.storage.database_url)
    return set(ModelRepository(config.storage.model_repository).deployed())


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--limit", type=int, default=0, help="replay at most this many bars")
    # 50 bars/s: six years of daily bars in about 30 s, slow enough for the server's periodic
    # health evaluation and retraining schedules (market time) to act during the replay.
    parser.add_argument("--speed", type=float, default=50.0, help="bars per second (0: max)")
    parser.add_argument("--no-dashboard", action="store_true", help="stop after the replay")
    parser.add_argument("--dashboard-port", type=int, default=8050)
    args = parser.parse_args(argv)
    config = load_config()
    host, port = config.server.host, config.server.port
    target = f"{host}:{port}"

    if set(KINDS) - _deployed_kinds():
        print("== no deployed models: training on the built-in S&P 500", flush=True)
        subprocess.run([sys.executable, "-m", "export.train"], check=True)
    if not _free(host, port):
        print(
            f"port {port} on {host} is in use (another server?): stop it or set MINHOS_SERVER_PORT"
        )
        return 1

    children: list[subprocess.Popen[bytes]] = []
    try:
        print(f"== starting the server on {target}", flush=True)
        children.append(subprocess.Popen([sys.executable, "-m", "server.main"]))
        with MinhosClient(target) as client:
            client.wait_ready(timeout=30)
        print(f"== replaying the test span from {DEFAULT_START}", flush=True)
        replay_args = ["--target", target, "--speed", str(args.speed)]
        if args.limit:
            replay_args += ["--limit", str(args.limit)]
        subprocess.run([sys.executable, "-m", "clients.replay", *replay_args], check=True)
        time.sleep(2 * config.storage.batch_interval_s)  # let the last batch of writes land
        print("\n== health", flush=True)
        cli.main(["--target", target, "health"])
        print("\n== calibration", flush=True)
        cli.main(["--target", target, "calibration"])
        print(
            "\n== retraining jobs (queued on market-time schedules during the replay)", flush=True
        )
        cli.main(["--target", target, "jobs"])
        print("\n== models", flush=True)
        cli.main(["--target", target, "models"])
        if args.no_dashboard:
            return 0
        url = f"http://127.0.0.1:{args.dashboard_port}/"
        print(f"\n== dashboard on {url} (Ctrl-C stops everything)", flush=True)
        dashboard = [sys.executable, "-m", "dashboard.app", "--target", target]
        dashboard += ["--port", str(args.dashboard_port)]
        children.append(subprocess.Popen(dashboard))
        children[-1].wait()
        return 0
    except KeyboardInterrupt:
        print("\n== stopping", flush=True)
        return 0
    finally:
        for child in reversed(children):
            _stop(child)


if __name__ == "__main__":
    raise SystemExit(main())
