"""How fast the dashboard's pages are on the demo store (issue #17's targets: the Run page fully
drawn under 3 s, the Runs page under 2 s), as ratios to a baseline measured in the same session.

Two measurements, on a copy of ``sample_runs/store`` (so its caches are warm and the repository's
copy is left alone):

1. **Server-side build time** of each page: Streamlit's AppTest runs the page's script in this
   process, as the server would (data from the store, findings from the cache, every figure built
   and serialised). Each page is run once to warm the caches, then timed as the best of
   ``--repeats``. Baseline: the page the app shows for a run name the store does not hold (the
   app's shell and one error line).
2. **In headless Chromium** (``/usr/bin/chromium``), through the real server (``traindoctor ui``'s
   ``serving``): for each page, the bytes the server sent over its WebSocket for that page load,
   and the seconds from navigation until the script has finished and every chart on the page has
   drawn its lines (an SVG line path or a heatmap image in each plotly chart). Baseline: the same
   unknown-run page, in the same browser. Each page is loaded ``--loads`` times in turn: the first
   load (cold: the server builds the page's figures) is printed, and the median of the others (warm:
   the figures and data come from the server's caches, as on a second visit or a rerun).

Usage::

    python benchmarks/pages.py [--runs lr-too-high divergence ...] [--repeats 3] [--loads 4] [--no-browser]

Prints one line per page: seconds and bytes, and their ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_STORE = REPO / "sample_runs" / "store"
CHROMIUM = Path("/usr/bin/chromium")
# The targets, in seconds, for the warm load in Chromium.
TARGETS_S = {"run": 3.0, "runs": 2.0}
BASELINE_PATH = "/run?run=no-such-run"
# Every chart on the page has drawn: an SVG line path (scatter), a heatmap image or a parcoords,
# in as many plotly charts as Streamlit made room for. Checked once the script has finished (the
# server's script_finished message).
DRAWN_JS = """() => {
  const boxes = document.querySelectorAll('[data-testid=stPlotlyChart]').length;
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  if (plots.length < boxes) return false;
  return plots.every(p => p.querySelectorAll('.scatterlayer path.js-line, .heatmaplayer image, .parcoords').length > 0);
}"""


def demo_copy() -> Path:
    """A copy of the demo store in a temporary folder, diagnosed once (its findings cache filled)."""
    from traindoctor.diagnosis.cache import diagnose_cached
    from traindoctor.store.reader import Store

    root = Path(tempfile.mkdtemp(prefix="traindoctor-pages-")) / "store"
    shutil.copytree(DEMO_STORE, root)
    store = Store(root)
    for summary in store.catalog.summaries():
        diagnose_cached(store.catalog, summary, store=store)
    return root


def page_list(run_names: list[str]) -> list[tuple[str, str, dict[str, str]]]:
    """(label, script, query) of each page measured: Runs, the Run page of each run named, Classes
    and Compare of the first."""
    pages = [("runs", "views/runs.py", {})]
    pages += [(f"run {name}", "views/run.py", {"run": name}) for name in run_names]
    pages += [(f"classes {run_names[0]}", "views/classes.py", {"run": run_names[0]}),
              (f"compare {run_names[0]},healthy-cnn", "views/compare.py", {"runs": f"{run_names[0]},healthy-cnn"})]
    return pages


def server_side(store: Path, pages, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds of each page's script in AppTest (warm caches), baseline first."""
    from streamlit.testing.v1 import AppTest

    from traindoctor.dashboard.serve import APP_PATH

    os.environ["TRAINDOCTOR_STORE"] = str(store)

    def run(script: str, query: dict[str, str]) -> float:
        at = AppTest.from_file(str(APP_PATH), default_timeout=300)
        at.run()
        at.switch_page(script)
        for key, value in query.items():
            at.query_params[key] = value
        started = time.perf_counter()
        at.run()
        elapsed = time.perf_counter() - started
        if at.exception:
            raise RuntimeError(f"{script} {query}: {at.exception[0].message}")
        return elapsed

    timings = {}
    for label, script, query in [("baseline", "views/run.py", {"run": "no-such-run"}), *pages]:
        run(script, query)  # warm: st.cache_data, the findings cache, imports
        timings[label] = min(run(script, query) for _ in range(repeats))
    return timings


