"""The on-disk format of a traindoctor store: the one contract its writers and readers share.

A store is a folder of runs. One run is one folder::

    <store>/<run_id>/run.json                                           metadata (below), rewritten atomically
    <store>/<run_id>/scalars/<rank>-<attempt>-<seq>-<writer>.parquet    one segment per writer flush
    <store>/<run_id>/confusion/<rank>-<attempt>-<seq>-<writer>.parquet
    <store>/<run_id>/events/<rank>-<attempt>-<seq>-<writer>.parquet
    <store>/<run_id>/<table>/c-<generation>.parquet                     a compacted file (see Footers)
    <store>/<run_id>/.writers/<rank>-<writer>.json                      a live writer's heartbeat file

**Run ids.** ``run_id`` is the folder name: UTC time plus a random suffix
(:func:`new_run_id`), made only of letters, digits, ``.``, ``_`` and ``-``
(:func:`check_run_id`). ``name`` in run.json is the human name and may repeat.
Folders whose names start with ``.`` are never runs (importers build runs in
``.import-*`` folders and rename them into place).

**Segments.** Each writer (one process's writer of one run × one rank × one
attempt) owns its files. It publishes immutable Parquet segments: written
under a temporary name (``.tmp-`` and the final name), fsynced, then renamed
into place, so a reader never sees half a file and needs no lock. ``seq`` is
zero-padded to eight digits, so one writer's names sort in publishing order.
``writer`` is a random token each writer draws (:func:`new_writer_token`):
two processes that write the same rank of a run at once (ranks that share a
run id before ``init_process_group``, a restarted job beside a live one)
never overwrite each other's files. Names written before tokens existed
(``<rank>-<attempt>-<seq>.parquet``) still parse. Any published ``*.parquet``
file not starting with ``.`` is a segment of its table (:func:`segment_names`);
a reader uses it only if its columns have the declared types and its
``run_id`` is the folder's (anything else is skipped with a warning).

**Live writers.** While it lives, each writer keeps a heartbeat file in
``.writers/`` (:func:`writer_file_name`): JSON with its rank, attempt, token,
pid, host and how long its heartbeat may lag, touched at every heartbeat
and flush, removed on close. A writer that finds another live writer of its
own rank there warns, naming it, and records a ``concurrent_writer`` event.

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
Two writers that start at once may both take the same attempt: both keep
their rows (their names differ by the writer token).

**Failed flushes.** A writer that cannot publish (disk full, read-only,
permission denied) keeps the unpublished rows, up to a budget, and retries.
Rows it finally drops are recorded once the store is writable again: a
``rows_dropped`` event per lost segment and, from rank 0, the ``rows_dropped``
list of run.json.

**Text.** Strings are valid Unicode without NUL: a name the Parquet writer
cannot encode (a lone surrogate, as ``os.fsdecode`` makes from a non-UTF-8
file name) or a NUL is stored with U+FFFD in its place (:func:`clean_text`),
and run.json is read back the same way (:func:`read_run_json`).

**Footers.** Parquet key-value metadata (:data:`FOOTER_KEYS`) lets readers do
their bookkeeping without scanning rows. Every scalars file lists the
attempts whose rows it holds (:data:`ATTEMPTS_KEY`). Every compacted file
lists the segment names it replaces (:data:`COVERS_KEY`), in the merged file
itself, so a reader that sees the merged file ignores those pieces: no moment
where both count. :func:`footer_keys` says which file carries which key.

**run.json.** UTF-8 JSON with the keys of :data:`RUN_JSON_KEYS`; ``status`` is
one of :data:`RUN_STATUSES`. Rank 0 owns the file and rewrites it atomically.

**Summaries (the run catalog).** ``<store>/<run_id>/summary.json``
(:data:`SUMMARY_JSON`) is a small JSON object with the keys of
:data:`SUMMARY_KEYS`: what a listing of thousands of runs shows (status, steps,
wall time, last and best value of every global series per split, flattened
hyperparameters) without opening a segment. Rank 0's writer writes it at
close, compaction rewrites it, and a reader that finds it missing, corrupt or
out of date rebuilds it (``store.catalog``), atomically, and keeps it when the
store can be written. It is a cache of the run's files, never the truth: it
records what it was computed from (``segments``: the file names of each table,
unique by construction since files are immutable and named with a random
writer token or a time; ``checked``: a stat stamp of run.json and the table
folders) and a reader that sees a different listing recomputes it. Segment
footers carry per-series aggregates (:data:`SERIES_KEY`), so a running run's
summary is refreshed from its newest segments' footers only.

**Catalog index.** ``<store>/.catalog.json`` (:data:`INDEX_JSON`) keeps, for
every run, the summary fields a table of runs needs with the stamp and
summary.json stat they were read under: one file parse lists 10,000 runs. A
cache of the summaries, rewritten by any reader that found an entry stale;
deleting it costs one slower listing.

**Findings cache.** ``<store>/<run_id>/.findings.json`` (:data:`FINDINGS_JSON`)
holds a run's findings with the run's content ``fingerprint`` and the
diagnosis ``engine`` version they were computed for (the keys of
:data:`FINDINGS_KEYS`); either changing makes it stale.

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
from typing import Any, Iterable, Mapping, Sequence

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
    "eval_mode_during_training": "probe.step() ran while model.training was False (at the first step of each "
                                 "stretch in eval mode)",
    "train_mode_restored": "probe.step() ran with model.training True again after a stretch of "
                           "eval_mode_during_training: the stretch ended at the step before",
    "train_mode_during_eval": "an evaluation pass ran while model.training was True",
    "grads_not_zeroed": "the gradients were kept from one optimizer step into the next (no zero_grad()): seen at "
                        "the first backward after each step, once, at the first step of the stretch; detail is "
                        "JSON: the parameter watched, first and last step, and ||grad - new gradient|| / ||grad||",
    "config_lint": "a set-up problem the probe found when watching the model and optimizer",
    "crash": "the run ended with an exception or a signal; detail holds the traceback",
    "resumed": "a new attempt of the run started",
    "rows_dropped": "rows the writer could not publish and dropped (the store was unwritable for longer than its "
                    "unpublished-row budget lasts); detail says how many, of which table, steps and why",
    "concurrent_writer": "another live writer was recording the same rank of this run; detail names it "
                         "(both keep their rows)",
    "step_without_optimizer_step": "probe.step() came without an optimizer.step() since the last one (called per "
                                   "micro-batch, or the optimizer that steps is not the watched one): the run's "
                                   "steps are not optimizer steps; once, at the first such step",
    "live_finding": "a live check of the probe found a problem while the run trained; detail is the finding as "
                    "JSON (Finding.to_dict()); step and wall_time say when it was first raised",
    "stop_requested": "a live finding met Probe(stop_on=...) and probe.should_stop became true; detail is JSON: "
                      "stop_on and the finding",
    "training_stopped": "training was stopped because of a live finding (Lightning's trainer.should_stop, the HF "
                        "Trainer's control.should_training_stop, or TrainingStopped raised by probe.step); detail "
                        "is JSON: by whom, stop_on and the finding",
}
_LR_LAYER_PREFIX = "group"


def lr_layer(group_index: int) -> str:
    """The ``layer`` of param group ``group_index``'s ``lr``: ``lr_layer(0) == "group0"``."""
    return f"{_LR_LAYER_PREFIX}{int(group_index)}"


