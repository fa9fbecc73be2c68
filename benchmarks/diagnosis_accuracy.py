"""Precision and recall of every rule on the labelled corpus and the external curves.

First, held out by program family: the corpus (tests/data/corpus, runs of
at least 12 training programs) is scored leave-one-family-out. The
thresholds the benchmark may tune (``traindoctor.diagnosis.thresholds.TUNABLE``,
one per rule, the default among a few values) are chosen on the other
families and the held-out family is scored with them; the folds are pooled
into per-rule recall and precision with 95 % Wilson intervals, and the
warning/critical findings on healthy runs per 100 healthy runs. The same
corpus at the default thresholds (in-sample: they were set looking at it)
follows, for contrast.

Then, in-sample over everything: prints one row per rule (labelled runs, found, recall, fired, precision) and
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
    python benchmarks/diagnosis_accuracy.py --families lm_char_transformer regression_mlp   # held out, a subset
    python benchmarks/diagnosis_accuracy.py --retrain-seed 7    # out-of-sample: retrain the recipes
    python benchmarks/diagnosis_accuracy.py --retrain-seed 11 12 13 14 --healthy-only   # false alarms on new healthy runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from traindoctor.diagnosis import RULES, diagnose  # noqa: E402
from traindoctor.diagnosis.engine import cap_info, causes_first, drop_explained, sort_findings  # noqa: E402
from traindoctor.diagnosis.finding import SEVERITY_RANK, Finding  # noqa: E402
from traindoctor.diagnosis.memo import MemoisedRun  # noqa: E402
from traindoctor.diagnosis.thresholds import TUNABLE, default_value, overridden  # noqa: E402
from traindoctor.store.run_data import RunData  # noqa: E402
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


def corpus_cases(corpus: Path, only: set[str] | None = None) -> list[Case]:
    """The corpus's labelled runs (those named in ``only``, when given), loaded from its store."""
    from traindoctor.store.reader import open_store
    from traindoctor.store.run_data import load_run
    from tests.diagnosis.make_corpus import LABELS_FILE  # trains with torch: loaded only when needed

    labels = json.loads((corpus / LABELS_FILE).read_text(encoding="utf-8"))
    store = open_store(corpus)
    return [Case(load_run(store, name), label["expect"], label["forbid"], label["healthy"],
                 allow=label.get("allow", []), origin="corpus") for name, label in sorted(labels.items())
            if only is None or name in only]


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


def score_retrained(seeds: list[int], *, healthy_only: bool = False, keep: Path | None = None) -> int:
    """Train the corpus recipes again with other seeds (new init, data sampling and batch order) and score them.

    Held out from threshold tuning and from the runs the rules were written
    on, though not from the programs. With ``healthy_only`` only the healthy
    recipes are trained: the cheapest way to count false alarms on many
    unseen healthy runs (0 alarms on n runs bounds the rate below
    100 × (1 - 0.05^(1/n)) per 100 at 95 %: about 1 per 100 needs ~300 runs).
    Prints one table per seed, then the false alarms pooled over the seeds.
    With ``keep``, each seed's runs are kept in ``keep/seed-N[-healthy]``
    and scored from there by the next call (to score a rule change on the
    same unseen runs without training them again).
    """
    import dataclasses
    import tempfile

    import torch

    from tests.diagnosis import make_corpus

    torch.set_num_threads(1)
    alarms, healthy_runs, alarmed_runs = [], 0, set()
    for seed in seeds:
        started = time.process_time()
        specs = [dataclasses.replace(spec, seed=seed) for spec in make_corpus.all_specs()
                 if spec.healthy or not healthy_only]
        with tempfile.TemporaryDirectory() as folder:
            store = Path(folder) if keep is None else keep / f"seed-{seed}{'-healthy' if healthy_only else ''}"
            trained = (store / make_corpus.LABELS_FILE).is_file()
            if not trained:
                for spec in specs:
                    make_corpus.train(spec, store)
                make_corpus.write_labels(specs, store)  # last: a folder with labels holds every run
            cases = corpus_cases(store)
            table, false_alarms, missed = score(cases)
        healthy_runs += sum(case.healthy for case in cases)
        alarms += [f"seed {seed}: {line}" for line in false_alarms]
        alarmed_runs |= {(seed, line.split(":")[0]) for line in false_alarms}
        what = "healthy corpus recipes" if healthy_only else "corpus recipes"
        how = f"kept in {store}" if trained else "retrained"
        print(f"{len(cases)} {what} {how} with seed {seed} ({time.process_time() - started:.0f} s CPU)")
        if not healthy_only:
            print(format_table(table))
        print(f"false alarms (warning/critical) on healthy runs: {len(false_alarms)}")
        for line in false_alarms + ([] if healthy_only else missed):
            print(f"  {line}")
    if len(seeds) > 1 or healthy_only:
        low, high = wilson(len(alarmed_runs), healthy_runs)
        print(f"POOLED over seeds {', '.join(map(str, seeds))}: {len(alarms)} warning/critical findings on "
              f"{healthy_runs} healthy runs = {100 * len(alarms) / max(healthy_runs, 1):.1f} per 100; "
              f"{len(alarmed_runs)} runs with one (95% CI {100 * low:.1f}-{100 * high:.1f} per 100)")
    return 0


