"""Small helpers every rule module shares: reading a run's main series and building findings."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pandas as pd

from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.memo import per_run
from traindoctor.diagnosis.robust import finite
from traindoctor.store.run_data import RunData

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


def eval_split(run: RunData, name: str) -> str | None:
    """The first evaluation split (val, then test) that has ``name``."""
    for split in EVAL_SPLITS:
        if run.has(name, split):
            return split
    return None


@per_run
def eval_frame(run: RunData, name: str) -> tuple[pd.Series, pd.Series]:
    """An eval metric indexed by step, and the epoch of each eval (NaN where unknown)."""
    split = eval_split(run, name)
    if split is None:
        return pd.Series(dtype="float64"), pd.Series(dtype="float64")
    frame = run.scalars
    rows = frame[(frame["name"] == name) & (frame["split"] == split) & frame["layer"].isna()]
    rows = rows.drop_duplicates("step", keep="last").sort_values("step")
    steps = rows["step"].to_numpy(dtype="int64")
    values = pd.Series(rows["value"].to_numpy(dtype="float64"), index=steps, name=name)
    epochs = pd.Series(pd.to_numeric(rows["epoch"], errors="coerce").to_numpy(dtype="float64"), index=steps)
    return values, epochs


@per_run
def layer_values(run: RunData, name: str) -> pd.DataFrame:
    """``run.layer_frame(name)`` as float64 (a frame built from mixed sources can hold object values).

    A pivot of every per-layer row of ``name``: the costliest read of a big run.
    """
    frame = run.layer_frame(name)
    return frame.apply(pd.to_numeric, errors="coerce").astype("float64") if not frame.empty else frame


@per_run
def train_loss(run: RunData) -> pd.Series:
    """The training loss by step, NaN and ±Inf kept (a scan of every scalar row)."""
    return run.series("loss", "train")


@per_run
def finite_train_loss(run: RunData) -> pd.Series:
    """The finite values of the training loss by step: what most curve rules judge."""
    return finite(train_loss(run))


@per_run
def lr_series(run: RunData) -> pd.Series:
    """The lr of param group 0 (or the global lr) by step; empty when not recorded."""
    series = run.series("lr", "train", layer="group0")
    return series if len(series) else run.series("lr", "train")


def describe_epoch(epochs: pd.Series, step: int) -> str:
    epoch = epochs.get(step, float("nan")) if len(epochs) else float("nan")
    return f"epoch {int(epoch)} (step {step})" if np.isfinite(epoch) else f"step {step}"


def events_of(run: RunData, kind: str) -> pd.DataFrame:
    events = run.events
    if events is None or events.empty or "kind" not in events:
        return pd.DataFrame(columns=["step", "wall_time", "kind", "detail"])
    return events[events["kind"] == kind]


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
