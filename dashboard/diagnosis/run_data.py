"""The input of every rule: one run's data as plain pandas frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

SCALAR_COLUMNS = ["step", "epoch", "wall_time", "split", "name", "layer", "value"]
CONFUSION_COLUMNS = ["step", "epoch", "split", "true_class", "pred_class", "count"]
EVENT_COLUMNS = ["step", "wall_time", "kind", "detail"]


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


@dataclass
class RunData:
    """One run, as the rules see it (rank 0, newest attempt for repeated steps).

    Attributes:
        run_id, name: identity.
        scalars: long frame (step, epoch, wall_time, split, name, layer, value);
            ``layer`` is None for global values, the ``named_parameters()``
            name for per-layer ones and ``group<i>`` for ``lr``.
        confusion: (step, epoch, split, true_class, pred_class, count).
        events: (step, wall_time, kind, detail).
        config: hyperparameters as the user gave them.
        task: ``num_classes``, ``class_names``, ``expected_initial_loss``.
        env: what the probe saw: ``optimizer`` (type, param_groups), ``model``
            (type, num_params, has_attention), ``amp``, torch version, device.
        status: running, finished or crashed.
    """

    run_id: str
    name: str
    scalars: pd.DataFrame = field(default_factory=lambda: _empty(SCALAR_COLUMNS))
    confusion: pd.DataFrame = field(default_factory=lambda: _empty(CONFUSION_COLUMNS))
    events: pd.DataFrame = field(default_factory=lambda: _empty(EVENT_COLUMNS))
    config: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    status: str = "finished"

    def series(self, name: str, split: str = "train", layer: str | None = None) -> pd.Series:
        """Values of one global (or one layer's) series indexed by step, in step order.

        Repeated steps keep their last value; NaN and ±Inf are kept.
        """
        frame = self.scalars
        mask = (frame["name"] == name) & (frame["split"] == split)
        mask &= frame["layer"].isna() if layer is None else (frame["layer"] == layer)
        selected = frame.loc[mask, ["step", "value"]]
        if selected.empty:
            return pd.Series(dtype="float64", name=name)
        selected = selected.drop_duplicates("step", keep="last").sort_values("step")
        return pd.Series(selected["value"].to_numpy(dtype="float64"), index=selected["step"].to_numpy(dtype="int64"), name=name)

    def has(self, name: str, split: str = "train") -> bool:
        frame = self.scalars
        return bool(((frame["name"] == name) & (frame["split"] == split)).any())

    def layers(self, name: str, split: str = "train") -> list[str]:
        """Layer names that have values of ``name``, in first-seen order."""
        frame = self.scalars
        mask = (frame["name"] == name) & (frame["split"] == split) & frame["layer"].notna()
        return list(dict.fromkeys(frame.loc[mask, "layer"]))

    def layer_frame(self, name: str, split: str = "train") -> pd.DataFrame:
        """A steps × layers frame of one per-layer statistic."""
        frame = self.scalars
        mask = (frame["name"] == name) & (frame["split"] == split) & frame["layer"].notna()
        selected = frame.loc[mask, ["step", "layer", "value"]]
        if selected.empty:
            return pd.DataFrame()
        return selected.pivot_table(index="step", columns="layer", values="value", aggfunc="last", dropna=False).sort_index()
