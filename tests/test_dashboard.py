"""The dashboard in a real browser (Debian's Chromium through Playwright) against a real server
after a replay: every panel shows the server's numbers, an alert is acknowledged, a model rolled
back after confirmation, the server stopped and restarted under the page; and the paged table."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from dash import html
from playwright.sync_api import Page, expect, sync_playwright
from werkzeug.serving import make_server

from clients.client import MinhosClient
from clients.replay import replay
from dashboard.app import create_app
from dashboard.formatting import percent, when
from dashboard.panels.models import versions_table
from dashboard.widgets import CELL_STYLE, table
from export.data import MarketData
from minhos.v1 import common_pb2, retrain_pb2
from server.app import MinhosServer
from server.monitoring.alerts import AlertCandidate
from server.storage.registry import ModelRepository
from tests.conftest import Trained
from tests.server_harness import live_index, server_config

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REFRESH_MS = 500


def _body_rows(rendered: html.Div) -> list[Any]:
    listing = rendered.children[0]
    return list(listing.children[1].children)


def test_table_renders_one_page_of_rows_with_the_cell_style() -> None:
    """Issue 9, bug 3: the table dropped ``page_size`` and ``style_cell`` and rendered every row."""
    rows = [[str(i), f"row {i}"] for i in range(25)]
    style = {"textAlign": "right", "fontSize": 11}
    rendered = table("t", ("i", "name"), rows, page_size=10, page=1, cell_style=style)
    shown = _body_rows(rendered)
    assert [r.children[0].children for r in shown] == [str(i) for i in range(10, 20)]
    assert all(td.style == style for r in shown for td in r.children)
    assert "rows 11–20 of 25" in rendered.children[1].children
    last = _body_rows(table("t", ("i", "name"), rows, page_size=10, page=99))
    assert [r.children[0].children for r in last] == [str(i) for i in range(20, 25)]
    assert len(_body_rows(table("t", ("i", "name"), rows))) == 25  # no page size: every row
    assert _body_rows(table("t", ("i",), [["x"]]))[0].children[0].style == CELL_STYLE


def test_versions_listing_is_paged() -> None:
    reply = retrain_pb2.GetModelDetailsResponse(
        models=[
            retrain_pb2.ModelDetails(
                version=common_pb2.ModelVersion(kind=common_pb2.MODEL_KIND_LSTM, version=f"v{i}")
            )
            for i in range(25)
        ]
    )
    assert len(_body_rows(versions_table(reply, page=0))) == 10


@contextmanager
def dashboard(client: MinhosClient, target: str) -> Iterator[str]:
    app = create_app(client, refresh_ms=REFRESH_MS, target=target)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(5)


def plotted(page: Page, graph: str) -> list[dict[str, Any]]:
    """The traces plotly drew in a dcc.Graph."""
    traces: list[dict[str, Any]] = page.evaluate(
        f"() => document.querySelector('#{graph} .js-plotly-plot').data"
    )
    return traces


def _publish_second_kelly(repository: ModelRepository) -> tuple[str, str]:
    """Deploys a copy of the deployed Kelly component as a new version: the first becomes the
    backup a rollback returns to. Returns (backup, new)."""
    old = repository.deployed()["kelly"]
    manifest, payload = repository.load_verified("kelly", old)
    new = repository.publish(
        "kelly",
        payload,
        file=manifest.file,
        feature_spec=manifest.feature_spec,
        metrics=manifest.metrics,
        info=manifest.info,
        deploy=True,
    )
    return old, new.version


@pytest.mark.slow
def test_dashboard_panels_actions_and_a_server_restart(
    trained: Trained, sp500: MarketData, tmp_path: Path
) -> None:
    config = server_config(trained.config())
    srv = MinhosServer(config).start()
    servers = [srv]
    target = f"127.0.0.1:{srv.port}"
    client = MinhosClient(target)
    # What the dashboard runs with: short deadlines, and reconnection within a refresh or two.
    page_client = MinhosClient(target, timeout=2.0, max_attempts=2, max_reconnect_backoff_s=0.5)
    try:
        client.wait_ready(5)
        backup, replacement = _publish_second_kelly(srv.repository)
        deadline = time.monotonic() + 10
        while replacement not in {v.version for v in client.serving_info().deployed}:  # hot swap
            assert time.monotonic() < deadline
            time.sleep(0.1)
        start = live_index(sp500)
        end = start + 150
        replay(
            client, "SPX", sp500.times[:end], sp500.ohlcv[:end], start_index=start, progress=False
        )
        srv.writer.flush()
        alert = srv.monitor.record(
            AlertCandidate(
                "high_error_rate", "critical", "server", "injected for the test", 0.2, 0.05
            )
        )
        assert alert is not None
        with dashboard(page_client, target) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            dialogs: list[str] = []

            def confirm(dialog: Any) -> None:
                dialogs.append(dialog.message)
                dialog.accept()

            page.on("dialog", confirm)
            page.goto(url)
            expect(page.locator("#connection")).to_contain_text("connected", timeout=20_000)
            expect(page.locator("#kelly-table")).to_contain_text(replacement)

            # Every panel shows the server's numbers.
            health = client.health()
            expect(page.locator("#health-score")).to_contain_text(
                f"{health.health_score:.0f} / 100"
            )
            expect(page.locator("#components-table")).to_contain_text("lstm")
            gauge = plotted(page, "health-graph")[0]
            assert gauge["value"] == pytest.approx(health.health_score)
            subscores = plotted(page, "subscores-graph")[0]
            assert subscores["x"][0] == pytest.approx(health.components[0].score)

            series = client.metric_series()
            fused = next(
                s
                for s in series.series
                if s.metric == "accuracy" and s.component == common_pb2.COMPONENT_FUSION
            )
            drawn = next(t for t in plotted(page, "trends-graph") if t.get("name") == "fused")
            assert drawn["y"] == pytest.approx([p.value for p in fused.points])
            assert len(fused.points) > 10

            reports = client.calibration()
            reliability = plotted(page, "reliability-graph")
            fused_bins = [b for b in reports[0].bins if b.count]
            assert reliability[0]["x"] == pytest.approx([b.mean_confidence for b in fused_bins])
            zones = plotted(page, "zones-graph")[0]
            assert zones["y"] == pytest.approx(
                [z.accuracy if z.count else 0.0 for z in reports[0].zones]
            )

            perf = client.performance()
            assert perf.resolved == 149
            expect(page.locator("#kelly-return")).to_contain_text(
                percent(perf.kelly_return, 2, signed=True)
            )
            expect(page.locator("#hit-rate")).to_contain_text(percent(perf.hit_rate))
            expect(page.locator("#hit-rate-high-agreement")).to_contain_text(
                f"{perf.by_agreement[0].hits} of {perf.by_agreement[0].resolved}"
            )
            equity = plotted(page, "equity-graph")
            assert equity[0]["y"][-1] == pytest.approx(perf.equity[-1].kelly_equity)
            assert equity[2]["y"] == pytest.approx([p.kelly_drawdown for p in perf.equity])

            kelly = client.kelly_status()
            expect(page.locator("#kelly-table")).to_contain_text(f"{kelly.payoff_ratio:.3f}")
            expect(page.locator("#kelly-table")).to_contain_text(kelly.calibrator)
            stakes = plotted(page, "stakes-graph")[0]
            assert sum(stakes["y"]) == kelly.predictions

            newest = client.list_predictions(limit=1)[0].prediction
            expect(page.locator("#predictions-table")).to_contain_text(when(newest.bar_time))
            expect(page.locator("#predictions-table tbody tr")).to_have_count(10)
            page.get_by_text("older ›").first.click()
            expect(page.locator("#predictions")).to_contain_text("rows 11–20 of 100")

            details = client.model_details()
            deployed = {
                d.version.kind: d.version.version
                for d in details.models
                if d.version.stage == common_pb2.MODEL_STAGE_DEPLOYED
            }
            expect(page.locator("#model-lstm")).to_contain_text(
                deployed[common_pb2.MODEL_KIND_LSTM]
            )
            expect(page.locator("#model-lstm")).to_contain_text("coin flip")
            expect(page.locator("#versions-table")).to_contain_text("backup")

            # Acknowledge an alert.
            expect(page.locator("#alerts-table")).to_contain_text("injected for the test")
            page.locator(f"[id*='{alert.id}']").first.click()
            expect(page.locator("#alerts")).not_to_contain_text(
                "injected for the test", timeout=10_000
            )
            stored = {a.id: a for a in srv.monitor.alerts(include_acknowledged=True)}
            assert stored[alert.id].acknowledged and stored[alert.id].acknowledged_by == "dashboard"

            # Retrain now, and roll back after the confirmation names both versions.
            page.get_by_text("Retrain kelly").click()
            expect(page.locator("#retrain-result")).to_contain_text(
                "kelly: queued job", timeout=10_000
            )
            expect(page.locator("#jobs-table")).to_contain_text("kelly", timeout=10_000)
            expect(page.locator("#model-kelly")).to_contain_text("training now")
            page.get_by_text("Roll back kelly").click()
            expect(page.locator("#rollback-result")).to_contain_text(
                f"{backup} deployed in place of {replacement}", timeout=10_000
            )
            assert dialogs and replacement in dialogs[-1] and backup in dialogs[-1]
            assert srv.repository.deployed()["kelly"] == backup
            expect(page.locator("#errors")).to_be_empty()

            # The server goes away: the page says so within a refresh or two, keeps the data...
            srv.stop(grace=0.5)
            expect(page.locator("#down-message")).to_contain_text(
                "not answering", timeout=4 * REFRESH_MS + 3000
            )
            expect(page.locator("#connection")).to_contain_text("server down")
            expect(page.locator("#health-score")).to_be_visible()
            # ... and recovers when it is back on the same port.
            srv = MinhosServer(server_config(trained.config(), port=int(target.split(":")[1])))
            servers.append(srv.start())
            expect(page.locator("#connection")).to_contain_text("connected", timeout=15_000)
            expect(page.locator("#down-banner")).to_be_empty()
            expect(page.locator("#kelly-table")).to_contain_text(backup)

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 50_000
            browser.close()
    finally:
        page_client.close()
        client.close()
        servers[-1].stop(grace=0.5)
