"""The input of every rule: one run's data as plain pandas frames, and its loading.

:class:`RunData` is what the rules in ``traindoctor.diagnosis`` take; it is
pure pandas, so the diagnosis imports it without DuckDB. :func:`load_run`
builds one from a :class:`~traindoctor.store.reader.Store` (the only place a
run is read for diagnosis: the CLI, the dashboard and the public
``traindoctor.diagnose`` all call it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from traindoctor.store.format import IDENTITY_COLUMNS, column_names

if TYPE_CHECKING:
    from traindoctor.store.reader import Store


def _data_columns(table: str) -> list[str]:
    """The columns of ``table`` a rule sees: all but who wrote the row (a
    list, so that ``frame[columns]`` selects them)."""
    return [name for name in column_names(table) if name not in IDENTITY_COLUMNS]


SCALAR_COLUMNS = _data_columns("scalars")  # step, epoch, wall_time, split, name, layer, value
CONFUSION_COLUMNS = _data_columns("confusion")  # step, epoch, split, true_class, pred_class, count
EVENT_COLUMNS = _data_columns("events")  # step, wall_time, kind, detail


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
        task: ``kind`` (one of ``TASK_KINDS``), ``num_classes``,
            ``class_names``, ``vocab_size``, ``expected_initial_loss``.
        env: what the probe saw: ``optimizer`` (type, param_groups), ``model``
            (type, num_params, has_attention), ``amp``, torch version, device.
        status: running, finished or crashed.
        source: what wrote the run (run.json's ``source``): ``{"kind": "probe"}``
            or an importer's kind and fingerprint, with ``logging_every`` (the
            commonest step gap of the training loss) where the importer knew it.
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
    source: dict[str, Any] = field(default_factory=dict)

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


def load_run(store: "Store", run: str) -> RunData:
    """Everything the rules need about one run: rank 0, newest attempt per step.

    Args:
        store: the store to read.
        run: a run_id or a name (the newest run with that name).

    Raises:
        UnknownRunError: no run has that id or name.
    """
    run_id = store.resolve(run)
    meta = store.run_meta(run_id)
    scalars = store.scalars([run_id], rank=0)[SCALAR_COLUMNS]
    confusion = store.confusion([run_id])
    events = store.events([run_id])
    return RunData(
        run_id=run_id,
        name=meta.get("name") or run_id,
        scalars=scalars.reset_index(drop=True),
        # Rank 0 evaluates; other ranks' counts would double-count the eval split.
        confusion=confusion[confusion["rank"] == 0][CONFUSION_COLUMNS].reset_index(drop=True),
        events=events[EVENT_COLUMNS].reset_index(drop=True),
        config=meta.get("config") or {},
        task=meta.get("task") or {},
        env=meta.get("env") or {},
        status=meta.get("status", "finished"),
        source=meta.get("source") or {},
    )
