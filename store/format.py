"""The on-disk format of a traindoctor store: the one contract its writers and readers share.

A store is a folder of runs. One run is one folder::

    <store>/<run_id>/run.json                                   metadata (below), rewritten atomically
    <store>/<run_id>/scalars/<rank>-<attempt>-<seq>.parquet     one segment per writer flush
    <store>/<run_id>/confusion/<rank>-<attempt>-<seq>.parquet
    <store>/<run_id>/events/<rank>-<attempt>-<seq>.parquet
    <store>/<run_id>/<table>/c-<generation>.parquet             a compacted file (see Footers)

**Run ids.** ``run_id`` is the folder name: UTC time plus a random suffix
(:func:`new_run_id`), made only of letters, digits, ``.``, ``_`` and ``-``
(:func:`check_run_id`). ``name`` in run.json is the human name and may repeat.
Folders whose names start with ``.`` are never runs (importers build runs in
``.import-*`` folders and rename them into place).

**Segments.** Each writer (one run × one rank × one attempt) owns its files.
It publishes immutable Parquet segments: written under a temporary name
(``.tmp-…``), fsynced, then renamed into place, so a reader never sees half a
file and needs no lock. ``seq`` is zero-padded to eight digits, so names sort
in publishing order. Any published ``*.parquet`` file not starting with ``.``
is a segment of its table (:func:`segment_names`).

**Tables.** Long data: one row per value, dimensions as columns, never packed
into names. :data:`COLUMNS` lists each table's columns in file order with
their types (:data:`TYPES`) and meaning. ``run_id``, ``rank`` and ``attempt``
(:data:`IDENTITY_COLUMNS`) say who wrote a row.

**Units.** ``step`` counts optimizer steps (not micro-batches, not epochs);
the probe records what happens before the first optimizer step (set-up
checks, an evaluation of the untrained model) at step 0.
``wall_time`` in the tables and ``created_at``, ``heartbeat_at`` and
``finished_at`` in run.json are Unix seconds (``time.time()``, UTC). ``epoch``
is a float: fractional epochs are allowed. ``value`` keeps NaN and ±Inf as
they are; readers use ``isfinite()`` where an aggregate must ignore them.

**Vocabulary.** ``split`` is one of :data:`SPLITS` or a user split
(``val_ema``, …; importers file a metric whose split the source does not
say under ``user``). ``name`` is one of :data:`METRICS` or any user metric.
``layer`` is the ``named_parameters()`` name for per-layer values,
``group<i>`` for ``lr`` (:func:`lr_layer`) and null for global values.
``kind`` in events is one of :data:`EVENT_KINDS`.

**Resumed runs.** A writer that finds earlier files of its rank takes the next
attempt number. For steps two attempts both recorded, the newest attempt wins.

**Footers.** Parquet key-value metadata (:data:`FOOTER_KEYS`) lets readers do
their bookkeeping without scanning rows. Every scalars file lists the
attempts whose rows it holds (:data:`ATTEMPTS_KEY`). Every compacted file
lists the segment names it replaces (:data:`COVERS_KEY`), in the merged file
itself, so a reader that sees the merged file ignores those pieces: no moment
where both count. :func:`footer_keys` says which file carries which key.

**run.json.** UTF-8 JSON with the keys of :data:`RUN_JSON_KEYS`; ``status`` is
one of :data:`RUN_STATUSES`. Rank 0 owns the file and rewrites it atomically.

This module imports only the standard library: the probe, the importers, the
reader and the compactor all import it, and none of them pays for another.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from traindoctor.store.errors import StoreError

# ----------------------------------------------------------------- tables

STRING, INT32, INT64, FLOAT64 = "string", "int32", "int64", "float64"
# Logical column types, named as pyarrow names its type factories. The writer
# builds its Arrow schema from these (it may dictionary-encode strings: the
# logical type stays string); the reader its SQL types.
TYPES = (STRING, INT32, INT64, FLOAT64)


@dataclass(frozen=True)
class Column:
    """One column of a table: its name, its logical type and what it holds, with units."""

    name: str
    type: str
    meaning: str


_RUN_ID = Column("run_id", STRING, "the run's id, the same as its folder name")
_RANK = Column("rank", INT32, "the writer's torch.distributed rank (0 without distributed training)")
_ATTEMPT = Column("attempt", INT32, "0 for a new run, one more for each resumption of the same rank")
_EPOCH = Column("epoch", FLOAT64, "the epoch, fractions allowed; null when unknown")
_SPLIT = Column("split", STRING, "train, val, test or a user split (val_ema, …)")

IDENTITY_COLUMNS = ("run_id", "rank", "attempt")

COLUMNS: dict[str, tuple[Column, ...]] = {
    "scalars": (
        _RUN_ID, _RANK, _ATTEMPT,
        Column("step", INT64, "optimizer steps (not micro-batches, not epochs); -1 when the writer got none"),
        _EPOCH,
        Column("wall_time", FLOAT64, "Unix seconds when the value was recorded; NaN when an imported source had none"),
        _SPLIT,
        Column("name", STRING, "a name of METRICS or any user metric"),
        Column("layer", STRING, "named_parameters() name for per-layer values, group<i> for lr, null for global"),
        Column("value", FLOAT64, "the value; NaN and ±Inf kept as they are"),
    ),
    "confusion": (
        _RUN_ID, _RANK, _ATTEMPT,
        Column("step", INT64, "the optimizer step the evaluation pass ran at"),
        _EPOCH,
        _SPLIT,
        Column("true_class", INT32, "the class index of the target"),
        Column("pred_class", INT32, "the class index of the prediction"),
        # Counts, not rates: files and ranks combine by summing; precision,
        # recall and F1 are derived where shown.
        Column("count", INT64, "examples with this (true_class, pred_class); only non-zero cells are stored"),
    ),
    "events": (
        _RUN_ID, _RANK, _ATTEMPT,
        Column("step", INT64, "the optimizer step of the event; null for events outside any step (resumed, crash)"),
        Column("wall_time", FLOAT64, "Unix seconds when the event was recorded"),
        Column("kind", STRING, "one of EVENT_KINDS"),
        Column("detail", STRING, "a human-readable sentence; the traceback for crash"),
    ),
}
TABLES = tuple(COLUMNS)


def column_names(table: str) -> tuple[str, ...]:
    """The columns of ``table`` in file order, e.g. ``column_names("events")``."""
    return tuple(column.name for column in COLUMNS[table])


# ------------------------------------------------------------- vocabulary

SPLITS = ("train", "val", "test")
# Statistics of the optimizer step: recorded in the train split only.
OPTIMIZER_METRICS = ("lr", "grad_norm", "update_ratio", "weight_norm", "amp_scale", "amp_skipped")
METRICS: dict[str, str] = {
    "loss": "the batch loss (train) or the per-example mean over the pass (evaluation splits)",
    "accuracy": "correct / counted targets over an evaluation pass",
    "lr": "each param group's learning rate as the optimizer step used it; layer group<i>",
    "grad_norm": "L2 norm of the unscaled gradient before clipping; global, and per layer every N steps",
    "update_ratio": "‖w_after − w_before‖ / ‖w_before‖ across one optimizer step, per layer",
    "weight_norm": "‖w‖ after the optimizer step, per layer",
    "amp_scale": "the GradScaler's scale used by the step's backward",
    "amp_skipped": "1.0 when the GradScaler skipped the optimizer step, else 0.0",
}
METRIC_NAMES = tuple(METRICS)
EVENT_KINDS: dict[str, str] = {
    "nan_loss": "the training loss became NaN or ±Inf (once per stretch of non-finite losses)",
    "amp_step_skipped": "the GradScaler skipped the optimizer step (inf/NaN gradients)",
    "eval_mode_during_training": "probe.step() ran while model.training was False",
    "train_mode_during_eval": "an evaluation pass ran while model.training was True",
    "config_lint": "a set-up problem the probe found when watching the model and optimizer",
    "crash": "the run ended with an exception or a signal; detail holds the traceback",
    "resumed": "a new attempt of the run started",
}
_LR_LAYER_PREFIX = "group"


def lr_layer(group_index: int) -> str:
    """The ``layer`` of param group ``group_index``'s ``lr``: ``lr_layer(0) == "group0"``."""
    return f"{_LR_LAYER_PREFIX}{int(group_index)}"


