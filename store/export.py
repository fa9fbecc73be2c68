"""Export chosen runs to one DuckDB database file, for sharing.

The file holds four tables, ``runs``, ``scalars``, ``confusion`` and
``events``, with the columns of the store's views, and with what the views
show: for a resumed run, the newest attempt's rows wherever attempts overlap
(the ``attempt`` column says which attempt each row comes from; rows an
attempt superseded are not exported). ``runs`` holds config, env, task,
source and attempts as JSON text.

The database is built under a temporary name next to the target and moved
into place only when complete, so a reader never opens half a file.

Example:
    >>> export_duckdb(Store("traindoctor_runs"), "share.duckdb", ["resnet18-lr0.1"])  # doctest: +SKIP
    {'path': 'share.duckdb', 'runs': 1, 'scalars': 48210, 'confusion': 300, 'events': 4}
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import duckdb
import pyarrow as pa

from traindoctor.store.errors import StoreError
from traindoctor.store.format import TABLES
from traindoctor.store.reader import Store

EXPORT_TABLES = ("runs", *TABLES)
# Rows per Arrow batch streamed from the store into the file: bounds memory
# for runs of many millions of values.
_BATCH_ROWS = 256 * 1024


def export_duckdb(
    store: Store,
    path: str | os.PathLike,
    run_ids: list[str] | None = None,
    *,
    overwrite: bool = False,
) -> dict:
    """Write ``run_ids`` (run ids or names; all runs when None) to the DuckDB file ``path``.

    Returns ``{"path": str, "runs": n, "scalars": n, "confusion": n, "events": n}``.
    Raises ``StoreError`` when ``path`` exists and ``overwrite`` is False, is a
    folder, or its folder does not exist; ``UnknownRunError`` for an unknown run.
    """
    target = Path(path)
    if target.is_dir():  # overwrite=True or not: a folder (the store itself, say) is never replaced
        raise StoreError(f"{target} is a folder: give the database a file name")
    if target.exists() and not overwrite:
        raise StoreError(f"{target} already exists: pass overwrite=True (CLI: choose another file) to replace it")
    if not target.parent.is_dir():
        raise StoreError(f"cannot write {target}: folder {target.parent} does not exist")
    chosen = None if run_ids is None else list(dict.fromkeys(store.resolve(run) for run in run_ids))
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}-{secrets.token_hex(4)}")
    counts: dict = {"path": str(target)}
    try:
        with store.connect(chosen) as source, duckdb.connect(str(tmp)) as out:
            for table in EXPORT_TABLES:
                batches = source.sql(f"SELECT * FROM {table}").to_arrow_reader(_BATCH_ROWS)
                # The first batch (possibly empty) fixes the table's columns.
                out.register("incoming", pa.Table.from_batches([], schema=batches.schema))
                out.execute(f"CREATE TABLE {table} AS SELECT * FROM incoming")
                for batch in batches:
                    out.register("incoming", pa.Table.from_batches([batch]))
                    out.execute(f"INSERT INTO {table} SELECT * FROM incoming")
                out.unregister("incoming")
                counts[table] = out.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            out.execute("CHECKPOINT")
        _publish(tmp, target, overwrite=overwrite)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return counts


def _publish(tmp: Path, target: Path, *, overwrite: bool) -> None:
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    if overwrite:
        os.replace(tmp, target)
        return
    # A hard link fails if the target appeared meanwhile: no silent overwrite
    # of a file another process wrote after our first check.
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise StoreError(f"{target} already exists: pass overwrite=True to replace it") from None
    except OSError:  # a filesystem without hard links
        if target.exists():
            raise StoreError(f"{target} already exists: pass overwrite=True to replace it") from None
        os.replace(tmp, target)
