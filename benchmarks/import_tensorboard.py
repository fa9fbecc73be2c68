"""Benchmark: import a 100,000-step TensorBoard log.

Writes the log with torch's SummaryWriter (timed on its own), imports it with
``traindoctor.store.importers.import_source("tensorboard", ...)`` and prints values/s.
Ratios are against baselines measured in this process, because the machine's
speed varies: the time SummaryWriter took to write the same log, and
TensorBoard's own reader (``EventFileLoader``, pure-Python CRC checks) on
the first ``--baseline-steps`` steps.

    python benchmarks/import_tensorboard.py [--steps 100000] [--baseline-steps 5000]

Target: the 100,000-step import in a few seconds.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from traindoctor.store.importers import import_source  # noqa: E402
from traindoctor.store.reader import Store  # noqa: E402

# train/loss, lr-Adam, grad_norm (tensor form) and epoch every step, val/loss every 1,000 steps.
# The epoch tag becomes the epoch column of the other rows, not rows of its own.
TAGS_PER_STEP = 4


def write_log(folder: Path, steps: int) -> tuple[int, int]:
    """A training-like log; returns the scalar values written and the rows they make."""
    from torch.utils.tensorboard import SummaryWriter

    values = 0
    with SummaryWriter(str(folder), max_queue=10_000, flush_secs=3600) as writer:
        for step in range(1, steps + 1):
            writer.add_scalar("train/loss", 2.3 * math.exp(-step / 20_000) + 0.05 * math.sin(step), step)
            writer.add_scalar("lr-Adam", 3e-4 * min(1.0, step / 2_000), step)
            writer.add_scalar("grad_norm", 1.0 + 0.1 * math.cos(step), step, new_style=True)
            writer.add_scalar("epoch", step // 1_000, step)
            values += TAGS_PER_STEP
            if step % 1_000 == 0:
                writer.add_scalar("val/loss", 2.3 * math.exp(-step / 20_000) + 0.1, step)
                values += 1
    return values, values - steps


def tensorboard_reader_values_per_s(event_file: Path) -> float:
    """TensorBoard's own event reader over one file, counting scalar values."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    start = time.perf_counter()
    count = sum(len(event.summary.value) for event in EventFileLoader(str(event_file)).Load())
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--baseline-steps", type=int, default=5_000)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        logs, baseline_logs, store_root = Path(scratch, "logs"), Path(scratch, "baseline"), Path(scratch, "store")
        start = time.perf_counter()
        values, rows = write_log(logs, options.steps)
        write_s = time.perf_counter() - start
        size = sum(f.stat().st_size for f in logs.iterdir())
        print(f"SummaryWriter: {options.steps:,} steps, {values:,} values, {size / 1e6:.1f} MB in {write_s:.2f} s")

        start = time.perf_counter()
        [result] = import_source("tensorboard", store_root, logs, progress=False)
        import_s = time.perf_counter() - start
        assert result.rows == rows, (result.rows, rows)
        print(f"import:        {values:,} values in {import_s:.2f} s = {values / import_s:,.0f} values/s "
              f"({write_s / import_s:.1f}x faster than writing the log)")

        start = time.perf_counter()
        [again] = import_source("tensorboard", store_root, logs, progress=False)
        assert again.skipped
        print(f"re-import:     skipped (same source) in {time.perf_counter() - start:.3f} s")

        start = time.perf_counter()
        loss = Store(store_root).series([result.run_id], names=["loss"], max_points=2_000)
        print(f"query:         downsampled loss series ({len(loss):,} rows) in {time.perf_counter() - start:.3f} s")

        write_log(baseline_logs, options.baseline_steps)
        [event_file] = baseline_logs.iterdir()
        baseline = tensorboard_reader_values_per_s(event_file)
        start = time.perf_counter()
        [small] = import_source("tensorboard", store_root, event_file, progress=False)
        ours = (small.rows + options.baseline_steps) / (time.perf_counter() - start)  # + the epoch values
        print(f"baseline:      TensorBoard EventFileLoader {baseline:,.0f} values/s on {options.baseline_steps:,} steps; "
              f"import {ours:,.0f} values/s on the same file = {ours / baseline:.1f}x")
        if os.environ.get("TRAINDOCTOR_BENCH_STRICT") and import_s > 10:
            raise SystemExit(f"import took {import_s:.1f} s, target is a few seconds")


if __name__ == "__main__":
    main()
