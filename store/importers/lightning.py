"""Import a Lightning ``CSVLogger`` run: ``metrics.csv`` and ``hparams.yaml``.

``metrics.csv`` is wide and sparse: one row per ``log_metrics`` call, with
``epoch`` and ``step`` columns and one column per logged name (``train_loss``,
``train_loss_step``, ``train_loss_epoch``, ``val_loss``, ``val_acc``,
``lr-Adam`` …), empty where a call did not log that name. Each column becomes
one series named by :mod:`traindoctor.store.importers.names`.

Lightning logs with ``step`` = the number of optimizer steps taken *before*
the logged batch (0 for the first batch, and the last step of an epoch for
its validation). The store's ``step`` counts optimizer steps 1-based, as the
probe's ``probe.step()`` does, so imported steps are Lightning's plus one:
the first batch's loss lands on step 1 and an epoch's validation on the step
that ended the epoch. Lightning writes some values twice at one step
(LearningRateMonitor at an epoch boundary): the last one wins, as for every
importer (:mod:`traindoctor.store.importers.common`).

``hparams.yaml`` is the run's config, and where it names ``num_classes`` (or
``num_labels``) or ``vocab_size`` it sets the run's task
(:func:`traindoctor.store.importers.task.task_from_hparams`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from traindoctor.store.errors import StoreError
from traindoctor.store.importers.common import (
    ImportInputError, ParsedRun, Progress, RunSource, checked_steps, load_yaml, quoted, series_from_columns,
)
from traindoctor.store.importers.names import optimizer_from_tags
from traindoctor.store.importers.task import task_from_hparams

METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.yaml"
_INDEX_COLUMNS = ("step", "epoch")


def logger_run_name(folder: Path) -> str:
    """A run folder's name; a Lightning logger's ``<save_dir>/<name>/version_<n>`` (CSVLogger's and
    TensorBoardLogger's layout) is ``name/version_<n>``, which says which run (every experiment has
    a version_0)."""
    folder = folder.resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.name.startswith("version_") else folder.name


def _source(metrics: Path, name: str) -> RunSource:
    files = [metrics]
    if (metrics.parent / HPARAMS_FILE).is_file():
        files.append(metrics.parent / HPARAMS_FILE)
    # A CSVLogger's metrics.csv is its version folder's run; a CSV by another name is a run of its
    # own (two such files in one folder are two runs, never one replacing the other on re-import).
    identity = metrics.parent if metrics.name == METRICS_FILE else metrics
    return RunSource(name=name, path=identity, files=files)


def discover(path: Path, run_name: str | None) -> list[RunSource]:
    """A version folder, its ``metrics.csv`` (or a CSV of that layout by another name), or a
    folder holding several version folders."""
    if path.is_file():
        default = logger_run_name(path.parent) if path.name == METRICS_FILE else path.stem
        return [_source(path, run_name or default)]
    if (path / METRICS_FILE).is_file():
        return [_source(path / METRICS_FILE, run_name or logger_run_name(path))]
    found = sorted(p for p in path.rglob(METRICS_FILE) if p.is_file())
    if not found:
        raise StoreError(f"no {METRICS_FILE} under {path}: give a CSVLogger version folder or its metrics.csv")
    sources = []
    for metrics in found:
        relative = metrics.parent.relative_to(path).as_posix()
        if run_name:
            name = f"{run_name}/{relative}"
        else:
            # lightning_logs/ itself: its version_<n> folders keep the CSVLogger name, as when
            # each is imported alone (every experiment has a version_0).
            name = logger_run_name(metrics.parent) if "/" not in relative else relative
        sources.append(_source(metrics, name))
    return sources


def _read_metrics(path: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The metrics as floats, and per column where a value was logged.

    Only an empty cell means "not logged by this call": a ``nan``, ``NaN``
    or ``inf`` that Lightning wrote for a diverged loss is a logged value
    and stays one (pandas' default would read it as missing and drop it).
    """
    try:
        frame = pd.read_csv(path, low_memory=False, keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError) as error:
        raise StoreError(f"unreadable file {path}: {error}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StoreError(f"unreadable CSV {path}: {message}") from None
    if "step" not in frame.columns:
        raise StoreError(f"missing column 'step' in {path}")
    # pandas renames a repeated column ("train_loss.1"); the header says what the file holds.
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ImportInputError(f"column {repeated[0]!r} appears more than once in {path}")
    present = {}
    for column in frame.columns:
        present[column] = frame[column].notna().to_numpy()
        if not pd.api.types.is_numeric_dtype(frame[column]):
            numbers = frame[column].map(_number, na_action="ignore")
            bad = numbers.isna() & frame[column].notna() & ~frame[column].map(_is_nan_text, na_action="ignore").eq(True)
            if bad.any():
                value = frame[column][bad].iloc[0]
                raise StoreError(f"column {column!r} in {path} has a non-numeric value {quoted(value)}")
            frame[column] = numbers.astype(np.float64)
    return frame, present


def _number(text: Any) -> float:
    """A cell as a float (``nan``, ``inf``, ``-Infinity`` included); NaN where it is not a number."""
    try:
        return float(str(text).strip())
    except ValueError:
        return float("nan")


def _is_nan_text(text: Any) -> bool:
    return str(text).strip().lower() in {"nan", "+nan", "-nan"}


def read_hparams(path: Path) -> dict[str, Any]:
    """hparams.yaml as a config (bounded and never running code: :func:`load_yaml`)."""
    loaded = load_yaml(path)
    if loaded is None:
        return {}
    return loaded if isinstance(loaded, dict) else {"hparams": loaded}


def parse(source: RunSource, progress: Progress) -> ParsedRun:
    metrics = source.files[0]
    frame, logged = _read_metrics(metrics)
    # Lightning's step is the number of optimizer steps before the logged batch (see the module doc).
    steps = checked_steps(frame["step"].to_numpy(), f"column 'step' in {metrics}", offset=1)
    epoch_steps = epoch_values = None
    if "epoch" in frame.columns:
        has_epoch = logged["epoch"] & frame["epoch"].notna().to_numpy()
        epoch_steps, epoch_values = steps[has_epoch], frame["epoch"].to_numpy(dtype=np.float64)[has_epoch]
    columns = {}
    for column in frame.columns:
        if column in _INDEX_COLUMNS:
            continue
        present = logged[column]
        if not present.any():
            continue
        columns[column] = (steps[present], frame[column].to_numpy(dtype=np.float64)[present], None)
    progress.update(sum(f.stat().st_size for f in source.files))
    config = read_hparams(source.files[1]) if len(source.files) > 1 else {}
    env: dict[str, Any] = {"logger": "lightning.CSVLogger"}
    optimizer = optimizer_from_tags(columns)
    if optimizer:
        env["optimizer"] = {"type": optimizer}
    return ParsedRun(
        source=source, config=config, env=env, task=task_from_hparams(config),
        series=series_from_columns(columns, epoch_steps=epoch_steps, epoch_values=epoch_values),
    )
