"""What every importer shares: parsed runs, the import rules, source fingerprints, safe writing.

An import has three phases so that bad input never touches the store:

1. *discover*: the importer lists the runs in the input (``RunSource``), each
   with the files it reads; each gets a fingerprint (kind, resolved path,
   sizes and a SHA-256 of the contents; for a run that is no files here, such
   as an MLflow run, its identity and a digest of what it holds).
2. *parse*: sources whose fingerprint is already in the store are skipped;
   the rest are read and validated fully in memory (``ParsedRun``), and the
   import rules below are applied to what each importer read. Any problem
   raises ``StoreError`` (``ImportInputError`` for bad input) with a one-line
   reason before anything is written.
3. *write*: each run is written by a ``RunWriter`` into a hidden folder of the
   store (``.import-*``, which readers ignore) and renamed into place. A
   failure part-way (a full disk) removes what this import wrote and puts
   back any earlier import it was replacing; the store is as it was.

Re-importing a source: the same kind and path with the same contents is
skipped; changed contents (a log that grew, a file rewritten) replace the
earlier import under the same run_id, so links and comparisons keep working
and no stale rows survive.

The import rules, the same for every importer (:func:`apply_rules` and the
helpers importers call while reading):

- **All or nothing.** A file that cannot be read, or holds what the store
  cannot represent, stops the import with a one-line error naming the file;
  side files (hyperparameters, a model's config.json) included. Any
  ``ValueError``, ``TypeError``, ``OverflowError`` or ``RecursionError``
  raised while reading untrusted input becomes such an error
  (:func:`reading_input`); while writing, the same errors are bugs and keep
  their traceback.
- **Steps** are whole numbers the store's int64 column holds
  (:func:`checked_steps`): a float step that is a whole number (``2.0``) is
  that number; a fraction, NaN, ±Inf, a step beyond int64 (also after an
  importer's offset, such as Lightning's +1) or text is an error, never
  truncated or wrapped.
- **Values** are float64. A number is kept as it is, NaN and ±Inf included
  (a number beyond float64's range reads as ±Inf, as every float parser
  does). In a column of numbers (CSV, Lightning's metrics.csv) text must
  read as a number (``"1.5"``, ``"nan"``, ``"-inf"``) or the import stops
  with an error. In typed logs (JSON: HF, JSONL, W&B), text that reads as a
  number is that number, and any other entry (a text field such as
  ``"mode": "train"``, true/false, a list, an object) is not a metric
  value: it is left out and named in one warning per run, never dropped
  without a word; ``null`` means nothing was logged (:func:`number_of`).
- **One value per (step, split, name, layer).** Where a source repeats a
  step, the last value in the source's order wins, as the store's newest
  attempt wins a step. Repeats of the same value go quietly; replaced values
  that differed are counted in one warning per run.
- **Names** (run, split, metric, layer, config text) are valid UTF-8: a name
  made from a file system path has its undecodable bytes replaced by U+FFFD
  (:func:`valid_text`), while the recorded source path keeps them as
  ``\\xNN`` escapes (:func:`path_text`), so two such folders stay two sources.
- **Configs** (config, env, task) become plain JSON data, bounded: at most
  :data:`MAX_CONFIG_VALUES` values, :data:`MAX_CONFIG_DEPTH` levels and
  :data:`MAX_CONFIG_BYTES` as JSON (:func:`plain_data`); YAML is read with
  at most :data:`MAX_YAML_ALIASES` aliases (:func:`load_yaml`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from traindoctor.store.errors import StoreError
from traindoctor.store.format import new_run_id, read_run_json
from traindoctor.store.importers.names import EPOCH, MetricKey, map_metrics
from traindoctor.store.segments import RunWriter

_HASH_CHUNK_BYTES = 1 << 20
_STAGING_PREFIXES = (".import-", ".replaced-")
# A staging folder older than this is left by an import that was killed, never
# one in progress (a 100,000-step log imports in seconds).
_STALE_STAGING_S = 3600.0

# The store's step column is int64.
STEP_MIN, STEP_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
# A run's config, env and task live in run.json, which every listing of the
# store reads again. A real HF training_args.json is ~150 values and ~8 KB and
# a large Hydra config a few thousand values; the bounds leave ~100x that,
# while the 236-byte YAML alias bomb of issue #18 expanded to 146 MB.
MAX_CONFIG_VALUES = 50_000
MAX_CONFIG_DEPTH = 32
MAX_CONFIG_BYTES = 1 << 20
# yaml.dump writes an alias for an object met twice, so a real file may hold
# a few; thousands only serve to multiply the file.
MAX_YAML_ALIASES = 1_000
# What reading hostile bytes raises in the standard library, numpy, pandas and
# pyarrow (json's JSONDecodeError, UnicodeError, pandas' ParserError and
# pyarrow's ArrowInvalid are ValueErrors). Caught around reading only.
PARSE_ERRORS = (ValueError, TypeError, OverflowError, RecursionError)
# Longest quote of an input value or error text in a one-line message.
_QUOTE_CHARS = 60
_REASON_CHARS = 200
_SURROGATE = re.compile("[\ud800-\udfff]")


class ImportInputError(StoreError):
    """Input an import cannot take, with a one-line reason naming the file; the store is unchanged."""


@dataclass(frozen=True)
class ImportResult:
    """One run an import produced or found already there; ``replaced``: it took the place of an
    earlier import of the same source, which had changed since (same run id)."""

    run_id: str
    name: str
    rows: int
    skipped: bool
    source: str
    replaced: bool = False


@dataclass
class RunSource:
    """One run to import: its name, the path that identifies it, the files it reads.

    A run that is not files on this machine (an MLflow run behind a tracking
    server or in a database shared by many runs) is identified by ``identity``
    (a string) and ``digest`` (what its contents were when listed, so that an
    unchanged run is skipped); ``handle`` is whatever the importer's ``parse``
    needs to read it, and ``size`` the amount of work for the progress bar.

    The name is made valid text here (it often comes from a folder name), so
    every importer's runs get names that any listing can print.
    """

    name: str
    path: Path
    files: list[Path]
    identity: str | None = None
    digest: str | None = None
    handle: Any = None
    size: int = 0

    @property
    def where(self) -> str | Path:
        """The source as a user would name it in a message: its identity, else its path."""
        return self.identity if self.identity is not None else self.path

    def __post_init__(self) -> None:
        self.name = valid_text(self.name)


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
    """A run read and validated in memory, not yet written.

    ``left_out`` names the entries a typed log held that are not numbers
    (``'eval_report' at step 8``); the import reports their count.
    """

    source: RunSource
    series: list[Series] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    extra_source: dict[str, Any] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)

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


def valid_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, so that it encodes as UTF-8.

    Python decodes a file name's undecodable bytes to lone surrogates
    (``os.fsdecode``, surrogateescape), one per byte, and JSON may spell one
    (``"\\udcff"``); neither can be written to Parquet or printed.

    Example:
        >>> valid_text(os.fsdecode(b"run-\\xff"))
        'run-\\ufffd'
    """
    return _SURROGATE.sub("\ufffd", text)


