"""The real server in headless Chromium: every page renders its charts and no exception box, makes
no request outside its own origin, shows hostile names as text and cannot be framed; and the
server's HTTP headers and WebSocket handshakes, over raw sockets."""

from __future__ import annotations

import os
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from traindoctor.dashboard.serve import serving
from tests.dashboard.factories import BEACON, hostile, make_hostile_run, make_run, write_steps

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
    hostile_id = make_hostile_run(store)
    try:
        with serving(store) as url:
            yield url, live, hostile_id
    finally:
        live.close()


PAGES = [
    pytest.param("/", "[data-testid=stDataFrame]", "runs", id="root-redirects-to-runs"),
    pytest.param("/run?run=beta", ".js-plotly-plot", "run-beta", id="run-with-findings"),
    pytest.param("/run?run=live", ".js-plotly-plot", "run-live", id="run-live"),
    pytest.param("/classes?run=alpha", ".js-plotly-plot", "classes", id="classes"),
    pytest.param("/compare?runs=alpha,beta,gamma", ".js-plotly-plot", "compare", id="compare"),
]


def _port(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def _websocket_handshake(port: int, host_header: str, origin: str | None = "same") -> str:
    """The status line the server answers a WebSocket upgrade with, for a Host header and an
    Origin header (``"same"``: the origin of the Host; None: no Origin header)."""
    origin = f"http://{host_header}" if origin == "same" else origin
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n" + (f"Origin: {origin}\r\n" if origin else "") + "\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request.encode())
        return connection.recv(4096).decode(errors="replace").splitlines()[0]


@pytest.mark.parametrize(("host", "allowed"), [
    ("localhost", True), ("127.0.0.1", True), ("rebound.attacker.example", False),
], ids=["localhost", "loopback-ip", "foreign-name"])
def test_websocket_only_for_allowed_host_names(server, host, allowed):
    port = _port(server[0])
    status = _websocket_handshake(port, f"{host}:{port}")
    assert (" 101 " in status) == allowed, status


@pytest.mark.parametrize(("origin", "allowed"), [
    ("http://127.0.0.1:{port}", True),
    ("http://127.0.0.1:{other}", False),   # another local tool's page, on another port
    ("http://localhost:{port}", False),    # another name is another origin
    ("https://127.0.0.1:{port}", False),
    ("http://evil.example", False),
    ("null", False),
    (None, False),
], ids=["own-origin", "other-port", "other-name", "other-scheme", "foreign", "null", "missing"])
def test_websocket_only_from_the_servers_own_origin(server, origin, allowed):
    """Regression (#18, item 8): Streamlit accepted a WebSocket from any port of localhost."""
    port = _port(server[0])
    origin = origin.format(port=port, other=port + 1) if origin else None
    status = _websocket_handshake(port, f"127.0.0.1:{port}", origin)
    assert (" 101 " in status) == allowed, status
    if not allowed:
        assert " 403 " in status, status


@pytest.mark.parametrize("path", ["/", "/run?run=alpha", "/_stcore/health"], ids=["root", "page", "health"])
def test_http_responses_forbid_framing(server, path):
    """Regression (#18, item 8): any site could frame the dashboard (no frame-ancestors)."""
    with urllib.request.urlopen(server[0] + path, timeout=30) as response:
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy.split("; ")
        assert response.headers["X-Frame-Options"] == "DENY"


def _own_origin_only(base_url: str, urls) -> list[str]:
    """The URLs (requests, WebSockets, links) that do not go to the server's own origin."""
    own = urllib.parse.urlsplit(base_url)
    foreign = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("data", "blob") and (parts.scheme not in ("http", "ws") or parts.netloc != own.netloc):
            foreign.append(url)
    return foreign


class _PageLog:
    """Every request, WebSocket and content-security-policy violation of a page, from its first load."""

    def __init__(self, page) -> None:
        self.urls: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("websocket", lambda websocket: self.urls.append(websocket.url))
        page.add_init_script("window.__violations = [];"
                             "document.addEventListener('securitypolicyviolation',"
                             " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));")


