"""One run's rows read straight from its segment files with pyarrow, into numpy columns.

What :func:`~traindoctor.store.run_data.load_run` reads: the rows that the
DuckDB views of :class:`~traindoctor.store.reader.Store` give for one run, in
the order of ``Store.scalars``, ``Store.confusion`` and ``Store.events``,
without DuckDB or pandas (together 0.4 s of a command-line diagnosis's
start-up). The files are the ones :meth:`StoreFiles.segments` lists (covered
pieces and bad files left out); a resumed run's newest attempt wins for the
steps it recorded again, exactly as the views resolve it (``_resolve``); a
file that fails to decode is marked bad (skipped with one warning, as a query
skips it) and one that compaction removed under the read makes the run be
listed and read again.

Columns are numpy arrays as :mod:`traindoctor.store.arrow_numpy` makes them:
integers keep their width unless a returned row is null there (then float64
with NaN), floats are float64, strings are object arrays with None where null.
``tests/store/test_run_tables.py`` checks every run of the repository's stores,
and the store tests' resumed, crashed, compacted and damaged runs, against the
DuckDB views.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from traindoctor.store.arrow_numpy import null_column, null_mask, to_numpy
from traindoctor.store.errors import StoreError
from traindoctor.store.files import MAX_READ_RETRIES, SegmentInfo, StoreFiles, VanishedFile, read_segment
from traindoctor.store.format import COLUMNS, FLOAT64, INT32, INT64, STRING, TABLES, column_names
from traindoctor.store.frames import Table

# The contract's logical types as Arrow types (a missing column is nulls of these).
_ARROW_TYPES = {STRING: pa.string(), INT32: pa.int32(), INT64: pa.int64(), FLOAT64: pa.float64()}
_NUMPY_TYPES = {INT32: np.dtype("int32"), INT64: np.dtype("int64"), FLOAT64: np.dtype("float64"), STRING: np.dtype(object)}

# The columns of Store.scalars, Store.confusion and Store.events.
SCALARS_QUERY_COLUMNS = ("run_id", "rank", "attempt", "step", "epoch", "wall_time", "split", "name", "layer", "value")
CONFUSION_QUERY_COLUMNS = ("run_id", "rank", "step", "epoch", "split", "true_class", "pred_class", "count")
EVENTS_QUERY_COLUMNS = ("run_id", "rank", "step", "wall_time", "kind", "detail")


@dataclass
class _Column:
    """One column while rows are filtered: values of the contract's numpy type (anything where null) and the nulls."""

    values: np.ndarray
    null: np.ndarray

    def take(self, rows: np.ndarray) -> "_Column":
        return _Column(self.values[rows], self.null[rows])

    def output(self) -> np.ndarray:
        """As the DuckDB query returns it through pandas: an integer column with a null is float64 with NaN
        (strings are None where null already)."""
        if self.values.dtype.kind in "iu" and self.null.any():
            numbers = self.values.astype("float64")
            numbers[self.null] = np.nan
            return numbers
        return self.values


_Rows = dict[str, _Column]


class _UnreadableFile(Exception):
    def __init__(self, path: Path, error: Exception) -> None:
        super().__init__(str(path))
        self.path = str(path)
        self.reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def _column(values: np.ndarray, null: np.ndarray, logical: str) -> _Column:
    """A converted column in the contract's numpy type, with its nulls (``null``: Arrow's validity)."""
    dtype = _NUMPY_TYPES[logical]
    if dtype.kind == "O" or values.dtype == dtype:
        return _Column(values, null)
    # An integer column with nulls came back as float64 with NaN.
    filled = np.where(null, 0, values).astype(dtype) if dtype.kind in "iu" else values.astype(dtype)
    return _Column(filled, null)


def _read_file(path: Path, info: SegmentInfo, table: str) -> _Rows:
    present = [column.name for column in COLUMNS[table] if column.name in info.columns]
    try:
        arrow = read_segment(path, present)
    except FileNotFoundError:
        raise VanishedFile(str(path)) from None
    except Exception as error:  # pages that do not decode behind an intact footer
        raise _UnreadableFile(path, error) from None
    rows: _Rows = {}
    for column in COLUMNS[table]:
        if column.name in present:
            values = arrow.column(column.name)
            rows[column.name] = _column(to_numpy(values), null_mask(values), column.type)
        else:
            nulls = null_column(_ARROW_TYPES[column.type], arrow.num_rows)
            rows[column.name] = _column(nulls, np.ones(arrow.num_rows, dtype=bool), column.type)
    return rows


def _concatenate(parts: list[_Rows], table: str) -> _Rows:
    if not parts:
        return {column.name: _Column(np.empty(0, dtype=_NUMPY_TYPES[column.type]), np.empty(0, dtype=bool))
                for column in COLUMNS[table]}
    if len(parts) == 1:
        return parts[0]
    return {name: _Column(np.concatenate([part[name].values for part in parts]),
                          np.concatenate([part[name].null for part in parts]))
            for name in column_names(table)}