# ----------------------------------------------------------------- layout

# The store folder when none is given, relative to the working directory: a
# name no other tool uses by default. The old default, ./runs, is also
# PyTorch's SummaryWriter default, so TensorBoard event files and our runs
# mixed there; readers still fall back to it (store/catalog.py's
# default_store_path).
DEFAULT_STORE = "traindoctor_runs"
OLD_DEFAULT_STORE = "runs"
RUN_JSON = "run.json"
SEGMENT_SUFFIX = ".parquet"
# Files being written; never read, removed by compaction once stale.
TEMPORARY_PREFIX = ".tmp-"
COMPACTED_PREFIX = "c-"
# Heartbeat files of the writers alive in a run folder (hidden: never a run or a table).
WRITERS_FOLDER = ".writers"
_WRITER_TOKEN = re.compile(r"^[0-9a-f]{8,32}$")
_SEGMENT_NAME = re.compile(
    r"^(?P<rank>\d+)-(?P<attempt>\d+)-(?P<sequence>\d+)(?:-(?P<writer>[0-9a-f]{8,32}))?\.parquet$")
_WRITER_FILE = re.compile(r"^(?P<rank>\d+)-(?P<writer>[0-9a-f]{8,32})\.json$")


def new_writer_token() -> str:
    """A random token that names one writer's files: 16 hex digits (64 bits)."""
    return secrets.token_hex(8)


