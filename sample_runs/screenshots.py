"""Take the README's screenshots from the real app on the bundled sample runs.

    python sample_runs/screenshots.py            # writes docs/img/*.png

Starts ``traindoctor demo``'s server on a free port, opens pages in Debian's
headless Chromium (``/usr/bin/chromium``) with Playwright, waits for the
charts, and saves full-page screenshots.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "sample_runs" / "store"
OUTPUT = ROOT / "docs" / "img"
PAGES = {
    "run.png": "/run?run=loss-spikes",
    "compare.png": "/compare?runs=sweep-lr-0.0003,sweep-lr-0.003,sweep-lr-0.03,sweep-lr-0.3",
    "runs.png": "/runs",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(port: int, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the server did not answer on port {port}")


def main() -> None:
    from playwright.sync_api import sync_playwright

    port = _free_port()
    command = [sys.executable, "-c",
               "import sys; from dashboard.serve import run_app; sys.exit(run_app(sys.argv[1], port=int(sys.argv[2])))",
               str(STORE), str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    try:
        _wait_healthy(port, server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            for name, path in PAGES.items():
                page.goto(f"http://127.0.0.1:{port}{path}", wait_until="networkidle", timeout=90_000)
                page.wait_for_selector(".js-plotly-plot" if name != "runs.png" else "[data-testid=stDataFrame]",
                                       state="attached", timeout=90_000)
                time.sleep(4)  # let the findings, filled in after the charts, land
                page.screenshot(path=str(OUTPUT / name), full_page=True)
                print(f"saved {OUTPUT / name}")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
