"""Store scale: listing, the Runs page's data and a filter on stores of 1,000 and 10,000 runs.

Builds stores of small runs, then measures, each in a fresh process (CPU
seconds and peak RSS of that process alone, from ``os.wait4``; the median
of ``--repeats`` runs after one warm-up listing):

- ``traindoctor runs`` (the whole table, printed);
- the Runs page's data load (``traindoctor.dashboard.data.runs_page``: one
  50-row page of the whole store, filters and sort applied server-side), in
  a process that imports the dashboard's data module as the server does;
- a filter: ``traindoctor runs --filter 'lr<1e-3' --filter has:critical --sort val.loss --limit 20``;
- inside the page's process, CPU seconds of ``runs_page``'s first call
  (imports included) and of a next call (the server's steady state);
- the run pickers' data load (the Run, Compare and Classes pages:
  ``traindoctor.dashboard.data.run_choices``, the 50 newest runs plus the
  one a link names), in a fresh process as the page's, and inside it the
  first call (imports included) and a next call (a search of words and a
  filter, worst first), as a page's rerun pays it;

each also as a ratio to the 1,000-run store's figure, so the growth shows.
A third store, 1,000 runs ten times longer, shows the cost does not grow
with the runs' length.

**How the stores are built.** ``RunWriter`` costs ~15 ms a run (a few
fsynced files), minutes for 10,000 runs, so 8 template runs are written with
it (each: train loss, lr and global grad norm every step, val loss and
accuracy every 50 steps; some spike), compacted as a finished probe run is,
and diagnosed once. Each store run is a copy of a template under a new run
id: its Parquet files rewritten with that run id (so every query still
accepts them), run.json rewritten (name, run id, start time, a log-uniform
lr, a seed), its summary refreshed through the catalog, and the template's
findings cached under the copy's fingerprint (the copy's data are the
template's, and the rules do not read the lr it was given).

Targets (issue 13, on a 2-core machine): 10,000 runs listed in under 1 s of
CPU and 300 MB; the Runs page's first table in under 3 s; growth no worse
than linear in the number of runs and independent of the runs' length.

Usage: python benchmarks/store_scale.py [--runs 1000 10000] [--steps 500] [--long-steps 5000]
                                        [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from child_usage import Usage, checked, measure, traindoctor_command  # noqa: E402

from traindoctor.diagnosis.cache import diagnose_cached  # noqa: E402
from traindoctor.store.catalog import Catalog, read_findings, write_findings  # noqa: E402
from traindoctor.store.compact import compact_run  # noqa: E402
from traindoctor.store.format import RUN_JSON, SUMMARY_JSON, TABLES  # noqa: E402
from traindoctor.store.reader import Store  # noqa: E402
from traindoctor.store.segments import RunWriter  # noqa: E402

TEMPLATES = 8
LIST_TARGET_CPU_S = 1.0
LIST_TARGET_MB = 300.0
PAGE_TARGET_S = 3.0
FILTER = ["--filter", "lr<1e-3", "--filter", "has:critical", "--sort", "val.loss", "--limit", "20"]
PAGE_CODE = """
import sys, time
start = time.process_time()
from traindoctor.dashboard.data import runs_page
from traindoctor.store.reader import Store
store = Store(sys.argv[1])
page = runs_page(store)
first = time.process_time() - start
again = time.process_time()
runs_page(store, filters=["status=finished"], sort="-val.accuracy")
print(f"{first:.3f} {time.process_time() - again:.3f} {len(page.rows)} {page.total}")
"""
PICKER_CODE = """
import sys, time
start = time.process_time()
from traindoctor.dashboard.data import run_choices
from traindoctor.store.reader import Store
store = Store(sys.argv[1])
choices = run_choices(store, keep=["sweep-00005"])
first = time.process_time() - start
again = time.process_time()
found = run_choices(store, "sweep-001 lr<1e-3", sort="-health", keep=[choices.options[0]])
print(f"{first:.3f} {time.process_time() - again:.3f} {len(choices.options)} {found.matched}")
"""


def write_template(root: Path, index: int, steps: int) -> str:
    """One small finished run through the real writer (compacted, as the probe leaves a finished run)."""
    rng = np.random.default_rng(index)
    step = np.arange(1, steps + 1)
    loss = 2.3 * np.exp(-step / (steps / 4)) + 0.1 + 0.05 * rng.random(steps)
    if index % 3 == 0:
        loss[steps // 2: steps // 2 + 5] *= 8  # a loss spike for the rules to find
    if index % 4 == 1:
        loss[int(steps * 0.8):] = np.linspace(loss[int(steps * 0.8)], 50, steps - int(steps * 0.8))  # divergence
    writer = RunWriter(root, name=f"template-{index}", config={"lr": 0.1, "batch_size": 64, "optimizer": "adamw"},
                       task={"num_classes": 10}, background=False)
    writer.add_scalars(step=step, name="loss", value=loss)
    writer.add_scalars(step=step, name="lr", value=np.full(steps, 0.1), layer="group0")
    writer.add_scalars(step=step, name="grad_norm", value=1 + rng.random(steps))
    every = np.arange(50, steps + 1, 50)
    writer.add_scalars(step=every, name="loss", split="val", value=loss[every - 1] + 0.1)
    writer.add_scalars(step=every, name="accuracy", split="val", value=1 - loss[every - 1] / 3)
    writer.close()
    compact_run(Store(root), writer.run_id)
    return writer.run_id


def build_store(root: Path, runs: int, steps: int) -> float:
    """A store of ``runs`` copies of TEMPLATES template runs (module doc); returns its size in MB."""
    templates_root = root.parent / f"{root.name}-templates"
    template_ids = [write_template(templates_root, index, steps) for index in range(TEMPLATES)]
    catalog = Catalog(templates_root)
    store = Store(templates_root)
    templates = []
    for run_id in template_ids:
        summary = catalog.summary(run_id)
        diagnose_cached(catalog, summary, store=store)
        folder = templates_root / run_id
        tables = {table: [(path.name, pq.read_table(path)) for path in sorted((folder / table).glob("*.parquet"))]
                  for table in TABLES}
        templates.append((json.loads((folder / RUN_JSON).read_text()), tables,
                          json.loads((folder / SUMMARY_JSON).read_text()), read_findings(folder)))
    random.seed(0)
    started = time.time() - runs
    root.mkdir(parents=True)
    store_catalog = Catalog(root)
    for index in range(runs):
        meta, tables, summary, findings = templates[index % TEMPLATES]
        run_id = f"20260101-000000-{index:06x}"
        folder = root / run_id
        for table, files in tables.items():
            (folder / table).mkdir(parents=True)
            for name, rows in files:
                column = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows.num_rows, dtype=np.int32)),
                                                        pa.array([run_id]))
                pq.write_table(rows.set_column(0, "run_id", column), folder / table / name, compression="zstd")
        lr = 10 ** random.uniform(-5, -1)
        copy = {**meta, "run_id": run_id, "name": f"sweep-{index:05d}", "created_at": started + index,
                "heartbeat_at": started + index + 60, "finished_at": started + index + 60,
                "config": {**meta["config"], "lr": lr, "seed": index}}
        (folder / RUN_JSON).write_text(json.dumps(copy))
        fresh = store_catalog.refresh(run_id, previous={**summary, "run_id": run_id, "findings": None})
        write_findings(folder, {**findings, "fingerprint": fresh["fingerprint"], "name": copy["name"]})
        fresh["findings"] = {**summary["findings"], "fingerprint": fresh["fingerprint"]}
        (folder / SUMMARY_JSON).write_text(json.dumps(fresh))
    shutil.rmtree(templates_root)
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file()) / 1e6


def measure_store(root: Path, repeats: int) -> dict[str, tuple[float, float, float]]:
    """(CPU s, wall s, peak MB) medians per measurement, plus the page's in-process figures."""
    command = traindoctor_command()
    time.sleep(2.5)  # the last summaries' stamps settle (store.catalog: a file clock tick)
    checked(measure([*command, "runs", "--store", str(root)]), "warm-up listing")
    samples: dict[str, list[Usage]] = {"runs": [], "runs page data": [], "filter": [], "picker data": []}
    page_inside: list[tuple[float, float]] = []
    picker_inside: list[tuple[float, float]] = []
    for _ in range(repeats):
        samples["runs"].append(checked(measure([*command, "runs", "--store", str(root)]), "runs"))
        page = checked(measure([sys.executable, "-c", PAGE_CODE, str(root)]), "runs page data")
        samples["runs page data"].append(page)
        first, again, _, _ = page.stdout.split()
        page_inside.append((float(first), float(again)))
        samples["filter"].append(checked(measure([*command, "runs", "--store", str(root), *FILTER]), "filter"))
        picker = checked(measure([sys.executable, "-c", PICKER_CODE, str(root)]), "picker data")
        samples["picker data"].append(picker)
        first, again, _, _ = picker.stdout.split()
        picker_inside.append((float(first), float(again)))
    result = {name: (statistics.median(u.cpu_s for u in usages), statistics.median(u.wall_s for u in usages),
                     max(u.max_rss_mb for u in usages)) for name, usages in samples.items()}
    # In the page's own process: its first call (imports included) and a next call (another filter and sort).
    result["page, 1st call"] = (statistics.median(p[0] for p in page_inside), math.nan, math.nan)
    result["page, next call"] = (statistics.median(p[1] for p in page_inside), math.nan, math.nan)
    result["picker, 1st call"] = (statistics.median(p[0] for p in picker_inside), math.nan, math.nan)
    result["picker, next call"] = (statistics.median(p[1] for p in picker_inside), math.nan, math.nan)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--steps", type=int, default=500, help="steps per run")
    parser.add_argument("--long-steps", type=int, default=5000,
                        help="steps per run of the extra store of as many runs as the first (0: none)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="build the stores here and keep them")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="store-scale-"))
    plans = [(runs, args.steps) for runs in args.runs]
    if args.long_steps:
        plans.append((args.runs[0], args.long_steps))
    figures = {}
    try:
        for runs, steps in plans:
            root = base / f"runs-{runs}-steps-{steps}"
            if not root.exists():
                start = time.perf_counter()
                size = build_store(root, runs, steps)
                print(f"built {runs:,} runs × {steps:,} steps ({steps * 3 + 2 * steps // 50:,} values each): "
                      f"{size:.0f} MB in {time.perf_counter() - start:.0f} s", flush=True)
            figures[(runs, steps)] = measure_store(root, args.repeats)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)

    baseline = figures[plans[0]]
    print(f"\nmedian of {args.repeats}, each in a fresh process; ratio = against {plans[0][0]:,} runs × "
          f"{plans[0][1]:,} steps")
    print(f"{'store':>22} {'measurement':18} {'CPU s':>7} {'ratio':>6} {'wall s':>7} {'peak MB':>8} {'ratio':>6}")
    for (runs, steps), result in figures.items():
        for name, (cpu, wall, rss) in result.items():
            base_cpu, _, base_rss = baseline[name]
            wall_text = "" if math.isnan(wall) else f"{wall:7.3f}"
            rss_text = "" if math.isnan(rss) else f"{rss:8.0f} {rss / base_rss:6.2f}"
            print(f"{f'{runs:,} × {steps:,} steps':>22} {name:18} {cpu:7.3f} {cpu / base_cpu:6.2f} {wall_text:>7} "
                  f"{rss_text}")
    largest = max(figures, key=lambda plan: (plan[0], -plan[1]))
    cpu, _, rss = figures[largest]["runs"]
    page_cpu = figures[largest]["runs page data"][0]
    print(f"\ntargets at {largest[0]:,} runs: runs listed in {cpu:.2f} s CPU (< {LIST_TARGET_CPU_S}) and "
          f"{rss:.0f} MB (< {LIST_TARGET_MB:.0f}): {'met' if cpu < LIST_TARGET_CPU_S and rss < LIST_TARGET_MB else 'NOT met'}; "
          f"Runs page data {page_cpu:.2f} s CPU (< {PAGE_TARGET_S}): {'met' if page_cpu < PAGE_TARGET_S else 'NOT met'}")
    print(f"run pickers (Run, Compare, Classes pages) at {largest[0]:,} runs: "
          f"{figures[largest]['picker, next call'][0]:.2f} s CPU a rerun, "
          f"{figures[largest]['picker data'][0]:.2f} s in a fresh process (it offers 50 runs and the one a link names, not all of them)")


if __name__ == "__main__":
    main()
