"""Compaction: merge a run's small segments into one sorted Parquet file.

Readers never see a row twice or miss one: the merged file's list of the
segments it replaces (``c-<gen>.covers.json``) is published before the merged
file itself, readers ignore covered segments only once the merged file is
there, and the pieces are deleted last. A reader that listed the folder
before the merge and meets a deleted piece lists it again (see
``Store.query``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import duckdb

from store.reader import _COVERS_SUFFIX, Store
from store.segments import SCHEMAS, TABLES, atomic_write_bytes

# Sort keys per table: series read back contiguous (name, layer, step) for
# fast range scans and good compression.
_ORDER = {
    "scalars": "name, layer NULLS FIRST, split, rank, attempt, step",
    "confusion": "split, step, rank, attempt, true_class, pred_class",
    "events": "rank, attempt, wall_time",
}
# Leftover temporary files older than this are from a crashed writer or
# compaction, never from one in progress.
_STALE_TMP_S = 3600.0


def compact_run(store: Store, run_id: str) -> dict[str, int]:
    """Merge each table of ``run_id`` into one file; returns files merged per table."""
    merged: dict[str, int] = {}
    for table in TABLES:
        merged[table] = _compact_table(store, run_id, table)
    return merged


def _compact_table(store: Store, run_id: str, table: str) -> int:
    folder = store.root / run_id / table
    _remove_leftovers(folder)
    files = store.segment_files(run_id, table)
    if len(files) <= 1:
        return 0
    generation = f"c-{time.time_ns():020d}"
    target = folder / f"{generation}.parquet"
    tmp = folder / f".tmp-{generation}.parquet"
    columns = ", ".join(f'"{f.name}"' for f in SCHEMAS[table])
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET threads TO 2")
        relation = con.read_parquet([str(f) for f in files], union_by_name=True)
        relation.create_view("pieces")
        # Compacting the pieces of a finished run never changes the rows, only
        # their order; the path goes in as a bound parameter.
        con.execute(
            f"COPY (SELECT {columns} FROM pieces ORDER BY {_ORDER[table]}) TO $path "
            "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)",
            {"path": str(tmp)},
        )
    finally:
        con.close()
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    covers = folder / f"{generation}{_COVERS_SUFFIX}"
    atomic_write_bytes(covers, json.dumps([f.name for f in files]).encode())
    os.replace(tmp, target)
    for piece in files:
        piece.unlink(missing_ok=True)
        piece_covers = piece.with_name(piece.stem + _COVERS_SUFFIX)
        piece_covers.unlink(missing_ok=True)
    covers.unlink(missing_ok=True)
    return len(files)


def _remove_leftovers(folder: Path) -> None:
    """Delete temporary files from crashed writers and covered pieces a
    crashed compaction left behind."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    names = {e.name for e in entries}
    now = time.time()
    for entry in entries:
        if entry.name.startswith(".tmp-") and now - entry.stat().st_mtime > _STALE_TMP_S:
            Path(entry.path).unlink(missing_ok=True)
        elif entry.name.endswith(_COVERS_SUFFIX):
            merged = entry.name[: -len(_COVERS_SUFFIX)] + ".parquet"
            if merged not in names:
                continue  # its merge never published: the pieces stay live
            try:
                covered = json.loads(Path(entry.path).read_text())
            except (OSError, ValueError):
                continue
            for piece in covered:
                (folder / piece).unlink(missing_ok=True)
            Path(entry.path).unlink(missing_ok=True)


def compact_store(store: Store, run_ids: list[str] | None = None) -> dict[str, dict[str, int]]:
    """Compact every run (or the given ones); returns files merged per run and table."""
    return {run_id: compact_run(store, run_id) for run_id in (run_ids or store.run_ids())}
