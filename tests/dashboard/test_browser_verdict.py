"""The Run page in headless Chromium (#17): the verdict line names the cause, and with every finding
opened every chart has drawn its lines, with no WebGL context in sight."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from traindoctor.dashboard.serve import serving
from tests.dashboard.test_browser import CHROMIUM, PAGE_TIMEOUT_MS, _require_browser, _wait_idle

REPO = Path(__file__).resolve().parents[2]
# (store, run name) copied into the served store: the lr-too-high sample, a sample with several
# findings (loss spikes), and a digits classifier trained at 10x its good lr (tests/data/lr10x).
RUNS = [(REPO / "sample_runs" / "store", "lr-too-high"), (REPO / "sample_runs" / "store", "loss-spikes"),
        (REPO / "tests" / "data" / "lr10x" / "store", "digits-lr10x")]

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Every plotly chart's lines: the SVG path of each scatter line (its "d" attribute) and heatmap images.
CHART_STATE_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(plot => ({
    lines: [...plot.querySelectorAll('.scatterlayer path.js-line')].filter(p => (p.getAttribute('d') || '').length > 10).length,
    images: plot.querySelectorAll('.heatmaplayer image').length,
}))"""


def _run_folder(store: Path, name: str) -> Path:
    """The newest run folder of ``store`` named ``name`` (read off run.json: no catalog, no cache written)."""
    import json

    named = [folder for folder in store.iterdir() if (folder / "run.json").exists()
             and json.loads((folder / "run.json").read_text()).get("name") == name]
    return max(named)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("verdict") / "runs"
    for source, name in RUNS:
        folder = _run_folder(source, name)
        shutil.copytree(folder, store / folder.name, ignore=shutil.ignore_patterns("summary.json", ".findings.json"))
    with serving(store) as url:
        yield url


class _Runs:
    """Counts the script runs (whole or fragment) the server reports finished on a page's WebSocket:
    waiting for one is exact where watching the status widget races a loaded machine."""

    def __init__(self, page) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.finished = 0
        self.messages: list[str] = []
        done = (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY)

        def on_frame(payload) -> None:
            message = ForwardMsg()
            try:
                message.ParseFromString(payload if isinstance(payload, bytes) else payload.encode())
            except Exception:
                return
            if message.WhichOneof("type") == "script_finished" and message.script_finished in done:
                self.finished += 1

        page.on("websocket", lambda socket: socket.on("framereceived", on_frame))
        page.on("console", lambda message: self.messages.append(message.text))
        self.page = page

    def wait(self, after: int, timeout_s: float = PAGE_TIMEOUT_MS / 1000, required: bool = True) -> bool:
        """Until more than ``after`` runs have finished, then until the page settles; False when
        ``timeout_s`` passed first and the run is not ``required`` (else an assertion error)."""
        deadline = time.monotonic() + timeout_s
        while self.finished <= after:
            if time.monotonic() >= deadline:
                assert not required, "the script did not finish"
                return False
            self.page.wait_for_timeout(50)
        _wait_idle(self.page, settle_s=0.3)
        return True


def _open(runs: _Runs, url: str) -> None:
    """Go to ``url`` and wait until its script has finished."""
    before = runs.finished
    runs.page.goto(url, timeout=PAGE_TIMEOUT_MS)
    runs.wait(before)


def _findings(page):
    """The findings' expanders (their headings carry a severity badge), in page order."""
    return page.locator("[data-testid=stMain] [data-testid=stExpander] details").filter(
        has=page.locator("summary", has_text=re.compile(r"● (critical|warning|info)")))


def _check_verdict(page) -> None:
    """The verdict line names lr_too_high, and the first finding, the only one open, is its finding."""
    alert = page.locator("[data-testid=stMain] [data-testid=stAlert]").first
    alert.wait_for(timeout=PAGE_TIMEOUT_MS)
    text = alert.inner_text()
    assert text.startswith("Verdict:") and "(lr_too_high, steps" in text and "Try first:" in text, text
    expanders = _findings(page)
    assert "lr_too_high" in expanders.first.locator("summary").inner_text()
    assert expanders.first.get_attribute("open") is not None
    assert all(expanders.nth(i).get_attribute("open") is None for i in range(1, expanders.count()))


def _check_every_chart_after_opening_every_finding(runs: _Runs, expected: int = 1) -> int:
    """Open every finding, wait until at least ``expected`` charts are on the page (each mounts when
    its element arrives, not all at once), and check that every chart has drawn its lines; returns
    the chart count."""
    page, messages = runs.page, runs.messages
    # A Run page always draws its curves; Streamlit mounts a chart's element only once the browser has
    # loaded the Plotly component, which can come after the script's run is reported finished (CI once
    # counted 0 charts here): wait for the first chart before counting.
    page.locator("[data-testid=stPlotlyChart]").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    before = page.locator("[data-testid=stPlotlyChart]").count()
    expanders = _findings(page)
    closed = [index for index in range(expanders.count()) if expanders.nth(index).get_attribute("open") is None]
    for index in closed:
        finished = runs.finished
        expanders.nth(index).locator("summary").click()
        # The finding's fragment reruns and draws its charts. A click that lands while another
        # rerun is finishing can be served by that one (no run of its own finishes): then the
        # expander must be open, and the chart check below says whether its charts drew.
        if not runs.wait(finished, timeout_s=15, required=False):
            assert expanders.nth(index).get_attribute("open") is not None, f"finding {index} did not open"
            _wait_idle(page, settle_s=0.3)
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    least = max(expected, before + len(closed))  # an opened finding draws its evidence charts
    boxes, charts = page.locator("[data-testid=stPlotlyChart]").count(), page.evaluate(CHART_STATE_JS)
    while time.monotonic() < deadline and not (boxes >= least and len(charts) == boxes
                                                and all(c["lines"] or c["images"] for c in charts)):
        page.wait_for_timeout(200)
        # Counted again each time: a chart whose element mounts late joins the count.
        boxes, charts = page.locator("[data-testid=stPlotlyChart]").count(), page.evaluate(CHART_STATE_JS)
    assert len(charts) == boxes and all(c["lines"] or c["images"] for c in charts), charts
    assert boxes >= least, (boxes, least)
    assert page.locator("canvas.gl-canvas").count() == 0  # no WebGL trace anywhere
    assert [m for m in messages if "WebGL" in m] == []
    assert page.locator("[data-testid=stException]").count() == 0
    return boxes


def test_run_pages_verdict_and_charts_in_chromium(server):
    """Regression (#17): the lr-too-high sample's and an lr-10x digits run's verdict is lr_too_high (the
    digits run listed "no better than the majority class" first); opening the findings one by one left
    every chart blank ("Too many active WebGL contexts"): every line is SVG now, each chart is sent
    once, and opening a finding draws its charts. One browser for the three pages (CI time)."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            runs = _Runs(page)
            _open(runs, f"{server}/run?run=lr-too-high")
            _check_verdict(page)
            # Its evidence chart and its folded consequence's, the four curves and the heatmap.
            assert _check_every_chart_after_opening_every_finding(runs, expected=7) == 7
            _open(runs, f"{server}/run?run=digits-lr10x")
            _check_verdict(page)
            _open(runs, f"{server}/run?run=loss-spikes")  # several findings, each opened
            assert _check_every_chart_after_opening_every_finding(runs, expected=6) > 5
        finally:
            browser.close()
