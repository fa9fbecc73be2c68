"""Real curves from public projects (../shared/external/) as RunData, with their published labels.

PolyPythia (EleutherAI/pythia, Apache-2.0): per-step training loss of
143,000-step language-model runs. BigScience (bigscience-workshop/bigscience,
Apache-2.0): Megatron log lines pasted in the training logbooks, short
windows with gaps (never one row per step). Labels are the annotations of
``../shared/external/README.md``.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from traindoctor.store.frames import Table, to_float
from traindoctor.store.run_data import RunData

# ``Path(__file__).parents[2]`` is the repository root; CI has ../shared beside
# the clone, a git worktree under <project>/wt/<name> has it two levels up.
_ROOT = Path(__file__).resolve().parents[2]
_CANDIDATES = [_ROOT / ".." / "shared" / "external", _ROOT / ".." / ".." / "shared" / "external"]
EXTERNAL = next((path for path in _CANDIDATES if path.is_dir()), _CANDIDATES[0])
BIGSCIENCE_FILE = "bigscience_chronicle_iterations.tsv"


@dataclass
class Case:
    """One labelled run: what must be found (rule → rough [first, last] step or None) and what must not."""

    run: RunData
    expect: dict[str, list[int] | None]
    forbid: list[str] = field(default_factory=list)
    healthy: bool = False
    allow: list[str] = field(default_factory=list)
    origin: str = "external"


def scalar_frame(steps: np.ndarray, columns: dict[str, np.ndarray]) -> Table:
    """A long scalars table (train split, global values) from step-aligned columns, one series after another."""
    count, names = len(steps), list(columns)
    return Table({"step": np.tile(np.asarray(steps).astype("int64"), len(names)),
                  "epoch": np.full(count * len(names), np.nan), "wall_time": np.full(count * len(names), np.nan),
                  "split": np.full(count * len(names), "train", dtype=object),
                  "name": np.repeat(np.asarray(names, dtype=object), count),
                  "layer": np.full(count * len(names), None, dtype=object),
                  "value": np.concatenate([np.asarray(values, dtype="float64") for values in columns.values()])
                  if names else np.empty(0)})


def read_table(path: Path, delimiter: str = ",") -> dict[str, np.ndarray]:
    """A CSV or TSV file (gzip when its name ends in .gz) as columns of strings, by header name."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle, delimiter=delimiter))
    return {name: np.asarray([row[position] for row in rows], dtype=object) for position, name in enumerate(header)}


def pythia_run(path: Path) -> RunData:
    frame = read_table(path)
    name = path.name.removesuffix(".csv.gz")
    return RunData(run_id=f"pythia-{name}", name=f"pythia-{name}",
                   scalars=scalar_frame(frame["step"].astype("int64"), {"loss": to_float(frame["train_lm_loss"])}))


# Spike steps read off the data (README table); ranges are "roughly the right steps".
PYTHIA_LABELS: dict[str, tuple[dict[str, list[int] | None], list[str]]] = {
    "410m-seed3": ({"loss_spike": [74_990, 75_100]}, ["divergence"]),
    "410m-seed4": ({"loss_spike": [121_990, 122_100]}, ["divergence"]),
    "160m-seed4": ({"loss_spike": [1_300, 1_360]}, ["divergence"]),
    "160m-seed8": ({"loss_spike": [1_180, 1_260]}, ["divergence"]),
    "410m-seed5": ({}, ["loss_spike", "divergence"]),
    "70m-seed1": ({}, ["loss_spike", "divergence"]),
}


def bigscience_rows(external: Path = EXTERNAL) -> Table:
    """The logbooks' iteration lines (numbers as float64, NaN for NA; ``file`` as text), by file, iteration
    and line."""
    columns = read_table(external / BIGSCIENCE_FILE, delimiter="\t")
    rows = Table({name: values if name == "file" else to_float(values) for name, values in columns.items()})
    return rows[np.lexsort((rows["md_line"], rows["iteration"], rows["file"].astype(str)))]


def bigscience_run(rows: Table, name: str) -> RunData:
    """One logbook window as a run: iteration is the step; later log lines win for repeated iterations."""
    iterations = rows["iteration"]
    reversed_unique, first_from_end = np.unique(iterations[::-1], return_index=True)
    rows = rows[np.sort(len(iterations) - 1 - first_from_end)]  # each iteration's last line, in row order
    rows = rows[np.argsort(rows["iteration"], kind="stable")]
    columns = {"loss": rows["lm_loss"], "grad_norm": rows["grad_norm"], "lr": rows["learning_rate"]}
    scale = rows["loss_scale"]
    if np.isfinite(scale).any():
        columns["amp_scale"] = scale
    scalars = scalar_frame(rows["iteration"], columns)
    # Megatron logs grad norm 0.000 when it is not computed: drop those rather than call them dead.
    names, values = scalars["name"], scalars["value"]
    with np.errstate(invalid="ignore"):
        scalars = scalars[~(((names == "grad_norm") & (values <= 0))
                            | (((names == "grad_norm") | (names == "amp_scale")) & np.isnan(values)))]
    return RunData(run_id=name, name=name, scalars=scalars)


def bigscience_cases(external: Path = EXTERNAL) -> list[Case]:
    rows = bigscience_rows(external)
    by_file = {file: rows[rows["file"] == file] for file in sorted(set(rows["file"].tolist()))}
    bloom = by_file["train/tr11-176B-ml/chronicles.md"]
    bloom = bloom[(bloom["iteration"] >= 31_214) & (bloom["iteration"] <= 31_251)]
    tr8 = by_file["train/tr8-104B-wide/chronicles.md"]
    tr8 = tr8[tr8["iteration"] <= 9_027]  # up to the NaN the logbook reports
    return [
        Case(bigscience_run(bloom, "bloom-176b-spike-31214"),
                     {"loss_spike": [31_214, 31_251], "exploding_gradients": [31_214, 31_251]}, ["divergence"]),
        Case(bigscience_run(tr8, "tr8-104b-divergence"), {"divergence": [7_000, 9_027]}),
        # The logbook's own words for these two: loss-scale collapse (with grad norms of 1e5-1e6 and a
        # loss jump), and a spike with the scale falling 65536 → 4096 that took ~500 iterations to recover.
        Case(bigscience_run(by_file["train/tr8b-104B/chronicles.md"], "tr8b-104b-scale-collapse"),
                     {"amp_skipped_steps": [17_060, 17_068]}, allow=["exploding_gradients", "loss_spike", "divergence"]),
        Case(bigscience_run(by_file["train/tr1-13B-base/chronicles.md"], "tr1-13b-scale-drop"),
                     {"amp_skipped_steps": [29_040, 29_060]}, ["divergence"], allow=["loss_spike"]),
    ]


def pythia_cases(external: Path = EXTERNAL) -> list[Case]:
    """The six PolyPythia runs; the two the paper calls stable count as healthy (no warning allowed)."""
    return [Case(pythia_run(external / "pythia" / f"{name}.csv.gz"), expect, forbid, healthy=not expect)
            for name, (expect, forbid) in PYTHIA_LABELS.items()]


def external_cases(external: Path = EXTERNAL) -> list[Case]:
    return pythia_cases(external) + bigscience_cases(external)