# ------------------------------------------------------------------ held out by family


# Runs per fold the thresholds are chosen on; a rule's choice weighs a false alarm on a healthy run
# (warning or critical) twice as much as a missed label: the product's promise is quiet on healthy runs.
HEALTHY_ALARM_WEIGHT = 2.0


@dataclass
class Tuned:
    """One corpus run's findings under every threshold value the benchmark may choose (TUNABLE).

    Attributes:
        case: the labelled run (its RunData dropped once scored: the findings are all that is kept).
        family: its program family.
        raw: rule id → the rule's findings with every threshold at its default (before the engine's
            post-processing).
        candidates: (rule id, value) → that rule's findings with its TUNABLE threshold set to ``value``.
    """

    case: Case
    family: str
    raw: dict[str, list[Finding]]
    candidates: dict[tuple[str, float], list[Finding]]


def corpus_families(corpus: Path) -> dict[str, str]:
    """Run name → program family, from the corpus's labels.

    Raises:
        ValueError: a run is labelled without a family.
    """
    from tests.diagnosis.make_corpus import LABELS_FILE

    labels = json.loads((corpus / LABELS_FILE).read_text(encoding="utf-8"))
    missing = sorted(name for name, label in labels.items() if not label.get("family"))
    if missing:
        raise ValueError(f"corpus runs without a family: {', '.join(missing)}")
    return {name: label["family"] for name, label in labels.items()}


def tune_run(case: Case, family: str) -> Tuned:
    """Run every rule on ``case`` at the defaults, then each TUNABLE rule again at each of its other values."""
    raw = {rule_id: list(function(MemoisedRun.of(case.run))) for rule_id, function in RULES.items()}
    candidates: dict[tuple[str, float], list[Finding]] = {}
    for rule_id, settings in TUNABLE.items():
        for name, values in settings.items():
            default = default_value(rule_id, name)
            for value in values:
                if value == default:
                    candidates[(rule_id, value)] = raw[rule_id]
                    continue
                with overridden({rule_id: {name: value}}):
                    candidates[(rule_id, value)] = list(RULES[rule_id](MemoisedRun.of(case.run)))
    return Tuned(Case(RunData(case.run.run_id, case.run.name), case.expect, case.forbid, case.healthy, case.allow,
                      case.origin), family, raw, candidates)


