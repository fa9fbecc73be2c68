"""Metamorphic checks of the diagnosis: transform each labelled run in a way that should not change its verdict,
diagnose it again, and count the warnings that come and go.

The runs are those of the tuning corpus and every program hold-out (``tests/data/corpus``,
``tests/data/heldout*``), each with its labels, so that a change is reported as a labelled fault lost or
gained (TP), a finding the label allows, or one it does not (FP). Transformations:

- ``scale F``: the training and evaluation losses × F (regression and unknown tasks only: a classifier's or
  language model's loss is tied to ln C or ln V);
- ``offset D``: the same losses + D (regression and unknown tasks; a negative log-likelihood has no fixed
  zero, so D < 0 stands for a Gaussian NLL);
- ``thin K``: keep every K-th record of a per-step training loss (runs with ≥ 200 records);
- ``window K``: replace a per-step training loss by K-step means, each at its window's last step.

Only warnings and critical findings are compared. Usage::

    python benchmarks/metamorphic.py scale 10 | offset -2 | thin 4 | window 10 [--sets corpus heldout3 ...]

About 10-30 s of CPU per transformation (a few hundred runs diagnosed twice).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA = ROOT / "tests" / "data"


def _columns(run) -> dict[str, np.ndarray]:  # noqa: ANN001
    from traindoctor.store.run_data import SCALAR_COLUMNS

    return {name: np.asarray(run.scalars[name]).copy() for name in SCALAR_COLUMNS}


def _global_loss_rows(columns: dict[str, np.ndarray], split: str | None = None) -> np.ndarray:
    """Rows of the global (not per-layer) loss, of one split or of every split."""
    layer_missing = np.array([layer is None or layer != layer for layer in columns["layer"].tolist()], dtype=bool)
    rows = (columns["name"] == "loss") & layer_missing
    return rows & (columns["split"] == split) if split is not None else rows


def scaled(run, factor: float = 1.0, offset: float = 0.0):  # noqa: ANN001, ANN201
    """The run with every global loss (training and evaluation) × ``factor`` + ``offset``."""
    columns = _columns(run)
    rows = _global_loss_rows(columns)
    values = columns["value"].astype("float64")
    values[rows] = values[rows] * factor + offset
    columns["value"] = values
    return dataclasses.replace(run, scalars=columns)


def thinned(run, every: int):  # noqa: ANN001, ANN201
    """The run with only every ``every``-th step of its training loss kept (the others dropped)."""
    columns = _columns(run)
    rows = np.flatnonzero(_global_loss_rows(columns, "train"))
    kept_steps = np.unique(columns["step"][rows])[every - 1::every]
    drop = np.zeros(len(columns["step"]), dtype=bool)
    drop[rows] = ~np.isin(columns["step"][rows], kept_steps)
    return dataclasses.replace(run, scalars={name: values[~drop] for name, values in columns.items()})


def windowed(run, every: int):  # noqa: ANN001, ANN201
    """The run with its training loss replaced by ``every``-step means, each at its window's last step."""
    columns = _columns(run)
    rows = np.flatnonzero(_global_loss_rows(columns, "train"))
    rows = rows[np.argsort(columns["step"][rows], kind="stable")]
    values = columns["value"][rows].astype("float64")
    ends = rows[every - 1::every][: len(rows) // every]
    means = [float(np.nanmean(values[i * every:(i + 1) * every])) for i in range(len(ends))]
    keep = np.ones(len(columns["step"]), dtype=bool)
    keep[rows] = False
    keep[ends] = True
    columns["value"] = columns["value"].astype("float64")
    columns["value"][ends] = means
    return dataclasses.replace(run, scalars={name: values[keep] for name, values in columns.items()})


def _per_step(run) -> bool:  # noqa: ANN001
    loss = run.series("loss")
    steps = np.asarray(loss.index)
    return len(steps) >= 200 and float(np.median(np.diff(steps))) <= 1


def transform(run, kind: str, amount: float):  # noqa: ANN001, ANN201
    """The transformed run, or None when the transformation does not apply to it."""
    from traindoctor.diagnosis.common import task_of

    if kind in ("scale", "offset"):
        if task_of(run).kind not in ("regression", "unknown"):
            return None
        return scaled(run, factor=amount) if kind == "scale" else scaled(run, offset=amount)
    if not _per_step(run):
        return None
    return thinned(run, int(amount)) if kind == "thin" else windowed(run, int(amount))


def main(argv: list[str] | None = None) -> int:
    from traindoctor.api import store_files
    from traindoctor.diagnosis import diagnose
    from traindoctor.store.run_data import load_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("scale", "offset", "thin", "window"))
    parser.add_argument("amount", type=float)
    parser.add_argument("--sets", nargs="+", default=None,
                        help="folders under tests/data with corpus_labels.json (default: corpus and every heldout*)")
    args = parser.parse_args(argv)
    sets = args.sets or ["corpus"] + sorted((p.name for p in DATA.glob("heldout*") if p.name[7:].isdigit()),
                                            key=lambda name: int(name[7:]))
    changes: collections.Counter = collections.Counter()
    examples: dict = collections.defaultdict(list)
    judged = 0
    for name in sets:
        store = store_files(DATA / name)
        labels = json.loads((DATA / name / "corpus_labels.json").read_text(encoding="utf-8"))
        for run_name, label in labels.items():
            run = load_run(store, run_name)
            other = transform(run, args.kind, args.amount)
            if other is None:
                continue
            judged += 1
            before = {f.rule for f in diagnose(run) if f.severity != "info"}
            after = {f.rule for f in diagnose(other) if f.severity != "info"}
            for direction, rules in (("lost", before - after), ("gained", after - before)):
                for rule in sorted(rules):
                    verdict = ("TP" if rule in label["expect"] else "allowed" if rule in label["allow"] else "FP")
                    changes[(direction, rule, verdict)] += 1
                    examples[(direction, rule, verdict)].append(f"{name}/{run_name}")
    print(f"{args.kind} {args.amount:g}: {judged} runs transformed, "
          f"{sum(changes.values())} warnings changed")
    for key in sorted(changes):
        direction, rule, verdict = key
        print(f"  {direction:6s} {rule:26s} {verdict:7s} {changes[key]:3d}  e.g. {', '.join(examples[key][:3])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
