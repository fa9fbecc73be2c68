"""What every importer shares: parsed runs, source fingerprints, safe writing.

An import has three phases so that bad input never touches the store:

1. *discover*: the importer lists the runs in the input (``RunSource``), each
   with the files it reads; each gets a fingerprint (kind, resolved path,
   sizes and a SHA-256 of the contents).
2. *parse*: sources whose fingerprint is already in the store are skipped;
   the rest are read and validated fully in memory (``ParsedRun``). Any
   problem raises ``StoreError`` before anything is written.
3. *write*: each run is written by a ``RunWriter`` into a hidden folder of the
   store (``.import-*``, which readers ignore) and renamed into place. A
   failure part-way (a full disk) removes what this import wrote and puts
   back any earlier import it was replacing; the store is as it was.

Re-importing a source: the same kind and path with the same contents is
skipped; changed contents (a log that grew, a file rewritten) replace the
earlier import under the same run_id, so links and comparisons keep working
and no stale rows survive.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from traindoctor.store.importers.names import EPOCH, MetricKey, map_metrics
from traindoctor.store.segments import RunWriter, StoreError, new_run_id, read_run_json

_HASH_CHUNK_BYTES = 1 << 20
_STAGING_PREFIXES = (".import-", ".replaced-")
# A staging folder older than this is left by an import that was killed, never
# one in progress (a 100,000-step log imports in seconds).
_STALE_STAGING_S = 3600.0


@dataclass(frozen=True)
class ImportResult:
    """One run an import produced or found already there."""

    run_id: str
    name: str
    rows: int
    skipped: bool
    source: str


@dataclass
class RunSource:
    """One run to import: its name, the path that identifies it, the files it reads.

    A run that is not files on this machine (an MLflow run behind a tracking
    server or in a database shared by many runs) is identified by ``identity``
    (a string) and ``digest`` (what its contents were when listed, so that an
    unchanged run is skipped); ``handle`` is whatever the importer's ``parse``
    needs to read it, and ``size`` the amount of work for the progress bar.
    """

    name: str
    path: Path
    files: list[Path]
    identity: str | None = None
    digest: str | None = None
    handle: Any = None
    size: int = 0

    @property
    def where(self) -> str:
        """The source as a user would name it in a message."""
        return self.identity or str(self.path)


@dataclass
class Series:
    """One (split, name, layer) series as column arrays, ready for ``RunWriter.add_scalars``."""

    key: MetricKey
    step: np.ndarray
    value: np.ndarray
    epoch: np.ndarray | None = None
    wall_time: np.ndarray | None = None


@dataclass
class ParsedRun:
    """A run read and validated in memory, not yet written."""

    source: RunSource
    series: list[Series] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    extra_source: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(len(s.step) for s in self.series)


class Progress:
    """A tqdm bar on stderr when wanted, a no-op otherwise (tqdm is optional)."""

    def __init__(self, enabled: bool | None, total: int, description: str, unit: str = "B") -> None:
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._bar = None
        self._positions: dict[Any, int] = {}
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:  # the bar is a nicety; the import works without it
                return
            self._bar = tqdm(total=total, desc=description, unit=unit, unit_scale=True, leave=False, file=sys.stderr)

    def update(self, amount: int) -> None:
        if self._bar is not None:
            self._bar.update(amount)

    def advance(self, key: Any, position: int) -> None:
        """Report that ``key`` (a file) has been read up to byte ``position``."""
        self.update(position - self._positions.get(key, 0))
        self._positions[key] = position

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def fingerprint(kind: str, source: RunSource) -> dict[str, Any]:
    """Identify a source by kind, resolved path and contents (size and SHA-256 of its files)."""
    if source.digest is not None:
        return {"kind": kind, "path": source.identity or str(source.path), "files": [], "size": source.size,
                "sha256": source.digest}
    digest = hashlib.sha256()
    size = 0
    for file in source.files:
        relative = os.path.relpath(file, source.path) if source.path.is_dir() else file.name
        digest.update(relative.encode("utf-8", "surrogateescape") + b"\0")
        try:
            with open(file, "rb") as handle:
                while chunk := handle.read(_HASH_CHUNK_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as error:
            raise StoreError(f"unreadable file {file}: {error.strerror or error}") from None
        digest.update(b"\0")
    return {
        "kind": kind,
        "path": str(source.path.resolve()),
        "files": [str(f.resolve()) for f in source.files],
        "size": size,
        "sha256": digest.hexdigest(),
    }


def _imported_sources(store_root: Path) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(kind, path) → (run_id, run.json) for every imported run in the store."""
    found: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    if not store_root.is_dir():
        return found
    for entry in sorted(os.scandir(store_root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            meta = read_run_json(Path(entry.path))
        except (OSError, ValueError):
            continue
        source = meta.get("source")
        if isinstance(source, dict) and "kind" in source and "path" in source:
            found[(source["kind"], source["path"])] = (entry.name, meta)
    return found


def series_from_columns(
    columns: Mapping[str | MetricKey, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    *,
    epoch_steps: np.ndarray | None = None,
    epoch_values: np.ndarray | None = None,
) -> list[Series]:
    """Turn tag → (steps, values, wall_times) into contract series.

    Tags are mapped with :func:`map_metrics` (a ``MetricKey`` key is taken as
    it is); the epoch tag becomes the epoch column of every series (the last
    epoch logged at or before each step).
    """
    mapping: dict[Any, MetricKey] = map_metrics(tag for tag in columns if isinstance(tag, str))
    mapping.update({key: key for key in columns if isinstance(key, MetricKey)})
    if epoch_steps is None:
        epoch_tags = [tag for tag, key in mapping.items() if key is EPOCH]
        if epoch_tags:
            epoch_steps, epoch_values, _ = columns[epoch_tags[0]]
    series = []
    for tag, (steps, values, wall_times) in columns.items():
        key = mapping[tag]
        if key is EPOCH or len(steps) == 0:
            continue
        order = np.argsort(steps, kind="stable")
        steps = np.asarray(steps, dtype=np.int64)[order]
        epochs = None
        if epoch_steps is not None and len(epoch_steps):
            epochs = epoch_at(steps, epoch_steps, epoch_values)
        series.append(
            Series(
                key=key,
                step=steps,
                value=np.asarray(values, dtype=np.float64)[order],
                epoch=epochs,
                wall_time=None if wall_times is None else np.asarray(wall_times, dtype=np.float64)[order],
            )
        )
    series.sort(key=lambda s: (s.key.name, s.key.layer or "", s.key.split))
    return series


def last_per_step(steps: np.ndarray, *columns: np.ndarray | None) -> tuple:
    """Keep the last row of each step (in the given order), for logs that repeat a value at one step."""
    steps = np.asarray(steps)
    last = np.sort(len(steps) - 1 - np.unique(steps[::-1], return_index=True)[1])
    return (steps[last], *(None if c is None else np.asarray(c)[last] for c in columns))


def epoch_at(steps: np.ndarray, epoch_steps: np.ndarray, epoch_values: np.ndarray) -> np.ndarray:
    """The epoch logged last at or before each step (NaN before the first one)."""
    order = np.argsort(epoch_steps, kind="stable")
    known_steps = np.asarray(epoch_steps, dtype=np.int64)[order]
    known_values = np.asarray(epoch_values, dtype=np.float64)[order]
    position = np.searchsorted(known_steps, steps, side="right") - 1
    epochs = known_values[np.clip(position, 0, None)]
    epochs[position < 0] = np.nan
    return epochs


_INT64_MAX = np.iinfo(np.int64).max


def is_number(value: Any) -> bool:
    """A JSON or Python number (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_step(value: Any, where: str) -> int:
    """A logged step as the store's int64 step, or a one-line error for what cannot be one.

    Floats are accepted when they are whole (JSON writers print ``100.0``);
    a fractional, negative-overflowing or non-finite step is refused rather
    than rounded, since a silently moved point misplaces a finding.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise StoreError(f"{where}: step {value!r} is not a number")
    if isinstance(value, (float, np.floating)) and (not math.isfinite(value) or value != int(value)):
        raise StoreError(f"{where}: step {value!r} is not a whole number")
    if not -_INT64_MAX <= value <= _INT64_MAX:
        raise StoreError(f"{where}: step {value!r} does not fit in 64 bits")
    return int(value)


def flatten(record: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(key, value) pairs of a nested mapping, nested keys joined with ``/``.

    ``{"train": {"loss": 1.0}}`` gives ``("train/loss", 1.0)``: the split is a
    prefix the shared name table already reads.
    """
    for key, value in record.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from flatten(value, name)
        else:
            yield name, value


class Columns:
    """Points gathered one at a time, by tag: what record-by-record readers (JSONL,
    terminal logs, W&B histories, MLflow) hand to :func:`series_from_columns`."""

    def __init__(self) -> None:
        self._points: dict[Any, tuple[list[int], list[float], list[float]]] = {}

    def add(self, tag: Any, step: int, value: float, wall_time: float = math.nan) -> None:
        steps, values, walls = self.lists(tag)
        steps.append(step)
        values.append(value)
        walls.append(wall_time)

    def lists(self, tag: Any) -> tuple[list[int], list[float], list[float]]:
        """The (steps, values, wall times) lists of ``tag``, for a reader that appends to them itself
        (a method call per value is a third of the cost of the fastest readers)."""
        points = self._points.get(tag)
        if points is None:
            points = self._points[tag] = ([], [], [])
        return points

    def __len__(self) -> int:
        return sum(len(points[0]) for points in self._points.values())

    def __contains__(self, tag: Any) -> bool:
        return tag in self._points

    def arrays(self) -> dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """tag → (steps int64, values float64, wall times in Unix seconds or None when none was logged)."""
        arrays = {}
        for tag, (steps, values, walls) in self._points.items():
            if not steps:
                continue
            wall = np.array(walls, dtype=np.float64)
            arrays[tag] = (np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64),
                           None if np.isnan(wall).all() else wall)
        return arrays


def logging_every(series: Sequence[Series]) -> int | None:
    """The logging cadence: the commonest step gap of the training loss (else of the
    longest global training series), or None with fewer than two points."""
    candidates = [s for s in series if s.key.split == "train" and s.key.layer is None and len(s.step) > 1]
    if not candidates:
        return None
    losses = [s for s in candidates if s.key.name == "loss"]
    chosen = losses[0] if losses else max(candidates, key=lambda s: len(s.step))
    gaps = np.diff(np.unique(chosen.step))
    if not len(gaps):
        return None
    values, counts = np.unique(gaps, return_counts=True)
    return int(values[np.argmax(counts)])


def import_runs(
    kind: str,
    store_root: str | os.PathLike,
    sources: Sequence[RunSource],
    parse: Callable[[RunSource, Progress], ParsedRun],
    *,
    root: Path | str,
    num_classes: int | None = None,
    progress: bool | None = None,
    progress_unit: str = "B",
) -> list[ImportResult]:
    """Skip known sources, parse the rest (all before writing any), then write them."""
    store_root = Path(store_root)
    known = _imported_sources(store_root)
    results: list[ImportResult | None] = []
    pending: list[tuple[int, RunSource, dict[str, Any], str | None]] = []
    for source in sources:
        print_ = fingerprint(kind, source)
        previous = known.get((kind, print_["path"]))
        if previous is not None and previous[1]["source"].get("sha256") == print_["sha256"]:
            run_id, meta = previous
            rows = int(meta["source"].get("rows", 0))
            results.append(ImportResult(run_id, meta.get("name") or run_id, rows, True, print_["path"]))
            continue
        pending.append((len(results), source, print_, previous[0] if previous else None))
        results.append(None)

    parsed: list[tuple[int, dict[str, Any], str | None, ParsedRun]] = []
    total = sum(print_["size"] for _, _, print_, _ in pending)
    with Progress(progress, total, f"import {kind}", unit=progress_unit) as bar:
        for index, source, print_, replaces in pending:
            run = parse(source, bar)
            if run.rows == 0:
                warnings.warn(f"{source.where}: no scalar values, not imported", RuntimeWarning, stacklevel=3)
                continue
            parsed.append((index, print_, replaces, run))
    if pending and not parsed and len(pending) == len(results):
        raise StoreError(f"no scalar values found in {root}")

    _remove_stale_staging(store_root)
    publication = _Publication()
    try:
        for index, print_, replaces, run in parsed:
            if num_classes is not None:
                run.task["num_classes"] = int(num_classes)
            source_meta = {**print_, **run.extra_source, "rows": run.rows}
            every = logging_every(run.series)
            if every is not None:
                source_meta.setdefault("logging_every", every)
            run_id = write_run(store_root, run, source_meta, replaces=replaces, publication=publication)
            results[index] = ImportResult(run_id, run.source.name, run.rows, False, print_["path"])
    except OSError as error:
        publication.rollback()
        raise StoreError(f"cannot write into store {store_root}: {error.strerror or error}") from None
    except BaseException:
        publication.rollback()
        raise
    publication.commit()
    return [r for r in results if r is not None]


class _Publication:
    """What one import changed in the store, so a failure part-way can undo all of it."""

    def __init__(self) -> None:
        self.created: list[Path] = []
        self.replaced: list[tuple[Path, Path]] = []  # (run folder, the earlier import moved aside)

    def rollback(self) -> None:
        for folder in self.created:
            shutil.rmtree(folder, ignore_errors=True)
        for folder, aside in self.replaced:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(aside, folder)

    def commit(self) -> None:
        for _, aside in self.replaced:
            shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_staging(store_root: Path) -> None:
    if not store_root.is_dir():
        return
    now = time.time()
    for entry in os.scandir(store_root):
        if entry.name.startswith(_STAGING_PREFIXES) and entry.is_dir():
            try:
                if now - entry.stat().st_mtime > _STALE_STAGING_S:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                continue


def write_run(
    store_root: Path, run: ParsedRun, source_meta: dict[str, Any], *, replaces: str | None, publication: _Publication,
) -> str:
    """Write ``run`` into the store; with ``replaces``, in place of that earlier import.

    The run is built in ``<store>/.import-<token>/<run_id>`` (readers skip
    dot-folders) and renamed into place, so the store never shows half a run.
    An earlier import it replaces is moved aside (``.replaced-*``) until the
    whole import succeeds (``publication``).
    """
    run_id = replaces or new_run_id()
    staging = store_root / f".import-{secrets.token_hex(4)}"
    try:
        writer = RunWriter(
            staging, run_id=run_id, name=run.source.name, config=run.config, env=run.env,
            task=run.task, source=source_meta, background=False,
        )
        for series in run.series:
            writer.add_scalars(
                step=series.step, value=series.value, split=series.key.split, name=series.key.name,
                layer=series.key.layer, epoch=series.epoch,
                wall_time=np.nan if series.wall_time is None else series.wall_time,
            )
        for step, detail in _nan_loss_events(run.series):
            writer.add_event("nan_loss", detail, step=step)
        # flush() raises on a full disk; close() would only record the error
        # (the probe's rule: never take training down), and the import must fail.
        writer.flush()
        writer.close("finished")
        if writer.errors:
            raise OSError(writer.errors[0])
        final = store_root / run_id
        if replaces is not None and final.exists():
            aside = store_root / f".replaced-{run_id}-{secrets.token_hex(4)}"
            os.replace(final, aside)
            publication.replaced.append((final, aside))
        else:
            publication.created.append(final)
        os.replace(staging / run_id, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return run_id


def _nan_loss_events(series: Sequence[Series]) -> Iterator[tuple[int, str]]:
    """A ``nan_loss`` event at the first non-finite training loss, as the probe records it."""
    for item in series:
        if item.key.split == "train" and item.key.name == "loss" and item.key.layer is None:
            bad = np.flatnonzero(~np.isfinite(item.value))
            if len(bad):
                step = int(item.step[bad[0]])
                yield step, f"training loss was {item.value[bad[0]]} at step {step} (imported)"