def path_text(path: str | os.PathLike) -> str:
    """A path as UTF-8 text that still tells paths apart: undecodable bytes as ``\\xNN``.

    Example:
        >>> path_text(os.fsdecode(b"/logs/run-\\xff"))
        '/logs/run-\\\\xff'
    """
    try:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file system name decodes to
        return valid_text(os.fspath(path))


def quoted(value: Any) -> str:
    """``repr(value)`` cut short for a one-line message."""
    text = valid_text(repr(value))
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 1] + "…"


def one_line(error: BaseException) -> str:
    """An exception's message on one line, cut short."""
    text = " ".join(valid_text(str(error)).split()) or type(error).__name__
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


@contextmanager
def reading_input(where: Any) -> Iterator[None]:
    """Turn a failure to parse untrusted input into a one-line ``ImportInputError`` naming ``where``.

    Wrap reading only, never writing: there the same exceptions are bugs or
    disk faults and must keep their traceback. The original exception stays
    the error's ``__cause__`` for callers of the Python API.
    """
    try:
        yield
    except RecursionError:
        # Raised by json (or yaml) on input nested thousands deep; its
        # traceback is thousands of frames, so it is not chained.
        raise ImportInputError(f"cannot read {where}: nested too deeply") from None
    except PARSE_ERRORS as error:
        raise ImportInputError(f"cannot read {where}: {type(error).__name__}: {one_line(error)}") from error


