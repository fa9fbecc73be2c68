"""Compaction: merge a run's small segments into one sorted Parquet file.

Readers never see a row twice or miss one: the merged file carries, in its
own footer, the names of the segments it replaces, so a reader that lists the
merged file ignores those pieces, and one that listed the folder before the
merge reads the pieces (or, meeting one already deleted, lists again; see
``Store.query``). The pieces are deleted only after the merged file is
published. One compaction per table folder at a time (a lock file): two
merges of the same pieces would both be published and count every row twice.

On an object store (a ``Store`` on a URL) the run is merged in the store's
mirror, the merged object is uploaded first (one create-only PUT), and the
pieces are deleted from the bucket last; the lock is an object created
create-only (``.compact.lock`` in the table's prefix).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from traindoctor.store.errors import StoreError
from traindoctor.store.format import (
    ATTEMPTS_KEY, COVERS_KEY, SERIES_KEY, TABLES, TEMPORARY_PREFIX, compacted_name, encode_attempts, encode_covers,
    encode_series, temporary_name,
)
from traindoctor.store.reader import SERIES_SQL, Store, duckdb_path, table_select_list
from traindoctor.store.segments import SCHEMAS

# Sort keys per table: series read back contiguous (name, layer, step), so a
# query for one name touches few row groups and compresses well.
_ORDER = {
    "scalars": "name, layer NULLS FIRST, split, rank, attempt, step",
    "confusion": "split, step, rank, attempt, true_class, pred_class",
    "events": "rank, attempt, wall_time",
}
# Row groups of this many rows: small enough that a query for one name skips
# the others by their min/max statistics, large enough to compress well.
_ROW_GROUP_ROWS = 128 * 1024
# Leftover temporary files older than this are from a crashed writer or
# compaction, never from one in progress.
_STALE_TMP_S = 3600.0
_LOCK_NAME = ".compact.lock"
# compact_if_fragmented merges a table from this many files: below it the
# per-file cost of a query (~0.3 ms each) is small next to its fixed cost.
FRAGMENTED_FILES = 64


def compact_run(store: Store, run_id: str) -> dict[str, int]:
    """Merge each table of ``run_id`` into one file; returns files merged per table.

    Safe while the run is still being written (new segments stay as they are)
    and while readers query it. Skips a table another compaction is merging.
    """
    merged: dict[str, int] = {}
    for table in TABLES:
        merged[table] = _compact_table(store, run_id, table)
    if any(merged.values()):
        _refresh_summary(store, run_id)
    return merged


def _refresh_summary(store: Store, run_id: str) -> None:
    """Rewrite the run's catalog summary for its new file names (from the merged footers)."""
    try:
        store.catalog.refresh(run_id)
        if store.mirror is not None:
            store.mirror.sync([run_id])  # uploads the new summary
    except (OSError, StoreError):
        pass  # the next reader rebuilds it


def _compact_table(store: Store, run_id: str, table: str) -> int:
    if store.mirror is not None:
        return _compact_remote_table(store, run_id, table)
    folder = store.root / run_id / table
    if not folder.is_dir():
        return 0
    lock = _acquire_lock(folder)
    if lock is None:
        return 0
    try:
        _remove_leftovers(store, run_id, table)
        segments = store.segments(run_id, table)
        files = [path for path, _ in segments]
        if len(files) <= 1:
            return 0
        _merge(files, folder, table, present={column for _, info in segments for column in info.columns})
        for piece in files:
            piece.unlink(missing_ok=True)
        return len(files)
    finally:
        lock.unlink(missing_ok=True)


def _compact_remote_table(store: Store, run_id: str, table: str) -> int:
    """_compact_table on an object store: merged object first, pieces deleted last."""
    objects = store.mirror.objects
    lock_key = f"{run_id}/{table}/{_LOCK_NAME}"
    owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "at": time.time()}).encode()
    if not objects.put_new(lock_key, owner):
        listed = objects.list(run_id).get(lock_key)
        # A lock older than an hour (by the store's clock) is a dead compaction's.
        if listed is None or time.time() - listed.modified < _STALE_TMP_S:
            return 0
        objects.delete([lock_key])
        if not objects.put_new(lock_key, owner):
            return 0
    # Merged in a private folder of the mirror, moved into the table folder once uploaded: a
    # sync meanwhile (another thread or process reading the same mirror) deletes the local
    # files the bucket does not list.
    private = store.root / f".compact-{os.getpid()}-{time.time_ns()}"
    try:
        store.mirror.sync([run_id])
        folder = store.root / run_id / table
        segments = store.segments(run_id, table)
        files = [path for path, _ in segments]
        if len(files) <= 1:
            return 0
        private.mkdir()
        merged = _merge(files, private, table, present={column for _, info in segments for column in info.columns})
        objects.put_new(f"{run_id}/{table}/{merged.name}", merged.read_bytes())
        os.replace(merged, folder / merged.name)
        objects.delete([f"{run_id}/{table}/{piece.name}" for piece in files])
        for piece in files:
            piece.unlink(missing_ok=True)
        return len(files)
    finally:
        objects.delete([lock_key])
        shutil.rmtree(private, ignore_errors=True)


