"""Factories for probe tests: a tiny classifier, its data, and reading a run back."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from traindoctor.store.reader import Store


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every probe test with one intra-op thread (tests/conftest.py)."""
    yield


def make_model(seed: int = 0, inputs: int = 6, hidden: int = 16, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, hidden),
        torch.nn.LayerNorm(hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, classes),
    )


def make_batches(count: int, seed: int = 1, batch: int = 8, inputs: int = 6, classes: int = 3) -> list[tuple]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, inputs, generator=generator), torch.randint(0, classes, (batch,), generator=generator))
        for _ in range(count)
    ]


def read_run(store_dir, run: str | None = None) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(run.json, scalars, events, confusion) of the only (or named) run in ``store_dir``."""
    store = Store(store_dir)
    run_id = store.resolve(run) if run else store.run_ids()[0]
    return store.run_meta(run_id), store.scalars([run_id]), store.events([run_id]), store.confusion([run_id])


def series(scalars: pd.DataFrame, name: str, *, layer=None, split: str = "train") -> dict[int, float]:
    rows = scalars[(scalars["name"] == name) & (scalars["split"] == split)]
    rows = rows[rows["layer"].isna()] if layer is None else rows[rows["layer"] == layer]
    return dict(zip(rows["step"].astype(int), rows["value"].astype(float)))
