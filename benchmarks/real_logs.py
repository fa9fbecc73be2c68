"""Precision, recall and false alarms of the diagnosis on real public training logs (tests/data/real_logs, #12).

Each run is imported with ``traindoctor import`` and diagnosed with ``traindoctor diagnose --json``, as a user
would; its label is what the run's own authors concluded (``provenance.json``). Prints one row per run and then:

- recall: faulty runs where a rule the authors' conclusion implies fired at warning or critical, over faulty runs
  (with a 95 % Wilson interval);
- precision: warning/critical findings whose rule the run's label expects, over all warning/critical findings
  (a finding on a faulty run that the label does not name counts against it, as one on a healthy run does);
- false alarms: healthy runs with at least one warning/critical finding, and those findings per 100 healthy runs.

The figures are in-sample for no rule: nothing here was tuned on these files. They are few (about 30 runs), so
the intervals are wide.

Sets: ``original`` is the first 31 runs, which the rules of #12 were written with in view (no threshold set on
them, but their kinds of fault were known); ``held-out`` is the runs whose provenance.json has ``held_out``: added
later and labelled, and committed, before traindoctor was run on them; ``third`` is the runs whose provenance.json
has ``third_hold_out``: a third hold-out, gathered the same way after the second was scored; ``fourth`` those
with ``fourth_hold_out`` (2026-12-01), gathered by a helper that never ran traindoctor nor read its rules.
``--set all`` (the default) prints the figures of each set and of the whole.

Usage::

    python benchmarks/real_logs.py [--root tests/data/real_logs] [--set all|original|held-out|third|fourth] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.diagnosis.real_logs import REAL_LOGS, real_logs, run_case, score  # noqa: E402


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion; (0, 1) when there is nothing to count."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def figures(rows: list) -> dict:
    """Recall, precision and false alarms over ``rows`` ((case, score) pairs), with 95 % Wilson intervals."""
    faulty = [(c, s) for c, s in rows if not c.healthy]
    healthy = [(c, s) for c, s in rows if c.healthy]
    detected = sum(bool(s.detected) for _, s in faulty)
    alarms = sum(len(s.alarms) for _, s in rows)
    confirmed = sum(len(s.confirmed) for _, s in rows)
    healthy_alarms = sum(len(s.alarms) for _, s in healthy)
    return {
        "runs": len(rows), "faulty": len(faulty), "healthy": len(healthy), "detected": detected,
        "recall": detected / len(faulty) if faulty else None, "recall_interval": wilson(detected, len(faulty)),
        "alarms": alarms, "confirmed": confirmed,
        "precision": confirmed / alarms if alarms else None, "precision_interval": wilson(confirmed, alarms),
        "healthy_runs_with_alarm": sum(bool(s.alarms) for _, s in healthy),
        "false_alarms_per_100_healthy": 100 * healthy_alarms / len(healthy) if healthy else None,
    }


def print_figures(name: str, figs: dict) -> None:
    print(f"\n{name}: {figs['runs']} runs ({figs['faulty']} faulty, {figs['healthy']} healthy)")
    if figs["faulty"]:
        low, high = figs["recall_interval"]
        print(f"  recall     {figs['detected']}/{figs['faulty']} faulty runs found = {figs['recall']:.2f} "
              f"(95 % CI {low:.2f}-{high:.2f})")
    if figs["alarms"]:
        low, high = figs["precision_interval"]
        print(f"  precision  {figs['confirmed']}/{figs['alarms']} warning/critical findings name a labelled fault = "
              f"{figs['precision']:.2f} (95 % CI {low:.2f}-{high:.2f})")
    else:
        print("  precision  no warning/critical findings")
    if figs["healthy"]:
        print(f"  false alarms  {figs['healthy_runs_with_alarm']}/{figs['healthy']} healthy runs with a "
              f"warning/critical finding; {figs['false_alarms_per_100_healthy']:.0f} such findings per 100 healthy runs")


SETS = {"original": lambda case: not (case.held_out or case.third or case.fourth),
        "held-out": lambda case: case.held_out, "third": lambda case: case.third, "fourth": lambda case: case.fourth,
        "all": lambda case: True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REAL_LOGS, help="folder of run folders with provenance.json")
    parser.add_argument("--set", choices=list(SETS), default="all",
                        help="original (the first 31), held-out (added later, labelled before any run), third and "
                             "fourth (later hold-outs, the same way) or all")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)

    cases = [case for case in real_logs(args.root) if SETS[args.set](case)]
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for index, case in enumerate(cases):
            findings = run_case(case, Path(tmp) / str(index))
            rows.append((case, score(case, findings)))
    elapsed = time.perf_counter() - started

    shown = ["original", "held-out", "third", "fourth", "all"] if args.set == "all" else [args.set]
    by_set = {name: figures([(c, s) for c, s in rows if SETS[name](c)]) for name in shown}
    if args.json:
        result = dict(by_set[args.set], seconds=round(elapsed, 1))
        if args.set == "all":
            result["sets"] = {name: by_set[name] for name in ("original", "held-out", "third", "fourth")}
        print(json.dumps(result))
        return 0
    if not rows:
        print(f"no runs in set {args.set} under {args.root}")
        return 0
    width = max(len(c.name) for c, _ in rows)
    print(f"{'run':<{width}}  set       label    verdict   warning/critical findings")
    for case, result in rows:
        label = "healthy" if case.healthy else "faulty"
        verdict = ("ok" if result.passed else "MISSED" if result.detected is False else "ALARM")
        found = ", ".join(f"{rule} ({severity})" for rule, severity in result.alarms) or "-"
        in_set = ("held-out" if case.held_out else "third" if case.third else "fourth" if case.fourth
                  else "original")
        print(f"{case.name:<{width}}  {in_set:<8}  {label:<7}  {verdict:<8}  {found}")
    for name in shown:
        if by_set[name]["runs"]:
            print_figures(name, by_set[name])
    print(f"\n({len(rows)} runs imported and diagnosed in {elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
