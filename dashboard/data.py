"""The dashboard's and the CLI's only door to the store.

Everything here returns plain pandas frames or ``RunData``; pages and
commands never see SQL or DuckDB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from dashboard.diagnosis.run_data import CONFUSION_COLUMNS, EVENT_COLUMNS, SCALAR_COLUMNS, RunData
from store.reader import Store


def default_store_path() -> Path:
    """``$TRAINDOCTOR_STORE``, else ``./runs`` (DESIGN.md)."""
    return Path(os.environ.get("TRAINDOCTOR_STORE") or "runs")


def open_store(path: str | os.PathLike | None = None) -> Store:
    return Store(path if path is not None else default_store_path())


def load_run(store: Store, run: str) -> RunData:
    """Everything the rules need about one run (``run`` is an id or a name)."""
    run_id = store.resolve(run)
    meta = store.run_meta(run_id)
    scalars = store.scalars([run_id], rank=0)[SCALAR_COLUMNS]
    confusion = store.confusion([run_id])
    confusion = confusion[confusion["rank"] == 0][CONFUSION_COLUMNS] if len(confusion) else confusion.reindex(columns=CONFUSION_COLUMNS)
    events = store.events([run_id])
    events = events[EVENT_COLUMNS].reset_index(drop=True)
    return RunData(
        run_id=run_id,
        name=meta.get("name") or run_id,
        scalars=scalars.reset_index(drop=True),
        confusion=confusion.reset_index(drop=True),
        events=events,
        config=meta.get("config") or {},
        task=meta.get("task") or {},
        env=meta.get("env") or {},
        status=meta.get("status", "finished"),
    )


def load_runs(store: Store, runs: Sequence[str]) -> list[RunData]:
    return [load_run(store, run) for run in runs]


def runs_table(store: Store) -> pd.DataFrame:
    return store.runs()