def segment_name(rank: int, attempt: int, sequence: int, writer: str) -> str:
    """A writer's segment file name.

    Example:
        >>> segment_name(0, 1, 7, "5f1c0a93d2e84b76")
        '0-1-00000007-5f1c0a93d2e84b76.parquet'
    """
    if not _WRITER_TOKEN.match(writer):
        raise ValueError(f"a writer token is 8 to 32 lowercase hex digits, got {writer!r}")
    return f"{rank}-{attempt}-{sequence:08d}-{writer}{SEGMENT_SUFFIX}"


def temporary_name(name: str) -> str:
    """The name a file is written under before it is renamed to ``name``."""
    return f"{TEMPORARY_PREFIX}{name}"


def writer_file_name(rank: int, writer: str) -> str:
    """The heartbeat file of a live writer in :data:`WRITERS_FOLDER`: ``"0-5f1c0a93d2e84b76.json"``."""
    return f"{rank}-{writer}.json"


def writer_file_rank(name: str) -> tuple[int, str] | None:
    """(rank, writer token) from a heartbeat file's name; None for any other name."""
    match = _WRITER_FILE.match(name)
    return None if match is None else (int(match["rank"]), match["writer"])


def compacted_name(generation: int) -> str:
    """A compacted file's name; ``generation`` (``time.time_ns()``) orders merges."""
    return f"{COMPACTED_PREFIX}{generation:020d}{SEGMENT_SUFFIX}"


def segment_rank_attempt(name: str) -> tuple[int, int] | None:
    """(rank, attempt) from a writer's segment name (with or without the
    writer token); None for any other name."""
    match = _SEGMENT_NAME.match(name)
    return None if match is None else (int(match["rank"]), int(match["attempt"]))


def segment_writer(name: str) -> str | None:
    """The writer token of a writer's segment name; None for any other name
    (and for names written before tokens existed)."""
    match = _SEGMENT_NAME.match(name)
    return None if match is None else match["writer"]


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


# ------------------------------------------------------------------- text

# What Parquet's UTF-8 cannot hold (lone surrogates: a Python str has no
# other surrogates) and NUL, which C tools read as the end of a string.
_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")
REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """``text`` with each lone surrogate and NUL replaced by U+FFFD.

    Example:
        >>> clean_text("acc_\\udcff")
        'acc_\ufffd'
    """
    if text.isascii() and "\x00" not in text:
        return text  # the common case: one C-level scan
    return _UNSTORABLE.sub(REPLACEMENT, text)


