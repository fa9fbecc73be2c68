"""Import a tidy CSV: one value per row, columns step,split,name,value[,epoch,layer,wall_time].

Example file::

    step,split,name,value,layer
    1,train,loss,2.31,
    1,train,lr,0.1,group0
    50,val,accuracy,0.42,

Values ``nan``, ``inf`` and ``-inf`` (and empty cells) are kept as NaN/±Inf.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from store.importers.common import ParsedRun, Progress, RunSource, Series
from store.importers.names import MetricKey
from store.segments import StoreError

REQUIRED_COLUMNS = ("step", "split", "name", "value")
OPTIONAL_COLUMNS = ("epoch", "layer", "wall_time")


def discover(path: Path, run_name: str | None) -> list[RunSource]:
    if path.is_dir():
        raise StoreError(f"{path} is a folder: import csv takes one CSV file")
    if not path.exists():
        raise StoreError(f"unreadable file {path}: no such file")
    return [RunSource(name=run_name or path.stem, path=path, files=[path])]


def _read(path: Path) -> pd.DataFrame:
    try:
        # Strings for the text columns, so a metric named "nan" or "1e3" stays text.
        frame = pd.read_csv(
            path, dtype={"split": str, "name": str, "layer": str}, keep_default_na=False,
            na_values={"value": ["", "nan", "NaN", "NAN"], "epoch": [""], "wall_time": [""], "step": [""]},
            low_memory=False,
        )
    except (OSError, UnicodeDecodeError) as error:
        raise StoreError(f"unreadable file {path}: {error}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StoreError(f"unreadable CSV {path}: {message}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _numeric_column(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    numbers = pd.to_numeric(frame[column], errors="coerce")
    text = frame[column].astype(object).where(frame[column].notna(), "").astype(str).str.strip()
    bad = numbers.isna() & ~text.str.lower().isin(["", "nan"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise StoreError(f"column {column!r} in {path} has a non-numeric value {text.iloc[row]!r} (data row {row + 1})")
    return numbers.to_numpy(dtype=np.float64)


def parse(source: RunSource, progress: Progress) -> ParsedRun:
    path = source.path
    frame = _read(path)
    for column in REQUIRED_COLUMNS:
        if column not in frame.columns:
            raise StoreError(f"missing column {column!r} in {path}")
    if frame.empty:
        raise StoreError(f"{path} has no data rows")
    steps = _numeric_column(frame, "step", path)
    bad_steps = ~np.isfinite(steps) | (steps != np.round(steps))
    if bad_steps.any():
        row = int(np.flatnonzero(bad_steps)[0])
        raise StoreError(f"column 'step' in {path} needs whole numbers, got {str(frame['step'].iloc[row])!r} (data row {row + 1})")
    for column in ("split", "name"):
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            raise StoreError(f"column {column!r} in {path} is empty in data row {int(np.flatnonzero(empty.to_numpy())[0]) + 1}")

    columns = pd.DataFrame({
        "step": steps.astype(np.int64),
        "split": frame["split"].astype(str).str.strip(),
        "name": frame["name"].astype(str).str.strip(),
        "layer": frame["layer"].astype(str).str.strip().replace("", None) if "layer" in frame.columns else None,
        "value": _numeric_column(frame, "value", path),
    })
    for column in ("epoch", "wall_time"):
        if column in frame.columns:
            columns[column] = _numeric_column(frame, column, path)

    series = []
    # One add_scalars call per (split, name, layer) group: column arrays, no per-row Python.
    for (split, name, layer), group in columns.groupby(["split", "name", "layer"], sort=True, dropna=False):
        group = group.sort_values("step", kind="stable")
        series.append(
            Series(
                key=MetricKey(split, name, None if pd.isna(layer) else layer),
                step=group["step"].to_numpy(),
                value=group["value"].to_numpy(),
                epoch=group["epoch"].to_numpy() if "epoch" in group else None,
                wall_time=group["wall_time"].to_numpy() if "wall_time" in group else None,
            )
        )
    progress.update(path.stat().st_size)
    return ParsedRun(source=source, series=series)
