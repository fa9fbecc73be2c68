"""Small helpers every rule module shares: reading a run's main series and building findings."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.memo import per_run
from traindoctor.diagnosis.robust import finite
from traindoctor.store.format import TASK_KINDS
from traindoctor.store.frames import Curve, Table, to_float
from traindoctor.store.run_data import LayerFrame, RunData

# The evaluation splits, in the order a rule prefers them. A named eval set
# is a split of its own, "val_<name>" or "test_<name>" (HF Trainer's
# eval_<name>_loss, Lightning's val/<name>/loss, probe.evaluate("val_ema")),
# and is judged on its own.
EVAL_SPLITS = ("val", "test")


def clean(value: Any) -> Any:
    """A JSON-friendly copy of evidence: numpy scalars to Python, floats rounded to 4 significant digits."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        return float(f"{value:.4g}")
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def finding(rule: str, severity: str, title: str, message: str, advice: str, source: str,
            step_start: Any = None, step_end: Any = None, evidence: dict[str, Any] | None = None) -> Finding:
    return Finding(
        rule=rule, severity=severity, title=title, message=message, advice=advice,
        step_start=None if step_start is None else int(step_start),
        step_end=None if step_end is None else int(step_end),
        evidence=clean(evidence or {}), source=source,
    )


def is_eval_split(split: str) -> bool:
    """``val``, ``test`` or a named eval set of either (``val_<name>``, ``test_<name>``)."""
    return split in EVAL_SPLITS or any(split.startswith(f"{base}_") and len(split) > len(base) + 1
                                       for base in EVAL_SPLITS)


@per_run
def eval_splits(run: RunData, name: str) -> tuple[str, ...]:
    """The evaluation splits a rule judges ``name`` on, each on its own.

    The main one (``val``, else ``test``: when both exist, ``test`` is the
    same question asked again), then every named eval set in name order
    (``val_<name>`` sets first; ``test_<name>`` sets too when no ``val_``
    set exists).
    """
    present = {split for split in run.splits() if is_eval_split(split) and run.has(name, split)}
    main = [split for split in EVAL_SPLITS if split in present][:1]
    named = {base: sorted(split for split in present if split.startswith(f"{base}_") and is_eval_split(split))
             for base in EVAL_SPLITS}
    return tuple(main + (named["val"] or named["test"]))


def eval_split(run: RunData, name: str) -> str | None:
    """The main evaluation split (val, then test) that has ``name``, else the first named eval set."""
    splits = eval_splits(run, name)
    return splits[0] if splits else None


@per_run
def eval_frame(run: RunData, name: str, split: str | None = None) -> tuple[Curve, Curve]:
    """An eval metric indexed by step, and the epoch of each eval (NaN where unknown).

    ``split``: one of :func:`eval_splits`; None for the main one (:func:`eval_split`).
    """
    split = eval_split(run, name) if split is None else split
    if split is None:
        return Curve(np.empty(0), np.empty(0, dtype="int64")), Curve(np.empty(0), np.empty(0, dtype="int64"))
    rows = run.scalars[run.global_rows(name, split)]
    steps = np.asarray(rows["step"], dtype="int64")
    # The last row of each step, in step order (a stable sort keeps the rows' order within a step).
    order = np.argsort(steps, kind="stable")
    keep = order[np.r_[steps[order][1:] != steps[order][:-1], True]] if len(order) else order
    steps = steps[keep]
    values = Curve(np.asarray(rows["value"], dtype="float64")[keep], steps, name=name)
    epochs = Curve(to_float(rows["epoch"])[keep], steps)
    return values, epochs


@per_run
def layer_values(run: RunData, name: str) -> LayerFrame:
    """``run.layer_frame(name)``: steps × layers, float64 (NaN where a layer has no value at a step).

    A pivot of every per-layer row of ``name``: the costliest read of a big run.
    """
    return run.layer_frame(name)


@per_run
def train_loss(run: RunData) -> Curve:
    """The training loss by step, NaN and ±Inf kept (a scan of every scalar row)."""
    return run.series("loss", "train")


def non_finite_steps(series: Curve) -> np.ndarray:
    """The steps of a step-indexed series whose value is NaN or ±Inf."""
    return series.index.to_numpy()[~np.isfinite(series.to_numpy(dtype="float64"))]


# HF Trainer logs the mean loss of each logging window rounded to 4 decimals;
# with its default logging_nan_inf_filter a NaN/Inf step loss is replaced by
# the window's running mean, so a window of NaN steps logs exactly 0.0 and a
# mixed one a copy of the mean. Two logged values within this distance are
# one value printed twice.
LOGGED_ROUNDING = 5e-5


