"""The labelled corpus of really trained small runs (tests/data/corpus) and the external curves."""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path

import pytest

from benchmarks.diagnosis_accuracy import Case, corpus_cases, overlaps
from traindoctor.diagnosis import Finding, diagnose
from tests.diagnosis.external import EXTERNAL, bigscience_cases, pythia_cases, pythia_run
from tests.diagnosis.setup_cases import setup_cases

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
LABELS = json.loads((CORPUS / "corpus_labels.json").read_text(encoding="utf-8"))
needs_external = pytest.mark.skipif(not (EXTERNAL / "pythia").is_dir(), reason="../shared/external not present")


@functools.lru_cache(maxsize=1)
def diagnosed_corpus() -> dict[str, tuple[Case, list[Finding]]]:
    """Every corpus run loaded from the committed store (read only) and diagnosed once."""
    return {case.run.name: (case, diagnose(case.run, strict=True)) for case in corpus_cases(CORPUS)}


def test_corpus_covers_every_curve_rule_twice_and_six_healthy_kinds():
    counts: dict[str, int] = {}
    for label in LABELS.values():
        for rule in label["expect"]:
            counts[rule] = counts.get(rule, 0) + 1
    curve_rules = ["lr_too_high", "lr_too_low", "decayed_too_early", "divergence", "loss_spike", "overfitting",
                   "best_epoch_not_last", "underfitting", "train_longer", "bad_initial_loss", "no_better_than_baseline",
                   "missing_warmup", "exploding_gradients", "vanishing_gradients", "update_ratio_out_of_band",
                   "dead_layers", "class_imbalance", "underperforming_classes"]
    assert {rule: counts.get(rule, 0) for rule in curve_rules if counts.get(rule, 0) < 2} == {}
    assert sum(label["healthy"] for label in LABELS.values()) >= 6


@pytest.mark.slow  # loading the 40 corpus runs through the store takes ~20 s on a busy 2-core box
@pytest.mark.parametrize("name", sorted(n for n, label in LABELS.items() if label["expect"]))
def test_labelled_problems_found_at_the_right_steps(name):
    case, findings = diagnosed_corpus()[name]
    missing = {rule: expected for rule, expected in case.expect.items()
               if not any(f.rule == rule and overlaps(f, expected) for f in findings)}
    assert missing == {}, [(f.rule, f.step_start, f.step_end) for f in findings]
    assert sorted({f.rule for f in findings} & set(case.forbid)) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, label in LABELS.items() if label["healthy"]))
def test_healthy_runs_get_no_warning_or_critical(name):
    _, findings = diagnosed_corpus()[name]
    assert [(f.rule, f.severity, f.message) for f in findings if f.severity != "info"] == []


@pytest.mark.parametrize("case", setup_cases(), ids=lambda case: case.run.name)
def test_setup_cases_found_and_correct_setup_quiet(case):
    findings = diagnose(case.run, strict=True)
    assert {rule for rule, expected in case.expect.items()
            if not any(f.rule == rule and overlaps(f, expected) for f in findings)} == set()
    if case.healthy:
        assert [f.rule for f in findings if f.severity != "info"] == []


# ------------------------------------------------------------------ external curves


@functools.lru_cache(maxsize=1)
def diagnosed_pythia() -> dict[str, tuple[object, list[Finding]]]:
    return {case.run.name: (case, diagnose(case.run, strict=True)) for case in pythia_cases()}


@needs_external
@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "peak_range"),
    [("pythia-410m-seed3", (74_995, 75_010)), ("pythia-410m-seed4", (121_995, 122_010)),
     ("pythia-160m-seed4", (1_320, 1_335)), ("pythia-160m-seed8", (1_195, 1_215))],
)
def test_pythia_spikes_found_at_their_steps_without_divergence(name, peak_range):
    _, findings = diagnosed_pythia()[name]
    spikes = [f for f in findings if f.rule == "loss_spike"]
    assert [peak_range[0] <= f.evidence["peak_step"] <= peak_range[1] for f in spikes] == [True]
    assert "divergence" not in {f.rule for f in findings}