def test_every_page_renders_in_chromium(server):
    _require_browser()
    from playwright.sync_api import sync_playwright

    base_url, live, _ = server
    artifacts = Path(os.environ.get("TRAINDOCTOR_ARTIFACTS") or REPO_ROOT / "artifacts" / "screenshots")
    artifacts.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {artifacts}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            log = _PageLog(page)
            for param in PAGES:
                path, selector, name = param.values
                page.goto(base_url + path, timeout=PAGE_TIMEOUT_MS)
                page.wait_for_selector(selector, timeout=PAGE_TIMEOUT_MS)
                _wait_idle(page)
                page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
                assert page.locator("[data-testid=stException]").count() == 0, f"exception box on {path}"
                # A local tool makes no outside requests (#18, item 8: the favicon came from a font CDN);
                # the content security policy blocks nothing the app needs.
                assert _own_origin_only(base_url, log.urls) == [], path
                assert page.evaluate("window.__violations") == [], path
                if selector == ".js-plotly-plot":
                    assert page.locator(".js-plotly-plot").count() >= 1, f"no chart on {path}"
                if path == "/":
                    assert page.url.rstrip("/").endswith("/runs"), f"/ went to {page.url}"
            _check_live_refresh(page, base_url, live, artifacts)
        finally:
            browser.close()


def _check_live_refresh(page, base_url: str, writer, artifacts: Path) -> None:
    """A running run's page shows new steps by itself, without a page reload."""
    # The factory's writer runs no heartbeat thread, and a run whose heartbeat is a minute old
    # reads as crashed (its page stops refreshing): on a loaded machine the pages before this
    # one can take that long. Beat now, and again before the new steps land.
    writer.heartbeat()
    page.goto(base_url + "/run?run=live", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector(".js-plotly-plot", timeout=PAGE_TIMEOUT_MS)
    _wait_idle(page)
    page.evaluate("window.__not_reloaded = true")
    writer.heartbeat()
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


HOSTILE_PAGES = ["/runs", "/run?run={run_id}", "/classes?run={run_id}", "/compare?runs={run_id},alpha,gamma"]


def test_hostile_names_make_no_request_and_no_element(server):
    """Regression (#18, item 7): a run named ``![x](http://host/beacon)`` made every viewer's browser
    fetch the URL. Every page of a run whose name, layers, classes, split, metric, config and events
    try Markdown and HTML: nothing is fetched outside the page's origin, no image, link or bold text
    comes of them, and the name reads as it was written."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    base_url, _, hostile_id = server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            log = _PageLog(page)
            dialogs = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            for path in HOSTILE_PAGES:
                path = path.format(run_id=hostile_id)
                page.goto(base_url + path, timeout=PAGE_TIMEOUT_MS)
                page.wait_for_selector("h1", timeout=PAGE_TIMEOUT_MS)
                _wait_idle(page)
                assert page.locator("[data-testid=stException]").count() == 0, path
                main = page.locator("[data-testid=stMain]")
                assert main.locator(f"img[src^='{BEACON}']").count() == 0, path
                bold = main.locator("strong").all_inner_texts()  # Compare shows each whole run label in bold
                assert [text for text in bold if text.startswith("bold ")] == [], path
                links = main.locator("a[href]").evaluate_all("links => links.map(a => a.href)")
                assert _own_origin_only(base_url, links) == [], path
                assert _own_origin_only(base_url, log.urls) == [], path
                assert page.evaluate("window.__violations") == [], path
                if path.startswith("/run?"):
                    title = page.locator("h1").first.inner_text().replace("\u2060", "")
                    assert title == hostile("name")
            assert dialogs == []
        finally:
            browser.close()


def test_another_site_cannot_frame_the_dashboard(server):
    """Regression (#18, item 8): with ``frame-ancestors 'none'`` the browser refuses to show the
    dashboard inside another page's frame."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    base_url = server[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            refused = []  # Chromium logs "Refused to frame … frame-ancestors 'none'" on the framing page
            page.on("console", lambda message: refused.extend([message.text] * ("frame-ancestors" in message.text)))
            page.set_content(f'<iframe id="framed" src="{base_url}/runs"></iframe>')
            page.wait_for_function("() => window.frames.length === 1")
            deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
            while not refused and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            assert refused, "the browser did not refuse the frame"
            assert page.frames[1].locator("[data-testid=stApp]").count() == 0
        finally:
            browser.close()