def in_browser(store: Path, pages, loads: int) -> dict[str, list[tuple[float, int, float]]]:
    """(seconds until drawn, WebSocket bytes received, seconds until the script finished) of each
    load of each page, in load order, baseline first."""
    import urllib.parse

    from playwright.sync_api import sync_playwright
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    from traindoctor.dashboard.serve import serving

    results = {}
    with serving(store) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            received, finished = [0], [False]

            def on_frame(payload) -> None:
                data = payload if isinstance(payload, bytes) else payload.encode()
                received[0] += len(data)
                message = ForwardMsg()
                try:
                    message.ParseFromString(data)
                except Exception:
                    return
                if (message.WhichOneof("type") == "script_finished"
                        and message.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY):
                    finished[0] = True

            def on_socket(socket) -> None:
                socket.on("framereceived", on_frame)

            page.on("websocket", on_socket)
            paths = [("baseline", BASELINE_PATH)]
            for label, script, query in pages:
                path = "/" + script.split("/")[-1].removesuffix(".py")
                paths.append((label, path + ("?" + urllib.parse.urlencode(query) if query else "")))
            for _ in range(loads):  # in turn, so each page's loads are spread over the run
                for label, path in paths:
                    received[0], finished[0] = 0, False
                    started = time.monotonic()
                    page.goto(url + path, timeout=120_000)
                    deadline = started + 120
                    while not finished[0]:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{path}: the script did not finish")
                        page.wait_for_timeout(20)
                    script_s = time.monotonic() - started
                    page.wait_for_function(DRAWN_JS, timeout=120_000, polling=50)
                    results.setdefault(label, []).append((time.monotonic() - started, received[0], script_s))
        finally:
            browser.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=["lr-too-high", "divergence", "loss-spikes"],
                        help="demo runs whose Run page is measured (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="server-side runs per page; the best counts")
    parser.add_argument("--loads", type=int, default=4, help="loads of each page in Chromium (the first is cold)")
    parser.add_argument("--no-browser", action="store_true", help="server-side build times only")
    args = parser.parse_args(argv)
    store = demo_copy()
    pages = page_list(args.runs)
    try:
        print(f"demo store copy: {store}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        built = server_side(store, pages, args.repeats)
        base = built["baseline"]
        print(f"\nserver-side build (AppTest, best of {args.repeats}); baseline = unknown-run page {base:.3f} s")
        for label, seconds in built.items():
            print(f"  {label:<40} {seconds:7.3f} s   {seconds / base:6.1f}x baseline")
        if args.no_browser:
            return 0
        if not CHROMIUM.exists():
            print(f"\n{CHROMIUM} is missing: no browser timings")
            return 0
        loads = in_browser(store, pages, max(2, args.loads))
        drawn = {label: (statistics.median(load[0] for load in rows[1:]), rows[1][1],
                         statistics.median(load[2] for load in rows[1:]), rows[0][0]) for label, rows in loads.items()}
        base_s, base_bytes, _, _ = drawn["baseline"]
        print(f"\nheadless Chromium ({args.loads} loads a page): until every chart is drawn (median of the warm loads;"
              f"\nthe first, cold load in brackets), WebSocket bytes received, when the script finished;"
              f"\nbaseline = unknown-run page {base_s:.2f} s, {base_bytes:,} B; load average now {os.getloadavg()[0]:.1f}")
        for label, (seconds, size, script_s, cold_s) in drawn.items():
            kind = label.split()[0]
            target = TARGETS_S.get(kind)
            verdict = "" if target is None else f"   target < {target:g} s: {'met' if seconds < target else 'NOT met'}"
            print(f"  {label:<40} {seconds:6.2f} s {seconds / base_s:6.1f}x (cold {cold_s:5.2f} s)   {size:>10,} B "
                  f"{size / max(base_bytes, 1):7.1f}x   script done at {script_s:.2f} s{verdict}")
        runs_pages = [seconds for label, (seconds, _, _, _) in drawn.items() if label.startswith("run ")]
        print(f"\nRun pages: median {statistics.median(runs_pages):.2f} s, worst {max(runs_pages):.2f} s")
    finally:
        shutil.rmtree(store.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
