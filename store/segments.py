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
    >>> with RunWriter("runs", name="demo") as writer:      # doctest: +SKIP
    ...     writer.add_scalars(step=1, name="loss", value=2.3)
"""

from __future__ import annotations

import json
import os
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

from traindoctor.store.format import (
    ATTEMPTS_KEY, COLUMNS, FLOAT64, INT32, INT64, RUN_JSON, RUN_STATUSES, STRING, TABLES, TEMPORARY_PREFIX,
    check_run_id, decode_attempts, encode_attempts, new_run_id, read_run_json, segment_name, segment_names,
    segment_rank_attempt,
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    tmp = path.with_name(f"{TEMPORARY_PREFIX}{path.name}-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_run_json(run_dir: Path, meta: Mapping[str, Any]) -> None:
    """Replace the run's run.json atomically (values JSON cannot hold become their repr)."""
    data = json.dumps(meta, indent=2, sort_keys=True, default=_json_default, allow_nan=True)
    atomic_write_bytes(Path(run_dir) / RUN_JSON, data.encode("utf-8"))


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
        self._tuple_cache: dict[int, tuple[tuple, np.ndarray]] = {}

    def code(self, value: str | None) -> int:
        if value is None:
            return -1
        found = self.index.get(value)
        if found is None:
            found = self.index[value] = len(self.values)
            self.values.append(str(value))
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
        dictionary = pa.array(self.values, type=pa.string())
        indices = pa.array(codes, type=pa.int32(), mask=codes < 0)
        return pa.DictionaryArray.from_arrays(indices, dictionary)


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


@dataclass
class _ScalarBuffer:
    """Column chunks waiting to be published; swapped out whole on flush."""

    chunks: list[tuple] = field(default_factory=list)
    rows: int = 0