def _take(rows: _Rows, selected: np.ndarray) -> _Rows:
    return {name: column.take(selected) for name, column in rows.items()}


def _first_steps(segments: list[tuple[Path, SegmentInfo]], scanned: list[_Rows]) -> dict[tuple[int, int], int | None]:
    """(rank, attempt) -> the attempt's first step, from the scalars files' footers, or from
    their rows (``min(step)`` of steps >= 0) for a file whose footer does not say."""
    first_steps: dict[tuple[int, int], int | None] = {}

    def note(rank: int, attempt: int, first: int | None) -> None:
        key = (int(rank), int(attempt))
        known = first_steps.get(key)
        first_steps[key] = first if known is None else known if first is None else min(known, first)

    for (_, info), rows in zip(segments, scanned):
        if info.attempts is not None:
            for rank, attempt, first in info.attempts:
                note(rank, attempt, first)
            continue
        if not {"rank", "attempt"} <= set(info.columns):
            continue  # without those columns its rows belong to no attempt: always kept
        known = ~(rows["rank"].null | rows["attempt"].null)
        for rank, attempt in set(zip(rows["rank"].values[known].tolist(), rows["attempt"].values[known].tolist())):
            mine = known & (rows["rank"].values == rank) & (rows["attempt"].values == attempt)
            steps = rows["step"].values[mine & ~rows["step"].null]
            steps = steps[steps >= 0]
            note(rank, attempt, int(steps.min()) if len(steps) else None)
    return first_steps


def _attempt_bounds(first_steps: dict[tuple[int, int], int | None]) -> dict[tuple[int, int], int]:
    """(rank, attempt) -> next_start: rows of an attempt are kept only below the first step of any later
    attempt of the same rank (``Store._attempt_bounds``)."""
    bounds = {}
    for rank, attempt in first_steps:
        later = [first for (other_rank, other), first in first_steps.items()
                 if other_rank == rank and other > attempt and first is not None]
        if later:
            bounds[(rank, attempt)] = min(later)
    return bounds


def _resolve(rows: _Rows, bounds: dict[tuple[int, int], int]) -> _Rows:
    """The rows the table's view keeps: ``step IS NULL OR next_start IS NULL OR step < next_start``."""
    if not bounds or "rank" not in rows or "attempt" not in rows:
        return rows
    rank, attempt, step = rows["rank"], rows["attempt"], rows["step"]
    keep = np.ones(len(step.values), dtype=bool)
    for (bound_rank, bound_attempt), next_start in bounds.items():
        override = (~rank.null & (rank.values == bound_rank) & ~attempt.null & (attempt.values == bound_attempt)
                    & ~step.null & (step.values >= next_start))
        keep &= ~override
    return rows if keep.all() else _take(rows, np.flatnonzero(keep))


