"""Import a JSONL file: one JSON object per line, any keys.

Each object is one record. Its step is the first of the shared table's step
keys it holds (``num_updates``, ``global_step``, ``step``, ``iteration``,
``iter`` …; see :data:`names.STEP_KEYS`), its epoch the ``epoch`` key, its
wall time ``wall_time``/``timestamp`` (Unix seconds); every other number,
nested objects included (``{"train": {"loss": 1.2}}`` is ``train/loss``), is
a metric named through :mod:`store.importers.names`. Strings, lists and
booleans are not metrics and are left out.

Steps: a record without a step key belongs to the step of the record before
it (an evaluation record written after the training record of its step),
or to the first step when it comes before any; when no record holds a step,
records are numbered 1, 2, 3 … and the run's ``source.steps`` says so. ``NaN`` and ``Infinity`` (Python's ``json.dumps``
writes them) are kept as they are.

Example file::

    {"step": 1, "loss": 2.31, "lr": 0.1}
    {"step": 2, "loss": 2.05, "lr": 0.1}
    {"step": 2, "val_loss": 2.2, "val_acc": 0.41, "epoch": 1}
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from traindoctor.store.importers.common import (
    Columns, ParsedRun, Progress, RunSource, as_step, flatten, is_number, series_from_columns,
)
from traindoctor.store.importers.names import STEP_KEYS, WALL_TIME_KEYS
from traindoctor.store.segments import StoreError

# Update the progress bar every this many lines (tqdm costs ~1 µs a call).
_PROGRESS_EVERY = 20_000


def discover(path: Path, run_name: str | None) -> list[RunSource]:
    if path.is_dir():
        raise StoreError(f"{path} is a folder: import jsonl takes one JSONL file")
    return [RunSource(name=run_name or path.stem, path=path, files=[path])]


def read_lines(path: Path) -> list[bytes]:
    """The file's lines, each with its line end (a last line without one may be cut off)."""
    try:
        return path.read_bytes().splitlines(keepends=True)
    except OSError as error:
        raise StoreError(f"unreadable file {path}: {error.strerror or error}") from None


def record_step(record: dict[str, Any], where: str) -> int | None:
    """The step a flat record names (the first step key present), or None."""
    for key in STEP_KEYS:
        if key in record and record[key] is not None:
            return as_step(record[key], where)
    return None


def add_record(columns: Columns, record: dict[str, Any], step: int) -> None:
    """Every number of a flat record except its step and wall time, at ``step``."""
    wall_time = math.nan
    for key in WALL_TIME_KEYS:
        if is_number(record.get(key)):
            wall_time = float(record[key])
            break
    for key, value in record.items():
        if is_number(value) and key not in STEP_KEYS and key not in WALL_TIME_KEYS:
            columns.add(key, step, float(value), wall_time)


def parse(source: RunSource, progress: Progress) -> ParsedRun:
    path = source.path
    columns = Columns()
    waiting: list[dict[str, Any]] = []  # records seen before the first step
    last_step: int | None = None
    position = 0
    lines = read_lines(path)
    for number, raw in enumerate(lines, start=1):
        position += len(raw)
        if number % _PROGRESS_EVERY == 0:
            progress.advance(path, position)
        text = raw.strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except ValueError as error:
            if number == len(lines) and not raw.endswith(b"\n"):
                # The last line of a log still being written: everything before it is whole.
                warnings.warn(f"{path}: last line is incomplete, skipped", RuntimeWarning, stacklevel=3)
                break
            raise StoreError(f"{path} line {number} is not JSON ({error})") from None
        if not isinstance(record, dict):
            raise StoreError(f"{path} line {number} is not a JSON object")
        flat = dict(flatten(record))
        step = record_step(flat, f"{path} line {number}")
        if step is None and last_step is None:
            waiting.append(flat)
            continue
        step = last_step if step is None else step
        for early in waiting:  # records before the first step belong to it
            add_record(columns, early, step)
        waiting = []
        last_step = step
        add_record(columns, flat, step)
    numbered = last_step is None and bool(waiting)
    for index, flat in enumerate(waiting, start=1):
        add_record(columns, flat, index)
    progress.advance(path, position)
    return ParsedRun(
        source=source, series=series_from_columns(columns.arrays()), env={"logger": "jsonl"},
        extra_source={"steps": "record numbers: no record holds a step" if numbered else "logged"},
    )
