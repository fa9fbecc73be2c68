"""Import local W&B runs: the run folders every W&B run keeps, online or offline.

A run folder (``wandb/run-<time>-<id>/`` or ``wandb/offline-run-<time>-<id>/``)
holds the transaction log ``run-<id>.wandb`` with every record the run sent:
its config, each ``wandb.log`` row (history), summary updates, metric
definitions. Online runs also keep ``files/config.yaml`` and
``files/wandb-summary.json``, read when present.

The log's records are W&B's ``Record`` protobuf messages, decoded by the
class the ``wandb`` package ships (``wandb.proto.wandb_internal_pb2``);
nothing here parses protobuf. They are framed in LevelDB's log format (32 KiB
blocks of chunks, each ``uint32 crc32, uint16 length, uint8 type``), which
is read here: the ``wandb`` package no longer has a Python reader for it
(``wandb.sdk.internal.datastore`` went with the move to the Go ``wandb-core``,
and that one is only an internal process's), and ``wandb-core leet inspect
--json``, the Go reader behind a command line, printed 15,000 values/s on a
50,000-step run against the 50,000 this project asks of an importer. A chunk
whose CRC fails skips to the next block, as LevelDB's own reader does, with
a warning; a torn tail (a run still writing, or killed) is dropped the same way.

Mapping (names through :mod:`store.importers.names`):

- the step is the run's own: the ``step_metric`` of a ``define_metric("*",
  step_metric=...)`` record (HF Trainer's ``train/global_step``, Lightning's
  ``trainer/global_step``, the latter +1 as in :mod:`store.importers.lightning`),
  else W&B's ``_step``; a row without the step metric takes the last one
  seen (what W&B's ``step_sync`` does), or its ``_step`` before any;
- ``_timestamp`` is the wall time; other ``_`` keys are W&B's own;
- nested keys (``wandb.log({"train": {"loss": x}})``) join with ``/``;
- ``gradients/<param>`` and ``parameters/<param>`` histograms (``wandb.watch``)
  become per-layer ``grad_norm`` and ``weight_norm``: see :func:`histogram_norm`;
  other histograms and media are skipped and counted in ``source.notes``;
- the config (``_wandb`` left out) is the run's config; an HF model config in
  it gives the task and model as in :mod:`store.importers.hf`;
- summary values that are not in the history (``run.summary["best"] = …``)
  go to split ``user`` at the last step, as HF's end-of-training values do.

Steps, values and repeated steps follow the import rules of
:mod:`traindoctor.store.importers.common`: a step (the step metric's value,
after Lightning's +1) must be a whole number within int64; a history value
logged as text must read as a number, and true/false or lists are left out
and counted in one warning; a step logged twice (Lightning's
LearningRateMonitor at an epoch boundary) keeps its last value.
``files/config.yaml`` and ``files/wandb-summary.json`` must be what they
claim, as side files of every importer: a broken one stops the import.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from traindoctor.store.errors import StoreError
from traindoctor.store.importers.common import (
    Columns, ImportInputError, ParsedRun, Progress, RunSource, flatten, load_json, load_yaml, number_of, quoted,
    series_from_columns, whole_step,
)
from traindoctor.store.importers.hf import model_meta, optimizer_meta
from traindoctor.store.importers.names import STEP_KEYS, MetricKey, map_histogram

LOG_SUFFIX = ".wandb"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "wandb-summary.json"
_RUN_FOLDER_PREFIXES = ("run-", "offline-run-")

# LevelDB log framing as W&B writes it (wandb/sdk/internal/datastore.py before
# wandb-core; core/pkg/leveldb in wandb-core): a 7-byte file header, then
# 32 KiB blocks of chunks with a 7-byte header each.
_FILE_HEADER = struct.Struct("<4sHB")
_FILE_IDENT, _FILE_MAGIC, _FILE_VERSION = b":W&B", 0xBEE1, 0
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
# W&B's CRC is zlib's CRC-32 seeded with the chunk type byte.
_TYPE_CRC = {kind: zlib.crc32(bytes([kind])) for kind in (_FULL, _FIRST, _MIDDLE, _LAST)}
# Update the progress bar every this many records (tqdm costs ~1 µs a call).
_PROGRESS_EVERY = 20_000

# A norm derived from a histogram is kept only when the bins bound it within
# this factor (upper bound / lower bound). The gradient rules compare norms at
# factors of 10 or more (diagnosis/gradients.py). Measured on 64-bin histograms
# as wandb.watch makes them: 1.06-1.12x for Gaussian values, 1.26x with three
# 10-sigma outliers, 1.54x with 20-sigma ones, 1.39x for a Student-t(3) tail;
# the midpoint estimate stayed within 1.3 % of the true norm in all of them.
NORM_BOUND_FACTOR = 2.0

_STEP_KEY = "_step"
# The parts wandb-core splits a media object into, as the last nested key.
_OBJECT_PARTS = ("_type", "values", "bins", "packedBins")
_SKIP = object()
_WALL_TIME_KEY = "_timestamp"
# Lightning's WandbLogger step counts optimizer steps taken before the logged batch.
_LIGHTNING_STEP = "trainer/global_step"


def _wandb_proto():
    try:
        from wandb.proto import wandb_internal_pb2
    except ImportError:
        raise StoreError("importing W&B runs needs the wandb package: pip install 'traindoctor[wandb]'") from None
    return wandb_internal_pb2


def _run_log(folder: Path) -> Path | None:
    logs = sorted(folder.glob(f"*{LOG_SUFFIX}"))
    return logs[-1] if logs else None


def _source(log: Path, name: str, named: bool) -> RunSource:
    """``named``: the name came from ``--run``; otherwise the run's own W&B name replaces the
    folder's (``offline-run-20261130_084106-b9gtil7b``) once the log is read."""
    folder = log.parent
    files = [log] + [folder / "files" / extra for extra in (CONFIG_FILE, SUMMARY_FILE) if (folder / "files" / extra).is_file()]
    return RunSource(name=name, path=folder, files=files, handle={"named": named})


