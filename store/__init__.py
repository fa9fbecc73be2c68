"""The run store: Parquet segments on disk, DuckDB for queries.

``store.format`` states the on-disk format (tables, columns, names, footer
keys, units) and imports only the standard library. ``store.segments`` (the
writer) needs only numpy and pyarrow, so the probe can import it without
DuckDB; ``Store`` (the reader) is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Store", "RunWriter", "StoreError", "UnknownRunError"]


def __getattr__(name: str) -> Any:
    if name in ("Store", "UnknownRunError"):
        from traindoctor.store import reader

        return getattr(reader, name)
    if name == "RunWriter":
        from traindoctor.store.segments import RunWriter

        return RunWriter
    if name == "StoreError":
        from traindoctor.store.errors import StoreError

        return StoreError
    raise AttributeError(f"module 'traindoctor.store' has no attribute {name!r}")