class RunWriter:
    """Writes one run (one rank, one attempt) into a store folder.

    Args:
        store: the store folder; created if missing.
        name: the human name of the run (may repeat across runs).
        run_id: reuse an existing id to resume that run (a new attempt), or
            share one id across distributed ranks; a new unique id otherwise.
        rank: this process's rank; rank 0 owns ``run.json``.
        world_size: number of ranks writing this run.
        project, config, env, task, probe_settings, source: stored in run.json.
        flush_every_s: publish buffered rows at least this often.
        heartbeat_every_s: refresh ``heartbeat_at`` this often (rank 0).
        background: run the flush/heartbeat thread (off for importers that
            flush explicitly).

    Rows added with ``add_*`` are visible to readers after the next flush.
    ``close(status)`` flushes, compacts nothing (see ``store.compact``), and
    records the final status.
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
        flush_every_s: float = DEFAULT_FLUSH_EVERY_S,
        heartbeat_every_s: float = DEFAULT_HEARTBEAT_EVERY_S,
        max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS,
        background: bool = True,
    ) -> None:
        self.store = Path(store)
        self.run_id = check_run_id(run_id) if run_id else new_run_id()
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.run_dir = self.store / self.run_id
        self.flush_every_s = float(flush_every_s)
        self.heartbeat_every_s = float(heartbeat_every_s)
        self.max_buffered_rows = int(max_buffered_rows)
        self.closed = False
        self.errors: list[str] = []

        for table in TABLES:
            (self.run_dir / table).mkdir(parents=True, exist_ok=True)
        self.attempt = self._next_attempt()
        self._seq = 0
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._scalars = _ScalarBuffer()
        self._confusion: list[dict] = []
        self._events: list[dict] = []
        self._last_step = -1

        if self.rank == 0:
            self._init_run_json(
                name=name, project=project, config=config, env=env, task=task,
                probe_settings=probe_settings, source=source,
            )
        if self.attempt > 0:
            self.add_event("resumed", f"attempt {self.attempt} of run {self.run_id} started", step=None)

        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._loop, name=f"traindoctor-writer-{self.run_id}", daemon=True)
            self._thread.start()

    # ----------------------------------------------------------------- set-up

    def _next_attempt(self) -> int:
        """One more than the highest attempt this rank has written (0 for a new run)."""
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
            except (OSError, ValueError):
                pass
        # Compacted files hide the attempt in their rows; run.json remembers it.
        return highest + 1

    def _init_run_json(self, **fields: Any) -> None:
        meta_path = self.run_dir / RUN_JSON
        now = _now()
        meta: dict[str, Any] = {}
        if meta_path.exists():
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
        meta["env"] = {**meta["env"], "world_size": self.world_size, "host": socket.gethostname()}
        meta["status"] = "running"
        meta["heartbeat_at"] = now
        attempts = dict(meta.get("attempts", {}))
        attempts[str(self.rank)] = self.attempt
        meta["attempts"] = attempts
        meta.pop("finished_at", None)
        self._meta = meta
        write_run_json(self.run_dir, meta)

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
            write_run_json(self.run_dir, self._meta)

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
        """
        # One pass, no helper calls: the probe calls this a few times per
        # flush per statistic, importers once per column chunk.
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
        with self._lock:
            self._confusion.append(
                {
                    "step": np.full(len(true_class), int(step), dtype=np.int64),
                    "epoch": np.full(len(true_class), np.nan if epoch is None else float(epoch)),
                    "split": [str(split)] * len(true_class),
                    "true_class": true_class.astype(np.int32),
                    "pred_class": pred_class.astype(np.int32),
                    "count": matrix[true_class, pred_class],
                }
            )

    def add_event(self, kind: str, detail: str = "", *, step: int | None = None, wall_time: float | None = None) -> None:
        """Buffer one event (``nan_loss``, ``config_lint``, ``crash``, …)."""
        with self._lock:
            self._events.append(
                {"step": step, "wall_time": _now() if wall_time is None else float(wall_time),
                 "kind": str(kind), "detail": str(detail)}
            )

    # -------------------------------------------------------------- publishing

    def flush(self) -> None:
        """Publish everything buffered so far (synchronously)."""
        # Swapping under the publish lock keeps segment numbers in the order
        # the rows were added, whichever thread flushes.
        with self._publish_lock:
            with self._lock:
                scalars, self._scalars = self._scalars, _ScalarBuffer()
                confusion, self._confusion = self._confusion, []
                events, self._events = self._events, []
            if scalars.rows:
                self._publish("scalars", self._scalars_table(scalars))
            if confusion:
                self._publish("confusion", self._confusion_table(confusion))
            if events:
                self._publish("events", self._events_table(events))

    def _constant_columns(self, length: int) -> list[pa.Array]:
        return [
            pa.DictionaryArray.from_arrays(pa.array(np.zeros(length, dtype=np.int32)), pa.array([self.run_id])),
            pa.array(np.full(length, self.rank, dtype=np.int32)),
            pa.array(np.full(length, self.attempt, dtype=np.int32)),
        ]

    def _scalars_table(self, buffer: _ScalarBuffer) -> pa.Table:
        chunks = buffer.chunks
        lengths = np.fromiter((chunk[0] for chunk in chunks), dtype=np.int64, count=len(chunks))
        # Row -> chunk index, built once: each column then gathers its
        # per-chunk scalars with one fancy index (np.repeat per column is slower).
        chunk_of_row = np.repeat(np.arange(len(chunks), dtype=np.int32), lengths)

        def numeric(position: int, dtype: Any, fill: Any) -> np.ndarray:
            return _numeric_column([chunk[position] for chunk in chunks], chunk_of_row, dtype, fill)

        def strings(position: int) -> pa.Array:
            codes = _StringCodes()
            return codes.array(codes.column([chunk[position] for chunk in chunks], chunk_of_row))

        step_array = numeric(1, np.int64, -1)
        epoch_array = numeric(2, np.float64, np.nan)
        arrays = self._constant_columns(buffer.rows) + [
            pa.array(step_array),
            pa.array(epoch_array, mask=np.isnan(epoch_array)),
            pa.array(numeric(3, np.float64, np.nan)),
            strings(4),
            strings(5),
            strings(6),
            pa.array(numeric(7, np.float64, np.nan)),
        ]
        recorded = step_array[step_array >= 0]
        first_step = int(recorded.min()) if len(recorded) else None
        metadata = {ATTEMPTS_KEY: encode_attempts([(self.rank, self.attempt, first_step)])}
        return pa.Table.from_arrays(arrays, names=SCHEMAS["scalars"].names).replace_schema_metadata(metadata)

    def _confusion_table(self, chunks: list[dict]) -> pa.Table:
        length = sum(len(c["step"]) for c in chunks)
        epoch = np.concatenate([c["epoch"] for c in chunks]) if chunks else np.zeros(0)
        arrays = self._constant_columns(length) + [
            pa.array(np.concatenate([c["step"] for c in chunks]), type=pa.int64()),
            pa.array(epoch, mask=np.isnan(epoch)),
            pa.array([s for c in chunks for s in c["split"]], type=pa.string()),
            pa.array(np.concatenate([c["true_class"] for c in chunks]), type=pa.int32()),
            pa.array(np.concatenate([c["pred_class"] for c in chunks]), type=pa.int32()),
            pa.array(np.concatenate([c["count"] for c in chunks]), type=pa.int64()),
        ]
        return pa.Table.from_arrays(arrays, names=SCHEMAS["confusion"].names)

    def _events_table(self, events: list[dict]) -> pa.Table:
        arrays = self._constant_columns(len(events)) + [
            pa.array([e["step"] for e in events], type=pa.int64()),
            pa.array([e["wall_time"] for e in events], type=pa.float64()),
            pa.array([e["kind"] for e in events], type=pa.string()),
            pa.array([e["detail"] for e in events], type=pa.string()),
        ]
        return pa.Table.from_arrays(arrays, names=SCHEMAS["events"].names)

    def _publish(self, table_name: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        table = table.cast(SCHEMAS[table_name]) if table_name != "scalars" else table
        final = self.run_dir / table_name / segment_name(self.rank, self.attempt, self._seq)
        self._seq += 1
        tmp = final.with_name(TEMPORARY_PREFIX + final.name)
        # Dictionary-encoded, zstd: ~2 bytes a value for typical runs.
        pq.write_table(table, tmp, compression="zstd", row_group_size=1 << 20,
                       use_dictionary=_DICTIONARY_COLUMNS)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)

    # -------------------------------------------------------- background thread

    def _loop(self) -> None:
        last_flush = last_beat = time.monotonic()
        while not self._stop.is_set():
            # Sleep until the next deadline (not a fixed tick), so rows are
            # published within flush_every_s of being added.
            now = time.monotonic()
            deadline = min(last_flush + self.flush_every_s, last_beat + self.heartbeat_every_s)
            self._wake.wait(timeout=max(0.0, deadline - now))
            self._wake.clear()
            if self._stop.is_set():
                break  # close() publishes what is left
            now = time.monotonic()
            try:
                if now - last_flush >= self.flush_every_s or self._scalars.rows >= self.max_buffered_rows:
                    last_flush = now
                    self.flush()
                if now - last_beat >= self.heartbeat_every_s:
                    last_beat = now
                    self.heartbeat()
            except Exception as error:  # the writer never takes the training run down
                self.record_error(error)

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
        """Tell readers this run is alive (rank 0 rewrites run.json)."""
        if self.rank != 0 or self.closed:
            return
        with self._lock:
            self._meta["heartbeat_at"] = _now()
            write_run_json(self.run_dir, self._meta)

    def close(self, status: str = "finished", *, detail: str | None = None) -> None:
        """Flush, stop the thread, and record the final status (idempotent)."""
        if self.closed:
            return
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        if status == "crashed" and detail:
            self.add_event("crash", detail)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.flush()
        except Exception as error:
            self.record_error(error)
        if self.rank == 0:
            try:
                with self._lock:
                    self._meta["status"] = status
                    self._meta["heartbeat_at"] = self._meta["finished_at"] = _now()
                    write_run_json(self.run_dir, self._meta)
            except Exception as error:  # closing never takes the training script down
                self.record_error(error)
        self.closed = True

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close("finished")
        else:
            self.close("crashed", detail="".join(traceback.format_exception(exc_type, exc, tb)))


def read_file_attempts(path: Path) -> list[tuple[int, int, int | None]] | None:
    """The [rank, attempt, first_step] entries of a scalars file's footer
    (None when the file has none or cannot be read)."""
    try:
        attempts = decode_attempts(pq.read_schema(path).metadata or {})
    except Exception:  # unreadable or foreign file
        return None
    return None if attempts is None else list(attempts)
