"""The Runs page of a 2,000-run store in headless Chromium: the table shows within its time budget,
one page of it, while the runs are diagnosed in the background (issue 13)."""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from traindoctor.dashboard.serve import serving
from traindoctor.store.catalog import Catalog
from traindoctor.store.format import RUN_JSON, SUMMARY_JSON, TABLES
from traindoctor.store.segments import RunWriter
from tests.dashboard.test_browser import CHROMIUM, PAGE_TIMEOUT_MS, _require_browser

# One worker builds the 2,000-run store and its server for both tests (each worker built one: ~12 s twice).
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("big_store")]

RUNS = 2000
# The target is 3 s for the first table on a 2-core machine. Measured
# from the page request to the table on screen, on a server that has served a
# page once (its first script run imports the app's modules: about 2 s more on
# a loaded 2-core box), with the background diagnosis running; a loaded
# shared box gets some slack.
TABLE_BUDGET_S = 5.0


def many_runs(root, count: int) -> None:
    """``count`` runs copied from one written by RunWriter (its files rewritten
    with each copy's run id, so every query accepts them): seconds, not minutes."""
    writer = RunWriter(root, run_id="template", name="template", config={"lr": 0.1}, background=False)
    steps = np.arange(1, 301)
    writer.add_scalars(step=steps, name="loss", value=2.0 * np.exp(-steps / 100) + 0.1)
    writer.add_scalars(step=steps[::30], name="loss", split="val", value=2.0 * np.exp(-steps[::30] / 100) + 0.2)
    writer.close()
    template = root / "template"
    meta = json.loads((template / RUN_JSON).read_text())
    summary = json.loads((template / SUMMARY_JSON).read_text())
    tables = {table: [(path.name, pq.read_table(path)) for path in sorted((template / table).glob("*.parquet"))]
              for table in TABLES}
    catalog = Catalog(root)
    rng = np.random.default_rng(0)
    for index in range(count):
        run_id = f"20260101-000000-{index:06x}"
        for table, files in tables.items():
            (root / run_id / table).mkdir(parents=True)
            for name, rows in files:
                column = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows.num_rows, dtype=np.int32)),
                                                        pa.array([run_id]))
                pq.write_table(rows.set_column(0, "run_id", column), root / run_id / table / name)
        (root / run_id / RUN_JSON).write_text(json.dumps({
            **meta, "run_id": run_id, "name": f"sweep-{index:04d}", "created_at": meta["created_at"] + index,
            "config": {"lr": float(10 ** rng.uniform(-5, -1)), "seed": index}}))
        catalog.refresh(run_id, previous={**summary, "run_id": run_id})
    for path in sorted(template.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    template.rmdir()


@pytest.fixture(scope="module")
def big_server(tmp_path_factory):
    store = tmp_path_factory.mktemp("big") / "runs"
    store.mkdir()
    many_runs(store, RUNS)
    # As a store in use is: summaries settled (their stamps older than the file clock's tick) and listed once.
    time.sleep(2.5)
    Catalog(store).listing()
    with serving(store) as url:
        yield url


@contextlib.contextmanager
def _page():
    """A Chromium page (1400 x 1600), closed with its browser."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1600})
        finally:
            browser.close()


def test_the_runs_page_of_a_2000_run_store_shows_its_table_within_budget(big_server):
    with _page() as page:
        page.goto(big_server + "/runs", timeout=PAGE_TIMEOUT_MS)  # the server's first script run, untimed
        page.wait_for_selector("[data-testid=stDataFrame]", timeout=PAGE_TIMEOUT_MS)
        started = time.perf_counter()
        page.goto(big_server + "/runs", timeout=PAGE_TIMEOUT_MS)
        page.wait_for_selector("[data-testid=stDataFrame]", timeout=PAGE_TIMEOUT_MS)
        elapsed = time.perf_counter() - started
        print(f"\nRuns page of {RUNS:,} runs: table on screen {elapsed:.2f} s after the request")
        assert page.locator("[data-testid=stException]").count() == 0
        page.get_by_text(f"of {RUNS:,} matching runs", exact=False).wait_for(timeout=PAGE_TIMEOUT_MS)
        assert elapsed < TABLE_BUDGET_S, f"the table took {elapsed:.1f} s (budget {TABLE_BUDGET_S} s)"
        # Findings arrive in the background while the page stays usable.
        page.get_by_text("Diagnosing in the background", exact=False).wait_for(timeout=PAGE_TIMEOUT_MS)


# The run picker's rerun after a pick, request to the new run's title on screen. The old picker
# offered all 2,000 runs and labelled them in quadratic time (about 5 s of CPU a rerun here).
PICKER_BUDGET_S = 5.0


def test_the_run_page_picker_of_a_2000_run_store_searches_on_the_server(big_server):
    """Type in the picker's search, pick the run it finds: the page shows it and links to it (issue 13)."""
    with _page() as page:
        from playwright.sync_api import expect

        page.goto(big_server + "/run?run=sweep-0005", timeout=PAGE_TIMEOUT_MS)
        expect(page.get_by_role("heading", name="sweep-0005")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        search = page.get_by_role("textbox", name="Find a run")
        search.fill("sweep-1999")
        search.press("Enter")
        page.get_by_text(f"1 of {RUNS:,} runs match.").wait_for(timeout=PAGE_TIMEOUT_MS)
        page.get_by_role("combobox", name="Run", exact=True).click()
        options = page.get_by_role("option")
        # The run shown is kept, and the one match of the search: never the 2,000 runs.
        expect(options).to_have_count(2, timeout=PAGE_TIMEOUT_MS)
        assert [text.split(" · ")[0] for text in options.all_inner_texts()] == ["sweep-0005", "sweep-1999"]
        started = time.perf_counter()
        options.filter(has_text="sweep-1999").click()
        expect(page.get_by_role("heading", name="sweep-1999")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        elapsed = time.perf_counter() - started
        print(f"\nRun page picker of {RUNS:,} runs: the picked run's title {elapsed:.2f} s after the pick")
        expect(page).to_have_url(big_server + "/run?run=sweep-1999", timeout=PAGE_TIMEOUT_MS)
        assert page.locator("[data-testid=stException]").count() == 0
        assert elapsed < PICKER_BUDGET_S, f"the pick took {elapsed:.1f} s (budget {PICKER_BUDGET_S} s)"
