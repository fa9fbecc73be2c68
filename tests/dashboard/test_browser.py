"""The real server in headless Chromium: every page renders its charts and no exception box."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from traindoctor.dashboard.serve import serving
from tests.dashboard.factories import make_run, write_steps

CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parents[2]
PAGE_TIMEOUT_MS = 60_000

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require_browser():
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            from playwright.sync_api import sync_playwright  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install playwright)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("browser") / "runs"
    make_run(store, "alpha", config={"lr": 0.1, "batch_size": 32, "optimizer": "sgd"}, seed=1)
    make_run(store, "beta", config={"lr": 1.0, "batch_size": 32, "optimizer": "sgd"}, nan_from=150,
             status="crashed", events=(("nan_loss", "loss is nan", 150),), seed=2)
    make_run(store, "gamma", config={"lr": 0.01, "batch_size": 64, "optimizer": "adam"}, seed=3)
    live = make_run(store, "live", status="running", seed=4)  # stays open: the test writes more
    try:
        with serving(store) as url:
            yield url, live
    finally:
        live.close()


PAGES = [
    pytest.param("/", "[data-testid=stDataFrame]", "runs", id="root-redirects-to-runs"),
    pytest.param("/run?run=beta", ".js-plotly-plot", "run-beta", id="run-with-findings"),
    pytest.param("/run?run=live", ".js-plotly-plot", "run-live", id="run-live"),
    pytest.param("/classes?run=alpha", ".js-plotly-plot", "classes", id="classes"),
    pytest.param("/compare?runs=alpha,beta,gamma", ".js-plotly-plot", "compare", id="compare"),
]


def _websocket_handshake(port: int, host_header: str) -> str:
    """The status line the server answers a WebSocket upgrade with, for a given Host header."""
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               f"Sec-WebSocket-Version: 13\r\nOrigin: http://{host_header}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request.encode())
        return connection.recv(4096).decode(errors="replace").splitlines()[0]


@pytest.mark.parametrize(("host", "allowed"), [
    ("localhost", True), ("127.0.0.1", True), ("rebound.attacker.example", False),
], ids=["localhost", "loopback-ip", "foreign-name"])
def test_websocket_only_for_allowed_host_names(server, host, allowed):
    base_url, _ = server
    port = int(base_url.rsplit(":", 1)[1])
    status = _websocket_handshake(port, f"{host}:{port}")
    assert (" 101 " in status) == allowed, status


def test_every_page_renders_in_chromium(server):
    _require_browser()
    from playwright.sync_api import sync_playwright

    base_url, live = server
    artifacts = Path(os.environ.get("TRAINDOCTOR_ARTIFACTS") or REPO_ROOT / "artifacts" / "screenshots")
    artifacts.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {artifacts}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            for param in PAGES:
                path, selector, name = param.values
                page.goto(base_url + path, timeout=PAGE_TIMEOUT_MS)
                page.wait_for_selector(selector, timeout=PAGE_TIMEOUT_MS)
                _wait_idle(page)
                page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
                assert page.locator("[data-testid=stException]").count() == 0, f"exception box on {path}"
                if selector == ".js-plotly-plot":
                    assert page.locator(".js-plotly-plot").count() >= 1, f"no chart on {path}"
                if path == "/":
                    assert page.url.rstrip("/").endswith("/runs"), f"/ went to {page.url}"
            _check_live_refresh(page, base_url, live, artifacts)
        finally:
            browser.close()


def _check_live_refresh(page, base_url: str, writer, artifacts: Path) -> None:
    """A running run's page shows new steps by itself, without a page reload."""
    page.goto(base_url + "/run?run=live", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector(".js-plotly-plot", timeout=PAGE_TIMEOUT_MS)
    _wait_idle(page)
    page.evaluate("window.__not_reloaded = true")
    write_steps(writer, 201, 261, seed=4)
    writer.flush()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stMetricValue]')].some(e => e.innerText.trim() === '260')",
        timeout=PAGE_TIMEOUT_MS)
    assert page.evaluate("window.__not_reloaded === true"), "the page reloaded instead of refreshing in place"
    page.screenshot(path=str(artifacts / "run-live-refreshed.png"), full_page=True)


def _wait_idle(page, settle_s: float = 1.0) -> None:
    """Wait until the script has finished (the status widget's 'Running' is gone)."""
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        if page.locator("[data-testid=stStatusWidget]").count() == 0:
            time.sleep(settle_s)
            if page.locator("[data-testid=stStatusWidget]").count() == 0:
                return
        time.sleep(0.2)
