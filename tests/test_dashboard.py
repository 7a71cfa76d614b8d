"""The dashboard in a real browser (Debian's Chromium through Playwright) against a real server:
health, alerts with acknowledgement, calibration and prediction charts, versions, retrain button."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import expect, sync_playwright
from werkzeug.serving import make_server

from clients.client import MinhosClient
from clients.replay import replay
from dashboard.app import create_app
from export.data import MarketData
from server.monitoring.alerts import AlertCandidate
from tests.conftest import Trained
from tests.server_harness import live_index, running

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def dashboard(client: MinhosClient) -> Iterator[str]:
    app = create_app(client, refresh_ms=500)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.mark.slow
def test_dashboard_shows_health_and_acts(trained: Trained, sp500: MarketData) -> None:
    with running(trained.config()) as (srv, client):
        start = live_index(sp500)
        replay(
            client,
            "SPX",
            sp500.times[: start + 150],
            sp500.ohlcv[: start + 150],
            start_index=start,
            progress=False,
        )
        srv.writer.flush()
        alert = srv.monitor.record(
            AlertCandidate(
                "high_error_rate", "critical", "server", "injected for the test", 0.2, 0.05
            )
        )
        assert alert is not None
        with dashboard(client) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page()
            page.goto(url)
            expect(page.locator("#health-score")).to_contain_text("/ 100", timeout=20_000)
            expect(page.locator("#components-table")).to_contain_text("lstm")
            expect(page.locator("#calibration-graph .main-svg").first).to_be_visible()
            expect(page.locator("#predictions-graph .main-svg").first).to_be_visible()
            expect(page.locator("#versions-table")).to_contain_text("deployed")
            expect(page.locator("#alerts-table")).to_contain_text("injected for the test")
            page.locator(f"[id*='{alert.id}']").first.click()
            expect(page.locator("#alerts")).not_to_contain_text(
                "injected for the test", timeout=10_000
            )
            stored = {a.id: a for a in srv.monitor.alerts(include_acknowledged=True)}
            assert stored[alert.id].acknowledged and stored[alert.id].acknowledged_by == "dashboard"
            page.get_by_text("Retrain kelly").click()
            expect(page.locator("#retrain-result")).to_contain_text(
                "kelly: queued job", timeout=10_000
            )
            expect(page.locator("#jobs-table")).to_contain_text("kelly", timeout=10_000)
            expect(page.locator("#errors")).to_be_empty()
            browser.close()
