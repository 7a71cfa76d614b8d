"""``make demo``: the whole product end to end on the built-in data, the same on every run.

1. Models: the deployed set of the configured registry (``make train``'s), trained first if none is.
2. A fresh demo database: ``var/demo/`` is deleted and rebuilt holding only that deployed set, so a
   second run replays into an empty database exactly like the first (nothing is appended).
3. The server, on the demo database, with the retraining schedules off: a job that deployed a new
   model part-way through the replay would make each run's predictions depend on timing
   (``--retrain-schedules`` turns them on; the dashboard's buttons and ``minhos retrain`` work
   either way).
4. The replay of the S&P 500 test span through PredictStream (outcomes resolved as it goes).
5. Reports, then a summary read back from the server: the same numbers on every run.
6. The dashboard, until Ctrl-C; every child process is stopped on exit. ``--screenshot PATH``
   saves a PNG of the dashboard instead of serving it (``make screenshot``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clients import cli
from clients.bench.servers import terminate
from clients.client import MinhosClient
from clients.replay import DEFAULT_START
from minhos.v1 import calibration_pb2, common_pb2
from server.core.config import load_config
from server.core.manifest import KINDS
from server.storage.schema import ModelVersionRow, close_database, open_database

DEMO_DIR = Path("var/demo")
KIND_NAME = {v: k.removeprefix("MODEL_KIND_").lower() for k, v in common_pb2.ModelKind.items()}
STEPS = 6


@contextmanager
def step(number: int, title: str) -> Iterator[None]:
    """Prints a step's title, then how long it took."""
    print(f"\n== [{number}/{STEPS}] {title}", flush=True)
    began = time.perf_counter()
    yield
    print(f"   [{number}/{STEPS}] took {time.perf_counter() - began:.1f} s", flush=True)


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def _deployed_rows(database_url: str) -> list[dict[str, Any]]:
    """The registry rows of the deployed set (one per kind), or fewer if a kind has none."""
    open_database(database_url)
    try:
        rows = ModelVersionRow.select().where(ModelVersionRow.stage == "deployed")
        return [dict(row.__data__) for row in rows]
    finally:
        close_database()


def fresh_demo_state(source_url: str, source_repository: Path, demo: Path) -> dict[str, str]:
    """Replaces ``demo`` with a database holding only the source's deployed set and a copy of its
    model files (same versions, same registration times): every run starts from the same state."""
    rows = _deployed_rows(source_url)
    shutil.rmtree(demo, ignore_errors=True)
    (demo / "models").mkdir(parents=True)
    for row in rows:
        shutil.copytree(source_repository / row["path"], demo / "models" / row["path"])
    open_database(f"sqlite:///{demo / 'minhos.db'}")
    try:
        for row in rows:
            row.pop("id", None)
            ModelVersionRow.insert(**row).execute()
    finally:
        close_database()
    return {row["kind"]: row["version"] for row in rows}