@per_run
def masked_train_losses(run: RunData) -> np.ndarray:
    """Steps whose logged training loss hides a NaN: HF Trainer's masked NaN.

    A finite train loss counts as masked when a NaN/Inf gradient norm or
    evaluation loss was recorded in its logging window (after the previous
    train-loss record, up to its own step) and the value is exactly 0.0, or
    a copy (to HF's 4 decimals) of the previous record or of the mean of the
    earlier records. Without a non-finite neighbour no value is suspected.
    """
    raw = run.series("loss", "train")
    if raw.empty:
        return np.array([], dtype="int64")
    suspects = [non_finite_steps(run.series("grad_norm", "train"))]
    suspects += [non_finite_steps(eval_frame(run, "loss", split)[0]) for split in eval_splits(run, "loss")]
    flagged = np.unique(np.concatenate(suspects)) if suspects else np.array([])
    if not len(flagged):
        return np.array([], dtype="int64")
    steps, values = raw.index.to_numpy(), raw.to_numpy(dtype="float64")
    finite_values = np.where(np.isfinite(values), values, np.nan)
    previous = np.concatenate([[np.nan], finite_values[:-1]])
    counts = np.cumsum(np.isfinite(finite_values))
    sums = np.cumsum(np.nan_to_num(finite_values))
    earlier_mean = np.concatenate([[np.nan], (sums / np.maximum(counts, 1))[:-1]])
    earlier_mean[np.concatenate([[0], counts[:-1]]) == 0] = np.nan
    window_start = np.concatenate([[-np.inf], steps[:-1]])
    # Any flagged step in (previous record's step, this record's step].
    in_window = np.searchsorted(flagged, steps, side="right") > np.searchsorted(flagged, window_start, side="right")
    copy = ((np.abs(values - previous) <= LOGGED_ROUNDING) | (np.abs(values - earlier_mean) <= LOGGED_ROUNDING))
    masked = np.isfinite(values) & in_window & ((values == 0.0) | copy)
    return steps[masked]


@per_run
def finite_train_loss(run: RunData) -> Curve:
    """The finite values of the training loss by step: what most curve rules judge."""
    return finite(train_loss(run))


@dataclass(frozen=True)
class Task:
    """What a run's loss measures, which sets its scale (run.json's task).

    Attributes:
        kind: one of ``TASK_KINDS``: recorded, else classification when the
            run names its classes, language modelling when it names a
            vocabulary, else unknown.
        size: C classes (classification) or V tokens (language modelling); None when not known.
        expected_initial_loss: the user's expected first loss (the probe
            records ln C for a classifier); None when not given.
    """

    kind: str
    size: int | None
    expected_initial_loss: float | None

    @property
    def uniform_loss(self) -> float | None:
        """ln C or ln V: the cross-entropy of uniform predictions, where a fresh model starts."""
        return math.log(self.size) if self.size is not None and self.size >= 2 else None


def _positive_int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number >= 2 and number == value else None


def task_of(run: RunData) -> Task:
    """The run's :class:`Task`, read from ``run.task`` (odd values read as absent)."""
    task = run.task if isinstance(run.task, dict) else {}
    classes, vocab = _positive_int(task.get("num_classes")), _positive_int(task.get("vocab_size"))
    kind = task.get("kind")
    if kind not in TASK_KINDS:
        kind = "classification" if classes else "language_modelling" if vocab else "unknown"
    size = classes if kind == "classification" else vocab if kind == "language_modelling" else None
    expected = task.get("expected_initial_loss")
    try:
        expected = float(expected) if expected is not None else None
    except (TypeError, ValueError):
        expected = None
    if expected is not None and not (math.isfinite(expected) and expected > 0):
        expected = None
    return Task(kind, size, expected)


def loss_reference(run: RunData) -> tuple[float, str] | None:
    """The loss level a fresh model starts at, against which a loss level can be called high or poor.

    The user's expected initial loss, else ln C for a classifier. None for
    language models (a fine-tuned one starts far below ln V), regression and
    unknown tasks: no rule judges their loss level.
    """
    task = task_of(run)
    if task.expected_initial_loss is not None:
        return task.expected_initial_loss, "the expected initial loss"
    if task.kind == "classification" and task.uniform_loss is not None:
        return task.uniform_loss, f"ln({task.size})"
    return None


@per_run
def lr_series(run: RunData) -> Curve:
    """The lr of param group 0 (or the global lr) by step; empty when not recorded."""
    series = run.series("lr", "train", layer="group0")
    return series if len(series) else run.series("lr", "train")


def describe_epoch(epochs: Curve, step: int) -> str:
    epoch = epochs.get(step, float("nan")) if len(epochs) else float("nan")
    return f"epoch {int(epoch)} (step {step})" if np.isfinite(epoch) else f"step {step}"


def events_of(run: RunData, kind: str) -> Table:
    """The run's events of one ``kind`` (a Table of step, wall_time, kind, detail; empty when none)."""
    events = run.events
    if events is None or events.empty or "kind" not in events:
        return Table(names=["step", "wall_time", "kind", "detail"])
    return events[np.asarray(events["kind"] == kind, dtype=bool)]


def lint_events(run: RunData, rule: str) -> list[dict[str, Any]]:
    """The probe's ``config_lint`` details (parsed JSON) whose ``rule`` is ``rule``."""
    found = []
    for detail in events_of(run, "config_lint")["detail"]:
        try:
            parsed = json.loads(detail) if isinstance(detail, str) else dict(detail)
        except (TypeError, ValueError):
            continue
        if isinstance(parsed, dict) and parsed.get("rule") == rule:
            found.append(parsed)
    return found


_NUMBER = re.compile(r"(\d+)")


def natural_key(name: str) -> list[Any]:
    """Sort key that puts ``layers.2`` before ``layers.10`` (model order for numbered layers)."""
    return [int(part) if part.isdigit() else part for part in _NUMBER.split(name)]


def is_norm_or_bias(name: str) -> bool:
    lowered = name.lower()
    return lowered.endswith("bias") or "norm" in lowered or lowered.endswith(("ln.weight", "ln_f.weight"))
