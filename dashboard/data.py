"""The dashboard pages' only door to the store.

Everything here returns plain pandas frames or ``RunData``; pages never
see SQL or DuckDB. (The CLI reads runs through ``traindoctor.store`` directly:
it must not load this module's page helpers.)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from traindoctor.store.reader import Store, default_store_path, open_store
from traindoctor.store.run_data import CONFUSION_COLUMNS, EVENT_COLUMNS, RunData, load_run


# Every curve sent to the browser holds at most this many points (the store
# downsamples, keeping each bucket's min, max and last point): ~2000 points
# per line keeps a plotly chart responsive while a one-step spike stays visible.
MAX_POINTS_PER_LINE = 2000
# Heatmaps get at most this many step columns: a few hundred columns already
# exceed the pixels a layer row gets on screen.
MAX_HEATMAP_STEPS = 400
# The global series the Run page draws, by name.
CURVE_NAMES = ("loss", "accuracy", "grad_norm", "amp_scale")


def store_path_from_args(argv: Sequence[str]) -> Path:
    """The store folder given as ``--store DIR`` after ``--`` on the
    ``streamlit run`` command line, else :func:`default_store_path`.

    The folder comes from whoever started the server, never from the page.
    """
    args = list(argv)
    for index, arg in enumerate(args):
        if arg == "--store" and index + 1 < len(args):
            return Path(args[index + 1])
        if arg.startswith("--store="):
            return Path(arg.split("=", 1)[1])
    return default_store_path()


def run_version(store: Store, run_id: str) -> tuple[int, ...]:
    """A fingerprint that changes whenever the run's data does.

    A segment is published by ``os.replace`` into its table folder, which
    updates the folder's mtime, and run.json is rewritten atomically, so the
    mtimes of run.json and the three table folders change with every flush.
    Costs four ``stat`` calls: cheap enough to key a cache on at every rerun.
    """
    run_dir = store.root / run_id
    stamps = []
    for path in (run_dir / "run.json", run_dir / "scalars", run_dir / "confusion", run_dir / "events"):
        try:
            stat = path.stat()
            stamps.extend((stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            stamps.extend((0, 0))
    return tuple(stamps)


def diagnose_run(run_data: RunData) -> list:
    """The findings of the diagnosis engine for one run (imported on first use)."""
    from traindoctor.diagnosis import diagnose

    return list(diagnose(run_data))


def curve_points(store: Store, runs: Sequence[str], names: Sequence[str] = CURVE_NAMES,
                 max_points: int = MAX_POINTS_PER_LINE) -> pd.DataFrame:
    """Downsampled global series (layer NULL) of ``names`` for ``runs``, all splits."""
    if not runs:
        return pd.DataFrame(columns=["run_id", "split", "name", "layer", "step", "epoch", "wall_time", "value"])
    return store.series(list(runs), names=list(names), global_only=True, max_points=max_points)


def lr_points(store: Store, runs: Sequence[str], max_points: int = MAX_POINTS_PER_LINE) -> pd.DataFrame:
    """Downsampled learning rate per param group (layer ``group<i>``)."""
    return store.series(list(runs), names=["lr"], splits=["train"], max_points=max_points)


def layer_heatmap(store: Store, run_id: str, name: str, max_steps: int = MAX_HEATMAP_STEPS) -> pd.DataFrame:
    """Long (layer, step, value) grid of a per-layer statistic, step-bucketed by the store."""
    return store.heatmap(run_id, name=name, max_steps=max_steps)


def run_events(store: Store, run_id: str) -> pd.DataFrame:
    return store.events([run_id])[EVENT_COLUMNS].reset_index(drop=True)


def run_confusion(store: Store, run_id: str) -> pd.DataFrame:
    """Confusion counts of rank 0 (the rank that evaluates)."""
    confusion = store.confusion([run_id])
    return confusion[confusion["rank"] == 0][CONFUSION_COLUMNS].reset_index(drop=True)


STAT_COLUMNS = ["run_id", "last_step", "num_steps", "final_train_loss", "final_val_loss", "final_val_accuracy"]


def run_stats(store: Store) -> pd.DataFrame:
    """last_step, num_steps and final train/val loss and val accuracy of every run."""
    frame = store.runs(with_stats=True)
    return frame.reindex(columns=STAT_COLUMNS).reset_index(drop=True)


# Per-layer statistics: their global counterpart (if any) is what a run-level chart shows.
PER_LAYER_ONLY = ("update_ratio", "weight_norm")


def series_names(store: Store, runs: Sequence[str]) -> list[tuple[str, str]]:
    """(split, name) of the run-level series ``runs`` recorded: what can be overlaid."""
    if not runs:
        return []
    names = store.names(list(runs))
    names = names[~names["name"].isin(PER_LAYER_ONLY)]
    return [(str(split), str(name)) for split, name in zip(names["split"], names["name"])]


@dataclass
class RunView:
    """What the Run page draws when it opens: downsampled curves, the
    step-bucketed update-ratio heatmap, events. (The per-layer gradient-norm
    heatmap is fetched when it is asked for: one query fewer on opening.)"""

    meta: dict
    curves: pd.DataFrame
    lr: pd.DataFrame
    update_ratio: pd.DataFrame
    events: pd.DataFrame


# The Run page's queries are independent; DuckDB releases the GIL while it
# scans, so running them side by side cuts a big run's load time (each query
# also rebuilds the store's views, a fixed cost paid in parallel this way).
_RUN_VIEW_WORKERS = 4


def tidy_run(store: Store, run_id: str) -> None:
    """Merge a run's segments once they are many (a long live run publishes one
    every 2 s, and every query pays ~0.3 ms per file). Safe while training
    writes and others read; a read-only store is simply left as it is."""
    from traindoctor.store.compact import compact_if_fragmented

    try:
        compact_if_fragmented(store, run_id)
    except OSError:
        pass


def load_run_view(store: Store, run: str) -> RunView:
    """The Run page's data for one run, every series bounded in points."""
    run_id = store.resolve(run)
    tidy_run(store, run_id)
    with ThreadPoolExecutor(max_workers=_RUN_VIEW_WORKERS) as pool:
        curves = pool.submit(curve_points, store, [run_id])
        lr = pool.submit(lr_points, store, [run_id])
        update_ratio = pool.submit(layer_heatmap, store, run_id, "update_ratio")
        events = pool.submit(run_events, store, run_id)
        return RunView(meta=store.run_meta(run_id), curves=curves.result(), lr=lr.result(),
                       update_ratio=update_ratio.result(), events=events.result())