def whole_step(value: Any, where: Any, *, offset: int = 0) -> int:
    """One step as the store keeps it (``value + offset``), or ``ImportInputError``.

    Example:
        >>> whole_step(2.0, "log")
        2
        >>> whole_step(2.5, "log")
        Traceback (most recent call last):
        ...
        traindoctor.store.importers.common.ImportInputError: log: step 2.5 is not a whole number
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        reason = "is not a number"
    elif isinstance(value, float) and not value.is_integer():  # NaN and ±Inf too
        reason = "is not a whole number"
    else:
        step = int(value)
        if STEP_MIN <= step + offset <= STEP_MAX:
            return step + offset
        reason = "is beyond the store's steps (int64)"
        if STEP_MIN <= step <= STEP_MAX:
            reason += f" once {offset:+d} is added"
    raise ImportInputError(f"{where}: step {quoted(value)} {reason}")


def checked_steps(steps: Any, where: Any, *, offset: int = 0) -> np.ndarray:
    """Steps as int64 (``steps + offset``), each checked by :func:`whole_step`; vectorised."""
    raw = np.asarray(steps)
    if raw.ndim != 1:
        raw = raw.reshape(-1)
    kind = raw.dtype.kind
    if kind == "i":
        bad = raw > STEP_MAX - offset if offset > 0 else raw < STEP_MIN - offset
    elif kind == "u":
        bad = raw > np.uint64(STEP_MAX - max(offset, 0))
    elif kind == "f":
        # Floats below 2**63 are at most 2**63 - 1024: + offset stays in int64.
        bad = ~((raw == np.floor(raw)) & (raw >= -(2.0**63)) & (raw < 2.0**63))
    else:  # objects (Python numbers, text), booleans, strings: one at a time
        return np.array([whole_step(value, where, offset=offset) for value in raw.tolist()], dtype=np.int64)
    if bad.any():
        whole_step(raw[int(bad.argmax())], where, offset=offset)  # raises with the reason
    return raw.astype(np.int64) + np.int64(offset)


def number_of(value: Any, where: Any) -> float | None:
    """One value of a typed (JSON) log as float64; None for an entry that is not a number.

    A number is itself (beyond float64's range, ±Inf); text that reads as a
    number (``"1.5"``, ``"NaN"``) is that number. Other text (``"mode":
    "train"``, a note, a date), true/false, lists and objects are not metric
    values: the caller leaves them out and names them in one warning
    (``ParsedRun.left_out``), so nothing is dropped without a word and a
    typed log's text fields do not stop its import. Null is nothing logged.
    See the module doc.

    Example:
        >>> number_of("1.5", "log"), number_of(3, "log"), number_of([1, 2], "log"), number_of("train", "log")
        (1.5, 3.0, None, None)
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def plain_data(value: Any, where: Any) -> Any:
    """``value`` as plain JSON data within the config bounds, or ``ImportInputError``.

    Mapping keys become text (two keys that become the same text are an
    error), tuples and sets lists, dates ISO text, text valid UTF-8
    (:func:`valid_text`); other objects their ``repr``, as the run writer
    stores them. Shared or self-referencing objects (YAML aliases) count
    once per place they appear, so nothing expands past the bounds.
    """
    remaining = MAX_CONFIG_VALUES

    def plain(item: Any, depth: int) -> Any:
        nonlocal remaining
        remaining -= 1
        if remaining < 0:
            raise ImportInputError(
                f"{where}: more than {MAX_CONFIG_VALUES:,} values (aliases that multiply?); "
                "a run's config must stay small, every listing of the store reads it")
        if depth > MAX_CONFIG_DEPTH:
            raise ImportInputError(f"{where}: nested deeper than {MAX_CONFIG_DEPTH} levels")
        if isinstance(item, np.generic):
            item = item.item()
        if item is None or isinstance(item, (bool, int, float)):
            return item
        if isinstance(item, str):
            return valid_text(item)
        if isinstance(item, Mapping):
            result: dict[str, Any] = {}
            for key, member in item.items():
                text = valid_text(key) if isinstance(key, str) else plain(key, depth + 1)
                text = text if isinstance(text, str) else json.dumps(text, allow_nan=True)
                if text in result:
                    raise ImportInputError(f"{where}: key {quoted(text)} appears twice once keys are text")
                result[text] = plain(member, depth + 1)
            return result
        if isinstance(item, (set, frozenset)):
            return sorted((plain(member, depth + 1) for member in item), key=repr)
        if isinstance(item, (list, tuple)):
            return [plain(member, depth + 1) for member in item]
        if isinstance(item, (datetime.date, datetime.time)):
            return item.isoformat()
        return valid_text(repr(item))

    return plain(value, 0)


def load_json(path: Path, what: str) -> Any:
    """A JSON file's data, or ``ImportInputError`` saying ``path`` is not ``what``."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImportInputError(f"unreadable file {path}: {error.strerror or error}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ImportInputError(f"{path} is not {what} (not UTF-8 text)") from None
    except RecursionError:
        raise ImportInputError(f"{path} is not {what} (nested too deeply)") from None
    except ValueError as error:
        raise ImportInputError(f"{path} is not {what} (invalid JSON: {one_line(error)})") from None


def load_yaml(path: Path) -> Any:
    """A YAML file's data as bounded plain data (:func:`plain_data`), or ``ImportInputError``.

    Loaded safely: objects dumped with python tags (as Lightning writes some
    hyperparameters) come back as plain data and are never constructed, and
    more than :data:`MAX_YAML_ALIASES` aliases are refused.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self.aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_YAML_ALIASES:
                    raise yaml.composer.ComposerError(
                        None, None, f"more than {MAX_YAML_ALIASES} aliases", self.peek_event().start_mark)
            return super().compose_node(parent, index)

    def plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", plain)
    Loader.add_multi_constructor("!", plain)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise ImportInputError(f"unreadable file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ImportInputError(f"{path} is not YAML (not UTF-8 text)") from None
    with reading_input(path):
        try:
            loaded = yaml.load(text, Loader=Loader)
        except yaml.YAMLError as error:
            raise ImportInputError(f"{path} is not YAML ({one_line(error)})") from None
    return plain_data(loaded, path)


def fingerprint(kind: str, source: RunSource) -> dict[str, Any]:
    """Identify a source by kind, resolved path and contents (size and SHA-256 of its files)."""
    if source.digest is not None:
        return {"kind": kind, "path": path_text(source.where), "files": [], "size": source.size,
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
        "path": path_text(source.path.resolve()),
        "files": [path_text(f.resolve()) for f in source.files],
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
    columns: Mapping[str | MetricKey, tuple[Any, Any, Any]],
    *,
    epoch_steps: np.ndarray | None = None,
    epoch_values: np.ndarray | None = None,
) -> list[Series]:
    """Turn tag → (steps, values, wall_times) into contract series.

    Tags are mapped with :func:`map_metrics` (a ``MetricKey`` key is taken as
    it is); the epoch tag becomes the epoch column of every series (the last
    epoch logged at or before each step). Steps and values are taken as
    given: :func:`apply_rules` checks, sorts and de-duplicates them.
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
        steps = np.asarray(steps)
        epochs = None
        if epoch_steps is not None and len(epoch_steps):
            epochs = epoch_at(steps, epoch_steps, epoch_values)
        series.append(Series(
            key=key, step=steps, value=np.asarray(values), epoch=epochs,
            wall_time=None if wall_times is None else np.asarray(wall_times, dtype=np.float64),
        ))
    return series


def epoch_at(steps: np.ndarray, epoch_steps: np.ndarray, epoch_values: np.ndarray) -> np.ndarray:
    """The epoch logged last at or before each step (NaN before the first one)."""
    order = np.argsort(epoch_steps, kind="stable")
    known_steps = np.asarray(epoch_steps)[order]
    known_values = np.asarray(epoch_values, dtype=np.float64)[order]
    position = np.searchsorted(known_steps, steps, side="right") - 1
    epochs = known_values[np.clip(position, 0, None)]
    epochs[position < 0] = np.nan
    return epochs


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


def apply_rules(run: ParsedRun) -> ParsedRun:
    """Apply the import rules (module doc) to what an importer parsed; warns once per rule broken quietly.

    Series with one key are merged in the importer's order; steps are checked
    and sorted (stably); the last value of a repeated step wins; names become
    valid text; config, env, task and the importer's source notes become
    bounded plain data.
    """
    where = run.source.where
    merged: dict[MetricKey, list[Series]] = {}
    for item in run.series:
        key = MetricKey(valid_text(item.key.split), valid_text(item.key.name),
                        None if item.key.layer is None else valid_text(item.key.layer))
        merged.setdefault(key, []).append(item)
    series: list[Series] = []
    replaced, first_replaced = 0, None
    for key, parts in merged.items():
        item, differing = _one_value_per_step(key, parts, where)
        if differing:
            replaced += differing[0]
            first_replaced = first_replaced or f"{key.name} at step {differing[1]}"
        if len(item.step):
            series.append(item)
    series.sort(key=lambda s: (s.key.name, s.key.layer or "", s.key.split))
    if replaced:
        warnings.warn(f"{where}: {replaced:,} value(s) at a repeated step were replaced by a later one "
                      f"(the last value of a step wins), first: {first_replaced}", RuntimeWarning, stacklevel=3)
    if run.left_out:
        more = f" and {len(run.left_out) - 1:,} more" if len(run.left_out) > 1 else ""
        warnings.warn(f"{where}: left out {len(run.left_out):,} entries that are not numbers: "
                      f"{run.left_out[0]}{more}", RuntimeWarning, stacklevel=3)
    meta = plain_data({"config": run.config, "env": run.env, "task": run.task, "source": run.extra_source},
                      f"{where}: config")
    size = len(json.dumps(meta, allow_nan=True))
    if size > MAX_CONFIG_BYTES:
        raise ImportInputError(f"{where}: the config takes {size:,} bytes as JSON, more than the "
                               f"{MAX_CONFIG_BYTES:,} a run may hold (every listing of the store reads it)")
    run.series = series
    run.config, run.env, run.task, run.extra_source = meta["config"], meta["env"], meta["task"], meta["source"]
    return run


def _one_value_per_step(key: MetricKey, parts: list[Series], where: Any) -> tuple[Series, tuple[int, int] | None]:
    """One series sorted by step with the last value of each step; (replaced values that differed, first step)."""
    steps = checked_steps(np.concatenate([p.step for p in parts]) if len(parts) > 1 else parts[0].step, where)
    values = np.concatenate([np.asarray(p.value, dtype=np.float64).reshape(-1) for p in parts])
    if len(values) != len(steps):
        raise ImportInputError(f"{where}: {key.name} has {len(steps)} steps but {len(values)} values")

    def column(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        if all(a is None for a in arrays):
            return None
        return np.concatenate([np.full(len(p.step), np.nan) if a is None else np.asarray(a, dtype=np.float64)
                               for p, a in zip(parts, arrays)])

    epochs, wall_times = column("epoch"), column("wall_time")
    order = np.argsort(steps, kind="stable")
    steps = steps[order]
    last = np.ones(len(steps), dtype=bool)
    last[:-1] = steps[1:] != steps[:-1]
    differing = None
    if not last.all():
        values_sorted = values[order]
        ends = np.flatnonzero(last)
        kept = values_sorted[ends[np.searchsorted(ends, np.arange(len(steps)))]]
        same = (values_sorted == kept) | (np.isnan(values_sorted) & np.isnan(kept))
        changed = ~last & ~same
        if changed.any():
            differing = (int(changed.sum()), int(steps[changed.argmax()]))
    keep = order[last]
    return Series(
        key=key, step=steps[last], value=values[keep],
        epoch=None if epochs is None else epochs[keep],
        wall_time=None if wall_times is None else wall_times[keep],
    ), differing


def import_runs(
    kind: str,
    store_root: str | os.PathLike,
    sources: Sequence[RunSource],
    parse: Callable[[RunSource, Progress], ParsedRun],
    *,
    root: Path | str,
    num_classes: int | None = None,
    task: dict[str, Any] | None = None,
    progress: bool | None = None,
    progress_unit: str = "B",
    settings: dict[str, Any] | None = None,
) -> list[ImportResult]:
    """Skip known sources, parse the rest (all before writing any), then write them.

    ``task`` (``--task``, already parsed) and ``num_classes`` go on top of
    the task each source states (:func:`traindoctor.store.importers.task.merge_task`).
    A source is skipped as already imported only when its contents and what
    the user asked of the import (the task given, ``settings``: options that
    change the parse) are both unchanged: ``import csv m.csv`` followed by
    ``import csv m.csv --num-classes 10`` imports it again with the task,
    in place of the first import.
    """
    from traindoctor.store.importers.task import merge_task

    given = dict(task or {})
    if num_classes is not None:
        given.setdefault("kind", "classification")
        given["num_classes"] = int(num_classes)
    asked = {name: value for name, value in (settings or {}).items() if value is not None}
    if given:
        asked["task"] = given
    asked = json.loads(json.dumps(asked, default=str))  # as run.json keeps it, to compare with it
    store_root = Path(store_root)
    known = _imported_sources(store_root)
    results: list[ImportResult | None] = []
    pending: list[tuple[int, RunSource, dict[str, Any], str | None]] = []
    for source in sources:
        print_ = fingerprint(kind, source)
        if asked:
            print_["asked"] = asked
        previous = known.get((kind, print_["path"]))
        if (previous is not None and previous[1]["source"].get("sha256") == print_["sha256"]
                and (previous[1]["source"].get("asked") or {}) == asked):
            run_id, meta = previous
            rows = int(meta["source"].get("rows", 0))
            results.append(ImportResult(run_id, meta.get("name") or run_id, rows, True, print_["path"]))
            continue
        pending.append((len(results), source, print_, previous[0] if previous else None))
        results.append(None)

    parsed: list[tuple[int, dict[str, Any], str | None, ParsedRun]] = []
    empty: list[RunSource] = []
    total = sum(print_["size"] for _, _, print_, _ in pending)
    with Progress(progress, total, f"import {kind}", unit=progress_unit) as bar:
        for index, source, print_, replaces in pending:
            with reading_input(source.where):
                run = apply_rules(parse(source, bar))
            if run.rows == 0:
                empty.append(source)
                continue
            parsed.append((index, print_, replaces, run))
    if pending and not parsed and len(pending) == len(results):
        # The error says it once; a warning per source would only repeat it.
        raise StoreError(f"no scalar values found in {root}")
    for source in empty:
        warnings.warn(f"{source.where}: no scalar values, not imported", RuntimeWarning, stacklevel=3)

    _remove_stale_staging(store_root)
    publication = _Publication()
    try:
        for index, print_, replaces, run in parsed:
            run.task = merge_task(run.task, given)
            source_meta = {**print_, **run.extra_source, "rows": run.rows}
            every = logging_every(run.series)
            if every is not None:
                source_meta.setdefault("logging_every", every)
            run_id = write_run(store_root, run, source_meta, replaces=replaces, publication=publication)
            results[index] = ImportResult(run_id, run.source.name, run.rows, False, print_["path"],
                                          replaced=replaces is not None)
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


# Wall times a source may give for when a run started: from 2001 (1e9 Unix seconds) to a day from now.
_EARLIEST_START = 1e9
_FUTURE_SLACK_S = 86_400.0


def source_start(run: ParsedRun) -> float | None:
    """When an imported run started (Unix seconds), so that it lists as started then, not at the import:
    its source's own start time (W&B's, MLflow's), else its earliest recorded wall time (TensorBoard
    events, MLflow metrics, a JSONL or CSV ``wall_time``); None when the source records none (an HF
    trainer_state.json, a Lightning metrics.csv, a pasted log), and the import's time stands. A time
    before 2001 or more than a day ahead is not a start (a relative clock, a wrong unit).
    """
    return _source_time(run, ("wandb", "mlflow"), "start_time", min)


def source_end(run: ParsedRun) -> float | None:
    """When an imported run ended (Unix seconds): MLflow's own end time, else its latest recorded wall
    time; None when the source records none (the import's time stands, as for :func:`source_start`)."""
    return _source_time(run, ("mlflow",), "end_time", max)


def _source_time(run: ParsedRun, tools: tuple[str, ...], field: str, pick: Callable) -> float | None:
    """The first tool's ``field`` that is a plausible date, else ``pick`` (min or max) of the recorded wall times."""
    latest = time.time() + _FUTURE_SLACK_S
    for tool in tools:
        given = (run.extra_source.get(tool) or {}).get(field)
        if isinstance(given, (int, float)) and math.isfinite(given) and _EARLIEST_START <= given <= latest:
            return float(given)
    found = None
    for series in run.series:
        if series.wall_time is None or not len(series.wall_time):
            continue
        walls = np.asarray(series.wall_time, dtype=np.float64)
        walls = walls[np.isfinite(walls) & (walls >= _EARLIEST_START) & (walls <= latest)]
        if len(walls):
            value = float(walls.min() if pick is min else walls.max())
            found = value if found is None else pick(found, value)
    return found


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
            task=run.task, source=source_meta, created_at=source_start(run), background=False,
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
        writer.close("finished", finished_at=source_end(run))
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