def clean_json(value: Any) -> Any:
    """A JSON value (dicts, lists, strings, numbers) with :func:`clean_text`
    applied to every string, keys included."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(key) if isinstance(key, str) else key: clean_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clean_json(item) for item in value]
    return value


# --------------------------------------------------------------- run.json

RUN_STATUSES = ("running", "finished", "crashed")
# run.json's task.kind: what the loss measures, which sets its scale. A
# classifier's cross-entropy starts at ln C and can reach 0; a language
# model's token cross-entropy starts at ln V (from scratch) and never nears 0;
# a regression loss has the units of its targets. "unknown" (or no kind) means
# no rule may judge a loss level.
TASK_KINDS = ("classification", "language_modelling", "regression", "unknown")
RUN_JSON_KEYS: dict[str, str] = {
    "run_id": "the run's id (the folder name)",
    "name": "the human name; may repeat across runs (defaults to the run_id)",
    "project": "an optional project name",
    "status": "one of RUN_STATUSES; a running run whose heartbeat stopped reads as crashed",
    "created_at": "Unix seconds when the run's first attempt started",
    "heartbeat_at": "Unix seconds of rank 0's latest sign of life",
    "finished_at": "Unix seconds when rank 0 closed the run; absent while it runs",
    "config": "hyperparameters as the user gave them",
    "env": "torch version, device, world_size, host, optimizer, model (frozen: the optimizer's parameters with requires_grad=False at watch()), amp",
    "task": "kind (one of TASK_KINDS; absent: inferred from num_classes, else unknown), num_classes and "
            "class_names (classification), vocab_size (language modelling), expected_initial_loss",
    "probe_settings": "the probe's cadence and sampling settings",
    "source": "what wrote the run: {'kind': 'probe'} or the importer and its input's fingerprint",
    "attempts": "rank (a string) → the newest attempt that rank started",
    "rows_dropped": "rank 0's writer's dropped rows, one entry per lost segment: rank, attempt, table, rows, "
                    "first_step, last_step, reason, at (Unix seconds); absent when nothing was dropped",
}


def read_run_json(run_dir: str | Path) -> dict[str, Any]:
    """The metadata of the run in ``run_dir``, its strings cleaned (:func:`clean_text`).

    JSON's ``\\ud800`` escapes decode to lone surrogates, which no later
    step (DuckDB, pandas' Arrow strings, a terminal) can encode.

    Raises:
        FileNotFoundError: no run.json there.
        ValueError: run.json is not JSON, or not a JSON object.
    """
    meta = clean_json(json.loads((Path(run_dir) / RUN_JSON).read_text(encoding="utf-8")))
    if not isinstance(meta, dict):
        raise ValueError(f"{RUN_JSON} holds a {type(meta).__name__}, not an object")
    return meta


# ---------------------------------------------------------------- footers

# JSON list of [rank, attempt, first_step] for the attempts whose rows a
# scalars file holds (first_step: the smallest step >= 0, null if none).
# Readers resolve resumed runs from these instead of scanning every row.
ATTEMPTS_KEY = b"traindoctor.attempts"
# JSON list of the segment file names a compacted file replaces.
COVERS_KEY = b"traindoctor.covers"
# JSON list of SERIES_FIELDS lists: one per (rank, attempt, split, name) of
# the file's global rows (layer null). The run catalog sums these instead of
# scanning rows.
SERIES_KEY = b"traindoctor.series"
FOOTER_KEYS = (ATTEMPTS_KEY, COVERS_KEY, SERIES_KEY)
# Keys files written by older versions lack (readers fall back to scanning rows).
OPTIONAL_FOOTER_KEYS = frozenset({SERIES_KEY})
SERIES_FIELDS = (
    "rank", "attempt", "split", "name",
    "count",                    # distinct steps
    "first_step", "last_step",
    "last_value",               # the value at last_step (NaN and ±Inf kept)
    "min", "min_step",          # the smallest finite value and its step; null when none is finite
    "max", "max_step",          # the largest finite value and its step; null when none is finite
    "first_wall_time", "last_wall_time",  # finite wall_time bounds, Unix seconds; null when none
)

# (rank, attempt, first_step) of one attempt in a file.
AttemptEntry = tuple[int, int, int | None]


def footer_keys(table: str, *, compacted: bool) -> frozenset[bytes]:
    """The footer keys a file of ``table`` carries (besides pyarrow's own).

    Attempts and series aggregates are listed in the scalars, the table
    every attempt writes.
    """
    keys = {ATTEMPTS_KEY, SERIES_KEY} if table == "scalars" else set()
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


def encode_series(entries: Iterable[Sequence[Any]]) -> bytes:
    """The :data:`SERIES_KEY` value for entries in :data:`SERIES_FIELDS` order
    (NaN and ±Inf last values are kept as JSON's NaN/Infinity tokens)."""
    return json.dumps([list(entry) for entry in entries], allow_nan=True).encode()


def decode_series(metadata: Mapping[bytes, bytes]) -> list[tuple[Any, ...]] | None:
    """The series entries of a scalars file's footer; None when it has none
    (a file written before footers carried them, or a foreign file).

    Raises:
        ValueError, TypeError: the value is not a list of SERIES_FIELDS lists.
    """
    if SERIES_KEY not in metadata:
        return None
    entries = json.loads(metadata[SERIES_KEY])
    if not isinstance(entries, list) or any(not isinstance(e, list) or len(e) != len(SERIES_FIELDS) for e in entries):
        raise ValueError("series footer entries are not lists of SERIES_FIELDS")
    return [tuple(entry) for entry in entries]


# ---------------------------------------------------------------- summary

SUMMARY_JSON = "summary.json"
# Bumped when the summary's keys or their meaning change: a summary of
# another format is rebuilt on read. 2: ``hyperparameters`` takes ``lr``
# from the optimizer the probe saw when the config has none.
SUMMARY_FORMAT = 2
SUMMARY_KEYS: dict[str, str] = {
    "summary_format": "SUMMARY_FORMAT of the writer of this file",
    "traindoctor_version": "the version of traindoctor that wrote it",
    "run_id": "the run's id", "name": "as in run.json (the run_id when absent)", "project": "as in run.json",
    "status": "run.json's status as written (a reader shows a running run whose heartbeat stopped as crashed)",
    "created_at": "Unix seconds", "heartbeat_at": "Unix seconds", "finished_at": "Unix seconds",
    "num_classes": "task.num_classes", "config": "run.json's config", "env": "run.json's env",
    "task": "run.json's task", "source": "run.json's source", "attempts": "run.json's attempts",
    "hyperparameters": "config flattened: nested keys joined with '.', lists as JSON text",
    "last_step": "the last step of any global series of rank 0; null when none",
    "num_steps": "distinct steps of the training loss",
    "first_wall_time": "the first recorded wall_time of rank 0's global rows, Unix seconds",
    "last_wall_time": "the last one", "wall_time_s": "last_wall_time - first_wall_time, seconds",
    "metrics": "split -> name -> {last, last_step, best, best_step, count} of rank 0's global series; "
               "best is the smallest finite value, the largest for metrics where higher is better (metric_goal)",
    "series": "the per-(attempt, split, name) aggregates metrics come from (SERIES_FIELDS without rank)",
    "attempt_starts": "attempt -> rank 0's first step of that attempt (from the scalars footers)",
    "covered": "scalars pieces still present that a compacted file replaces (not counted)",
    "segments": "table -> the sorted file names the summary was computed from",
    "fingerprint": "sha256 of the segment names of every table and of the run.json fields the diagnosis reads "
                   "(config, task, env, source): the key of the findings cache",
    "checked": "[run.json mtime_ns, size, scalars/ confusion/ events/ mtime_ns] when the summary was computed; "
               "null when that was too recent to trust (a file timestamp has a coarse clock)",
    "findings": "{engine, fingerprint, counts: severity -> number, rules} of the cached findings, when diagnosed",
}
INDEX_JSON = ".catalog.json"
FINDINGS_JSON = ".findings.json"
FINDINGS_KEYS: dict[str, str] = {
    "engine": "the diagnosis engine version the findings come from",
    "fingerprint": "the run's summary fingerprint they were computed for",
    "findings": "Finding.to_dict() of each finding, in the engine's order",
    "recording_problems": "rows_dropped, concurrent_writer and step_without_optimizer_step events of the run "
                          "(kind, step, detail)",
    "crash": "the last line of the run's crash event (the exception or signal), null without one",
    "name": "the run's name when diagnosed",
}
# Metrics where a larger value is better; every other metric is better smaller.
_HIGHER_IS_BETTER = re.compile(r"(acc|accuracy|f1|precision|recall|auc|auroc|bleu|rouge|map|iou|dice|score|top\d+)$")


def metric_goal(name: str) -> str:
    """``"max"`` for metrics where higher is better (accuracy, F1, AUC, BLEU,
    ...), ``"min"`` for the rest (losses, errors, perplexity).

    Example:
        >>> metric_goal("accuracy"), metric_goal("loss"), metric_goal("val_top5")
        ('max', 'min', 'max')
    """
    last_word = re.split(r"[^a-z0-9]+", name.lower())[-1]
    return "max" if _HIGHER_IS_BETTER.search(last_word) else "min"