@needs_external
@pytest.mark.slow
@pytest.mark.parametrize("name", ["pythia-410m-seed5", "pythia-70m-seed1"])
def test_stable_pythia_runs_raise_no_spike_or_divergence(name):
    _, findings = diagnosed_pythia()[name]
    assert {f.rule for f in findings} & {"loss_spike", "divergence"} == set()


@needs_external
@pytest.mark.slow
def test_pythia_warmup_spikes_recover_quickly():
    for name in ("pythia-160m-seed4", "pythia-160m-seed8"):
        spike = next(f for f in diagnosed_pythia()[name][1] if f.rule == "loss_spike")
        assert spike.evidence["recovered"] and spike.evidence["recovered_at_step"] - spike.evidence["peak_step"] < 100


@needs_external
@pytest.mark.slow
def test_a_143000_step_run_is_diagnosed_in_under_one_second():
    run = pythia_run(EXTERNAL / "pythia" / "410m-seed3.csv.gz")
    assert len(run.series("loss")) == 143_000
    times = []
    for _ in range(3):
        started = time.perf_counter()
        diagnose(run, strict=True)
        times.append(time.perf_counter() - started)
    # Issue #12's bound; measured 0.3-0.4 s on a loaded 2-core box. The best of three: a pause
    # of a busy machine is not the diagnosis' cost.
    assert min(times) < 1.0, times


@needs_external
def test_bloom_spike_is_a_recovered_loss_spike_with_exploding_gradients_not_divergence():
    bloom = next(c for c in bigscience_cases() if c.run.name.startswith("bloom"))
    findings = diagnose(bloom.run, strict=True)
    rules = {f.rule for f in findings}
    spike = next(f for f in findings if f.rule == "loss_spike")
    assert spike.evidence["peak_step"] == 31_219 and spike.evidence["recovered"]
    assert "exploding_gradients" in rules and "divergence" not in rules


@needs_external
def test_tr8_104b_window_is_divergence():
    case = next(c for c in bigscience_cases() if c.run.name == "tr8-104b-divergence")
    findings = diagnose(case.run, strict=True)
    assert [(f.rule, f.severity) for f in findings if f.rule == "divergence"] == [("divergence", "critical")]


@needs_external
@pytest.mark.parametrize("name", ["tr8b-104b-scale-collapse", "tr1-13b-scale-drop"])
def test_bigscience_loss_scale_collapses(name):
    case = next(c for c in bigscience_cases() if c.run.name == name)
    found = [f for f in diagnose(case.run, strict=True) if f.rule == "amp_skipped_steps"]
    assert found and all(overlaps(f, case.expect["amp_skipped_steps"]) for f in found)
    assert {f.rule for f in diagnose(case.run, strict=True)} & set(case.forbid) == set()


# ------------------------------------------------------------------ regeneration


@pytest.mark.slow
@pytest.mark.parametrize("name", ["loss_spike_glitch_classification", "dead_layers_unused_branch"])
def test_regenerated_runs_still_get_their_labels(tmp_path, name):
    torch = pytest.importorskip("torch")
    from traindoctor.store.reader import open_store
    from traindoctor.store.run_data import load_run
    from tests.diagnosis import make_corpus

    torch.set_num_threads(1)
    spec = next(s for s in make_corpus.all_specs() if s.name == name)
    make_corpus.train(spec, tmp_path)
    findings = diagnose(load_run(open_store(tmp_path), name), strict=True)
    for rule, expected in spec.expect.items():
        assert any(f.rule == rule and overlaps(f, expected) for f in findings), rule
    assert {f.rule for f in findings} & set(spec.forbid) == set()
    shutil.rmtree(tmp_path / name)
