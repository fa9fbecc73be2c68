"""Import a JSONL file: one JSON object per line, any keys.

Each object is one record. Its step is the first of the shared table's step
keys it holds (``num_updates``, ``global_step``, ``step``, ``iteration``,
``iter`` …; see :data:`names.STEP_KEYS`), its epoch the ``epoch`` key, its
wall time ``wall_time``/``timestamp`` (Unix seconds); every other number,
nested objects included (``{"train": {"loss": 1.2}}`` is ``train/loss``), is
a metric named through :mod:`store.importers.names`.

Values, steps and repeated steps follow the import rules of
:mod:`traindoctor.store.importers.common`: a value written as text must read
as a number (``"1.5"``, ``"NaN"``; other text stops the import), lists and
true/false are left out and counted in one warning, ``null`` is nothing
logged; a step must be a whole number within int64; a step logged twice
keeps its last value.

Steps: a record without a step key belongs to the step of the record before
it (an evaluation record written after the training record of its step),
or to the first step when it comes before any; when no record holds a step,
records are numbered 1, 2, 3 … and the run's ``source.steps`` says so.
``NaN`` and ``Infinity`` (Python's ``json.dumps`` writes them) are kept as
they are.

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
from typing import Any, Iterable, Iterator

from traindoctor.store.errors import StoreError
from traindoctor.store.importers.common import (
    Columns, ImportInputError, ParsedRun, Progress, RunSource, flatten, number_of, one_line, quoted,
    series_from_columns, whole_step,
)
from traindoctor.store.importers.names import STEP_KEYS, WALL_TIME_KEYS

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
        raise ImportInputError(f"unreadable file {path}: {error.strerror or error}") from None


def record_step(record: dict[str, Any], where: str) -> int | None:
    """The step a flat record names (the first step key present), or None (:func:`common.whole_step`)."""
    for key in STEP_KEYS:
        if key in record and record[key] is not None:
            return whole_step(record[key], where)
    return None


def add_record(columns: Columns, record: dict[str, Any], step: int, where: str, left_out: list[str]) -> None:
    """Every value of a flat record except its step and wall time, at ``step`` (:func:`common.number_of`).

    Entries that are not numbers (text, lists, true/false) go to ``left_out``.
    """
    wall_time = math.nan
    for key in WALL_TIME_KEYS:
        value = record.get(key)
        if value is not None:
            number = number_of(value, where)  # None for a date as text ("2024-05-01T10:00:00")
            if number is not None:
                wall_time = number
                break
    for key, value in record.items():
        if key in STEP_KEYS or key in WALL_TIME_KEYS:
            continue
        kind = type(value)
        if kind is float or (kind is int and -(2**63) <= value < 2**63):  # the common case, without a call
            columns.add(key, step, float(value), wall_time)
            continue
        if value is None:  # null: nothing logged
            continue
        number = number_of(value, f"{where}, {quoted(key)}")
        if number is None:
            left_out.append(f"{quoted(key)} at step {step}")
        else:
            columns.add(key, step, number, wall_time)


def columns_from_records(records: Iterable[tuple[dict[str, Any], str]]) -> tuple[Columns, list[str], bool]:
    """Metrics of flat records (each with ``where``, for errors), by the steps rule of the module doc.

    Returns the columns, the entries left out (not numbers) and whether the
    records held no step, so that they were numbered 1, 2, 3 …. Shared with
    ``import csv`` of a file with a column per metric.
    """
    columns = Columns()
    left_out: list[str] = []
    waiting: list[tuple[dict[str, Any], str]] = []  # records seen before the first step, and where
    last_step: int | None = None
    for flat, where in records:
        step = record_step(flat, where)
        if step is None and last_step is None:
            waiting.append((flat, where))
            continue
        step = last_step if step is None else step
        for early, early_where in waiting:  # records before the first step belong to it
            add_record(columns, early, step, early_where, left_out)
        waiting = []
        last_step = step
        add_record(columns, flat, step, where, left_out)
    numbered = last_step is None and bool(waiting)
    for index, (flat, early_where) in enumerate(waiting, start=1):
        add_record(columns, flat, index, early_where, left_out)
    return columns, left_out, numbered


def parse(source: RunSource, progress: Progress) -> ParsedRun:
    path = source.path
    lines = read_lines(path)

    def records() -> Iterator[tuple[dict[str, Any], str]]:
        position = 0
        for number, raw in enumerate(lines, start=1):
            position += len(raw)
            if number % _PROGRESS_EVERY == 0:
                progress.advance(path, position)
            text = raw.strip()
            if not text:
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(text)
            except RecursionError:
                raise ImportInputError(f"{where} is not JSON (nested too deeply)") from None
            except ValueError as error:  # UnicodeDecodeError too
                if number == len(lines) and not raw.endswith(b"\n"):
                    # The last line of a log still being written: everything before it is whole.
                    warnings.warn(f"{path}: last line is incomplete, skipped", RuntimeWarning, stacklevel=5)
                    return
                raise ImportInputError(f"{where} is not JSON ({one_line(error)})") from None
            if not isinstance(record, dict):
                raise ImportInputError(f"{where} is not a JSON object")
            yield dict(flatten(record)), where

    columns, left_out, numbered = columns_from_records(records())
    progress.advance(path, sum(len(raw) for raw in lines))
    return ParsedRun(
        source=source, series=series_from_columns(columns.arrays()), env={"logger": "jsonl"}, left_out=left_out,
        extra_source={"steps": "record numbers: no record holds a step" if numbered else "logged"},
    )