def assembled(tuned: Tuned, choice: dict[str, float]) -> list[Finding]:
    """The run's findings with each rule's TUNABLE threshold at ``choice[rule]`` (default where absent),
    through the engine's own post-processing (what ``diagnose`` would return)."""
    findings = []
    for rule_id, found in tuned.raw.items():
        findings += tuned.candidates[(rule_id, choice[rule_id])] if rule_id in choice else found
    return causes_first(cap_info(sort_findings(drop_explained(findings))))


def rule_score(runs: list[Tuned], rule_id: str, value: float) -> float:
    """How well ``rule_id`` does on ``runs`` at ``value``: labels found − wrong firings − weighted healthy
    alarms (rule_score of a firing on a healthy run at warning or critical: −HEALTHY_ALARM_WEIGHT)."""
    total = 0.0
    for tuned in runs:
        mine = [f for f in assembled(tuned, {rule_id: value}) if f.rule == rule_id]
        expected = tuned.case.expect.get(rule_id, "absent")
        if expected != "absent":
            total += any(overlaps(f, expected) for f in mine)
        elif mine and rule_id not in tuned.case.allow:
            total -= 1
            if tuned.case.healthy and any(f.severity in ("warning", "critical") for f in mine):
                total -= HEALTHY_ALARM_WEIGHT - 1
    return total