def discover(path: Path, run_name: str | None) -> list[RunSource]:
    """A ``.wandb`` file, a run folder, or a folder holding run folders (``wandb/``, or the one above it)."""
    if path.is_file():
        if path.suffix != LOG_SUFFIX:
            raise StoreError(f"{path} is not a W&B transaction log (a run-<id>.wandb file)")
        return [_source(path, run_name or path.resolve().parent.name, run_name is not None)]
    log = _run_log(path)
    if log is not None:
        return [_source(log, run_name or path.resolve().name, run_name is not None)]
    folders = []
    for parent in (path, path / "wandb"):
        if parent.is_dir():
            for child in sorted(parent.iterdir()):
                # latest-run is a link to one of the others.
                if child.name.startswith(_RUN_FOLDER_PREFIXES) and child.is_dir() and not child.is_symlink():
                    if _run_log(child) is not None:
                        folders.append(child)
    if not folders:
        raise StoreError(f"no W&B run folders (run-*/ or offline-run-*/ with a .wandb file) in {path}")
    return [_source(_run_log(folder), f"{run_name}/{folder.name}" if run_name else folder.name, run_name is not None)
            for folder in folders]


def read_records(path: Path, progress: Progress | None = None) -> Iterator[bytes]:
    """The serialized ``Record`` messages of a W&B transaction log, in order."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImportInputError(f"unreadable file {path}: {error.strerror or error}") from None
    if len(data) < _FILE_HEADER.size or _FILE_HEADER.unpack_from(data) != (_FILE_IDENT, _FILE_MAGIC, _FILE_VERSION):
        raise ImportInputError(f"{path} is not a W&B transaction log")
    position = _FILE_HEADER.size
    pending: list[bytes] | None = None
    corrupt = 0
    count = 0
    end = len(data)
    while position < end:
        left = _BLOCK - position % _BLOCK
        if left < _CHUNK_HEADER.size:  # a block's zero-padded tail
            position += left
            continue
        if end - position < _CHUNK_HEADER.size:
            corrupt += 1
            break
        checksum, length, kind = _CHUNK_HEADER.unpack_from(data, position)
        start = position + _CHUNK_HEADER.size
        chunk = data[start:start + length]
        if kind not in _TYPE_CRC or len(chunk) < length or zlib.crc32(chunk, _TYPE_CRC[kind]) != checksum:
            if kind == 0 and length == 0 and checksum == 0 and not any(data[position:position + left]):
                break  # preallocated, never-written space at the end
            corrupt += 1
            pending = None
            position += left  # resynchronise at the next block
            continue
        position = start + length
        if kind == _FULL:
            pending = None
            yield chunk
        elif kind == _FIRST:
            pending = [chunk]
        elif pending is not None:
            pending.append(chunk)
            if kind == _LAST:
                yield b"".join(pending)
                pending = None
        count += 1
        if progress is not None and count % _PROGRESS_EVERY == 0:
            progress.advance(path, position)
    if pending is not None:
        corrupt += 1
    if corrupt:
        warnings.warn(f"{path}: skipped {corrupt} corrupt or incomplete record(s)", RuntimeWarning, stacklevel=3)
    if progress is not None:
        progress.advance(path, end)


def histogram_norm(counts: list, edges: list) -> float | None:
    """The L2 norm of the values a histogram counts, when its bins pin it down.

    Each value lies in its bin, so the sum of squares lies between
    ``Σ count · min(x², bin)`` and ``Σ count · max(x², bin)``; the estimate
    uses bin midpoints. None when the bounds are further apart than
    ``NORM_BOUND_FACTOR`` (too coarse to be a norm). ``wandb.watch`` leaves
    NaN and ±Inf entries out of its histograms (and logs none when all are),
    so the norm is that of the finite entries.

    >>> histogram_norm([4], [0.5, 0.5])   # four values of 0.5 (W&B's one-bin form)
    1.0
    """
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if counts.ndim != 1 or edges.shape != (len(counts) + 1,) or not np.isfinite(edges).all() or (counts < 0).any():
        return None
    low, high = edges[:-1], edges[1:]
    middle = (low + high) / 2
    straddles = (low < 0) & (high > 0)
    lower = float(np.sum(counts * np.where(straddles, 0.0, np.minimum(low * low, high * high))))
    upper = float(np.sum(counts * np.maximum(low * low, high * high)))
    if upper > lower * NORM_BOUND_FACTOR**2:
        return None
    return math.sqrt(float(np.sum(counts * middle * middle)))


def _decode(value_json: str) -> Any:
    try:
        return json.loads(value_json)  # W&B writes NaN and Infinity as JSON's extensions
    except ValueError:
        return None


def _decode_all(values: list[str]) -> list[Any]:
    """Many value_json strings at once: one JSON parse per row instead of one per value."""
    try:
        return json.loads("[" + ",".join(values) + "]")
    except ValueError:
        return [_decode(value) for value in values]


def _key(item) -> str | tuple[str, ...]:
    """An item's key: a string, or a tuple for W&B's nested keys (a histogram's parts, a logged dict)."""
    nested = item.nested_key
    if not nested:
        return item.key
    return nested[0] if len(nested) == 1 else tuple(nested)


def _name(key: str | tuple[str, ...]) -> str:
    return key if isinstance(key, str) else "/".join(key)


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is float or kind is int


class _History:
    """The rows of a run's history turned into columns, as records arrive.

    ``where`` (the log) names the input in an error; ``left_out`` collects
    the entries that are not numbers (:func:`common.number_of`).
    """

    def __init__(self, where: Any) -> None:
        self.where = where
        self.left_out: list[str] = []
        self.columns = Columns()
        self.histograms = Columns()
        self.skipped: dict[str, int] = {}
        self.step_metric: str | None = None
        self.last_step: int | None = None
        self.seen: set[str | tuple[str, ...]] = set()
        self._roles: dict[Any, Any] = {}

    def add(self, history) -> None:
        items = history.item
        keys = [_key(item) for item in items]
        values = _decode_all([item.value_json for item in items])
        row = dict(zip(keys, values))
        self.seen.update(keys)
        step = self._step(row, history)
        wall_time = row.get(_WALL_TIME_KEY)
        if type(wall_time) is not float:
            wall_time = float(wall_time) if type(wall_time) is int and abs(wall_time) < 2**63 else math.nan
        objects: dict[str, dict[str, Any]] = {}
        roles = self._roles
        for key, value in zip(keys, values):
            role = roles.get(key)
            if role is None:
                role = roles[key] = self._role(key)
            if role is _SKIP:
                continue
            kind = type(value)
            if kind is float:
                if isinstance(role, list):  # (steps, values, wall times) of a metric
                    role[0].append(step)
                    role[1].append(value)
                    role[2].append(wall_time)
            elif isinstance(role, tuple):
                objects.setdefault(role[0], {})[role[1]] = value
            elif kind is dict:
                name = _name(key)
                if "_type" in value:  # the form written before wandb-core: one JSON object
                    objects[name] = value
                    continue
                for inner_name, inner in flatten(value, name):
                    self._value(inner_name, self.columns.lists(inner_name), inner, step, wall_time)
            elif isinstance(role, list) and value is not None:  # null: nothing logged
                self._value(_name(key), role, value, step, wall_time)
        for name, value in objects.items():
            self._object(name, value, step, wall_time)

    def _value(self, name: str, lists: Any, value: Any, step: int, wall_time: float) -> None:
        """A value that is not a float: an int, text that must read as a number, or an entry left out."""
        if value is None:
            return
        number = number_of(value, f"{self.where} ({quoted(name)} at step {step})")
        if number is None:
            self.left_out.append(f"{quoted(name)} at step {step}")
            return
        lists[0].append(step)
        lists[1].append(number)
        lists[2].append(wall_time)

    def _role(self, key: str | tuple[str, ...]) -> Any:
        """What a key's values are, worked out once per key: ``_SKIP``, the
        column lists of a metric, or (object name, part) for a piece of a histogram."""
        if isinstance(key, tuple) and key[-1] in _OBJECT_PARTS:
            # wandb-core splits a histogram into [name, "values"], [name, "bins"], [name, "_type"].
            return ("/".join(key[:-1]), key[-1])
        name = _name(key)
        if name.startswith("_") or name == self.step_metric or name in STEP_KEYS:
            return _SKIP
        return list(self.columns.lists(name))

    def set_step_metric(self, name: str) -> None:
        self.step_metric = name
        self._roles.clear()  # the step metric is no longer a metric

    def _step(self, row: dict[Any, Any], history) -> int:
        """The row's step: the step metric's value (whole, :func:`common.whole_step`), else W&B's own."""
        if self.step_metric is not None:
            value = row.get(self.step_metric)
            if value is not None:
                self.last_step = whole_step(value, f"{self.where} ({quoted(self.step_metric)})",
                                            offset=1 if self.step_metric == _LIGHTNING_STEP else 0)
            if self.last_step is not None:
                return self.last_step
        step = row.get(_STEP_KEY)
        return whole_step(step if step is not None else history.step.num, f"{self.where} ({_STEP_KEY!r})")

    def _object(self, name: str, value: dict[str, Any], step: int, wall_time: float) -> None:
        kind = value.get("_type")
        if kind == "histogram" and map_histogram(name) is not None:
            norm = histogram_norm(value.get("values") or [], value.get("bins") or [])
            if norm is not None:
                self.histograms.add(name, step, norm, wall_time)
                return
            kind = "histogram too coarse for a norm"
        what = f"{kind}: {name.split('/')[0]}"
        self.skipped[what] = self.skipped.get(what, 0) + 1


def _apply(target: dict[Any, Any], record, *, skip: set | None = None) -> None:
    """Apply a config or summary record's updates and removals to ``target``
    (nested keys as tuples; values still JSON text, decoded by :func:`_nest`).

    ``skip``: keys not to keep (a summary mirrors each history row; only keys
    the history lacks matter, and reading values costs a microsecond each).
    """
    for item in record.update:
        nested = item.nested_key
        key = item.key if not nested else nested[0] if len(nested) == 1 else tuple(nested)
        if skip is None or key not in skip:
            target[key] = item.value_json
    for item in record.remove:
        target.pop(_key(item), None)


def _nest(flat: dict[Any, str]) -> dict[str, Any]:
    """Decoded values, W&B's nested keys as nested dicts."""
    nested: dict[str, Any] = {}
    for key, value_json in flat.items():
        *parents, last = (key,) if isinstance(key, str) else key
        inner = nested
        for part in parents:
            if not isinstance(inner.get(part), dict):
                inner[part] = {}
            inner = inner[part]
        inner[last] = _decode(value_json)
    return nested


def _read_config_yaml(path: Path) -> dict[str, Any]:
    """files/config.yaml (bounded YAML, :func:`common.load_yaml`) as the run's config."""
    loaded = load_yaml(path)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ImportInputError(f"{path} is not a W&B config.yaml (not a mapping)")
    # config.yaml wraps each value: {lr: {value: 0.1, desc: null}}.
    return {key: item.get("value") if isinstance(item, dict) and "value" in item else item
            for key, item in loaded.items() if key != "_wandb"}


def _read_summary_json(path: Path) -> dict[str, Any]:
    loaded = load_json(path, f"a {SUMMARY_FILE}")
    if not isinstance(loaded, dict):
        raise ImportInputError(f"{path} is not a {SUMMARY_FILE} (not a JSON object)")
    return loaded


def parse(source: RunSource, progress: Progress) -> ParsedRun:
    record_class = _wandb_proto().Record
    from google.protobuf.message import DecodeError

    log = source.files[0]
    history = _History(log)
    config_updates: dict[Any, str] = {}
    summary_updates: dict[Any, str] = {}
    run_meta: dict[str, Any] = {}
    undecodable = 0
    for raw in read_records(log, progress):
        try:
            record = record_class.FromString(raw)
        except DecodeError:
            undecodable += 1
            continue
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.add(record.history)
        elif kind == "summary":
            _apply(summary_updates, record.summary, skip=history.seen)
        elif kind == "config":
            _apply(config_updates, record.config)
        elif kind == "metric":
            metric = record.metric
            if metric.glob_name == "*" and metric.step_metric:
                history.set_step_metric(metric.step_metric)
        elif kind == "run":
            run = record.run
            _apply(config_updates, run.config)
            run_meta = {"run_id": run.run_id, "project": run.project, "entity": run.entity,
                        "display_name": run.display_name, "group": run.run_group, "job_type": run.job_type}
            if run.start_time.seconds:
                run_meta["start_time"] = run.start_time.seconds + run.start_time.nanos / 1e9
    if undecodable:
        warnings.warn(f"{log}: skipped {undecodable} record(s) that are not W&B records", RuntimeWarning, stacklevel=3)
    config = _nest(config_updates)
    config.pop("_wandb", None)
    summary = _nest({key: value for key, value in summary_updates.items() if key not in history.seen})
    for extra in source.files[1:]:
        # A side file is input like the log: one that is not what it claims
        # stops the import, and the message says how to import without it.
        try:
            if extra.name == CONFIG_FILE:
                config.update(_read_config_yaml(extra))  # the final config, as W&B uploaded it
            elif extra.name == SUMMARY_FILE:
                summary.update(_read_summary_json(extra))
        except ImportInputError as error:
            raise ImportInputError(f"{error}; move {extra.name} aside to import without it") from None

    # A step logged twice (Lightning's LearningRateMonitor) keeps its last value: common.apply_rules.
    columns: dict[Any, tuple] = dict(history.columns.arrays())
    for tag, points in history.histograms.arrays().items():
        columns[map_histogram(tag)] = points
    last_step = max((int(points[0].max()) for points in columns.values() if len(points[0])), default=None)
    logged = {_name(key) for key in history.seen}
    if last_step is not None:
        for key, value in flatten(summary):
            # The summary is the run's final state, not a log: only its numbers are values.
            if _is_number(value) and not key.startswith("_") and key not in logged and key not in STEP_KEYS:
                number = number_of(value, f"{log} (summary {quoted(key)})")
                columns[MetricKey("user", key)] = (np.array([last_step]), np.array([number]), None)

    env: dict[str, Any] = {"logger": "wandb"}
    task: dict[str, Any] = {}
    if isinstance(config.get("architectures"), list):  # HF Trainer's WandbCallback logs the model config
        env["model"], task = model_meta(config, f"{log} (config)")
    if "optim" in config and "learning_rate" in config:  # ... and its TrainingArguments
        env["optimizer"] = optimizer_meta(config)
    notes = [f"per-layer norms from W&B histograms: {len(history.histograms)} values "
             f"(bin midpoints, within {NORM_BOUND_FACTOR}x)"] if len(history.histograms) else []
    notes += [f"skipped {count} {what}" for what, count in sorted(history.skipped.items())]
    if run_meta.get("display_name") and not (source.handle or {}).get("named"):
        # The name given to wandb.init(name=...) (or W&B's own), as the W&B UI and MLflow's importer show it.
        source = dataclasses.replace(source, name=run_meta["display_name"])
    return ParsedRun(
        source=source, series=series_from_columns(columns), config=config, env=env, task=task, left_out=history.left_out,
        extra_source={"wandb": {k: v for k, v in run_meta.items() if v}, "step_metric": history.step_metric or _STEP_KEY,
                      "notes": notes},
    )