# ----------------------------------------------------------------- layout

RUN_JSON = "run.json"
SEGMENT_SUFFIX = ".parquet"
# Files being written; never read, removed by compaction once stale.
TEMPORARY_PREFIX = ".tmp-"
COMPACTED_PREFIX = "c-"
_SEGMENT_NAME = re.compile(r"^(?P<rank>\d+)-(?P<attempt>\d+)-(?P<sequence>\d+)\.parquet$")


def segment_name(rank: int, attempt: int, sequence: int) -> str:
    """A writer's segment file name: ``segment_name(0, 1, 7) == "0-1-00000007.parquet"``."""
    return f"{rank}-{attempt}-{sequence:08d}{SEGMENT_SUFFIX}"


def compacted_name(generation: int) -> str:
    """A compacted file's name; ``generation`` (``time.time_ns()``) orders merges."""
    return f"{COMPACTED_PREFIX}{generation:020d}{SEGMENT_SUFFIX}"


def segment_rank_attempt(name: str) -> tuple[int, int] | None:
    """(rank, attempt) from a writer's segment name; None for any other name."""
    match = _SEGMENT_NAME.match(name)
    return None if match is None else (int(match["rank"]), int(match["attempt"]))


def segment_names(names: Iterable[str]) -> list[str]:
    """The published segment file names among ``names``, sorted (temporary files excluded)."""
    return sorted(name for name in names if name.endswith(SEGMENT_SUFFIX) and not name.startswith("."))


