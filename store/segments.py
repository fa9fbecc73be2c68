"""The writer half of the run store: buffer rows, publish immutable Parquet segments.

One :class:`RunWriter` owns one run × one rank × one attempt. Rows are
buffered in memory as column chunks and published from a background thread
as Parquet files (written under a temporary name, fsynced, then
``os.replace``d into place), so a reader never sees half a file and never
needs a lock. The probe and every importer write through this class.

What the files hold (tables, columns, names, footers, run.json) is stated
in :mod:`traindoctor.store.format`; this module is how they get written.
It imports only the standard library, numpy and pyarrow: the probe imports
it inside training processes.

Example:
    >>> with RunWriter("traindoctor_runs", name="demo") as writer:      # doctest: +SKIP
    ...     writer.add_scalars(step=1, name="loss", value=2.3)
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from traindoctor.store.arrow_numpy import dictionary_array, numbers_array, string_array, to_numpy
from traindoctor.store.errors import StoreError
from traindoctor.store.fs import (
    DEFAULT_MAX_SPOOL_BYTES, ObjectStore, Spool, drain_orphaned_spools, parse_store, store_unavailable,
)
from traindoctor.store.format import (
    ATTEMPTS_KEY, COLUMNS, FLOAT64, INT32, INT64, RUN_JSON, RUN_STATUSES, SERIES_KEY, STRING, TABLES,
    WRITERS_FOLDER, check_run_id, clean_json, clean_text, decode_attempts, encode_attempts,
    encode_series, new_run_id,
    new_writer_token, read_run_json, segment_name, segment_names, segment_rank_attempt, segment_writer,
    temporary_name, writer_file_name, writer_file_rank,
)

# Logical types of the contract (traindoctor.store.format) as Arrow types.
_ARROW_TYPES = {STRING: pa.string(), INT32: pa.int32(), INT64: pa.int64(), FLOAT64: pa.float64()}


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of ``table``'s files, built from the contract's columns."""
    return pa.schema([(column.name, _ARROW_TYPES[column.type]) for column in COLUMNS[table]])


SCHEMAS = {table: arrow_schema(table) for table in TABLES}
# Dictionary pages only for the string columns that repeat: trying them on
# floats (unique per row) costs more than the compression itself.
_DICTIONARY_COLUMNS = ["run_id", "split", "name", "layer", "kind"]

# Publishing a segment costs one file create + fsync (~1 ms on a local disk);
# every 2 s keeps a crash's loss small without flooding the folder.
DEFAULT_FLUSH_EVERY_S = 2.0
# A flush is also forced when this many rows wait, bounding memory (~40 MB).
DEFAULT_MAX_BUFFERED_ROWS = 1_000_000
# run.json's heartbeat_at is rewritten this often while the writer lives; a
# reader calls a "running" run crashed once the heartbeat is older than
# store.reader.DEFAULT_STALE_AFTER_S (several heartbeats).
DEFAULT_HEARTBEAT_EVERY_S = 5.0
# Rows kept while the store cannot be written (disk full, read-only, a
# permission or mount problem), retried at every flush: ~80 MB of Arrow
# columns, minutes of a typical probe run (a few hundred rows a second).
# Beyond it the oldest rows are dropped and recorded (rows_dropped).
DEFAULT_MAX_UNPUBLISHED_ROWS = 2_000_000
# close() retries a failing store this long before it drops what is left:
# long enough for a brief outage (an NFS hiccup, a log rotation freeing
# space), short enough not to hold a finished job for long.
DEFAULT_CLOSE_TIMEOUT_S = 10.0
# The background thread's retries after failed flushes back off from
# flush_every_s, doubling up to this: a broken store costs one failing open
# a minute at most, and a store that comes back is written within the minute.
_MAX_RETRY_DELAY_S = 60.0
# Another writer's heartbeat file is live while younger than this (or, from
# its own settings, three of its heartbeats), the reader's stale_after_s.
_LIVE_WRITER_S = 60.0
# Heartbeat files older than this are from dead writers: removed when seen.
_DEAD_WRITER_S = 3600.0


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    The temporary name is random: two processes (even with equal pids, in
    two containers) never write the same temporary file.
    """
    tmp = path.with_name(f"{temporary_name(path.name)}-{os.getpid()}-{secrets.token_hex(6)}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # the store is broken; the file is hidden (.tmp-) and removed by compaction later


def run_json_text(meta: Mapping[str, Any]) -> str:
    """run.json's text for ``meta``: values JSON cannot hold become their
    repr, text is cleaned (:func:`~traindoctor.store.format.clean_text`).

    Raises:
        TypeError: a key JSON cannot hold (a tuple), keys that cannot be
            sorted (1 and "a" in one dict), or a value that contains itself.
    """
    try:
        return json.dumps(clean_json(dict(meta)), indent=2, sort_keys=True, default=_json_default, allow_nan=True)
    except (TypeError, ValueError, RecursionError) as error:
        raise TypeError(f"cannot be stored in {RUN_JSON}: {error}") from None


def write_run_json(run_dir: Path, meta: Mapping[str, Any]) -> None:
    """Replace the run's run.json atomically (values JSON cannot hold become their repr)."""
    atomic_write_bytes(Path(run_dir) / RUN_JSON, run_json_text(meta).encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _now() -> float:
    return time.time()


_SCALAR_TYPES = (str, bytes, int, float, bool, np.generic)


class _StringCodes:
    """Dictionary-encodes a string column chunk by chunk without per-row Python work.

    Scalar strings cost one dict lookup per chunk. Tuples (the probe passes the
    same tuple of layer names at every cadence step) are encoded once and the
    codes reused while the tuple lives: the cache keeps a reference, so its id
    cannot be recycled.
    """

    def __init__(self) -> None:
        self.values: list[str] = []
        self.index: dict[str, int] = {}
        self._by_text: dict[str, int] = {}
        self._tuple_cache: dict[int, tuple[tuple, np.ndarray]] = {}
        # (given, stored) for each name that could not be stored as given.
        self.cleaned: list[tuple[str, str]] = []

    def code(self, value: str | None) -> int:
        if value is None:
            return -1
        found = self.index.get(value)
        if found is None:
            # Once per distinct string per flush: a name pyarrow cannot
            # encode (a lone surrogate) would fail the whole segment.
            text = str(value)
            stored = clean_text(text)
            if stored != text:
                self.cleaned.append((text, stored))
            found = self._by_text.get(stored)
            if found is None:
                found = self._by_text[stored] = len(self.values)
                self.values.append(stored)
            self.index[value] = found
        return found

    def codes(self, value: Any, length: int) -> np.ndarray:
        if value is None or isinstance(value, (str, bytes, np.str_)):
            return np.full(length, self.code(None if value is None else str(value)), dtype=np.int32)
        if isinstance(value, tuple):
            cached = self._tuple_cache.get(id(value))
            if cached is None or cached[0] is not value:
                cached = (value, np.array([self.code(v) for v in value], dtype=np.int32))
                self._tuple_cache[id(value)] = cached
            return cached[1]
        return np.array([self.code(None if v is None else str(v)) for v in value], dtype=np.int32)

    def column(self, items: list, chunk_of_row: np.ndarray) -> np.ndarray:
        """The codes of a whole column from its per-chunk values: scalar
        chunks cost one dict lookup each, then one gather and one
        concatenation serve every row."""
        scalar = np.empty(len(items), dtype=np.int32)
        is_sequence = np.zeros(len(items), dtype=bool)
        sequences = []
        for index, value in enumerate(items):
            if value is None or isinstance(value, (str, bytes, np.str_)):
                scalar[index] = self.code(None if value is None else str(value))
            else:
                scalar[index] = -1
                is_sequence[index] = True
                sequences.append(self.codes(value, len(value)))
        return _fill_sequences(scalar, is_sequence, sequences, chunk_of_row)

    def array(self, codes: np.ndarray) -> pa.Array:
        return dictionary_array(codes, self.values)


def _optional_numbers(values: list, kind: pa.DataType) -> pa.Array:
    """An Arrow array of ``kind`` from Python numbers, null where a value is None."""
    missing = np.fromiter((value is None for value in values), dtype=bool, count=len(values))
    filled = [0 if value is None else value for value in values]
    return numbers_array(np.asarray(filled) if filled else np.zeros(0), kind, missing)


def _numeric_column(items: list, chunk_of_row: np.ndarray, dtype: Any, fill: Any) -> np.ndarray:
    """A whole numeric column from per-chunk values (scalar, None or 1-D),
    with a constant number of numpy calls (np.full per chunk cost ~3 µs
    each, a third of the writer's time)."""
    scalar = np.empty(len(items), dtype=dtype)
    is_sequence = np.zeros(len(items), dtype=bool)
    sequences = []
    for index, value in enumerate(items):
        if value is None:
            scalar[index] = fill
        elif isinstance(value, (np.ndarray, tuple, list)):
            scalar[index] = fill
            is_sequence[index] = True
            sequences.append(np.asarray(value, dtype=dtype))
        else:
            scalar[index] = value
    return _fill_sequences(scalar, is_sequence, sequences, chunk_of_row)


def _fill_sequences(scalar: np.ndarray, is_sequence: np.ndarray, sequences: list, chunk_of_row: np.ndarray) -> np.ndarray:
    """Rows of scalar chunks gathered from ``scalar``, rows of sequence
    chunks (in chunk order) from ``sequences``."""
    if not sequences:
        return scalar[chunk_of_row]
    values = np.concatenate(sequences).astype(scalar.dtype, copy=False)
    if len(sequences) == len(scalar):
        return values
    out = scalar[chunk_of_row]
    out[is_sequence[chunk_of_row]] = values
    return out


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def series_entries(rank: int, attempt: int, splits: tuple[_StringCodes, np.ndarray],
                   names: tuple[_StringCodes, np.ndarray], layer_codes: np.ndarray, steps: np.ndarray,
                   walls: np.ndarray, values: np.ndarray) -> list[list]:
    """The :data:`~traindoctor.store.format.SERIES_KEY` entries of one segment's
    global rows (layer null), one per (split, name).

    One stable argsort of the rows' (split, name) codes, then a few numpy
    reductions per series: a flush holds a handful of series, so this costs
    little next to encoding the file.
    """
    is_global = (layer_codes < 0) & (splits[1] >= 0) & (names[1] >= 0)
    if not is_global.any():
        return []
    split_codes, name_codes = splits[1][is_global], names[1][is_global]
    steps, walls, values = steps[is_global], walls[is_global], values[is_global]
    key = split_codes.astype(np.int64) * (len(names[0].values) + 1) + name_codes
    order = np.argsort(key, kind="stable")  # keeps each series' rows in the order they were added
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)]
    entries = []
    for start, end in zip(starts, ends):
        rows = order[start:end]
        series_steps, series_values, series_walls = steps[rows], values[rows], walls[rows]
        if len(series_steps) > 1 and (np.diff(series_steps) < 0).any():
            by_step = np.argsort(series_steps, kind="stable")
            series_steps, series_values, series_walls = series_steps[by_step], series_values[by_step], series_walls[by_step]
        finite = np.isfinite(series_values)
        low = high = None
        if finite.any():
            candidates = np.where(finite, series_values, np.inf)
            low = int(np.argmin(candidates))
            high = int(np.argmax(np.where(finite, series_values, -np.inf)))
        wall = series_walls[np.isfinite(series_walls)]
        entries.append([
            rank, attempt, splits[0].values[split_codes[rows[0]]], names[0].values[name_codes[rows[0]]],
            int(1 + np.count_nonzero(np.diff(series_steps))),
            int(series_steps[0]), int(series_steps[-1]), float(series_values[-1]),
            None if low is None else float(series_values[low]), None if low is None else int(series_steps[low]),
            None if high is None else float(series_values[high]), None if high is None else int(series_steps[high]),
            _finite_or_none(wall.min()) if len(wall) else None, _finite_or_none(wall.max()) if len(wall) else None,
        ])
    return entries