def choose_thresholds(runs: list[Tuned]) -> dict[str, float]:
    """Each TUNABLE rule's value that scores best on ``runs`` (rule_score); the default on ties."""
    choice = {}
    for rule_id, settings in TUNABLE.items():
        (name, values), = settings.items()
        default = default_value(rule_id, name)
        scores = {value: rule_score(runs, rule_id, value) for value in values}
        best = max(scores.values())
        choice[rule_id] = default if scores[default] == best else min(v for v in values if scores[v] == best)
    return choice


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion (scipy's binomtest); (nan, nan) without trials."""
    if not trials:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    interval = binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


@dataclass
class HeldOut:
    """Leave-one-family-out results, pooled over the folds.

    Attributes:
        table: rule id → counts (``labelled``, ``found``, ``fired``, ``correct``: firings on runs labelled
            with the rule; firings on runs that allow it are left out of ``fired``).
        healthy_runs, healthy_alarms: healthy runs, and warning/critical findings on them.
        alarmed_healthy_runs: healthy runs with at least one such finding.
        choices: held-out family → the thresholds chosen on the other families.
        false_alarms, missed, wrong: one line each (wrong: a firing on a run that neither labels nor allows it).
    """

    table: dict[str, dict[str, int]]
    healthy_runs: int
    healthy_alarms: int
    alarmed_healthy_runs: int
    choices: dict[str, dict[str, float]]
    false_alarms: list[str]
    missed: list[str]
    wrong: list[str]


def score_findings(scored: list[tuple[Case, list[Finding]]]) -> HeldOut:
    """Per-rule counts and healthy-run alarms of labelled runs and their findings."""
    table = {rule: {"labelled": 0, "found": 0, "warned": 0, "fired": 0, "correct": 0} for rule in RULES}
    false_alarms, missed, wrong, alarmed = [], [], [], 0
    for case, findings in scored:
        fired = {f.rule for f in findings}
        for rule, expected in case.expect.items():
            table[rule]["labelled"] += 1
            matching = [f for f in findings if f.rule == rule and overlaps(f, expected)]
            if matching:
                table[rule]["found"] += 1
                # Found by a warning or a critical finding: what the verdict names and --fail-on counts.
                table[rule]["warned"] += any(f.severity in ("warning", "critical") for f in matching)
            else:
                missed.append(f"{case.run.name}: {rule} {expected}")
        for rule in fired:
            if rule in case.expect or rule not in case.allow:
                table[rule]["fired"] += 1
                table[rule]["correct"] += rule in case.expect
            if rule not in case.expect and rule not in case.allow:
                severity = max((f.severity for f in findings if f.rule == rule), key=SEVERITY_RANK.get)
                wrong.append(f"{case.run.name}: {rule} ({severity})")
        missed += [f"{case.run.name}: forbidden {rule} fired" for rule in case.forbid if rule in fired]
        if case.healthy:
            alarms = [f"{case.run.name}: {f.rule} ({f.severity})" for f in findings
                      if f.severity in ("warning", "critical")]
            false_alarms += alarms
            alarmed += bool(alarms)
    healthy = sum(case.healthy for case, _ in scored)
    return HeldOut(table, healthy, len(false_alarms), alarmed, {}, false_alarms, missed, wrong)


def leave_one_family_out(runs: list[Tuned]) -> HeldOut:
    """Each family scored with the thresholds chosen on all the others; the folds pooled."""
    families = sorted({tuned.family for tuned in runs})
    if len(families) < 2:
        raise ValueError(f"leave-one-family-out needs at least two families, got {families}")
    scored, choices = [], {}
    for family in families:
        choice = choose_thresholds([tuned for tuned in runs if tuned.family != family])
        choices[family] = choice
        scored += [(tuned.case, assembled(tuned, choice)) for tuned in runs if tuned.family == family]
    result = score_findings(scored)
    result.choices = choices
    return result


def in_sample(runs: list[Tuned]) -> HeldOut:
    """Every run scored at the default thresholds (which were set looking at this corpus)."""
    return score_findings([(tuned.case, assembled(tuned, {})) for tuned in runs])


def format_held_out(result: HeldOut, curve_rules: tuple[str, ...]) -> str:
    """The per-rule table with 95 % Wilson intervals, and the healthy-run false-alarm rate."""
    lines = [f"{'rule':<26}{'labelled':>9}{'found':>6}{'recall':>8}{'95% CI':>14}"
             f"{'fired':>7}{'precision':>10}{'95% CI':>14}{'warned':>8}"]
    for rule, row in result.table.items():
        if not row["labelled"] and not row["fired"]:
            continue
        low, high = wilson(row["found"], row["labelled"])
        recall = f"{row['found'] / row['labelled']:.2f}" if row["labelled"] else "-"
        recall_ci = f"{low:.2f}-{high:.2f}" if row["labelled"] else "-"
        low, high = wilson(row["correct"], row["fired"])
        precision = f"{row['correct'] / row['fired']:.2f}" if row["fired"] else "-"
        precision_ci = f"{low:.2f}-{high:.2f}" if row["fired"] else "-"
        mark = "" if rule in curve_rules else " (not from curves)"
        warned = f"{row['warned']}" if row["labelled"] else "-"
        lines.append(f"{rule:<26}{row['labelled']:>9}{row['found']:>6}{recall:>8}{recall_ci:>14}"
                     f"{row['fired']:>7}{precision:>10}{precision_ci:>14}{warned:>8}{mark}")
    labelled = sum(row["labelled"] for row in result.table.values())
    found = sum(row["found"] for row in result.table.values())
    warned = sum(row["warned"] for row in result.table.values())
    low, high = wilson(found, labelled)
    interval = f"{low:.2f}-{high:.2f}"
    lines.append(f"{'all labels':<26}{labelled:>9}{found:>6}{found / max(labelled, 1):>8.2f}{interval:>14}"
                 f"{'':>7}{'':>10}{'':>14}{warned:>8}")
    lines.append(f"(found: by a finding of any severity, info included; warned: of those, by a warning or critical "
                 f"finding, {warned}/{labelled} = {warned / max(labelled, 1):.2f})")
    rate = 100 * result.healthy_alarms / max(result.healthy_runs, 1)
    low, high = wilson(result.alarmed_healthy_runs, result.healthy_runs)
    lines.append(f"false alarms: {result.healthy_alarms} warning/critical findings on {result.healthy_runs} healthy "
                 f"runs = {rate:.1f} per 100 healthy runs; {result.alarmed_healthy_runs} runs with one "
                 f"(95% CI {100 * low:.1f}-{100 * high:.1f} per 100)")
    return "\n".join(lines)


# The rules whose faults a run's recorded curves (scalars, per-layer statistics, confusion counts)
# can show: the corpus labels these; the set-up rules are judged from events and config (setup_cases).
CURVE_RULES = ("lr_too_high", "lr_too_low", "decayed_too_early", "divergence", "loss_spike", "overfitting",
               "best_epoch_not_last", "underfitting", "train_longer", "bad_initial_loss", "no_better_than_baseline",
               "missing_warmup", "exploding_gradients", "vanishing_gradients", "update_ratio_out_of_band",
               "dead_layers", "class_imbalance", "underperforming_classes")


def tune_corpus(corpus: Path, only_families: list[str] | None = None) -> list[Tuned]:
    """Every corpus run (of ``only_families``, when given) loaded and run under every TUNABLE value."""
    families = corpus_families(corpus)
    return [tune_run(case, families[case.run.name]) for case in corpus_cases(corpus, only=only_families and {
        name for name, family in families.items() if family in only_families})]


def report_held_out(corpus: Path, only_families: list[str] | None = None) -> int:
    started = time.perf_counter()
    runs = tune_corpus(corpus, only_families)
    families = sorted({tuned.family for tuned in runs})
    healthy = sum(tuned.case.healthy for tuned in runs)
    print(f"corpus: {len(runs)} runs ({healthy} healthy) in {len(families)} program families: {', '.join(families)}")
    print(f"tunable thresholds (one per rule, chosen on the other families): "
          f"{sum(len(values) for settings in TUNABLE.values() for values in settings.values())} values for "
          f"{len(TUNABLE)} rules ({time.perf_counter() - started:.0f} s to diagnose under each)")
    print()
    print("HELD OUT: leave-one-family-out (each family scored with thresholds chosen without it), pooled")
    held_out = leave_one_family_out(runs)
    print(format_held_out(held_out, CURVE_RULES))
    changed = {family: {rule: value for rule, value in choice.items()
                        if value != default_value(rule, next(iter(TUNABLE[rule])))}
               for family, choice in held_out.choices.items()}
    print("thresholds chosen away from the default, per held-out family:")
    for family, choice in changed.items():
        print(f"  {family}: {choice or 'defaults'}")
    targets = [rule for rule in CURVE_RULES if held_out.table[rule]["labelled"]
               and held_out.table[rule]["found"] / held_out.table[rule]["labelled"] < 0.9]
    print(f"rules below the 0.9 held-out recall target: {', '.join(targets) or 'none'}")
    for line in held_out.false_alarms:
        print(f"  false alarm: {line}")
    for line in held_out.missed:
        print(f"  missed: {line}")
    for line in held_out.wrong:
        print(f"  fired unlabelled: {line}")
    print()
    print("IN-SAMPLE (for contrast only): every family at the default thresholds, which were set on this corpus")
    print(format_held_out(in_sample(runs), CURVE_RULES))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--external", type=Path, default=DEFAULT_EXTERNAL)
    parser.add_argument("--retrain-seed", type=int, nargs="+", default=None, metavar="SEED",
                        help="score a fresh corpus trained with each of these seeds (held out from threshold "
                             "tuning and from the runs the rules were written on)")
    parser.add_argument("--healthy-only", action="store_true",
                        help="with --retrain-seed: train only the healthy recipes and count false alarms")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="with --retrain-seed: keep the trained runs in DIR/seed-N and score them from there "
                             "when they are already there")
    parser.add_argument("--families", nargs="*", help="hold out only these families' runs (leave-one-family-out)")
    args = parser.parse_args(argv)
    if args.retrain_seed is not None:
        return score_retrained(args.retrain_seed, healthy_only=args.healthy_only, keep=args.keep)
    report_held_out(args.corpus, args.families)
    if args.families:
        return 0
    print()
    print("IN-SAMPLE, everything: the corpus, the hand-made setup runs and the external curves at the defaults")
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
