"""Import a tidy CSV: one value per row, columns step,split,name,value[,epoch,layer,wall_time].

Example file::

    step,split,name,value,layer
    1,train,loss,2.31,
    1,train,lr,0.1,group0
    50,val,accuracy,0.42,

A file with none of the columns split, name and value has a column per
metric (``epoch,train_loss,val_loss``, as ``DataFrame.to_csv`` writes a
history): each row is a record read as ``import jsonl`` reads one (its step
from a step column, ``step``, ``global_step``, ``iter`` …, else the row's
number; ``epoch`` the epoch column; names mapped through
:mod:`store.importers.names`); an empty cell is nothing logged, and a cell
that is not a number is left out and counted in one warning.

Values ``nan``, ``inf`` and ``-inf`` (and empty cells) are kept as NaN/±Inf.
Steps are whole numbers within int64 (``2.0`` and ``1e3``, as pandas writes a
float column, are 2 and 1000); a repeated (step, split, name, layer) keeps its last
row (the import rules of :mod:`traindoctor.store.importers.common`).
"""

from __future__ import annotations

import codecs
import csv
import math
import re
from pathlib import Path

import numpy as np

from traindoctor.store.errors import StoreError
from traindoctor.store.importers.common import (
    ImportInputError, ParsedRun, Progress, RunSource, Series, quoted, series_from_columns, whole_step,
)
from traindoctor.store.importers.names import MetricKey

REQUIRED_COLUMNS = ("step", "split", "name", "value")
OPTIONAL_COLUMNS = ("epoch", "layer", "wall_time")
_CONVERSION_ERROR = re.compile(r"CSV column #(\d+): CSV conversion error to (\w+): invalid value '(.*)'")


def discover(path: Path, run_name: str | None) -> list[RunSource]:
    if path.is_dir():
        raise StoreError(f"{path} is a folder: import csv takes one CSV file")
    return [RunSource(name=run_name or path.stem, path=path, files=[path])]


def _column_types(step_as_text: bool = False) -> dict:
    import pyarrow as pa

    numbers = {"step": pa.string() if step_as_text else pa.int64(), "value": pa.float64(), "epoch": pa.float64(), "wall_time": pa.float64()}
    # The text columns dictionary-encoded as they are parsed (their codes need no pyarrow.compute, 0.1 s to import).
    words = pa.dictionary(pa.int32(), pa.string())
    return {**numbers, "split": words, "name": words, "layer": words}


