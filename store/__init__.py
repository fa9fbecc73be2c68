"""The run store: Parquet segments on disk, DuckDB for queries.

``store.segments`` (the writer) needs only numpy and pyarrow, so the probe can
import it without DuckDB; ``Store`` (the reader) is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Store", "RunWriter", "StoreError", "UnknownRunError"]


def __getattr__(name: str) -> Any:
    if name in ("Store", "UnknownRunError"):
        from traindoctor.store import reader

        return getattr(reader, name)
    if name in ("RunWriter", "StoreError"):
        from traindoctor.store import segments

        return getattr(segments, name)
    raise AttributeError(f"module 'store' has no attribute {name!r}")
