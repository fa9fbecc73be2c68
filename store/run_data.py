"""The input of every rule: one run's data as numpy columns, and its loading.

:class:`RunData` is what the rules in ``traindoctor.diagnosis`` take; it holds
numpy columns (:class:`~traindoctor.store.frames.Table`) and hands out
step-indexed :class:`~traindoctor.store.frames.Curve` objects, so the
diagnosis imports neither pandas nor DuckDB. :func:`load_run` builds one from a
:class:`~traindoctor.store.reader.Store` (the only place a run is read for
diagnosis: the CLI, the dashboard and the public ``traindoctor.diagnose`` all
call it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from traindoctor.store.format import IDENTITY_COLUMNS, column_names
from traindoctor.store.frames import Curve, StepIndex, Table, is_missing, to_float

if TYPE_CHECKING:
    from traindoctor.store.files import StoreFiles


def _data_columns(table: str) -> list[str]:
    """The columns of ``table`` a rule sees: all but who wrote the row."""
    return [name for name in column_names(table) if name not in IDENTITY_COLUMNS]


SCALAR_COLUMNS = _data_columns("scalars")  # step, epoch, wall_time, split, name, layer, value
CONFUSION_COLUMNS = _data_columns("confusion")  # step, epoch, split, true_class, pred_class, count
EVENT_COLUMNS = _data_columns("events")  # step, wall_time, kind, detail


@dataclass
class LayerFrame:
    """One per-layer statistic as a steps × layers grid (NaN where a layer has no value at a step).

    Attributes:
        index: the steps (int64, ascending), shape (n_steps,).
        columns: the layer names, sorted.
        values: float64, shape (n_steps, n_layers).
    """

    index: np.ndarray
    columns: list[str]
    values: np.ndarray

    def __post_init__(self) -> None:
        self.index = StepIndex(self.index)  # .to_numpy() and .get_loc() as a pandas Index, like a Curve's

    @property
    def empty(self) -> bool:
        return self.values.size == 0

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, layer: str) -> bool:
        return layer in self.columns

    def __getitem__(self, layer: str) -> Curve:
        return Curve(self.values[:, self.columns.index(layer)], self.index, layer)

    def to_numpy(self, dtype: Any = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` (steps × layers) of a copy of the grid."""
        import pandas as pd

        return pd.DataFrame(self.values.copy(), index=self.index.to_numpy().copy(), columns=list(self.columns))

    def items(self):  # noqa: ANN201
        return ((layer, self[layer]) for layer in self.columns)


def _is_missing_column(values: np.ndarray) -> np.ndarray:
    """Which values are missing (None or NaN), shape (len(values),)."""
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind == "O":
        try:  # one C loop each (a string compares unequal to None and equal to itself)
            missing = np.asarray(values == None, dtype=bool) | np.asarray(values != values, dtype=bool)  # noqa: E711
            if missing.shape == values.shape:
                return missing
        except (TypeError, ValueError):  # a value whose comparison has no truth value (pd.NA)
            pass
        return np.fromiter((is_missing(v) for v in values), bool, len(values))
    return np.zeros(len(values), dtype=bool)


