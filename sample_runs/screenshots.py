"""Take the README's screenshots from the real app on the bundled sample runs.

    python sample_runs/screenshots.py            # writes docs/img/*.png

Starts ``traindoctor demo``'s server on a free port, opens pages in Debian's
headless Chromium (``/usr/bin/chromium``) with Playwright, waits for the
charts, and saves full-page screenshots.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))
STORE = ROOT / "sample_runs" / "store"
OUTPUT = ROOT / "docs" / "img"
PAGES = {
    "run.png": "/run?run=loss-spikes",
    "compare.png": "/compare?runs=sweep-lr-0.0003,sweep-lr-0.003,sweep-lr-0.03,sweep-lr-0.3",
    "runs.png": "/runs",
}


def main() -> None:
    from playwright.sync_api import sync_playwright

    from traindoctor.dashboard.serve import serving

    OUTPUT.mkdir(parents=True, exist_ok=True)
    with serving(STORE) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        for name, path in PAGES.items():
            page.goto(f"{url}{path}", wait_until="networkidle", timeout=90_000)
            page.wait_for_selector(".js-plotly-plot" if name != "runs.png" else "[data-testid=stDataFrame]",
                                   state="attached", timeout=90_000)
            time.sleep(4)  # let the findings, filled in after the charts, land
            page.screenshot(path=str(OUTPUT / name), full_page=True)
            print(f"saved {OUTPUT / name}")
        browser.close()


if __name__ == "__main__":
    main()
