"""Benchmark: import speed of every source, side by side, on the same training history.

The history: train loss, lr, grad_norm and epoch every step and a validation
loss every 1,000 steps, written by each tool's own writer (W&B offline,
MlflowClient to a file store and to SQLite, TensorBoard's SummaryWriter from
torch) or as the text a training script prints (JSONL records, a
nanoGPT-style terminal log). Each is then imported with
``import_source(kind, ...)`` (reading, checking, writing the store) and the
values/s printed, with the ratio to the TensorBoard importer measured in the
same process (the machine's speed varies; the ratio less so). The write time
is each tool's, for scale. Packages are already imported when timing starts
(writing imported them); a first W&B import also pays about 0.8 s to import
the ``wandb`` package, not counted here.

    python benchmarks/imports.py [--steps 20000] [--only wandb,mlflow-sqlite,...]

Target: at least 50,000 values/s for every source.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from traindoctor.store.importers import import_source  # noqa: E402

TARGET_VALUES_PER_S = 50_000
EVAL_EVERY = 1_000


def history(steps: int):
    """(step, {name: value}) of the shared history; validation rows carry val_loss only."""
    for step in range(1, steps + 1):
        yield step, {"loss": 2.3 * math.exp(-step / 20_000) + 0.05 * math.sin(step), "lr": 3e-4 * min(1.0, step / 2_000),
                     "grad_norm": 1.0 + 0.1 * math.cos(step), "epoch": step // 1_000}
        if step % EVAL_EVERY == 0:
            yield step, {"val_loss": 2.3 * math.exp(-step / 20_000) + 0.1}


def count_values(steps: int) -> tuple[int, int]:
    """Values written, and the rows they make (the epoch is a column, not rows)."""
    values = sum(len(row) for _, row in history(steps))
    return values, values - steps


def write_jsonl(folder: Path, steps: int) -> Path:
    path = folder / "metrics.jsonl"
    with open(path, "w") as handle:
        for step, row in history(steps):
            handle.write(json.dumps({"step": step, **row}) + "\n")
    return path


def write_log(folder: Path, steps: int) -> Path:
    """A nanoGPT-style terminal log."""
    path = folder / "train.log"
    with open(path, "w") as handle:
        for step, row in history(steps):
            if "val_loss" in row:
                handle.write(f"step {step}: val loss {row['val_loss']:.4f}\n")
            else:
                handle.write(f"iter {step}: loss {row['loss']:.4f}, lr {row['lr']:.6e}, "
                             f"grad_norm {row['grad_norm']:.4f}, epoch {row['epoch']}\n")
    return path


def write_tensorboard(folder: Path, steps: int) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder / "tb"), max_queue=10_000, flush_secs=3600) as writer:
        for step, row in history(steps):
            for name, value in row.items():
                writer.add_scalar({"loss": "train/loss", "val_loss": "val/loss"}.get(name, name), value, step)
    return folder / "tb"


def write_wandb(folder: Path, steps: int) -> Path:
    os.environ.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(folder / "wandb-config"),
                       "WANDB_CACHE_DIR": str(folder / "wandb-cache"), "WANDB_DATA_DIR": str(folder / "wandb-data")})
    import wandb

    run = wandb.init(project="benchmark", dir=str(folder), mode="offline",
                     settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
    rows: dict[int, dict] = {}
    for step, row in history(steps):  # one wandb.log per step, validation in the same row
        rows.setdefault(step, {}).update(row)
    for step, row in rows.items():
        run.log({{"loss": "train/loss", "val_loss": "eval/loss", "lr": "train/learning_rate",
                  "grad_norm": "train/grad_norm", "epoch": "train/epoch"}[name]: value for name, value in row.items()}, step=step)
    run.finish()
    wandb.teardown()
    return folder / "wandb"


def write_mlflow(folder: Path, steps: int, kind: str) -> Path:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    if kind == "file":
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 writes file stores only when asked
        target, uri = folder / "mlruns", (folder / "mlruns").as_uri()
    else:
        target = folder / "mlflow.db"
        uri = f"sqlite:///{target}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("benchmark"), run_name="bench").info.run_id
    batch = []
    start = int(time.time() * 1000)
    for step, row in history(steps):
        batch += [Metric(name, value, start + step, step) for name, value in row.items()]
        if len(batch) >= 900:
            client.log_batch(run_id, metrics=batch)
            batch = []
    if batch:
        client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id)
    os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
    return target


SOURCES: dict[str, tuple[str, Callable[[Path, int], Path]]] = {
    "tensorboard": ("tensorboard", write_tensorboard),
    "wandb": ("wandb", write_wandb),
    "mlflow-file": ("mlflow", lambda folder, steps: write_mlflow(folder, steps, "file")),
    "mlflow-sqlite": ("mlflow", lambda folder, steps: write_mlflow(folder, steps, "sqlite")),
    "jsonl": ("jsonl", write_jsonl),
    "log": ("log", write_log),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--only", default=",".join(SOURCES), help="comma-separated sources (default: all)")
    options = parser.parse_args()
    chosen = [name for name in options.only.split(",") if name]
    values, rows = count_values(options.steps)
    print(f"history: {options.steps:,} steps, {values:,} values ({rows:,} rows + the epoch column) per source")
    figures: dict[str, float] = {}
    print(f"{'source':<15}{'write s':>9}{'import s':>10}{'values/s':>12}{'vs TB':>8}  target {TARGET_VALUES_PER_S:,}")
    for name in chosen:
        kind, write = SOURCES[name]
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            try:
                start = time.perf_counter()
                source = write(folder, options.steps)
                write_s = time.perf_counter() - start
            except ImportError as error:
                print(f"{name:<15}skipped: {error}")
                continue
            start = time.perf_counter()
            results = import_source(kind, folder / "store", source, progress=False)
            import_s = time.perf_counter() - start
            imported = sum(r.rows for r in results)
            assert imported == rows, (name, imported, rows)
            figures[name] = values / import_s
            ratio = f"{figures[name] / figures['tensorboard']:.2f}x" if "tensorboard" in figures else "-"
            verdict = "ok" if figures[name] >= TARGET_VALUES_PER_S else "BELOW"
            print(f"{name:<15}{write_s:>9.2f}{import_s:>10.2f}{figures[name]:>12,.0f}{ratio:>8}  {verdict}")
    if os.environ.get("TRAINDOCTOR_BENCH_STRICT") and any(v < TARGET_VALUES_PER_S for v in figures.values()):
        raise SystemExit("an importer is below the target")


if __name__ == "__main__":
    main()
