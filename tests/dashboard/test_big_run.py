"""A 200,000-step run opens its Run page in under 2 s server-side.

Builds the run through RunWriter (per-layer statistics every 10 steps for 20
layers, as the probe's default cadence would), then times what the Run page
does before the browser gets anything: the store's downsampled queries and
building every figure. The same work on a 2,000-step run is the baseline
measured in this process (the machine is shared: ratios travel, seconds less so).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from traindoctor.dashboard import data
from traindoctor.dashboard.app.charts.curves import curve_figure
from traindoctor.dashboard.app.charts.layers import update_ratio_heatmap_figure
from traindoctor.store.compact import compact_run
from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter

pytestmark = pytest.mark.slow

LAYERS = tuple(f"blocks.{i}.weight" for i in range(20))
LAYER_EVERY = 10
# The bound on opening a 200k-step run's page, server side.
PAGE_BUDGET_S = 2.0
# 100x the steps may cost at most this many times the 2,000-step page: the store
# downsamples, so the cost grows with the scan, not with the points drawn
# (measured 2.5-5x on a loaded 2-core box; the baseline itself is noisy).
MAX_SCALING = 12.0
# Seconds are only comparable with the budget on a machine that is not
# oversubscribed (load average per core below this); the ratio is checked always.
MAX_LOAD_PER_CORE_FOR_SECONDS = 1.0


def write_run(store, steps: int, chunk: int = 10_000) -> str:
    rng = np.random.default_rng(0)
    layer_names = np.array(LAYERS)
    with RunWriter(store, name=f"big-{steps}", background=False) as writer:
        for start in range(1, steps + 1, chunk):
            step = np.arange(start, min(start + chunk, steps + 1))
            writer.add_scalars(step=step, name="loss", value=2.3 * np.exp(-step / 50_000) + 0.1 * rng.random(len(step)))
            writer.add_scalars(step=step, name="accuracy", value=rng.random(len(step)))
            writer.add_scalars(step=step, name="lr", value=1e-3, layer="group0")
            writer.add_scalars(step=step, name="grad_norm", value=rng.random(len(step)))
            sampled = step[step % LAYER_EVERY == 0]
            for name in ("grad_norm", "update_ratio", "weight_norm"):
                writer.add_scalars(step=np.repeat(sampled, len(LAYERS)), name=name,
                                   value=10 ** rng.uniform(-4, -2, len(sampled) * len(LAYERS)),
                                   layer=np.tile(layer_names, len(sampled)))
            writer.flush()
        run_id = writer.run_id
    return run_id


def open_run_page(store: Store, run_id: str) -> tuple[float, data.RunView]:
    """Seconds to load the Run page's data and build (and serialise) its figures."""
    started = time.perf_counter()
    view = data.load_run_view(store, run_id)
    figures = [curve_figure(view.curves[view.curves["name"] == name], title=name)
               for name in ("loss", "accuracy", "grad_norm")]
    figures += [curve_figure(view.lr, title="lr"), update_ratio_heatmap_figure(view.update_ratio)]
    for figure in figures:
        figure.to_json()
    return time.perf_counter() - started, view


def test_200k_step_run_page_opens_under_2_seconds(tmp_path):
    store_root = tmp_path / "runs"
    small = write_run(store_root, 2_000)
    big = write_run(store_root, 200_000)
    store = Store(store_root)
    for run_id in (small, big):
        compact_run(store, run_id)  # a finished run is compacted on close
    open_run_page(store, small)  # warm-up: imports, DuckDB start
    baseline = min(open_run_page(store, small)[0] for _ in range(2))
    seconds, view = min((open_run_page(store, big) for _ in range(2)), key=lambda result: result[0])
    points = view.curves.groupby(["split", "name"]).size()
    print(f"\nRun page of a 200,000-step run: {seconds:.2f} s server-side "
          f"(2,000-step run: {baseline:.2f} s; ratio {seconds / baseline:.1f}x for 100x the steps); "
          f"at most {points.max()} points per line, heatmap {view.update_ratio['step'].nunique()} step columns")
    assert points.max() <= data.MAX_POINTS_PER_LINE
    assert view.update_ratio["step"].nunique() <= data.MAX_HEATMAP_STEPS
    assert seconds / baseline < MAX_SCALING
    load_per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    if load_per_core < MAX_LOAD_PER_CORE_FOR_SECONDS:
        assert seconds < PAGE_BUDGET_S
    else:
        print(f"load {load_per_core:.1f} per core: the {PAGE_BUDGET_S} s bound is not checked on a busy machine")