def _wait_settled(client: MinhosClient, timeout: float = 10.0) -> None:
    """Waits until the batched writer has stored the replay's last rows (the resolved count
    stops moving)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        now = client.performance().resolved
        if now == last:
            return
        last = now
        time.sleep(0.5)


def _pct(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:+.2%}" if signed else f"{value:.2%}"


def summary(client: MinhosClient) -> str:
    """What the replay left in the server, as the server aggregates it: a function of the
    models and the bars only (no wall time, no latency, no alert timing), so it repeats."""
    perf = client.performance()
    health = client.health()
    fused = next(iter(client.calibration(source=calibration_pb2.PROBABILITY_SOURCE_FUSED)), None)
    models = client.serving_info().deployed
    lines = [
        ("models", ", ".join(f"{KIND_NAME[v.kind]} {v.version}" for v in models)),
        ("symbol", perf.symbol),
        ("resolved predictions", str(perf.resolved)),
        ("hit rate", f"{_pct(perf.hit_rate)} ({perf.hits} hits)"),
    ]
    for group in perf.by_agreement:
        bound = (
            f">= {group.min_agreement:.2f}"
            if group.name == "high agreement"
            else f"< {group.max_agreement:.2f}"
        )
        lines.append(
            (f"  agreement {bound}", f"{_pct(group.hit_rate)} of {group.resolved} resolved")
        )
    lines += [
        (
            "Kelly return",
            f"{_pct(perf.kelly_return, True)} (max drawdown {_pct(perf.kelly_max_drawdown)})",
        ),
        (
            "buy-and-hold return",
            f"{_pct(perf.buy_and_hold_return, True)} (max drawdown "
            f"{_pct(perf.buy_and_hold_max_drawdown)})",
        ),
        ("health score", f"{health.health_score:.1f} / 100"),
    ]
    if fused is not None:
        lines.append(("fused calibration", f"ECE {fused.ece:.4f}, Brier {fused.brier:.4f}"))
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"   {name:<{width}}  {value}" for name, value in lines)


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def screenshot(url: str, path: Path, width: int = 1500) -> None:
    """Opens the dashboard in Debian's Chromium and saves the full page once every panel is
    drawn (playwright is a development dependency: ``make setup`` installs it)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": width, "height": 1000})
        page.goto(url)
        expect(page.locator("#health-score")).to_contain_text("/ 100", timeout=30_000)
        for graph in ("health", "trends", "reliability", "zones", "equity", "stakes"):
            expect(page.locator(f"#{graph}-graph .main-svg").first).to_be_visible(timeout=30_000)
        expect(page.locator("#predictions-table")).to_be_visible(timeout=30_000)
        expect(page.locator("#model-lstm")).to_be_visible(timeout=30_000)
        page.wait_for_timeout(1500)  # plotly's transitions
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        browser.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--limit", type=int, default=0, help="replay at most this many bars")
    # 50 bars/s: six years of daily bars in about 30 s, slow enough for the server's periodic
    # health evaluation (every 10 s) to raise alerts during the replay.
    parser.add_argument("--speed", type=float, default=50.0, help="bars per second (0: max)")
    parser.add_argument("--no-dashboard", action="store_true", help="stop after the summary")
    parser.add_argument("--dashboard-port", type=int, default=8050)
    parser.add_argument(
        "--retrain-schedules",
        action="store_true",
        help="keep the retraining schedules on during the replay (runs may then differ)",
    )
    parser.add_argument("--screenshot", type=Path, help="save a PNG of the dashboard, then stop")
    args = parser.parse_args(argv)
    config = load_config()
    host, port = config.server.host, config.server.port
    target = f"{host}:{port}"
    for p in (port, config.server.metrics_port, args.dashboard_port):
        if p and not _free(host, p):
            print(f"port {p} on {host} is in use (another server or demo?): stop it first")
            return 1

    began = time.perf_counter()
    source_url, source_repository = config.storage.database_url, config.storage.model_repository
    with step(1, "models"):
        if len(_deployed_rows(source_url)) < len(KINDS):
            print(f"   no deployed set in {source_url}: training on the built-in S&P 500")
            subprocess.run([sys.executable, "-m", "export.train"], check=True)
        else:
            print(f"   using the deployed set of {source_url} (`make train` replaces it)")
    with step(2, f"a fresh demo database in {DEMO_DIR}/ (the previous one is replaced)"):
        versions = fresh_demo_state(source_url, Path(source_repository), DEMO_DIR)
        print("   " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))

    env = {
        **os.environ,
        "MINHOS_STORAGE_DATABASE_URL": f"sqlite:///{DEMO_DIR / 'minhos.db'}",
        "MINHOS_STORAGE_MODEL_REPOSITORY": str(DEMO_DIR / "models"),
    }
    if not args.retrain_schedules:
        for kind in KINDS:
            env[f"MINHOS_RETRAIN_{kind.upper()}_EVERY_DAYS"] = "0"
    children: list[subprocess.Popen[bytes]] = []
    try:
        with step(3, f"the server on {target}"):
            children.append(subprocess.Popen([sys.executable, "-m", "server.main"], env=env))
            with MinhosClient(target) as client:
                client.wait_ready(timeout=30)
        pace = f"{args.speed:g} bars/s" if args.speed > 0 else "full speed"
        with step(4, f"replaying the test span from {DEFAULT_START} at {pace}"):
            replay_args = ["--target", target, "--speed", str(args.speed)]
            if args.limit:
                replay_args += ["--limit", str(args.limit)]
            subprocess.run([sys.executable, "-m", "clients.replay", *replay_args], check=True)
        with step(5, "reports"):
            with MinhosClient(target) as client:
                _wait_settled(client)
            print("\n-- health", flush=True)
            cli.main(["--target", target, "health"])
            print("\n-- calibration", flush=True)
            cli.main(["--target", target, "calibration"])
            if args.retrain_schedules:
                print("\n-- retraining jobs (queued on market-time schedules)", flush=True)
                cli.main(["--target", target, "jobs"])
        title = "summary (the same on every run: same models, same bars, a fresh database)"
        with step(6, title), MinhosClient(target) as client:
            print(summary(client), flush=True)
        url = f"http://127.0.0.1:{args.dashboard_port}/"
        dashboard = [sys.executable, "-m", "dashboard.app", "--target", target]
        dashboard += ["--port", str(args.dashboard_port)]
        if args.no_dashboard:
            print(f"\n== done in {time.perf_counter() - began:.0f} s", flush=True)
            return 0
        children.append(subprocess.Popen(dashboard))
        if args.screenshot:
            _wait_http(url)
            shot = time.perf_counter()
            screenshot(url, args.screenshot)
            print(f"\n== dashboard saved to {args.screenshot} ({time.perf_counter() - shot:.1f} s)")
            return 0
        print(
            f"\n== ready in {time.perf_counter() - began:.0f} s. Where to look:\n"
            f"   dashboard      {url}\n"
            f"   gRPC server    {target}  (e.g. .venv/bin/minhos --target {target} health)\n"
            f"   metrics        http://{host}:{config.server.metrics_port}/metrics\n"
            f"   database       {DEMO_DIR / 'minhos.db'} (replaced by the next `make demo`)\n"
            "   Ctrl-C stops everything.",
            flush=True,
        )
        children[-1].wait()
        return 0
    except KeyboardInterrupt:
        print("\n== stopping", flush=True)
        return 0
    finally:
        for child in reversed(children):
            terminate(child, 15)


if __name__ == "__main__":
    raise SystemExit(main())
