"""Factories and oracles shared by the importer tests."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from traindoctor.store.reader import Store


def listing(root: Path) -> list[str]:
    """Every path under ``root`` (hidden ones included), to show a failed import left nothing."""
    if not root.exists():
        return []
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, dirs, files in os.walk(root) for name in dirs + files)


def imported_series(store_root: Path, run_id: str, split: str, name: str, layer: str | None = None) -> pd.DataFrame:
    """One series of an imported run, sorted by step."""
    frame = Store(store_root).scalars([run_id])
    frame = frame[(frame["split"] == split) & (frame["name"] == name)]
    frame = frame[frame["layer"].isna()] if layer is None else frame[frame["layer"] == layer]
    return frame.sort_values("step", kind="stable").reset_index(drop=True)


def findings_of(store_root: Path, run_id: str) -> list:
    """Findings of the diagnosis engine for one run."""
    from traindoctor.diagnosis import diagnose
    from traindoctor.store.run_data import load_run

    return list(diagnose(load_run(Store(store_root), run_id)))


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"