@dataclass
class RunData:
    """One run, as the rules see it (rank 0, newest attempt for repeated steps).

    The three tables may be given as a :class:`~traindoctor.store.frames.Table`,
    a mapping of columns, a pyarrow Table or a pandas DataFrame; they are kept
    as Tables.

    Attributes:
        run_id, name: identity.
        scalars: long table (step, epoch, wall_time, split, name, layer, value);
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
    scalars: Table = field(default_factory=lambda: Table(names=SCALAR_COLUMNS))
    confusion: Table = field(default_factory=lambda: Table(names=CONFUSION_COLUMNS))
    events: Table = field(default_factory=lambda: Table(names=EVENT_COLUMNS))
    config: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    status: str = "finished"
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Raises:
            ValueError: a scalars step is missing (None, NaN) or not a whole number: cast to int64 it would
                become another step (NaN: -9223372036854775808, the run's first).
        """
        self.scalars = Table.of(self.scalars, SCALAR_COLUMNS)
        self.confusion = Table.of(self.confusion, CONFUSION_COLUMNS)
        self.events = Table.of(self.events, EVENT_COLUMNS)
        steps = self.scalars["step"]
        if steps.dtype.kind not in "iu" and len(steps):  # a store's steps are int64: no cost there
            numbers = to_float(steps)
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                value = steps[row].item() if isinstance(steps[row], np.generic) else steps[row]
                raise ValueError(f"scalars row {row}: step {value!r} is not a whole number "
                                 f"({int(bad.sum())} such row(s)); a step is an optimizer step, an integer")

    def _rows(self, name: str, split: str, layer: str | None | bool) -> np.ndarray:
        """Row mask of ``name`` on ``split``: global rows (layer None), one layer's, or (True) every layer's."""
        table = self.scalars
        mask = (table["name"] == name) & (table["split"] == split)
        if not isinstance(mask, np.ndarray):  # an empty object column compares to a scalar
            mask = np.zeros(len(table), dtype=bool)
        missing = self._layer_missing()
        if layer is None:
            return mask & missing
        if layer is True:
            return mask & ~missing
        return mask & (table["layer"] == layer)

    def _layer_missing(self) -> np.ndarray:
        """Which scalar rows are global (no layer), computed once per scalars Table."""
        table = self.scalars
        cached = self.__dict__.get("_layer_missing_of")
        if cached is None or cached[0] is not table:
            cached = (table, _is_missing_column(table["layer"]))
            self.__dict__["_layer_missing_of"] = cached
        return cached[1]

    def splits(self) -> list[str]:
        """The splits the scalars name (``train``, ``val``, ``val_<name>``…), in first-seen order."""
        table = self.scalars
        cached = self.__dict__.get("_splits_of")
        if cached is None or cached[0] is not table:
            cached = (table, [split for split in dict.fromkeys(table["split"].tolist()) if isinstance(split, str)])
            self.__dict__["_splits_of"] = cached
        return list(cached[1])

    def global_rows(self, name: str, split: str = "train") -> np.ndarray:
        """Boolean mask, shape (len(scalars),): the rows of the global (not per-layer) series ``name`` on ``split``."""
        return self._rows(name, split, None)

    def series(self, name: str, split: str = "train", layer: str | None = None) -> Curve:
        """Values of one global (or one layer's) series indexed by step, in step order.

        Repeated steps keep their last value; NaN and ±Inf are kept.
        """
        mask = self._rows(name, split, layer)
        if not mask.any():
            return Curve(np.empty(0, dtype="float64"), np.empty(0, dtype="int64"), name)
        steps = np.asarray(self.scalars["step"][mask], dtype="int64")
        values = np.asarray(self.scalars["value"][mask], dtype="float64")
        steps, values = _last_per_step(steps, values)
        return Curve(values, steps, name)

    def has(self, name: str, split: str = "train") -> bool:
        table = self.scalars
        if table.empty:
            return False
        return bool(((table["name"] == name) & (table["split"] == split)).any())

    def layers(self, name: str, split: str = "train") -> list[str]:
        """Layer names that have values of ``name``, in first-seen order."""
        mask = self._rows(name, split, True)
        return list(dict.fromkeys(self.scalars["layer"][mask].tolist()))

    def layer_frame(self, name: str, split: str = "train") -> LayerFrame:
        """A steps × layers grid of one per-layer statistic (layers sorted by name, steps ascending)."""
        mask = self._rows(name, split, True)
        if not mask.any():
            return LayerFrame(np.empty(0, dtype="int64"), [], np.empty((0, 0)))
        steps = np.asarray(self.scalars["step"][mask], dtype="int64")
        layers = self.scalars["layer"][mask]
        values = np.asarray(self.scalars["value"][mask], dtype="float64")
        columns = sorted(set(layers.tolist()))
        rows, row_of = np.unique(steps, return_inverse=True)
        column_of = np.searchsorted(np.asarray(columns, dtype=object), layers)
        grid = np.full((len(rows), len(columns)), np.nan)
        # A repeated (step, layer) keeps its last non-NaN value (NaN if it has none): pivot_table's
        # aggfunc="last" is GroupBy.last, which skips NaN.
        kept = ~np.isnan(values)
        cells = (row_of * len(columns) + column_of)[kept]
        cells, last = np.unique(cells[::-1], return_index=True)
        grid.flat[cells] = values[kept][::-1][last]
        return LayerFrame(rows, columns, grid)


def _last_per_step(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps in ascending order, each with its last value in row order."""
    if len(steps) > 1 and not (np.all(np.diff(steps) > 0)):
        reversed_steps = steps[::-1]
        unique, first_from_end = np.unique(reversed_steps, return_index=True)
        return unique, values[::-1][first_from_end]
    return steps, values


def load_run(store: "StoreFiles", run: str) -> RunData:
    """Everything the rules need about one run: rank 0, newest attempt per step.

    The rows are those of the store's DuckDB views (``Store.scalars``,
    ``confusion`` and ``events``), in their order, read straight from the
    run's segment files with pyarrow (``store.run_tables``): neither DuckDB
    nor pandas is imported. An object store is read from its local mirror,
    brought up to date first.

    Args:
        store: the store to read: a :class:`~traindoctor.store.files.StoreFiles`
            or a :class:`~traindoctor.store.reader.Store`.
        run: a run_id or a name (the newest run with that name).

    Raises:
        UnknownRunError: no run has that id or name.
        StoreError: the run's files kept changing or failing through every retry.
    """
    from traindoctor.store.run_tables import run_tables  # pyarrow: only when a run is read

    run_id = store.resolve(run)
    meta = store.run_meta(run_id)
    tables = run_tables(store, run_id)
    confusion = tables["confusion"]
    return RunData(
        run_id=run_id,
        name=meta.get("name") or run_id,
        scalars=tables["scalars"][SCALAR_COLUMNS],
        # Rank 0 evaluates; other ranks' counts would double-count the eval split.
        confusion=confusion[np.asarray(confusion["rank"] == 0, dtype=bool)][CONFUSION_COLUMNS],
        events=tables["events"][EVENT_COLUMNS],
        config=meta.get("config") or {},
        task=meta.get("task") or {},
        env=meta.get("env") or {},
        status=meta.get("status", "finished"),
        source=meta.get("source") or {},
    )