# ---------------------------------------------------------------- run ids

_RUN_ID_ALPHABET = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def new_run_id() -> str:
    """A unique, sortable run id: UTC time plus a random suffix (``20260101-120000-ab12cd``)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is safe as one folder name.

    Raises:
        StoreError: it is empty, hidden, ``.``/``..``, or has other characters
            than letters, digits, ``.``, ``_`` and ``-``.
    """
    if not run_id or not set(run_id) <= _RUN_ID_ALPHABET or run_id in {".", ".."} or run_id.startswith("."):
        raise StoreError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-'")
    return run_id


# --------------------------------------------------------------- run.json

RUN_STATUSES = ("running", "finished", "crashed")
RUN_JSON_KEYS: dict[str, str] = {
    "run_id": "the run's id (the folder name)",
    "name": "the human name; may repeat across runs (defaults to the run_id)",
    "project": "an optional project name",
    "status": "one of RUN_STATUSES; a running run whose heartbeat stopped reads as crashed",
    "created_at": "Unix seconds when the run's first attempt started",
    "heartbeat_at": "Unix seconds of rank 0's latest sign of life",
    "finished_at": "Unix seconds when rank 0 closed the run; absent while it runs",
    "config": "hyperparameters as the user gave them",
    "env": "torch version, device, world_size, host, optimizer, model, amp",
    "task": "num_classes, class_names, expected_initial_loss",
    "probe_settings": "the probe's cadence and sampling settings",
    "source": "what wrote the run: {'kind': 'probe'} or the importer and its input's fingerprint",
    "attempts": "rank (a string) → the newest attempt that rank started",
}


def read_run_json(run_dir: str | Path) -> dict[str, Any]:
    """The metadata of the run in ``run_dir``.

    Raises:
        FileNotFoundError: no run.json there.
        ValueError: run.json is not JSON.
    """
    return json.loads((Path(run_dir) / RUN_JSON).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- footers

# JSON list of [rank, attempt, first_step] for the attempts whose rows a
# scalars file holds (first_step: the smallest step >= 0, null if none).
# Readers resolve resumed runs from these instead of scanning every row.
ATTEMPTS_KEY = b"traindoctor.attempts"
# JSON list of the segment file names a compacted file replaces.
COVERS_KEY = b"traindoctor.covers"
FOOTER_KEYS = (ATTEMPTS_KEY, COVERS_KEY)

# (rank, attempt, first_step) of one attempt in a file.
AttemptEntry = tuple[int, int, int | None]


def footer_keys(table: str, *, compacted: bool) -> frozenset[bytes]:
    """The footer keys a file of ``table`` carries (besides pyarrow's own).

    Attempts are listed in the scalars, the table every attempt writes.
    """
    keys = {ATTEMPTS_KEY} if table == "scalars" else set()
    return frozenset((keys | {COVERS_KEY}) if compacted else keys)


def encode_attempts(entries: Iterable[AttemptEntry]) -> bytes:
    """The :data:`ATTEMPTS_KEY` value for (rank, attempt, first_step) entries."""
    return json.dumps([[int(rank), int(attempt), None if first is None else int(first)]
                       for rank, attempt, first in entries]).encode()


def decode_attempts(metadata: Mapping[bytes, bytes]) -> tuple[AttemptEntry, ...] | None:
    """The (rank, attempt, first_step) entries of a footer; None when it has none.

    Raises:
        ValueError, TypeError: the value is not a list of such triples.
    """
    if ATTEMPTS_KEY not in metadata:
        return None
    return tuple((int(rank), int(attempt), None if first is None else int(first))
                 for rank, attempt, first in json.loads(metadata[ATTEMPTS_KEY]))


def encode_covers(names: Iterable[str]) -> bytes:
    """The :data:`COVERS_KEY` value for the segment names a compacted file replaces."""
    return json.dumps(list(names)).encode()


def decode_covers(metadata: Mapping[bytes, bytes]) -> tuple[str, ...]:
    """The segment names a compacted file replaces; () for any other file.

    Raises:
        ValueError, TypeError: the value is not a JSON list.
    """
    if COVERS_KEY not in metadata:
        return ()
    return tuple(str(name) for name in json.loads(metadata[COVERS_KEY]))
