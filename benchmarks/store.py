"""Store benchmark: writer ingest rate and query latency on a 200,000-step run.

The run: loss, lr and the global grad_norm every step; grad_norm and
update_ratio for 100 layers every 10 steps (about 4.6M values), fed to
``RunWriter`` the way a probe flush does (one column chunk per name and
flush). Prints ingest values/s, then the median latency of a 2,000-point
downsampled loss series (``Store.series``) and of a 100-layer × 2,000-step
heatmap (``Store.heatmap``), before and after compaction.

Timings on a shared machine are noisy, so each figure also comes as a ratio
against a baseline measured in the same process: ingest against pyarrow
writing the same rows as one Parquet file; queries against DuckDB merely
counting the run's rows over the same files.

Usage: python benchmarks/store.py [--steps N] [--layers N] [--repeats N] [--store DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from traindoctor.store.compact import compact_run  # noqa: E402
from traindoctor.store.reader import Store  # noqa: E402
from traindoctor.store.segments import RunWriter  # noqa: E402

# Targets of issue 2 (values/s, seconds).
INGEST_TARGET = 1_000_000
SERIES_TARGET_S = 0.100
HEATMAP_TARGET_S = 0.500
# A probe flushes every 2 s; at a few hundred steps/s that is ~1,000 steps.
STEPS_PER_FLUSH = 1000
LAYER_EVERY = 10


def feed(writer: RunWriter, steps: int, layers: int) -> int:
    """Record the synthetic run, one probe-sized flush at a time; returns values added."""
    rng = np.random.default_rng(0)
    layer_names = tuple(f"blocks.{i // 4}.{['attn', 'mlp', 'norm', 'proj'][i % 4]}.weight" for i in range(layers))
    added = 0
    for start in range(1, steps + 1, STEPS_PER_FLUSH):
        step = np.arange(start, min(start + STEPS_PER_FLUSH, steps + 1), dtype=np.int64)
        wall = time.time() + step * 1e-3
        loss = 2.3 * np.exp(-step / 50_000) + 0.05 * rng.standard_normal(len(step))
        writer.add_scalars(step=step, name="loss", value=loss, wall_time=wall)
        writer.add_scalars(step=step, name="lr", layer="group0", value=np.full(len(step), 1e-3), wall_time=wall)
        writer.add_scalars(step=step, name="grad_norm", value=np.abs(rng.standard_normal(len(step))), wall_time=wall)
        added += 3 * len(step)
        for cadence_step in step[step % LAYER_EVERY == 0]:
            # The probe's per-layer statistics of one step: one chunk per name,
            # the layer names as the same tuple every time (encoding cached).
            for name in ("grad_norm", "update_ratio"):
                writer.add_scalars(step=int(cadence_step), name=name, layer=layer_names,
                                   value=rng.random(layers), wall_time=float(wall[0]))
                added += layers
    return added


def build_table(steps: int, layers: int) -> pa.Table:
    """The same rows as one plain Arrow table (the ingest baseline's input)."""
    every = np.arange(1, steps + 1, dtype=np.int64)
    cadence = every[every % LAYER_EVERY == 0]
    n_global, n_layer = 3 * len(every), 2 * len(cadence) * layers
    n = n_global + n_layer
    layer_names = [f"layer{i}" for i in range(layers)]
    return pa.table({
        "run_id": pa.array(["bench"] * n).dictionary_encode(),
        "rank": np.zeros(n, np.int32), "attempt": np.zeros(n, np.int32),
        "step": np.concatenate([np.tile(every, 3), np.repeat(cadence, 2 * layers)]),
        "epoch": np.zeros(n), "wall_time": np.zeros(n),
        "split": pa.array(["train"] * n).dictionary_encode(),
        "name": pa.array(["loss"] * n_global + ["grad_norm"] * n_layer).dictionary_encode(),
        "layer": pa.array([None] * n_global + layer_names * (n_layer // layers)).dictionary_encode(),
        "value": np.random.default_rng(0).random(n),
    })


def median_seconds(function, repeats: int) -> tuple[float, float]:
    """Median wall and median process CPU seconds of ``function``. On a
    shared machine the CPU time (all threads of this process) is the steadier
    figure: wall time also counts the waits for a core."""
    function()  # warm the file-check cache and the OS page cache
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    return statistics.median(walls), statistics.median(cpus)


def measure_queries(store: Store, run_id: str, repeats: int, label: str) -> dict[str, float]:
    series_s, series_cpu = median_seconds(lambda: store.series([run_id], names=["loss"], max_points=2000), repeats)
    heatmap_s, heatmap_cpu = median_seconds(lambda: store.heatmap(run_id, name="grad_norm", max_steps=2000), repeats)
    count_s, _ = median_seconds(lambda: store.query("SELECT count(*) FROM scalars_raw", runs=[run_id]), repeats)
    points = store.series([run_id], names=["loss"], max_points=2000)
    grid = store.heatmap(run_id, name="grad_norm", max_steps=2000)
    print(f"[{label}] files: {len(store.segment_files(run_id, 'scalars'))} scalars segments")
    print(f"[{label}] series  loss 2,000 points : {series_s * 1e3:7.1f} ms median wall, {series_cpu * 1e3:.1f} ms cpu "
          f"({len(points)} points; {series_s / count_s:.2f}x a bare count(*) of {count_s * 1e3:.1f} ms; "
          f"target <= {SERIES_TARGET_S * 1e3:.0f} ms)")
    print(f"[{label}] heatmap {grid['layer'].nunique()} layers x {grid.groupby('layer').size().max()} steps: "
          f"{heatmap_s * 1e3:7.1f} ms median wall, {heatmap_cpu * 1e3:.1f} ms cpu ({heatmap_s / count_s:.2f}x the count; "
          f"target <= {HEATMAP_TARGET_S * 1e3:.0f} ms)")
    return {"series_s": series_s, "heatmap_s": heatmap_s, "count_s": count_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--layers", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--store", help="store folder (default: a temporary one, removed after)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="traindoctor-bench-") as scratch:
        root = Path(args.store or scratch)
        print(f"cpus: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

        writer = RunWriter(root, name="bench", flush_every_s=2.0)
        start, cpu_start = time.perf_counter(), time.process_time()
        added = feed(writer, args.steps, args.layers)
        writer.close()
        ingest_s, ingest_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        rate = added / ingest_s

        table = build_table(args.steps, args.layers)
        start = time.perf_counter()
        pq.write_table(table, Path(scratch) / "baseline.parquet", compression="zstd")
        baseline_s = time.perf_counter() - start
        print(f"ingest: {added:,} values in {ingest_s:.2f} s wall = {rate / 1e6:.2f} M values/s "
              f"({ingest_cpu:.2f} s cpu = {added / ingest_cpu / 1e6:.2f} M values per cpu-second; "
              f"target >= {INGEST_TARGET / 1e6:.0f} M/s; {ingest_s / baseline_s:.2f}x the time pyarrow "
              f"takes to write the same rows as one file, {baseline_s:.2f} s)")

        store = Store(root)
        before = measure_queries(store, writer.run_id, args.repeats, "before compaction")
        start, cpu_start = time.perf_counter(), time.process_time()
        compact_run(store, writer.run_id)
        print(f"compaction: {time.perf_counter() - start:.2f} s wall, {time.process_time() - cpu_start:.2f} s cpu")
        after = measure_queries(store, writer.run_id, args.repeats, "after compaction")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        ok = rate >= INGEST_TARGET and after["series_s"] <= SERIES_TARGET_S and after["heatmap_s"] <= HEATMAP_TARGET_S
        print("targets:", "met" if ok else "NOT met")
        del before
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