@dataclass
class _ScalarBuffer:
    """Column chunks waiting to be published; swapped out whole on flush."""

    chunks: list[tuple] = field(default_factory=list)
    rows: int = 0


@dataclass
class _Unpublished:
    """A built segment that has not been published yet."""

    table_name: str
    table: pa.Table


@dataclass
class _Outage:
    """The store has refused every publish since ``since`` (Unix seconds)."""

    since: float
    since_monotonic: float
    reason: str
    failures: int = 0


def _setup_mistake(error: BaseException) -> bool:
    """Whether an object store's error is the user's set-up (no such bucket,
    access denied, no credentials, a missing extra) rather than a store that
    did not answer (refused, timed out, throttled, a server error)."""
    if isinstance(error, (FileNotFoundError, PermissionError, StoreError)):
        return True
    # botocore's NoCredentialsError, PartialCredentialsError and NoRegionError, by name: botocore is optional.
    return any(kind.__name__ in {"NoCredentialsError", "PartialCredentialsError", "NoRegionError"}
               for kind in type(error).__mro__)


def _failure_reason(error: BaseException) -> str:
    """A short reason that is the same for every file of one outage
    ("No space left on device"), so it is warned about once."""
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno)
    return type(error).__name__


def _warm_up() -> None:
    """Pay pyarrow's one-time costs now, so that no flush pays them.

    pyarrow loads its Parquet writer and codec on the first file; a no-op
    once paid in this process. (The arrays are built from their buffers,
    ``store.arrow_numpy``: ``pa.array`` would import pandas, 0.6 s, seconds on
    a loaded machine.)
    """
    try:
        table = pa.table({"value": numbers_array(np.zeros(1), pa.float64()),
                          "name": dictionary_array(np.zeros(1, dtype=np.int32), ["loss"])})
        pq.write_table(table, pa.BufferOutputStream(), compression="zstd")
    except Exception:  # the real flush will report whatever this hit
        pass


