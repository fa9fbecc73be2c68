"""Precision and recall of every rule on the labelled corpus and the external curves.

Prints one row per rule (labelled runs, found, recall, fired, precision) and
the number of warning/critical findings on healthy runs (false alarms), over
the trained corpus (tests/data/corpus), the hand-made setup runs
(tests/diagnosis/setup_cases.py: what curves cannot show) and the external
curves (../shared/external, when present).

A labelled problem counts as found when the rule fires with a step range
overlapping the label's rough range (or anywhere, for whole-run labels). A
firing counts toward precision when the run is labelled with that rule;
firings on runs that do not label it count against precision. The last
column also counts firings that the run's labels list as secondary
("allow": a diverged model is also no better than the baseline, a 1000× lr
decay also puts update ratios below the band).

Usage::

    python benchmarks/diagnosis_accuracy.py [--corpus tests/data/corpus] [--external ../shared/external]
    python benchmarks/diagnosis_accuracy.py --retrain-seed 7    # out-of-sample: retrain the recipes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from traindoctor.diagnosis import RULES, diagnose  # noqa: E402
from traindoctor.diagnosis.finding import Finding  # noqa: E402
from tests.diagnosis.external import EXTERNAL, Case, external_cases  # noqa: E402
from tests.diagnosis.setup_cases import setup_cases  # noqa: E402

DEFAULT_CORPUS = ROOT / "tests" / "data" / "corpus"
DEFAULT_EXTERNAL = EXTERNAL


def overlaps(found: Finding, expected: list[int] | None) -> bool:
    if expected is None:
        return True
    start = found.step_start if found.step_start is not None else -float("inf")
    end = found.step_end if found.step_end is not None else float("inf")
    return start <= expected[1] and end >= expected[0]


def corpus_cases(corpus: Path) -> list[Case]:
    from traindoctor.store.reader import open_store
    from traindoctor.store.run_data import load_run
    from tests.diagnosis.make_corpus import LABELS_FILE  # trains with torch: loaded only when needed

    labels = json.loads((corpus / LABELS_FILE).read_text(encoding="utf-8"))
    store = open_store(corpus)
    return [Case(load_run(store, name), label["expect"], label["forbid"], label["healthy"],
                 allow=label.get("allow", []), origin="corpus") for name, label in sorted(labels.items())]


def score(cases: list[Case]) -> tuple[dict[str, dict[str, int]], list[str], list[str]]:
    """Per-rule counts, the false alarms on healthy runs, and the missed labels."""
    table = {rule: {"labelled": 0, "found": 0, "fired": 0, "correct": 0, "explained": 0} for rule in RULES}
    false_alarms, missed = [], []
    for case in cases:
        findings = diagnose(case.run)
        fired = {f.rule for f in findings}
        for rule, expected in case.expect.items():
            table[rule]["labelled"] += 1
            if any(f.rule == rule and overlaps(f, expected) for f in findings):
                table[rule]["found"] += 1
            else:
                missed.append(f"{case.run.name}: {rule} {expected}")
        for rule in fired:
            table[rule]["fired"] += 1
            table[rule]["correct"] += rule in case.expect
            table[rule]["explained"] += rule in case.expect or rule in case.allow
        for rule in case.forbid:
            if rule in fired:
                missed.append(f"{case.run.name}: forbidden {rule} fired")
        if case.healthy:
            false_alarms += [f"{case.run.name}: {f.rule} ({f.severity})" for f in findings
                             if f.severity in ("warning", "critical")]
    return table, false_alarms, missed


def format_table(table: dict[str, dict[str, int]]) -> str:
    lines = [f"{'rule':<32}{'labelled':>9}{'found':>7}{'recall':>8}{'fired':>7}{'precision':>11}{'with secondary':>16}"]
    for rule, row in table.items():
        recall = f"{row['found'] / row['labelled']:.2f}" if row["labelled"] else "-"
        precision = f"{row['correct'] / row['fired']:.2f}" if row["fired"] else "-"
        lenient = f"{row['explained'] / row['fired']:.2f}" if row["fired"] else "-"
        lines.append(f"{rule:<32}{row['labelled']:>9}{row['found']:>7}{recall:>8}{row['fired']:>7}{precision:>11}"
                     f"{lenient:>16}")
    return "\n".join(lines)


def score_retrained(seed: int) -> int:
    """Train every corpus recipe again with another seed (new init and batch order) and score it."""
    import dataclasses
    import tempfile

    import torch

    from tests.diagnosis import make_corpus

    torch.set_num_threads(1)
    specs = [dataclasses.replace(spec, seed=seed) for spec in make_corpus.all_specs()]
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder)
        for spec in specs:
            make_corpus.train(spec, store)
        make_corpus.write_labels(specs, store)
        table, false_alarms, missed = score(corpus_cases(store))
    print(f"{len(specs)} corpus recipes retrained with seed {seed}")
    print(format_table(table))
    print(f"false alarms (warning/critical) on healthy runs: {len(false_alarms)}")
    for line in false_alarms + missed:
        print(f"  {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--external", type=Path, default=DEFAULT_EXTERNAL)
    parser.add_argument("--retrain-seed", type=int, default=None,
                        help="score a fresh corpus trained with this seed (held out from threshold tuning; ~2 min)")
    args = parser.parse_args(argv)
    if args.retrain_seed is not None:
        return score_retrained(args.retrain_seed)
    started = time.perf_counter()
    cases = corpus_cases(args.corpus)
    cases += setup_cases()
    if args.external.is_dir():
        cases += external_cases(args.external)
    table, false_alarms, missed = score(cases)
    healthy = sum(c.healthy for c in cases)
    origins = {origin: sum(c.origin == origin for c in cases) for origin in ("corpus", "setup", "external")}
    print(f"{origins['corpus']} corpus runs + {origins['setup']} hand-made setup runs + {origins['external']} external "
          f"runs, {healthy} healthy "
          f"(diagnosed in {time.perf_counter() - started:.1f} s including loading)")
    print(format_table(table))
    print(f"false alarms (warning/critical) on healthy runs: {len(false_alarms)}")
    for line in false_alarms:
        print(f"  {line}")
    print(f"missed labels / forbidden firings: {len(missed)}")
    for line in missed:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