def _string_codes(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Each present string's rank among the column's distinct strings (code point order), 0 elsewhere."""
    codes = np.zeros(len(values), dtype=np.int64)
    if present.any():
        words = values[present]
        rank = {word: index for index, word in enumerate(sorted(set(words.tolist())))}
        codes[present] = np.fromiter(map(rank.__getitem__, words.tolist()), dtype=np.int64, count=len(words))
    return codes


def _sort_key(column: _Column, *, nulls_first: bool = False) -> list[np.ndarray]:
    """Keys (least significant first, as np.lexsort takes them) that order ``column`` as DuckDB does:
    strings by code point (UTF-8 bytes), NaN above every number, NULL last unless ``nulls_first``."""
    values = column.values
    if values.dtype.kind == "O":
        codes = _string_codes(values, ~column.null)
        keys = [codes] if codes.any() else []  # one string everywhere (a run's run_id) orders nothing
    else:
        keys = [values]  # numpy sorts NaN after every number, as DuckDB does
    if column.null.any():
        keys.append(~column.null if nulls_first else column.null)
    return keys


def _ordered(rows: _Rows, columns: Sequence[tuple[str, bool]]) -> _Rows:
    """``rows`` stably sorted by ``columns`` ((name, nulls_first), most significant first)."""
    if len(next(iter(rows.values())).values) < 2:
        return rows
    keys: list[np.ndarray] = []
    for name, nulls_first in reversed(columns):
        keys += _sort_key(rows[name], nulls_first=nulls_first)
    if not keys:
        return rows
    return _take(rows, np.lexsort(keys))  # np.lexsort is stable: ties keep the files' order


def _group_codes(column: _Column) -> np.ndarray:
    """An int64 code per row, equal exactly where GROUP BY puts rows together: NULL with NULL, NaN with NaN."""
    values, null = column.values, column.null
    codes = np.full(len(values), -1, dtype=np.int64)  # NULL
    if values.dtype.kind == "O":
        present = ~null
        codes[present] = _string_codes(values, present)[present]
        return codes
    nan = ~null & np.isnan(values) if values.dtype.kind == "f" else np.zeros(len(values), dtype=bool)
    present = ~null & ~nan
    if present.any():
        _, codes[present] = np.unique(values[present], return_inverse=True)
    codes[nan] = -2
    return codes


def _summed_confusion(rows: _Rows) -> _Rows:
    """``SELECT run_id, rank, step, epoch, split, true_class, pred_class, sum(count)::BIGINT ... GROUP BY ALL``:
    one row per cell (NULLs group together, and NaN with NaN), in first-seen order; a cell whose counts are all
    null sums to null."""
    keys = ("run_id", "rank", "step", "epoch", "split", "true_class", "pred_class")
    length = len(rows["step"].values)
    if length == 0:
        return {**{name: rows[name] for name in keys}, "count": rows["count"]}
    codes = np.stack([_group_codes(rows[name]) for name in keys], axis=1)  # (rows, keys)
    _, first, cell_of = np.unique(codes, axis=0, return_index=True, return_inverse=True)
    cell_of = cell_of.reshape(-1)
    # Cells in first-seen order: renumber so that cell k is the k-th to appear.
    seen_order = np.argsort(first, kind="stable")
    rank_of_cell = np.empty(len(first), dtype=np.int64)
    rank_of_cell[seen_order] = np.arange(len(first))
    cell_of = rank_of_cell[cell_of]
    grouped = _take({name: rows[name] for name in keys}, first[seen_order])
    count = rows["count"]
    counted = ~count.null
    total = np.zeros(len(first), dtype=np.int64)
    np.add.at(total, cell_of[counted], count.values[counted].astype(np.int64))
    has_count = np.zeros(len(first), dtype=bool)
    has_count[cell_of[counted]] = True
    grouped["count"] = _Column(total, ~has_count)
    return grouped


def _output(rows: _Rows, columns: Sequence[str]) -> Table:
    return Table({name: rows[name].output() for name in columns})


def _read_tables(files: StoreFiles, run_id: str) -> dict[str, Table]:
    segments = {table: files.segments(run_id, table) for table in TABLES}
    parts = {table: [_read_file(path, info, table) for path, info in segments[table]] for table in TABLES}
    bounds = _attempt_bounds(_first_steps(segments["scalars"], parts["scalars"]))
    rows = {table: _resolve(_concatenate(parts[table], table), bounds) for table in TABLES}

    scalars = rows["scalars"]
    rank = scalars["rank"]
    scalars = _take(scalars, np.flatnonzero(~rank.null & (rank.values == 0)))
    scalars = _ordered(scalars, [("run_id", False), ("split", False), ("name", False), ("layer", True),
                                 ("step", False)])
    confusion = _summed_confusion(rows["confusion"])
    confusion = _ordered(confusion, [("run_id", False), ("split", False), ("step", False), ("true_class", False),
                                     ("pred_class", False)])
    events = _ordered(rows["events"], [("run_id", False), ("wall_time", False), ("step", False)])
    return {"scalars": _output(scalars, SCALARS_QUERY_COLUMNS),
            "confusion": _output(confusion, CONFUSION_QUERY_COLUMNS),
            "events": _output(events, EVENTS_QUERY_COLUMNS)}


def run_tables(files: StoreFiles, run_id: str) -> dict[str, Table]:
    """One run's rows as the DuckDB views give them, read with pyarrow (module doc).

    Args:
        files: the store (a :class:`StoreFiles`, or a :class:`~traindoctor.store.reader.Store`).
        run_id: the run's id.

    Returns:
        ``{"scalars": rank 0's rows (SCALARS_QUERY_COLUMNS) ordered by split, name, layer (nulls
        first), step; "confusion": counts summed per (rank, step, epoch, split, true_class,
        pred_class) cell, every rank (CONFUSION_QUERY_COLUMNS), ordered by split, step, true_class,
        pred_class; "events": every rank's (EVENTS_QUERY_COLUMNS) ordered by wall_time (Unix seconds),
        step}``; steps are optimizer steps. Rows that tie on the order keep the files' order.

    Raises:
        UnknownRunError: no run folder with a run.json has that id.
        StoreError: the run's files kept changing (compaction) or failing through every retry.
    """
    files.sync([run_id])
    files.checked_id(run_id)
    last_error: Exception | None = None
    for _ in range(MAX_READ_RETRIES):
        try:
            return _read_tables(files, run_id)
        except VanishedFile as error:  # compaction removed a piece after the listing: list again
            last_error = error
        except _UnreadableFile as error:
            last_error = error
            if os.path.exists(error.path):
                files.mark_bad(error.path, error.reason)
        time.sleep(0.01)
    raise StoreError(f"reading run {run_id} kept failing while files changed: {last_error}")
