"""Small factories that build RunData from plain arrays for the rule tables."""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

from traindoctor.store.frames import Table
from traindoctor.store.run_data import CONFUSION_COLUMNS, EVENT_COLUMNS, SCALAR_COLUMNS, RunData


def scalar_rows(name: str, values: Sequence[float], steps: Sequence[int] | None = None, split: str = "train",
                layer: str | None = None, epochs: Sequence[float] | None = None) -> Table:
    """Scalar rows of one series (SCALAR_COLUMNS), steps 1… unless given."""
    values = np.asarray(values, dtype="float64")
    steps = np.arange(1, len(values) + 1) if steps is None else np.asarray(steps)
    count = len(values)
    return Table({"step": np.broadcast_to(steps.astype("int64"), (count,)).copy(),
                  "epoch": np.full(count, np.nan) if epochs is None else np.asarray(epochs, float),
                  "wall_time": np.full(count, np.nan), "split": np.full(count, split, dtype=object),
                  "name": np.full(count, name, dtype=object), "layer": np.full(count, layer, dtype=object),
                  "value": values})


def concat_rows(tables: Sequence[Any], columns: Sequence[str] = SCALAR_COLUMNS) -> Table:
    """The rows of several tables (Tables, or anything ``Table.of`` takes), one after another, in ``columns``
    (``pd.concat(..., ignore_index=True)[columns]``): numeric columns stay numeric, mixed ones become objects."""
    parts = [Table.of(table, columns) for table in tables]
    stacked = {}
    for column in columns:
        arrays = [np.asarray(part[column]) for part in parts]
        filled = [array for array in arrays if len(array)]
        if not filled:
            stacked[column] = np.concatenate(arrays) if arrays else np.empty(0, dtype=object)
        elif all(array.dtype.kind in "iuf" for array in filled):
            stacked[column] = np.concatenate(filled)
        else:
            stacked[column] = np.concatenate([array.astype(object) for array in filled])
    return Table(stacked)


def with_rows(run: RunData, *tables: Any) -> RunData:
    """``run`` with ``tables``' scalar rows appended to its own (in place; the run is returned)."""
    run.scalars = concat_rows([run.scalars, *tables])
    return run


def make_run(*, loss: Sequence[float] | None = None, steps: Sequence[int] | None = None,
             frames: Sequence[Any] = (), confusion: Any = None,
             events: Sequence[tuple[str, Any, int | None]] = (), task: dict | None = None, env: dict | None = None,
             config: dict | None = None, name: str = "run") -> RunData:
    """A run of ``frames``' scalar rows (Tables, or anything ``Table.of`` takes) plus a training ``loss`` at
    ``steps``; ``events`` are (kind, detail, step) with a detail dict written as JSON."""
    parts = list(frames)
    if loss is not None:
        parts.append(scalar_rows("loss", loss, steps))
    scalars = concat_rows(parts) if parts else RunData("x", "x").scalars
    event_table = Table({
        "step": _event_steps([step for _, _, step in events]),
        "wall_time": np.arange(len(events), dtype="float64"),
        "kind": np.asarray([kind for kind, _, _ in events], dtype=object),
        "detail": np.asarray([json.dumps(detail) if isinstance(detail, dict) else str(detail)
                              for _, detail, _ in events], dtype=object)})
    return RunData(run_id=name, name=name, scalars=scalars,
                   confusion=confusion if confusion is not None else RunData("x", "x").confusion,
                   events=event_table if len(event_table) else RunData("x", "x").events,
                   task=task or {}, env=env or {}, config=config or {})


def _event_steps(steps: Sequence[int | None]) -> np.ndarray:
    """Events' steps as a store's column holds them: int64, float64 with NaN where some are None, or all None."""
    if all(step is None for step in steps):
        return np.full(len(steps), None, dtype=object)
    if any(step is None for step in steps):
        return np.asarray([np.nan if step is None else step for step in steps], dtype="float64")
    return np.asarray(steps, dtype="int64")


def confusion_frame(matrix: np.ndarray, step: int = 100, split: str = "val") -> Table:
    """The confusion rows (CONFUSION_COLUMNS) of one matrix (true × predicted counts); zero cells left out."""
    matrix = np.asarray(matrix)
    true_class, pred_class = np.nonzero(matrix)
    count = len(true_class)
    return Table({"step": np.full(count, step, dtype="int64"), "epoch": np.full(count, np.nan),
                  "split": np.full(count, split, dtype=object), "true_class": true_class,
                  "pred_class": pred_class, "count": matrix[true_class, pred_class]})


def noisy_decay(n: int, start: float = 2.3, end: float = 0.3, noise: float = 0.03, seed: int = 0,
                rate: float = 5.0) -> np.ndarray:
    """An exponentially decaying loss with multiplicative noise: a healthy curve."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, n)
    return (end + (start - end) * np.exp(-rate * x)) * (1 + noise * rng.standard_normal(n))


def full_run(n: int, *, resumed: bool = False, seed: int = 0) -> RunData:
    """A run with every input a rule can read, built from arrays with odd bits sprinkled in."""
    rng = np.random.default_rng(seed)
    loss = noisy_decay(n, seed=seed)
    loss[n // 3] = math.nan
    frames = [scalar_rows("loss", loss), scalar_rows("accuracy", np.clip(1 - loss / 3, 0, 1)),
              scalar_rows("grad_norm", np.abs(rng.normal(1, 0.2, n))), scalar_rows("lr", np.full(n, 1e-3), layer="group0"),
              scalar_rows("amp_scale", np.full(n, 65536.0)), scalar_rows("amp_skipped", np.zeros(n))]
    layer_steps = np.arange(5, n + 1, 5)
    for layer in ("0.weight", "0.bias", "2.weight"):
        for name, value in (("grad_norm", 0.1), ("weight_norm", 3.0), ("update_ratio", 1e-3)):
            frames.append(scalar_rows(name, np.full(len(layer_steps), value), steps=layer_steps, layer=layer))
    eval_steps = np.linspace(n // 5, n, 5).astype(int)
    frames += [scalar_rows("loss", np.linspace(1.0, 0.5, 5), steps=eval_steps, split="val"),
               scalar_rows("accuracy", np.linspace(0.6, 0.9, 5), steps=eval_steps, split="val")]
    if resumed:  # steps repeat after a resume; RunData.series keeps the last
        frames.append(scalar_rows("loss", noisy_decay(n // 4, seed=seed + 1), steps=np.arange(n // 2, n // 2 + n // 4)))
    return make_run(frames=frames, confusion=confusion_frame(np.array([[40, 5], [6, 49]]), step=n),
                    events=[("resumed", "attempt 1", None), ("config_lint", "not json", None)],
                    task={"num_classes": 2}, env={"optimizer": {"type": "Adam", "param_groups": [{"lr": 1e-3}]},
                                                  "model": {"has_attention": False}})
