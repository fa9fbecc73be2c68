"""Factories for the store tests: small runs written through the real writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter


def write_run(
    root: Path,
    run_id: str,
    *,
    steps: np.ndarray | range = range(1, 21),
    names: tuple[str, ...] = ("loss",),
    layers: tuple[str, ...] = (),
    split: str = "train",
    value=None,
    flushes: int = 1,
    **writer_kwargs,
) -> RunWriter:
    """Record ``names`` at ``steps`` (globally, and per layer in ``layers``)
    in ``flushes`` segments, and close the run. Values default to
    step + 1000 * name index + layer index / 100, so every row is distinct."""
    steps = np.asarray(steps, dtype=np.int64)
    writer = RunWriter(root, run_id=run_id, background=False, **writer_kwargs)
    for chunk in np.array_split(steps, flushes):
        for name_index, name in enumerate(names):
            base = chunk + 1000.0 * name_index if value is None else np.full(len(chunk), value, dtype=float)
            writer.add_scalars(step=chunk, name=name, value=base, split=split)
            for layer_index, layer in enumerate(layers):
                writer.add_scalars(step=chunk, name=name, value=base + layer_index / 100, split=split, layer=layer)
        writer.flush()
    writer.close()
    return writer


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def store(store_root: Path) -> Store:
    return Store(store_root)


def duplicate_rows(store: Store, runs=None):
    """(run, rank, step, split, name, layer) keys seen more than once."""
    return store.query(
        """SELECT run_id, rank, step, split, name, layer, count(*) AS copies FROM scalars
           GROUP BY ALL HAVING count(*) > 1""",
        runs=runs,
    )
