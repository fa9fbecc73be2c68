"""`traindoctor ui --store s3://…` serves the Runs and Run pages of a bucket (#14), in headless
Chromium, against moto's S3 server started by the tests; a run written while the page is
open shows up on the Runs page."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.dashboard.factories import make_run
from tests.dashboard.test_browser import CHROMIUM, PAGE_TIMEOUT_MS, _require_browser, _wait_idle
from tests.store.s3 import s3_env, s3_server, s3_url  # noqa: F401 (fixtures)
from traindoctor.dashboard.serve import stop_process, wait_until_healthy

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _caption(page) -> str:
    return " ".join(page.locator("[data-testid=stCaptionContainer]").all_inner_texts())


def test_ui_serves_the_runs_and_run_pages_of_a_bucket(s3_url, tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright

    make_run(s3_url, "alpha", config={"lr": 0.1, "batch_size": 32}, seed=1)
    make_run(s3_url, "beta", config={"lr": 1.0, "batch_size": 32}, nan_from=150, status="crashed", seed=2)
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "traindoctor", "ui", "--store", s3_url, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        assert wait_until_healthy("127.0.0.1", port, 60, process), process.stdout.read()
        base_url = f"http://127.0.0.1:{port}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.goto(base_url + "/runs", timeout=PAGE_TIMEOUT_MS)
                page.wait_for_selector("[data-testid=stDataFrame]", timeout=PAGE_TIMEOUT_MS)
                _wait_idle(page)
                assert page.locator("[data-testid=stException]").count() == 0
                assert "(2 in the store)" in _caption(page), _caption(page)

                page.goto(base_url + "/run?run=alpha", timeout=PAGE_TIMEOUT_MS)
                page.wait_for_selector(".js-plotly-plot", state="attached", timeout=PAGE_TIMEOUT_MS)
                _wait_idle(page)
                page.screenshot(path=str(tmp_path / "run-alpha-s3.png"), full_page=True)
                assert page.locator("[data-testid=stException]").count() == 0
                values = page.locator("[data-testid=stMetricValue]").all_inner_texts()
                assert "200" in [value.strip() for value in values], values

                # A run another machine writes meanwhile reaches the Runs page.
                make_run(s3_url, "gamma", config={"lr": 0.01, "batch_size": 64}, seed=3)
                page.goto(base_url + "/runs", timeout=PAGE_TIMEOUT_MS)
                page.wait_for_selector("[data-testid=stDataFrame]", timeout=PAGE_TIMEOUT_MS)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]"
                    ".some(e => e.innerText.includes('(3 in the store)'))", timeout=PAGE_TIMEOUT_MS)
            finally:
                browser.close()
    finally:
        process.send_signal(signal.SIGTERM)
        stop_process(process, timeout_s=15)