def _merge(files: list[Path], folder: Path, table: str, present: set[str] | None = None) -> Path:
    """Write the sorted union of ``files`` as one published file; columns
    not in ``present`` (a foreign file's gaps) come out NULL."""
    target = folder / compacted_name(time.time_ns())
    tmp = folder / temporary_name(target.name)
    schema = SCHEMAS[table]
    columns = table_select_list(table, set(schema.names) if present is None else present)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET threads TO 2")
        con.execute("SET enable_progress_bar = false")
        con.read_parquet([duckdb_path(f) for f in files], union_by_name=True).create_view("raw_pieces")
        con.execute(f"CREATE VIEW pieces AS SELECT {columns} FROM raw_pieces")
        metadata = {COVERS_KEY: encode_covers(f.name for f in files)}
        if table == "scalars":
            # Readers resolve resumed runs from this list, not by scanning rows.
            attempts = con.execute(
                "SELECT rank, attempt, min(step) FILTER (WHERE step >= 0) FROM pieces "
                "WHERE rank IS NOT NULL AND attempt IS NOT NULL GROUP BY ALL ORDER BY ALL"
            ).fetchall()
            metadata[ATTEMPTS_KEY] = encode_attempts(attempts)
            metadata[SERIES_KEY] = encode_series(con.execute(SERIES_SQL.format(source="pieces")).fetchall())
        reader = con.sql(f"SELECT * FROM pieces ORDER BY {_ORDER[table]}").to_arrow_reader(_ROW_GROUP_ROWS)
        with pq.ParquetWriter(tmp, schema.with_metadata(metadata), compression="zstd") as writer:
            for batch in reader:
                writer.write_table(pa.Table.from_batches([batch]).cast(schema), row_group_size=_ROW_GROUP_ROWS)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return target


def _acquire_lock(folder: Path) -> Path | None:
    """Create the folder's lock file, or None when a live compaction holds it.

    A lock left by a dead process on this host (or one older than an hour)
    is taken over.
    """
    lock = folder / _LOCK_NAME
    owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "at": time.time()})
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _lock_is_stale(lock):
                return None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(owner)
        return lock
    return None


def _lock_is_stale(lock: Path) -> bool:
    try:
        holder = json.loads(lock.read_text())
        if time.time() - float(holder["at"]) > _STALE_TMP_S:
            return True
        if holder["host"] != socket.gethostname():
            return False
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    except (OSError, ValueError, KeyError, TypeError):
        # Being written this instant, or garbage: stale only once it is old.
        try:
            return time.time() - lock.stat().st_mtime > 60
        except FileNotFoundError:
            return True
    return False


def _remove_leftovers(store: Store, run_id: str, table: str) -> None:
    """Delete temporary files from crashed writers or compactions, and pieces
    a crashed compaction published a merged file for but did not delete.

    Only a merged file the reader accepts (the store's types, this run's
    rows) decides what is deleted: a stray file's footer never does.
    """
    folder = store.root / run_id / table
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    now = time.time()
    for entry in entries:
        if entry.name.startswith(TEMPORARY_PREFIX):
            try:
                if now - entry.stat().st_mtime > _STALE_TMP_S:
                    Path(entry.path).unlink(missing_ok=True)
            except FileNotFoundError:
                pass
    names = {entry.name for entry in entries}
    for path, info in store.segments(run_id, table):
        for piece in info.covers:
            if piece in names and piece != path.name:
                (folder / piece).unlink(missing_ok=True)


def compact_if_fragmented(store: Store, run_id: str, *, min_files: int = FRAGMENTED_FILES) -> dict[str, int]:
    """Compact the tables of ``run_id`` that have at least ``min_files`` files.

    For live runs: a writer publishes a segment every couple of seconds, and
    every query pays for every file (~0.3 ms of CPU each with DuckDB 1000
    files cost ~300 ms a query), so a dashboard or a long training job calls
    this now and then. Safe while the run is being written and read.
    """
    merged: dict[str, int] = {}
    for table in TABLES:
        fragmented = len(store.segment_files(run_id, table)) >= min_files
        merged[table] = _compact_table(store, run_id, table) if fragmented else 0
    if any(merged.values()):
        _refresh_summary(store, run_id)
    return merged


def compact_store(store: Store, run_ids: list[str] | None = None) -> dict[str, dict[str, int]]:
    """Compact every run (or the given ones); returns files merged per run and table."""
    return {run_id: compact_run(store, run_id) for run_id in (run_ids or store.run_ids())}