def _read(path: Path):
    """The file as an Arrow table (pyarrow's multi-threaded CSV reader).

    The file is opened by Python and handed over: pyarrow takes a path as
    UTF-8 and cannot open a name that is not. Steps that are not int64
    literals (``2.0``, ``1e3``, a step beyond int64) are read again as text
    and checked one by one in :func:`parse` (the common import rules).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # Header names stripped (`step ,split` from a hand-edited file): the columns are found by name.
    names = _header(path)
    read_options = pacsv.ReadOptions(column_names=names, skip_rows=1) if names else None

    def read(step_as_text: bool):
        with open(path, "rb") as handle:
            return pacsv.read_csv(handle, read_options=read_options,
                                  convert_options=pacsv.ConvertOptions(column_types=_column_types(step_as_text)))

    try:
        try:
            table = read(step_as_text=False)
        except pa.ArrowInvalid as error:
            conversion = _CONVERSION_ERROR.search(str(error).strip().splitlines()[0])
            if not (conversion and conversion.group(2) == "int64"
                    and _column_name(path, int(conversion.group(1))) == "step"):
                raise
            table = read(step_as_text=True)
    except OSError as error:
        raise StoreError(f"unreadable file {path}: {error.strerror or error}") from None
    except pa.ArrowInvalid as error:
        message = str(error).strip().splitlines()[0]
        conversion = _CONVERSION_ERROR.search(message)
        if conversion:
            raise StoreError(_conversion_message(path, int(conversion.group(1)), conversion.group(3))) from None
        raise StoreError(f"unreadable CSV {path}: {message}") from None
    repeated = sorted({name for name in table.column_names if table.column_names.count(name) > 1})
    if repeated:
        raise ImportInputError(f"column {repeated[0]!r} appears more than once in {path}")
    return table


def _header(path: Path) -> list[str]:
    """The header row's column names, stripped of surrounding spaces ([] for an empty or unreadable file).

    ``utf-8-sig`` drops the byte-order mark Excel's "CSV UTF-8" writes first
    (pyarrow drops it too, but these names replace pyarrow's).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
            return [name.strip() for name in next(csv.reader(handle), [])]
    except OSError:
        return []


def _what_the_header_holds(names: list[str]) -> str:
    """Why a required column is missing, from the header: other separators, or a column per metric."""
    if len(names) == 1 and any(separator in names[0] for separator in ";\t|"):
        return f"its header reads as one column {quoted(names[0])}: import csv reads comma-separated files"
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"its columns are {shown}: import csv reads a tidy file, one value a row, with columns step,split,name,value"


def _column_name(path: Path, column_index: int) -> str:
    header = _header(path)
    return header[column_index] if column_index < len(header) else ""


def _steps_from_text(texts: list[str], path: Path) -> np.ndarray:
    """Steps read as text: each an int literal, else a float that is a whole number; within int64."""
    steps = np.empty(len(texts), dtype=np.int64)
    for row, text in enumerate(texts, start=1):
        try:
            number: int | float = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = math.nan
        try:
            steps[row - 1] = whole_step(number, path)
        except ImportInputError:
            within = " within int64" if math.isfinite(number) and float(number).is_integer() else ""
            raise StoreError(f"column 'step' in {path} needs whole numbers{within}, got {quoted(text)} (data row {row})") from None
    return steps


def _conversion_message(path: Path, column_index: int, value: str) -> str:
    """Name the column, the value and its data row (read again as text: only on this error path)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    column = _column_name(path, column_index)
    with open(path, "rb") as handle:
        text = pacsv.read_csv(handle, convert_options=pacsv.ConvertOptions(
            column_types={column: pa.string()}, include_columns=[column])).column(0).to_pylist()
    row = text.index(value) + 1 if value in text else None
    where = f" (data row {row})" if row else ""
    if column == "step":
        return f"column 'step' in {path} needs whole numbers, got {quoted(value)}{where}"
    return f"column {column!r} in {path} has a non-numeric value {quoted(value)}{where}"


def _codes(column) -> tuple[np.ndarray, list]:
    """Codes (-1 for null) and the distinct values, in order of first appearance, of a text column read
    dictionary-encoded: each chunk has its own dictionary, merged here."""
    from traindoctor.store.arrow_numpy import to_numpy

    words: dict[str, int] = {}
    parts = []
    for chunk in column.chunks:
        # The chunk's codes -> the column's (its last entry, -1, for a null).
        merged = np.array([words.setdefault(word, len(words)) for word in chunk.dictionary.to_pylist()] + [-1],
                          dtype=np.int64)
        indices = to_numpy(chunk.indices)  # float64 with NaN where null
        indices = np.where(np.isnan(indices), -1, indices) if indices.dtype.kind == "f" else indices
        parts.append(merged[indices.astype(np.int64)])
    return (np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)), list(words)


def _floats(table, column: str) -> np.ndarray | None:
    """A float column with nulls (empty cells, "nan") as NaN; None when the file lacks it."""
    if column not in table.column_names:
        return None
    from traindoctor.store.arrow_numpy import to_numpy

    return to_numpy(table.column(column)).astype(np.float64)


def _cell(text: str) -> int | float | str:
    """A wide file's cell as a JSONL value would be: an int or float literal as that number, else the text."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _parse_wide(source: RunSource, progress: Progress, header: list[str]) -> ParsedRun:
    """A file with a column per metric, row by row (see the module doc)."""
    from traindoctor.store.importers.jsonl import columns_from_records

    path = source.path
    if len(set(header)) < len(header):
        repeated = sorted({name for name in header if header.count(name) > 1})
        raise ImportInputError(f"column {repeated[0]!r} appears more than once in {path}")

    def records():
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
            rows = csv.reader(handle)
            next(rows, None)
            for number, row in enumerate(rows, start=1):
                if len(row) > len(header):
                    raise ImportInputError(f"{path} data row {number} has {len(row)} cells, the header {len(header)}")
                yield ({name: _cell(text.strip()) for name, text in zip(header, row) if text.strip()},
                       f"{path} data row {number}")

    try:
        columns, left_out, numbered = columns_from_records(records())
    except csv.Error as error:
        raise ImportInputError(f"unreadable CSV {path}: {error}") from None
    progress.update(path.stat().st_size)
    return ParsedRun(source=source, series=series_from_columns(columns.arrays()), env={"logger": "csv"},
                     left_out=left_out,
                     extra_source={"steps": "row numbers: no column holds a step" if numbered else "logged",
                                   "layout": "a column per metric"})


# Bytes of a file's start searched for a NUL: a CSV never holds one, binary files almost always do.
_BINARY_SNIFF_BYTES = 65536


def _refuse_binary(path: Path) -> None:
    """Stop at a file that is no UTF-8 text before the CSV reader quotes its bytes in an error.

    Raises:
        ImportInputError: the file starts with a UTF-16 byte-order mark (Excel's "Unicode Text"),
            or holds a NUL byte in its first 64 KiB (a checkpoint, a database, a gzipped CSV).
    """
    try:
        with open(path, "rb") as handle:
            start = handle.read(_BINARY_SNIFF_BYTES)
    except OSError:
        return  # the reader names the error
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportInputError(f"{path} is UTF-16 text: import csv reads UTF-8 (save it as CSV UTF-8)")
    if b"\x00" in start:
        hint = " (gzip: decompress it first)" if start.startswith(b"\x1f\x8b") else ""
        raise ImportInputError(f"{path} is a binary file, not a CSV{hint}")


def parse(source: RunSource, progress: Progress) -> ParsedRun:
    import pyarrow as pa

    from traindoctor.store.arrow_numpy import to_numpy

    path = source.path
    _refuse_binary(path)
    header = _header(path)
    if len(header) > 1 and not set(header) & set(REQUIRED_COLUMNS[1:]):
        return _parse_wide(source, progress, header)
    table = _read(path)
    for column in REQUIRED_COLUMNS:
        if column not in table.column_names:
            raise StoreError(f"missing column {column!r} in {path}; {_what_the_header_holds(table.column_names)}")
    if table.num_rows == 0:
        raise StoreError(f"{path} has no data rows")
    if table.column("step").null_count:
        row = np.flatnonzero(to_numpy(table.column("step").is_null()))[0] + 1
        raise StoreError(f"column 'step' in {path} needs whole numbers, got '' (data row {row})")
    steps = table.column("step").combine_chunks()
    if pa.types.is_string(steps.type):
        steps = _steps_from_text([text.strip() for text in steps.to_pylist()], path)
    else:
        steps = to_numpy(steps)
    split_codes, splits = _codes(table.column("split"))
    name_codes, names = _codes(table.column("name"))
    for column, codes, values in (("split", split_codes, splits), ("name", name_codes, names)):
        empty = np.isin(codes, [-1] + [i for i, v in enumerate(values) if not v.strip()])
        if empty.any():
            raise StoreError(f"column {column!r} in {path} is empty in data row {int(empty.argmax()) + 1}")
    if "layer" in table.column_names:
        layer_codes, layers = _codes(table.column("layer"))
        blank = [i for i, v in enumerate(layers) if not v.strip()]
        layer_codes[np.isin(layer_codes, blank)] = -1  # an empty cell is a global value
    else:
        layer_codes, layers = np.full(len(steps), -1, dtype=np.int64), []
    values, epochs, wall_times = (_floats(table, c) for c in ("value", "epoch", "wall_time"))

    # One add_scalars call per (split, name, layer) group, steps sorted within
    # it: a sort and a split of column arrays, no per-row Python.
    group = (split_codes * len(names) + name_codes) * (len(layers) + 1) + layer_codes + 1
    order = np.lexsort((steps, group))
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    series = []
    for rows in np.split(order, bounds):
        first = rows[0]
        layer = layers[layer_codes[first]].strip() if layer_codes[first] >= 0 else None
        series.append(
            Series(
                key=MetricKey(splits[split_codes[first]].strip(), names[name_codes[first]].strip(), layer),
                step=steps[rows],
                value=values[rows],
                epoch=None if epochs is None else epochs[rows],
                wall_time=None if wall_times is None else wall_times[rows],
            )
        )
    progress.update(path.stat().st_size)
    return ParsedRun(source=source, series=series)
