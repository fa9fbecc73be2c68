"""The diagnosis benchmark's held-out evaluation: thresholds chosen without the family scored."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.diagnosis_accuracy import (Tuned, assembled, choose_thresholds, corpus_cases, corpus_families,
                                           in_sample, leave_one_family_out, tune_run, wilson)
from traindoctor.diagnosis import diagnose
from traindoctor.diagnosis.common import finding
from traindoctor.diagnosis.engine import RULES
from traindoctor.diagnosis.thresholds import TUNABLE, default_value, overridden
from traindoctor.store.run_data import RunData
from tests.diagnosis.external import Case

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"


def spike(severity: str = "warning"):
    return finding("loss_spike", severity, "Loss spike", "m", "a", "s", 100, 110)


def tuned(name: str, family: str, found_at: tuple[float, ...], labelled: bool) -> Tuned:
    """A run whose loss_spike finding appears only at the SPIKE_PEAK_SIGMAS values in ``found_at``."""
    case = Case(RunData(name, name), {"loss_spike": [90, 120]} if labelled else {}, healthy=not labelled)
    values = TUNABLE["loss_spike"]["SPIKE_PEAK_SIGMAS"]
    candidates = {("loss_spike", value): [spike()] if value in found_at else [] for value in values}
    for rule_id, settings in TUNABLE.items():
        if rule_id != "loss_spike":
            candidates.update({(rule_id, value): [] for value in next(iter(settings.values()))})
    raw = {rule_id: [] for rule_id in RULES}
    raw["loss_spike"] = candidates[("loss_spike", default_value("loss_spike", "SPIKE_PEAK_SIGMAS"))]
    return Tuned(case, family, raw, candidates)


def test_each_family_is_scored_with_thresholds_chosen_on_the_others():
    # The spike of every labelled run is found only at 7 sigmas; family c's healthy run also gets one there.
    runs = [tuned("a-spike", "a", (7.0,), True), tuned("b-spike", "b", (7.0,), True),
            tuned("c-spike", "c", (7.0,), True), tuned("c-healthy", "c", (7.0,), False)]
    held_out = leave_one_family_out(runs)
    # Holding out c: a and b each find one more label at 7 (+2), so 7 is chosen, and c's healthy run gets
    # the alarm. Holding out a (or b): the other finds one more label (+1), c one more label (+1) and one
    # healthy alarm (-2): a tie, so the default stays and the held-out spike is missed.
    assert {family: choice["loss_spike"] for family, choice in held_out.choices.items()} == {
        "a": 10.0, "b": 10.0, "c": 7.0}
    assert held_out.table["loss_spike"]["labelled"] == 3 and held_out.table["loss_spike"]["found"] == 1
    assert (held_out.healthy_runs, held_out.healthy_alarms, held_out.alarmed_healthy_runs) == (1, 1, 1)
    assert held_out.missed == ["a-spike: loss_spike [90, 120]", "b-spike: loss_spike [90, 120]"]
    # In-sample, at the defaults, nothing is found and nothing is raised.
    defaults = in_sample(runs)
    assert (defaults.table["loss_spike"]["found"], defaults.healthy_alarms) == (0, 0)


def test_a_label_found_only_by_an_info_finding_counts_as_found_not_warned():
    """Recall counts a finding of any severity; the warned column counts only warnings and criticals, so a rule
    moved to info keeps its recall and shows what the verdict no longer names."""
    from benchmarks.diagnosis_accuracy import CURVE_RULES, format_held_out, score_findings

    cases = [Case(RunData(name, name), {"loss_spike": [90, 120]}) for name in ("a", "b")]
    result = score_findings([(cases[0], [spike("info")]), (cases[1], [spike("critical")])])
    assert (result.table["loss_spike"]["found"], result.table["loss_spike"]["warned"]) == (2, 1)
    assert "warned: of those, by a warning or critical finding, 1/2 = 0.50" in format_held_out(result, CURVE_RULES)


def test_ties_keep_the_default_and_a_lone_family_is_refused():
    runs = [tuned("a-healthy", "a", (), False), tuned("b-healthy", "b", (), False)]
    assert choose_thresholds(runs) == {rule: default_value(rule, next(iter(settings)))
                                       for rule, settings in TUNABLE.items()}
    with pytest.raises(ValueError, match="at least two families"):
        leave_one_family_out(runs[:1])


@pytest.mark.parametrize(("successes", "trials"), [(7, 10), (0, 12), (30, 30)], ids=["seven-of-ten", "none", "all"])
def test_wilson_interval_matches_the_formula(successes, trials):
    z = 1.959963984540054
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    low, high = wilson(successes, trials)
    assert low == pytest.approx(max(0.0, centre - half), abs=1e-9)
    assert high == pytest.approx(min(1.0, centre + half), abs=1e-9)


def test_overridden_restores_the_default_and_refuses_undeclared_thresholds():
    from traindoctor.diagnosis import loss

    with pytest.raises(RuntimeError):
        with overridden({"loss_spike": {"SPIKE_PEAK_SIGMAS": 3.0}}):
            assert loss.SPIKE_PEAK_SIGMAS == 3.0
            raise RuntimeError("boom")
    assert loss.SPIKE_PEAK_SIGMAS == 10.0
    with pytest.raises(ValueError, match="declares no threshold 'IMBALANCE_RATIO'"):
        with overridden({"loss_spike": {"IMBALANCE_RATIO": 3.0}}):
            pass
    with pytest.raises(ValueError, match="no rule called"):
        with overridden({"no_such_rule": {"X": 1.0}}):
            pass


@pytest.mark.slow  # three stored corpus runs, each diagnosed under every tunable value (~10 s)
def test_assembled_findings_are_what_diagnose_returns_under_the_chosen_thresholds():
    families = corpus_families(CORPUS)
    names = {"loss_spike_glitch_classification", "healthy_moons_sgd_cosine", "overfitting_noisy_classification"}
    lowest = {rule: min(next(iter(settings.values()))) for rule, settings in TUNABLE.items()}
    highest = {rule: max(next(iter(settings.values()))) for rule, settings in TUNABLE.items()}
    for case in corpus_cases(CORPUS, only=names):
        run = case.run
        result = tune_run(case, families[run.name])
        for choice in (lowest, highest, {}):
            settings = {rule: {next(iter(TUNABLE[rule])): value} for rule, value in choice.items()}
            with overridden(settings):
                expected = diagnose(run, strict=True)
            assert [(f.rule, f.severity, f.step_start, f.step_end) for f in assembled(result, choice)] == [
                (f.rule, f.severity, f.step_start, f.step_end) for f in expected], (run.name, choice)