class RunWriter:
    """Writes one run (one rank, one attempt) into a store folder.

    Args:
        store: the store folder (created if missing), or an object-store URL
            (``s3://bucket/prefix``, ``gs://``, ``az://``; ``store.fs``): each
            segment is then one create-only PUT, run.json is rank 0's object,
            each writer's heartbeat its own object, and uploads that fail wait
            in a local spool (``max_spool_bytes``) and are retried.
        name: the human name of the run (may repeat across runs).
        run_id: reuse an existing id to resume that run (a new attempt), or
            share one id across distributed ranks; a new unique id otherwise.
        rank: this process's rank; rank 0 owns ``run.json``.
        world_size: number of ranks writing this run.
        project, config, env, task, probe_settings, source: stored in run.json.
        created_at: when the run started (Unix seconds), for a run written after
            the fact (an import: its source's own start); default now, or the
            resumed run's.
        flush_every_s: publish buffered rows at least this often.
        heartbeat_every_s: refresh ``heartbeat_at`` (rank 0) and this
            writer's heartbeat file this often.
        max_buffered_rows: flush at once when this many rows wait.
        max_unpublished_rows: rows kept while the store cannot be written;
            beyond it the oldest are dropped and recorded.
        close_timeout_s: how long ``close`` retries a store that cannot be
            written before it drops what is left.
        background: run the flush/heartbeat thread (off for importers that
            flush explicitly).
        max_spool_bytes: on an object store, bytes of segments kept on local
            disk while uploads fail; beyond it the oldest are dropped and
            recorded.

    Rows added with ``add_*`` are visible to readers after the next flush.
    A flush that fails (disk full, read-only, permission denied) keeps its
    rows and the next flush retries them; rows finally dropped are recorded
    in the run (``rows_dropped``) once it can be written again, and listed
    in ``dropped``. ``close(status)`` flushes, compacts nothing (see
    ``store.compact``), and records the final status.

    Raises:
        TypeError: config, env, task, probe_settings or source cannot be
            stored in run.json (a tuple key, keys that do not sort); raised
            before anything is written.
        StoreError: an object store whose bucket does not exist, that denies
            access or finds no credentials, or whose extra is not installed
            (one line); or one that does not answer while ``run_id`` is given
            (a resumed or shared run needs the listing to number its attempt).
            A new run on a store that does not answer starts anyway, with one
            warning: its segments wait in the spool and run.json is PUT by
            the heartbeat once the store answers.
    """

    def __init__(
        self,
        store: str | os.PathLike,
        *,
        name: str | None = None,
        run_id: str | None = None,
        rank: int = 0,
        world_size: int = 1,
        project: str | None = None,
        config: Mapping[str, Any] | None = None,
        env: Mapping[str, Any] | None = None,
        task: Mapping[str, Any] | None = None,
        probe_settings: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
        created_at: float | None = None,
        flush_every_s: float = DEFAULT_FLUSH_EVERY_S,
        heartbeat_every_s: float = DEFAULT_HEARTBEAT_EVERY_S,
        max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS,
        max_unpublished_rows: int = DEFAULT_MAX_UNPUBLISHED_ROWS,
        close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S,
        background: bool = True,
        max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES,
    ) -> None:
        self.location = parse_store(store)
        self.run_id = check_run_id(run_id) if run_id else new_run_id()
        self.rank = int(rank)
        self.world_size = int(world_size)
        # On an object store: its client, and no local folder (run_dir None).
        self._objects: ObjectStore | None = None
        if self.location.remote:
            self.store: Any = self.location.url
            self.run_dir: Any = None
        else:
            self.store = Path(self.location.path)
            self.run_dir = self.store / self.run_id
        self.flush_every_s = float(flush_every_s)
        self.heartbeat_every_s = float(heartbeat_every_s)
        self.max_buffered_rows = int(max_buffered_rows)
        self.max_unpublished_rows = int(max_unpublished_rows)
        self.close_timeout_s = float(close_timeout_s)
        self.closed = False
        self.errors: list[str] = []
        # Rows dropped for good, one entry per lost segment (see format's rows_dropped).
        self.dropped: list[dict[str, Any]] = []
        # Names every file of this writer carries: another process writing
        # the same rank (and maybe attempt) never overwrites them.
        self.token = new_writer_token()
        self._host = socket.gethostname()
        meta_fields = {"name": name, "project": project, "config": config, "env": env, "task": task,
                       "probe_settings": probe_settings, "source": source}
        for key, value in meta_fields.items():
            if value is not None:
                _check_storable(key, value)  # before any folder exists
        if created_at is not None:
            if not (isinstance(created_at, (int, float)) and math.isfinite(created_at)):
                raise ValueError(f"created_at must be a finite number of Unix seconds, got {created_at!r}")
            meta_fields["created_at"] = float(created_at)

        self._listing: dict[str, Any] = {}
        # run.json could not be PUT (the store did not answer): the heartbeat retries it.
        self._meta_pending = False
        offline_reason: str | None = None
        if self.location.remote:
            self._objects = ObjectStore(self.location)
            try:
                self._listing = self._objects.list(self.run_id)
            except Exception as error:
                # No such bucket, denied, no credentials: a set-up mistake, said at
                # once. A store that does not answer (refused, timed out, 5xx) only
                # delays a new run: its attempt is 0 whatever the bucket holds, so it
                # starts with its segments in the spool. A resumed or shared run id
                # needs the listing to number its attempt, so it cannot start blind.
                if run_id is not None or _setup_mistake(error):
                    raise store_unavailable(self.location, error) from None
                offline_reason = str(store_unavailable(self.location, error))
        else:
            for table in TABLES:
                (self.run_dir / table).mkdir(parents=True, exist_ok=True)
        self._spool = Spool(self.location, self.token, max_bytes=max_spool_bytes) if self.location.remote else None
        if offline_reason is not None:
            self._meta_pending = True  # no PUT of run.json now: it would wait for the same timeout
            warnings.warn(f"traindoctor: {offline_reason}; training goes on: segments wait in "
                          f"{self._spool.folder} and are uploaded, with run.json, when it answers",
                          RuntimeWarning, stacklevel=3)
        # Upload failures of one outage (object stores): back-off and one warning.
        self._upload_failures = 0
        self._upload_retry_at = 0.0
        self._warned_spool = False
        self._last_put = time.monotonic()
        self.attempt = self._next_attempt()
        self._seq = 0
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._scalars = _ScalarBuffer()
        self._confusion: list[dict] = []
        self._events: list[dict] = []
        self._queue: list[_Unpublished] = []
        self._outage: _Outage | None = None
        self._unrecorded: list[dict[str, Any]] = []
        self._cleaned_names: set[str] = set()
        self._other_writers: set[str] = set()

        if self.rank == 0:
            self._init_run_json(**meta_fields)
        if self.attempt > 0:
            self.add_event("resumed", f"attempt {self.attempt} of run {self.run_id} started", step=None)
        self._register()

        if background:
            # Here, not in the first flush: paid there, it made the first
            # segment later than flush_every_s (seconds on a loaded machine).
            _warm_up()
        self._started = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name=f"traindoctor-writer-{self.run_id}", daemon=True)
            self._thread.start()

    # ----------------------------------------------------------------- set-up

    def _next_attempt(self) -> int:
        """One more than the highest attempt this rank has written (0 for a new run)."""
        if self._objects is not None:
            return self._next_remote_attempt()
        highest = -1
        for table in TABLES:
            folder = self.run_dir / table
            for name in segment_names(entry.name for entry in os.scandir(folder)):
                named = segment_rank_attempt(name)
                if named is not None:
                    if named[0] == self.rank:
                        highest = max(highest, named[1])
                elif table == "scalars":
                    # A compacted file hides the attempts in its rows; its
                    # footer lists them (every rank, unlike run.json).
                    for rank, attempt, _ in read_file_attempts(folder / name) or []:
                        if rank == self.rank:
                            highest = max(highest, attempt)
        meta_path = self.run_dir / RUN_JSON
        if meta_path.exists():
            try:
                attempts = read_run_json(self.run_dir).get("attempts", {})
                highest = max(highest, int(attempts.get(str(self.rank), -1)))
            except (OSError, ValueError, TypeError, AttributeError):
                pass
        # Compacted files hide the attempt in their rows; run.json remembers it.
        return highest + 1

    def _next_remote_attempt(self) -> int:
        """_next_attempt from the run prefix's one LIST (made at start), the
        footers of compacted scalars objects (range reads) and run.json."""
        highest = -1
        for key in self._listing:
            parts = key.split("/")
            if len(parts) != 3 or parts[1] not in TABLES or not segment_names([parts[2]]):
                continue
            named = segment_rank_attempt(parts[2])
            if named is not None:
                if named[0] == self.rank:
                    highest = max(highest, named[1])
            elif parts[1] == "scalars":
                try:
                    with self._objects.open_input(key) as handle:
                        attempts = decode_attempts(pq.read_schema(handle).metadata or {}) or ()
                except Exception:
                    attempts = ()
                highest = max([highest, *(attempt for rank, attempt, _ in attempts if rank == self.rank)])
        meta = self._remote_meta()
        try:
            highest = max(highest, int((meta or {}).get("attempts", {}).get(str(self.rank), -1)))
        except (ValueError, TypeError, AttributeError):
            pass
        return highest + 1

    def _remote_meta(self) -> dict[str, Any] | None:
        """The bucket's run.json of this run, when the start-up LIST showed one."""
        if f"{self.run_id}/{RUN_JSON}" not in self._listing:
            return None
        try:
            meta = clean_json(json.loads(self._objects.get(f"{self.run_id}/{RUN_JSON}")))
        except Exception:
            return None
        return meta if isinstance(meta, dict) else None

    def _save_meta(self, meta: Mapping[str, Any]) -> None:
        """Replace run.json: atomically on a local disk, by one PUT of rank 0's object on an object store."""
        if self._objects is None:
            write_run_json(self.run_dir, meta)
            return
        text = run_json_text(meta).encode("utf-8")
        try:
            self._objects.put(f"{self.run_id}/{RUN_JSON}", text)
        except Exception as error:
            raise OSError(f"{type(error).__name__}: {error}") from error
        self._last_put = time.monotonic()

    def _init_run_json(self, **fields: Any) -> None:
        meta_path = None if self._objects is not None else self.run_dir / RUN_JSON
        now = _now()
        meta: dict[str, Any] = {}
        if meta_path is None:
            meta = self._remote_meta() or {}
        elif meta_path.exists():
            try:
                meta = read_run_json(self.run_dir)
            except (OSError, ValueError):
                meta = {}
        meta.setdefault("run_id", self.run_id)
        meta.setdefault("created_at", now)
        for key, value in fields.items():
            if value is not None or key not in meta:
                meta[key] = dict(value) if isinstance(value, Mapping) else value
        if not meta.get("name"):
            meta["name"] = self.run_id
        for key in ("config", "env", "task"):
            if not isinstance(meta.get(key), dict):
                meta[key] = {}
        meta["env"] = {**meta["env"], "world_size": self.world_size, "host": self._host}
        meta["status"] = "running"
        meta["heartbeat_at"] = now
        attempts = dict(meta.get("attempts", {}))
        attempts[str(self.rank)] = self.attempt
        meta["attempts"] = attempts
        meta.pop("finished_at", None)
        self._meta = meta
        if self._meta_pending:
            return  # the store did not answer the listing: the heartbeat PUTs run.json later
        try:
            self._save_meta(meta)
        except OSError as error:
            if self._objects is None:
                raise
            raise store_unavailable(self.location, error) from None

    def update_meta(self, **fields: Any) -> None:
        """Merge fields (config, task, env, …) into run.json (rank 0 only)."""
        if self.rank != 0:
            return
        with self._lock:
            for key, value in fields.items():
                if isinstance(value, Mapping) and isinstance(self._meta.get(key), Mapping):
                    self._meta[key] = {**self._meta[key], **value}
                else:
                    self._meta[key] = value
            if self._objects is not None and self._meta_pending:
                return  # the heartbeat PUTs the whole of it once the store answers
            try:
                self._save_meta(self._meta)
            except OSError:
                if self._objects is None:
                    raise
                self._meta_pending = True

    # ------------------------------------------------------------ live writers

    def _writer_file(self) -> Path:
        return self.run_dir / WRITERS_FOLDER / writer_file_name(self.rank, self.token)

    def _writer_key(self) -> str:
        return f"{self.run_id}/{WRITERS_FOLDER}/{writer_file_name(self.rank, self.token)}"

    def _writer_info(self) -> bytes:
        return json.dumps({
            "rank": self.rank, "attempt": self.attempt, "writer": self.token, "pid": os.getpid(),
            "host": self._host, "started_at": _now(),
            # Readers of this file judge it by this writer's own heartbeat.
            "stale_after_s": max(_LIVE_WRITER_S, 3 * self.heartbeat_every_s),
        }).encode()

    def _register(self) -> None:
        """Name the other live writers of this rank, then announce this one.

        Best effort: a store this writer cannot even announce itself in
        fails at the first flush, which says so.
        """
        if self._objects is not None:
            self._check_other_remote_writers()
            self._put_writer_object()
            return
        self._check_other_writers()
        info = {
            "rank": self.rank, "attempt": self.attempt, "writer": self.token, "pid": os.getpid(),
            "host": self._host, "started_at": _now(),
            # Readers of this file judge it by this writer's own heartbeat.
            "stale_after_s": max(_LIVE_WRITER_S, 3 * self.heartbeat_every_s),
        }
        try:
            self._writer_file().parent.mkdir(exist_ok=True)
            atomic_write_bytes(self._writer_file(), json.dumps(info).encode())
        except OSError:
            pass

    def _put_writer_object(self) -> None:
        """PUT this writer's heartbeat object: its LastModified (the store's
        clock) says the writer lives. Only when nothing else was put for a
        heartbeat interval: a segment is as good a sign of life."""
        try:
            self._objects.put(self._writer_key(), self._writer_info())
            self._last_put = time.monotonic()
        except Exception:
            pass  # the store is down: the spool says so once

    def _check_other_remote_writers(self) -> None:
        """Name every other live writer of this rank, from the start-up LIST:
        a writer is live while an object it put (its heartbeat or a segment,
        named with its token) is younger than the live window, by the
        store's LastModified."""
        newest: dict[str, float] = {}
        ranks: dict[str, int] = {}
        for key, info in self._listing.items():
            name = key.rsplit("/", 1)[-1]
            named = writer_file_rank(name)
            if named is not None:
                rank, token = named
            else:
                token = segment_writer(name)
                ranked = segment_rank_attempt(name)
                if token is None or ranked is None:
                    continue
                rank = ranked[0]
            if token != self.token:
                ranks[token] = rank
                newest[token] = max(newest.get(token, 0.0), info.modified)
        if not newest:
            return
        # The store's clock now: the newest object listed is at most a LIST's latency old.
        now = max(_now(), max(newest.values()))
        for token, modified in newest.items():
            if ranks[token] != self.rank or token in self._other_writers or now - modified > _LIVE_WRITER_S:
                continue
            self._other_writers.add(token)
            self._report_other_writer(f"writer {token}", stacklevel=5)

    def _touch_writer_file(self) -> None:
        if self._objects is not None:
            if time.monotonic() - self._last_put >= self.heartbeat_every_s:
                self._put_writer_object()
            return
        try:
            os.utime(self._writer_file())
        except FileNotFoundError:
            self._register()  # removed under us (an old tool cleaning hidden files): announce again
        except OSError:
            pass

    def _check_other_writers(self) -> None:
        """Warn about (once each) and record every other live writer of this rank."""
        if self._objects is not None:
            return  # named from the start-up LIST (_check_other_remote_writers): no LIST per heartbeat
        folder = self.run_dir / WRITERS_FOLDER
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        now = _now()
        for entry in entries:
            named = writer_file_rank(entry.name)
            if named is None or named[1] == self.token:
                continue
            try:
                age = now - entry.stat().st_mtime
                info = json.loads(Path(entry.path).read_text(encoding="utf-8"))
                if not isinstance(info, dict):
                    continue
                alive = self._writer_alive(info, age)
            except (OSError, ValueError, TypeError):
                continue  # being written this instant, or garbage
            if not alive:
                if age > _DEAD_WRITER_S or info.get("host") == self._host:
                    _remove_quietly(Path(entry.path))  # a killed writer's
                continue
            if named[0] != self.rank or named[1] in self._other_writers:
                continue
            self._other_writers.add(named[1])
            self._report_other_writer(f"writer {named[1]} (pid {info.get('pid')} on {info.get('host')}, "
                                      f"attempt {info.get('attempt')})", stacklevel=4)

    def _report_other_writer(self, other: str, *, stacklevel: int) -> None:
        """Warn that ``other`` records this writer's rank too, and record it as a concurrent_writer event."""
        this = f"writer {self.token} (pid {os.getpid()} on {self._host}, attempt {self.attempt})"
        warnings.warn(
            f"traindoctor: run {self.run_id}: {other} is also recording rank {self.rank}, beside {this}. "
            "Both keep their rows, so steps may appear twice: give each process its own rank "
            "(call init_process_group before creating the probe), or stop the older job.",
            RuntimeWarning, stacklevel=stacklevel)
        self.add_event("concurrent_writer", f"{other} was recording rank {self.rank} beside {this}")

    def _writer_alive(self, info: dict[str, Any], age: float) -> bool:
        if age > float(info.get("stale_after_s", _LIVE_WRITER_S)):
            return False
        if info.get("host") != self._host:
            return True  # a fresh heartbeat is all another host shows
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError):
            return True
        return True

    # ------------------------------------------------------------------ adding

    def add_scalars(
        self,
        *,
        step: Any,
        name: Any,
        value: Any,
        split: Any = "train",
        layer: Any = None,
        epoch: Any = None,
        wall_time: Any = None,
    ) -> None:
        """Buffer one value or a column chunk of values.

        Every argument is a scalar or a 1-D sequence; scalars broadcast.
        Pass layer names as a tuple to have their encoding cached.
        ``wall_time`` defaults to now; ``value`` keeps NaN and ±Inf as they are.
        A name Parquet cannot store (a lone surrogate) or a NUL is stored
        with U+FFFD in its place, with one warning per name.
        """
        # One pass, no helper calls: the probe calls this a few times per
        # flush per statistic, importers once per column chunk. Names are
        # checked when they are encoded: once per distinct string per flush.
        columns = [step, epoch, wall_time, split, name, layer, value]
        length = None
        for index, column in enumerate(columns):
            if column is None or isinstance(column, _SCALAR_TYPES):
                continue
            if not isinstance(column, tuple):  # tuples of names stay: their codes are cached
                # A copy: the caller may refill its buffer before the flush.
                column = columns[index] = np.array(column).reshape(-1)
            if length is None:
                length = len(column)
            elif len(column) != length:
                raise ValueError(f"column chunks differ in length: {sorted({length, len(column)})}")
        if length is None:
            length = 1
        elif length == 0:
            return
        if columns[2] is None:
            columns[2] = _now()
        with self._lock:
            self._scalars.chunks.append((length, *columns))
            before = self._scalars.rows
            self._scalars.rows += length
        if before < self.max_buffered_rows <= before + length:
            self._wake.set()  # once, when the buffer fills

    def add_confusion(self, *, step: int, counts: Any, split: str = "val", epoch: float | None = None) -> None:
        """Buffer a confusion matrix (``counts[true, pred]``); only non-zero cells are stored."""
        matrix = np.asarray(counts, dtype=np.int64)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"confusion counts must be a square matrix, got shape {matrix.shape}")
        true_class, pred_class = np.nonzero(matrix)
        split = self._stored_name(str(split))
        with self._lock:
            self._confusion.append(
                {
                    "step": np.full(len(true_class), int(step), dtype=np.int64),
                    "epoch": np.full(len(true_class), np.nan if epoch is None else float(epoch)),
                    "split": [split] * len(true_class),
                    "true_class": true_class.astype(np.int32),
                    "pred_class": pred_class.astype(np.int32),
                    "count": matrix[true_class, pred_class],
                }
            )

    def add_event(self, kind: str, detail: str = "", *, step: int | None = None, wall_time: float | None = None) -> None:
        """Buffer one event (``nan_loss``, ``config_lint``, ``crash``, …)."""
        kind = self._stored_name(str(kind))
        detail = clean_text(str(detail))  # a traceback may quote a file name that is not UTF-8
        with self._lock:
            self._events.append(
                {"step": step, "wall_time": _now() if wall_time is None else float(wall_time),
                 "kind": kind, "detail": detail}
            )

    def _stored_name(self, name: str) -> str:
        stored = clean_text(name)
        if stored != name:
            self._warn_cleaned([(name, stored)])
        return stored

    def _warn_cleaned(self, pairs: list[tuple[str, str]]) -> None:
        for given, stored in pairs:
            if given in self._cleaned_names:
                continue
            self._cleaned_names.add(given)
            warnings.warn(f"traindoctor: run {self.run_id}: the name {given!r} cannot be stored as it is "
                          f"(a lone surrogate or NUL); it is stored as {stored!r}", RuntimeWarning, stacklevel=4)

    # -------------------------------------------------------------- publishing

    def flush(self) -> None:
        """Publish everything buffered so far, and anything an earlier flush
        could not publish (synchronously).

        Raises:
            StoreError: the store cannot be written now (disk full,
                read-only, permission denied). The rows stay queued, up to
                ``max_unpublished_rows`` (the oldest beyond it are dropped
                and recorded), and the next flush retries them.
        """
        # Building and publishing under the publish lock keeps segment
        # numbers in the order the rows were added, whichever thread flushes.
        with self._publish_lock:
            self._queue_buffered()
            self._publish_queued()
            # On an object store, drops are recorded once uploads work again: a record
            # spooled behind the outage it describes could be dropped in its turn.
            if self._unrecorded and (self._objects is None or not self._upload_failures):
                self._record_drops()
                self._queue_buffered()
                self._publish_queued()
        self._touch_writer_file()

    def _queue_buffered(self) -> None:
        """Build the buffered rows into tables at the end of the queue."""
        with self._lock:
            scalars, self._scalars = self._scalars, _ScalarBuffer()
            confusion, self._confusion = self._confusion, []
            events, self._events = self._events, []
        for table_name, rows, build, buffered in (
            ("scalars", scalars.rows, self._scalars_table, scalars),
            ("confusion", sum(len(c["step"]) for c in confusion), self._confusion_table, confusion),
            ("events", len(events), self._events_table, events),
        ):
            if not rows:
                continue
            try:
                table = build(buffered)
            except Exception as error:  # rows that cannot be a table at all: no retry can help
                self._record_drop(table_name, rows, None, f"{type(error).__name__}: {error}")
                self.record_error(error)
                continue
            if table.num_rows:
                self._queue.append(_Unpublished(table_name, table))

    def _publish_queued(self) -> None:
        """Publish the queue in order; stop at the first failure of the store."""
        while self._queue:
            item = self._queue[0]
            try:
                self._publish(item.table_name, item.table)
            except OSError as error:
                self._publish_failed(error)
            except Exception as error:  # this segment, not the store: retrying would block the queue for good
                self._queue.pop(0)
                self._record_drop(item.table_name, item.table.num_rows, item.table,
                                  f"{type(error).__name__}: {error}")
                self.record_error(error)
                continue
            self._queue.pop(0)
        if self._outage is not None:
            self._recovered()

    def _publish_failed(self, error: OSError) -> None:
        reason = _failure_reason(error)
        if self._outage is None:
            self._outage = _Outage(since=_now(), since_monotonic=time.monotonic(), reason=reason)
        self._outage.failures += 1
        queued = sum(item.table.num_rows for item in self._queue)
        waited = time.monotonic() - self._outage.since_monotonic
        dropped = []
        while queued > self.max_unpublished_rows and self._queue:
            item = self._queue.pop(0)
            queued -= item.table.num_rows
            dropped.append(self._record_drop(
                item.table_name, item.table.num_rows, item.table,
                f"{reason}: the store could not be written for {waited:.1f} s and "
                f"{self.max_unpublished_rows:,} unpublished rows were kept", warn=False))
        self._warn_dropped(dropped)
        raise StoreError(f"the store cannot be written ({reason}); unpublished rows are kept "
                         f"(up to {self.max_unpublished_rows:,}) and retried") from error

    def _recovered(self) -> None:
        outage, self._outage = self._outage, None
        seconds = time.monotonic() - outage.since_monotonic
        lost = sum(record["rows"] for record in self.dropped if record["at"] >= outage.since)
        result = (f"{lost:,} rows were dropped (recorded as rows_dropped events)" if lost
                  else "no rows were lost")
        warnings.warn(f"traindoctor: run {self.run_id}: the store can be written again after {seconds:.1f} s "
                      f"({outage.reason}); {result}", RuntimeWarning, stacklevel=4)

    def _record_drop(self, table_name: str, rows: int, table: pa.Table | None, reason: str, *,
                     warn: bool = True) -> dict[str, Any]:
        """Note rows lost for good; they are written down once the store can be written."""
        first = last = None
        if table is not None:
            steps = to_numpy(table.column("step").drop_null())
            steps = steps[steps >= 0]
            if len(steps):
                first, last = int(steps.min()), int(steps.max())
        record = {"rank": self.rank, "attempt": self.attempt, "table": table_name, "rows": int(rows),
                  "first_step": first, "last_step": last, "reason": reason, "at": _now()}
        self.dropped.append(record)
        self._unrecorded.append(record)
        if warn:
            self._warn_dropped([record])
        return record

    def _warn_dropped(self, records: list[dict[str, Any]]) -> None:
        """One warning for rows dropped at once (several segments, maybe several tables)."""
        if not records:
            return
        if len(records) == 1:
            what = _drop_detail(records[0])
        else:
            tables: dict[str, list[dict[str, Any]]] = {}
            for record in records:
                tables.setdefault(record["table"], []).append(record)
            parts = []
            for table_name, group in tables.items():
                steps = [step for record in group for step in (record["first_step"], record["last_step"])
                         if step is not None]
                span = f" of steps {min(steps)}-{max(steps)}" if steps else ""
                parts.append(f"{sum(record['rows'] for record in group):,} {table_name} rows{span}")
            what = f"{', '.join(parts)} (rank {self.rank}) were dropped: {records[-1]['reason']}"
        warnings.warn(f"traindoctor: run {self.run_id}: {what}", RuntimeWarning, stacklevel=5)

    def _record_drops(self) -> None:
        """Write the drops down: an event each and (rank 0) run.json's rows_dropped."""
        records, self._unrecorded = self._unrecorded, []
        for record in records:
            self.add_event("rows_dropped", _drop_detail(record), step=record["first_step"])
        if self.rank == 0:
            with self._lock:
                self._meta["rows_dropped"] = [*self._meta.get("rows_dropped", []), *records]
                try:
                    self._write_meta()
                except StoreError as error:  # the events say it; the next heartbeat rewrites run.json
                    self.record_error(error)

    def _constant_columns(self, length: int, *, dictionary: bool = True) -> list[pa.Array]:
        """run_id (dictionary-encoded for scalars; plain string as the confusion and events schemas
        have it: built in its schema's type, no table needs a cast, whose first call imports
        pyarrow.compute, 0.1 s of CPU), rank and attempt of ``length`` rows."""
        return [
            dictionary_array(np.zeros(length, dtype=np.int32), [self.run_id]) if dictionary
            else string_array([self.run_id] * length),
            numbers_array(np.full(length, self.rank, dtype=np.int32), pa.int32()),
            numbers_array(np.full(length, self.attempt, dtype=np.int32), pa.int32()),
        ]

    def _scalars_table(self, buffer: _ScalarBuffer) -> pa.Table:
        chunks = buffer.chunks
        lengths = np.fromiter((chunk[0] for chunk in chunks), dtype=np.int64, count=len(chunks))
        # Row -> chunk index, built once: each column then gathers its
        # per-chunk scalars with one fancy index (np.repeat per column is slower).
        chunk_of_row = np.repeat(np.arange(len(chunks), dtype=np.int32), lengths)

        def numeric(position: int, dtype: Any, fill: Any) -> np.ndarray:
            return _numeric_column([chunk[position] for chunk in chunks], chunk_of_row, dtype, fill)

        def strings(position: int) -> tuple[_StringCodes, np.ndarray]:
            codes = _StringCodes()
            column = codes.column([chunk[position] for chunk in chunks], chunk_of_row)
            self._warn_cleaned(codes.cleaned)
            return codes, column

        step_array = numeric(1, np.int64, -1)
        epoch_array = numeric(2, np.float64, np.nan)
        wall_array = numeric(3, np.float64, np.nan)
        value_array = numeric(7, np.float64, np.nan)
        splits, names, layers = strings(4), strings(5), strings(6)
        arrays = self._constant_columns(buffer.rows) + [
            numbers_array(step_array, pa.int64()),
            numbers_array(epoch_array, pa.float64(), mask=np.isnan(epoch_array)),
            numbers_array(wall_array, pa.float64()),
            splits[0].array(splits[1]),
            names[0].array(names[1]),
            layers[0].array(layers[1]),
            numbers_array(value_array, pa.float64()),
        ]
        recorded = step_array[step_array >= 0]
        first_step = int(recorded.min()) if len(recorded) else None
        series = series_entries(self.rank, self.attempt, splits, names, layers[1], step_array, wall_array, value_array)
        metadata = {ATTEMPTS_KEY: encode_attempts([(self.rank, self.attempt, first_step)]),
                    SERIES_KEY: encode_series(series)}
        return pa.Table.from_arrays(arrays, names=SCHEMAS["scalars"].names).replace_schema_metadata(metadata)

    def _confusion_table(self, chunks: list[dict]) -> pa.Table:
        length = sum(len(c["step"]) for c in chunks)
        epoch = np.concatenate([c["epoch"] for c in chunks]) if chunks else np.zeros(0)
        arrays = self._constant_columns(length, dictionary=False) + [
            numbers_array(np.concatenate([c["step"] for c in chunks]), pa.int64()),
            numbers_array(epoch, pa.float64(), mask=np.isnan(epoch)),
            string_array([s for c in chunks for s in c["split"]]),
            numbers_array(np.concatenate([c["true_class"] for c in chunks]), pa.int32()),
            numbers_array(np.concatenate([c["pred_class"] for c in chunks]), pa.int32()),
            numbers_array(np.concatenate([c["count"] for c in chunks]), pa.int64()),
        ]
        return pa.Table.from_arrays(arrays, schema=SCHEMAS["confusion"])

    def _events_table(self, events: list[dict]) -> pa.Table:
        arrays = self._constant_columns(len(events), dictionary=False) + [
            _optional_numbers([e["step"] for e in events], pa.int64()),
            _optional_numbers([e["wall_time"] for e in events], pa.float64()),
            string_array([e["kind"] for e in events]),
            string_array([e["detail"] for e in events]),
        ]
        return pa.Table.from_arrays(arrays, schema=SCHEMAS["events"])

    def _publish(self, table_name: str, table: pa.Table) -> None:
        """Write one segment under a temporary name, fsync it, rename it into place."""
        if self._objects is not None:
            self._upload(table_name, table)
            return
        name = segment_name(self.rank, self.attempt, self._seq, self.token)
        final = self.run_dir / table_name / name
        tmp = final.with_name(temporary_name(name))
        try:
            # Dictionary-encoded, zstd: ~2 bytes a value for typical runs.
            pq.write_table(table, tmp, compression="zstd", row_group_size=1 << 20,
                           use_dictionary=_DICTIONARY_COLUMNS)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        except BaseException:
            _remove_quietly(tmp)  # a full disk keeps what it wrote of it otherwise
            raise
        # Numbered only once published: a retried segment keeps its number.
        self._seq += 1

    def _upload(self, table_name: str, table: pa.Table) -> None:
        """Publish one segment to an object store: one create-only PUT of the
        whole file (no temporary name, no rename: a reader never sees an
        object before its PUT completes). One that fails goes to the spool.

        Raises:
            OSError: the spool's local disk refuses it too (the rows stay
                queued in memory, as for a local store).
        """
        name = segment_name(self.rank, self.attempt, self._seq, self.token)
        key = f"{self.run_id}/{table_name}/{name}"
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", row_group_size=1 << 20, use_dictionary=_DICTIONARY_COLUMNS)
        data = sink.getvalue().to_pybytes()
        if time.monotonic() >= self._upload_retry_at:
            try:
                # False: this name exists already (an earlier PUT whose answer was lost): published.
                self._objects.put_new(key, data)
                self._last_put = time.monotonic()
                self._seq += 1
                self._uploads_recovered()
                return
            except Exception as error:  # down, refused, throttled: the spool keeps it
                self._upload_failed(error)
        self._spool_segment(key, data, table_name, table.num_rows)
        # Numbered once kept: a spooled segment keeps its name, so its upload stays create-only.
        self._seq += 1

    def _upload_failed(self, error: BaseException) -> None:
        self._upload_failures += 1
        delay = min(self.flush_every_s * 2 ** min(self._upload_failures - 1, 16),
                    max(_MAX_RETRY_DELAY_S, self.flush_every_s))
        self._upload_retry_at = time.monotonic() + delay
        if not self._warned_spool:
            self._warned_spool = True
            reason = " ".join((str(error) or type(error).__name__).split())[:300]
            warnings.warn(f"traindoctor: run {self.run_id}: uploads to {self.location.url} fail ({reason}); "
                          f"segments are kept in {self._spool.folder} and retried", RuntimeWarning, stacklevel=5)

    def _uploads_recovered(self) -> None:
        self._upload_failures = 0
        self._upload_retry_at = 0.0

    def _spool_segment(self, key: str, data: bytes, table_name: str, rows: int) -> None:
        """Keep a segment in the spool, dropping (and recording) the oldest beyond its budget."""
        self._spool.add(key, data)
        kept = self._spool.keys()
        sizes = {old: (self._spool.folder / old).stat().st_size for old in kept}
        while sum(sizes.values()) > self._spool.max_bytes and len(sizes) > 1:
            oldest = next(iter(sizes))
            path = self._spool.folder / oldest
            try:
                lost = pq.read_metadata(path).num_rows
            except Exception:
                lost = 0
            path.unlink(missing_ok=True)
            del sizes[oldest]
            self._record_drop(oldest.split("/")[1], lost, None,
                              f"{self.location.url} could not be written and the spool "
                              f"({self._spool.max_bytes:,} bytes) was full")

    def drain_spool(self, deadline: float | None = None) -> int:
        """Upload what the spool holds, oldest first; returns segments left
        (0 on a local store). Waits out the back-off unless ``deadline`` is given."""
        if self._spool is None or not self._spool.keys():
            return 0
        if deadline is None and time.monotonic() < self._upload_retry_at:
            return len(self._spool.keys())
        try:
            left = self._spool.drain(self._objects, deadline)
        except Exception as error:
            self._upload_failed(error)
            return len(self._spool.keys())
        self._last_put = time.monotonic()
        self._uploads_recovered()
        if not left:
            self._spool.remove_if_empty()
        return left

    # -------------------------------------------------------- background thread

    def _loop(self) -> None:
        # Both clocks start when the writer was made: the first segment is
        # due flush_every_s after that, like every later one.
        next_flush = self._started + self.flush_every_s
        last_beat = self._started
        if self._objects is not None:
            try:
                # Segments an earlier process on this machine could not upload before it ended.
                drain_orphaned_spools(self._objects)
            except Exception as error:
                self.record_error(error)
        while not self._stop.is_set():
            # Sleep until the next deadline (not a fixed tick), so rows are
            # published within flush_every_s of being added.
            now = time.monotonic()
            deadline = min(next_flush, last_beat + self.heartbeat_every_s)
            self._wake.wait(timeout=max(0.0, deadline - now))
            self._wake.clear()
            if self._stop.is_set():
                break  # close() publishes what is left
            now = time.monotonic()
            if now >= next_flush or self._scalars.rows >= self.max_buffered_rows:
                try:
                    self.flush()
                    next_flush = now + self.flush_every_s
                except Exception as error:  # the writer never takes the training run down
                    self.record_error(error)
                    next_flush = now + self._retry_delay()
                try:
                    self.drain_spool()
                except Exception as error:
                    self.record_error(error)
            if now - last_beat >= self.heartbeat_every_s:
                last_beat = now
                try:
                    self.heartbeat()
                except Exception as error:
                    self.record_error(error)

    def _retry_delay(self) -> float:
        """Seconds to the next try after a failed flush: flush_every_s,
        doubling with each failure of one outage, at most a minute."""
        failures = self._outage.failures if self._outage is not None else 1
        return min(self.flush_every_s * 2 ** min(failures - 1, 16), max(_MAX_RETRY_DELAY_S, self.flush_every_s))

    def record_error(self, error: BaseException) -> None:
        """Keep and warn about (once per message) an error the writer swallowed.

        The background thread, ``close`` and the probe's publisher thread
        report here instead of raising: writing never takes training down.
        """
        message = f"traindoctor: writing run {self.run_id} failed: {type(error).__name__}: {error}"
        if message not in self.errors:
            self.errors.append(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def heartbeat(self) -> None:
        """Tell readers and other writers this writer is alive (rank 0 also rewrites run.json)."""
        if self.closed:
            return
        self._touch_writer_file()
        self._check_other_writers()
        if self.rank != 0:
            return
        if self._objects is not None:
            # Readers take liveness from the objects' LastModified: no run.json
            # PUT every beat, only one that failed before.
            if self._meta_pending:
                with self._lock:
                    self._write_meta()
                    self._meta_pending = False
            return
        with self._lock:
            self._meta["heartbeat_at"] = _now()
            self._write_meta()

    def _write_meta(self) -> None:
        """Rewrite run.json from ``_meta`` (the caller holds ``_lock``).

        Raises:
            StoreError: it cannot be written; the message is the same for
                every try of one outage (the temporary name is not in it),
                so it is warned about once.
        """
        try:
            self._save_meta(self._meta)
        except OSError as error:
            raise StoreError(f"{RUN_JSON} cannot be written ({_failure_reason(error)})") from error

    def close(self, status: str = "finished", *, detail: str | None = None, step: int | None = None,
              finished_at: float | None = None) -> None:
        """Flush, stop the thread, and record the final status (idempotent).

        A ``crashed`` status with a ``detail`` (the traceback) records a
        ``crash`` event at ``step`` (the last optimizer step done, when the
        caller knows it). ``finished_at`` (Unix seconds) is when the run ended,
        for a run written after the fact (an import); default now.

        A store that cannot be written is retried for ``close_timeout_s``;
        what is still unpublished then is dropped, with a warning, and listed
        in ``dropped`` (and run.json, if that can still be written).
        """
        if self.closed:
            return
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        if finished_at is not None and not (isinstance(finished_at, (int, float)) and math.isfinite(finished_at)):
            raise ValueError(f"finished_at must be a finite number of Unix seconds, got {finished_at!r}")
        if status == "crashed" and detail:
            self.add_event("crash", detail, step=step)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        # One close_timeout_s for both drains of the spool.
        deadline = time.monotonic() + self.close_timeout_s
        if self._objects is not None:
            self._final_drain(deadline, warn=False)  # the spool first: the final flush then records what it lost
        self._final_flush()
        self._final_drain(deadline)
        if self.rank == 0:
            try:
                with self._lock:
                    self._meta["status"] = status
                    self._meta["heartbeat_at"] = now = _now()
                    self._meta["finished_at"] = now if finished_at is None else float(finished_at)
                    self._write_meta()
            except Exception as error:  # closing never takes the training script down
                self.record_error(error)
        if self._objects is None:
            _remove_quietly(self._writer_file())
        else:
            try:
                self._objects.delete([self._writer_key()])
            except Exception:
                pass  # a stale heartbeat object reads as a dead writer after a minute
        self.closed = True
        if self.rank == 0 and self._objects is None:
            # On an object store the first reader (or the compaction at close) summarises the run.
            self._summarise()

    def _final_drain(self, deadline: float, warn: bool = True) -> None:
        """Upload the spool at close, for up to close_timeout_s; what is left
        stays on this machine's disk for the next traindoctor process that
        opens this store (one warning)."""
        if self._spool is None or not self._spool.keys():
            return
        delay = 0.1
        while True:
            left = self.drain_spool(deadline=deadline)
            if not left:
                return
            if time.monotonic() + delay > deadline:
                if not warn:
                    return
                warnings.warn(f"traindoctor: run {self.run_id}: {left} segment(s) could not be uploaded to "
                              f"{self.location.url} before closing; they are kept in {self._spool.folder} and "
                              f"uploaded by the next traindoctor process on this machine that opens this store",
                              RuntimeWarning, stacklevel=4)
                return
            time.sleep(delay)
            delay = min(2 * delay, 1.0)

    def _summarise(self) -> None:
        """Write the run's catalog summary (``store.catalog``) from its files'
        footers: a few small reads, no DuckDB. A summary the footers cannot
        give exactly is left to the first reader."""
        from traindoctor.store.catalog import summarise_closed_run

        try:
            summarise_closed_run(self.run_dir)
        except Exception as error:  # a reader rebuilds a missing summary; closing never fails for it
            self.record_error(error)

    def _final_flush(self) -> None:
        deadline = time.monotonic() + self.close_timeout_s
        delay = 0.05
        while True:
            try:
                self.flush()
                return
            except StoreError as error:
                # A run folder removed on purpose never comes back: no wait.
                if (self.run_dir is not None and not self.run_dir.is_dir()) or time.monotonic() + delay > deadline:
                    self.record_error(error)
                    self._drop_queue("the store could not be written when the run closed")
                    return
                time.sleep(delay)
                delay = min(2 * delay, 1.0)
            except Exception as error:
                self.record_error(error)
                return

    def _drop_queue(self, reason: str) -> None:
        with self._publish_lock:
            self._queue_buffered()
            queue, self._queue = self._queue, []
            self._warn_dropped([self._record_drop(item.table_name, item.table.num_rows, item.table, reason, warn=False)
                                for item in queue])
            if self.rank == 0:
                # Written with the final status, if run.json can still be written.
                self._meta["rows_dropped"] = [*self._meta.get("rows_dropped", []), *self._unrecorded]
            self._unrecorded = []

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close("finished")
        else:
            self.close("crashed", detail="".join(traceback.format_exception(exc_type, exc, tb)))


def _check_storable(key: str, value: Any) -> None:
    try:
        run_json_text({key: value})
    except TypeError as error:
        raise TypeError(f"{key} {error}") from None


def _drop_detail(record: Mapping[str, Any]) -> str:
    """The sentence a rows_dropped event holds."""
    first, last = record["first_step"], record["last_step"]
    steps = "" if first is None else f" of step {first}" if first == last else f" of steps {first}-{last}"
    return (f"{record['rows']:,} {record['table']} rows{steps} (rank {record['rank']}, attempt {record['attempt']}) "
            f"were dropped: {record['reason']}")


def read_file_attempts(path: Path) -> list[tuple[int, int, int | None]] | None:
    """The [rank, attempt, first_step] entries of a scalars file's footer
    (None when the file has none or cannot be read)."""
    try:
        attempts = decode_attempts(pq.read_schema(path).metadata or {})
    except Exception:  # unreadable or foreign file
        return None
    return None if attempts is None else list(attempts)
