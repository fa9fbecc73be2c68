"""The labelled corpus of really trained small runs (tests/data/corpus) and the external curves."""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path

import pytest

from benchmarks.diagnosis_accuracy import Case, corpus_cases, overlaps
from traindoctor.diagnosis import RULES, Finding, diagnose
from tests.diagnosis.external import EXTERNAL, bigscience_cases, pythia_cases, pythia_run
from tests.diagnosis.setup_cases import setup_cases

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
LABELS = json.loads((CORPUS / "corpus_labels.json").read_text(encoding="utf-8"))
needs_external = pytest.mark.skipif(not (EXTERNAL / "pythia").is_dir(), reason="../shared/external not present")


@functools.lru_cache(maxsize=None)
def diagnosed(name: str) -> tuple[Case, list[Finding]]:
    """One corpus run loaded from the committed store (read only) and diagnosed, once per process."""
    case, = corpus_cases(CORPUS, only={name})
    return case, diagnose(case.run, strict=True)


# Labelled problems the rules miss on the held-out evaluation (benchmarks/diagnosis_accuracy.py lists
# them too); each is an expected failure that must keep failing until a rule learns it (strict xfail).
KNOWN_MISSES = {
    "lm_char_missing_warmup_postln": "the tiny post-LN model shows no early instability without warm-up: its loss "
                                     "falls at once, its gradient norm shrinks, and it ends level with its twins; "
                                     "retrained with a 10 % warm-up (same model, lr and seed) it does no better "
                                     "(val 1.795 against 1.785 without): no harm to show (issue #12, a mislabel?)",
    # res_train_longer (9 % of its val gain in its last third, a healthy wine run's 5 %) is found since 749d5bd:
    # a classifier still at >= 30 % of ln C whose loss still falls is told to train longer whatever its share
}
# The families added after the rules were written (held out; benchmarks/diagnosis_accuracy.py --families
# gru_waveforms denoiser_digits lm_word_grammar): what the rules as of 015065d miss there, and the healthy
# runs they warn about. Scored once, after the labels were committed; the labels stay as they were.
KNOWN_MISSES |= {
    "dn_lr_too_low_adamw_wsd": "AdamW 1e-5 ends 4.1x its twin's val loss: flat for a third of the run (7 % of its "
                               "fall in the first quarter of the stable phase), then 57 % down in all (over the "
                               "slow-fall test's 50 %) and flattened by the WSD cool-down. Neither a slow-start share "
                               "(healthy runs down to 14 %, seq_healthy_radam_wsd) nor its update/weight ratio 1.0e-4 "
                               "(healthy down to 9.4e-5) parts it from healthy runs with a margin",
    # dn_train_longer (val -15 % over its last third, a 4.8 % share) and dn_underfitting_one_number_code (train =
    # val, flat) are found since 749d5bd: for regression the val gain >= 10 % is a better model (the loss is the
    # task's measure, not a classifier's sharpening confidence); a regression plateau is info, without a level
    "lmw_missing_warmup_postln": "without warm-up the post-LN LM collapses to 4.6 (unigram level) in 100 steps and "
                                 "stays; its warm-up twin reaches 3.5; not read: its lr log starts at step 20 (2.4 % "
                                 "of the run, after a warm-up of up to 2 % would have ended), so missing_warmup does "
                                 "not judge it, and it records no update/weight ratios",
    "lmw_train_longer": "stopped after 211 of 844 steps at 3.49 vs its twin's 3.18, still falling, but slowing: "
                        "its last third of evals gains 2.9 %, 6 % of the gain since its first eval at step 20; "
                        "healthy_wine_adam gains 15 % there, 5 % of its gain: neither gain nor share parts them",
    # The five healthy GRU runs got an underperforming_classes warning, true of the data (sine recall
    # 0.57-0.63 against 0.98 for square and sawtooth: sine and triangle waves look alike under the noise);
    # since 2026-11-30 (afternoon) two classes taken for each other are an info hint about the data.
}
# The second hold-out (benchmarks/diagnosis_accuracy.py --families bn_mlp_tabular vit_digits conv_tagger_tokens):
# labels committed in 9d514f5/353f6f9 before any of these runs was diagnosed, scored once with the rules as of
# 67750ce (docs/accuracy.md, "Second hold-out"). What the rules miss there at their defaults, with what they said
# instead, and the healthy runs they warn about. The labels stay as they were set.
KNOWN_MISSES |= {
    # lr too high (bn_lr_too_high_sgd, read only as divergence as scored, is found since 2026-11-30 afternoon:
    # a divergence with median update/weight ratio >= 5e-3, here 5.9e-2, names the lr beside it)
    "vit_lr_too_high_adamax": "Adamax 0.1 with warm-up + cosine: val loss down to 0.29 by step 950 and flat "
                              "there (1.81x its twin's 0.165), train loss bumpy mid-run (0.17 -> 0.52 -> 0.24) "
                              "then near 0 as the cosine decays: no finding at all (an info adam_hyperparameters)",
    # lr too low
    # (bn_lr_too_low_sgd, SGD lr 1e-4 under a polynomial decay, read as update_ratio_out_of_band as scored, is
    # found since issue #12's lr kinds: the update/weight ratio at its peak lr, 8.7e-5, with 65 % of ln 5 left)
    "tag_lr_too_low_adagrad": "Adagrad 5e-4 (4.4x its twin's val loss, 82 % token accuracy against 98 %): only "
                              "class_imbalance and underperforming_classes (the preposition tag at recall 0.01), "
                              "the symptom; nothing names the lr",
    # a schedule that ends training early (bn_decayed_too_early_poly_per_step, read as "the lr is 0" under
    # lr_too_low as scored, is found since 2026-11-30 afternoon: the optimizer had lr 0.1 when the probe saw it)
    # (bn_train_longer, 2 per-epoch train records, is found since 749d5bd: a classifier far from fitting is
    # judged from 2 records)
    # capacity
    "bn_underfitting_bottleneck": "a 2-unit first layer (train 1.01, val 1.06 against the twin's 0.55): read as "
                                  "overfitting (val best 0.892 at step 1155, +19 % by the end, which the curve "
                                  "does show) and best_epoch_not_last, with the class findings; no underfitting",
    "tag_underfitting_no_context": "kernel width 1 (each word tagged alone) plateaus at val 0.240 against the "
                                   "twin's 0.127 (93 % token accuracy against 98 %): no finding at all",
    # per-class: bn_class_imbalance_heavy (219:1) got class_imbalance but not underperforming_classes as scored
    # (its four small classes, recall 0.46-0.57, were each near the plain median of the others); found since
    # 2026-11-30 (afternoon), the others' median being weighted by support
    # Healthy runs: none warned since 2026-11-30 (afternoon). As scored, class_imbalance warned on the five BN
    # runs (35/25/20/12/8 % classes, 4.4:1; the default ratio is 6 since, the value every leave-one-family-out
    # fold chose), lr_too_low on one (0.573 -> 0.551, flat at the data's noise floor), missing_warmup on two
    # ViTs without warm-up (gradient norm x5-7 while the loss fell) and lr_too_high on an RMSprop ViT (val
    # loss swings it recovered from, ending at its best); docs/accuracy.md has the kinds and their tests.
}


def labelled(names) -> list:
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[name]))
            if name in KNOWN_MISSES else name for name in sorted(names)]


def check_labels(name: str) -> None:
    case, findings = diagnosed(name)
    missing = {rule: expected for rule, expected in case.expect.items()
               if not any(f.rule == rule and overlaps(f, expected) for f in findings)}
    assert missing == {}, [(f.rule, f.step_start, f.step_end) for f in findings]
    assert sorted({f.rule for f in findings} & set(case.forbid)) == []
    if case.healthy:
        assert [(f.rule, f.severity, f.message) for f in findings if f.severity != "info"] == []


CURVE_RULES = ["lr_too_high", "lr_too_low", "decayed_too_early", "divergence", "loss_spike", "overfitting",
               "best_epoch_not_last", "underfitting", "train_longer", "bad_initial_loss", "no_better_than_baseline",
               "missing_warmup", "exploding_gradients", "vanishing_gradients", "update_ratio_out_of_band",
               "dead_layers", "class_imbalance", "underperforming_classes"]


def run_json(name: str) -> dict:
    return json.loads((CORPUS / name / "run.json").read_text(encoding="utf-8"))


def test_corpus_spans_twelve_families_each_with_several_healthy_runs():
    families: dict[str, list[str]] = {}
    for name, label in LABELS.items():
        families.setdefault(label["family"], []).append(name)
    assert len(families) >= 12, sorted(families)
    healthy = {family: [name for name in names if LABELS[name]["healthy"]] for family, names in families.items()}
    assert {family: len(names) for family, names in healthy.items() if len(names) < 2} == {}
    # Each family's healthy runs differ in optimizer or schedule (their descriptions say which).
    assert {family: names for family, names in healthy.items()
            if len({LABELS[name]["description"] for name in names}) < 2} == {}


def test_every_curve_rule_has_positive_cases_in_several_families():
    families_of = {rule: {label["family"] for label in LABELS.values() if rule in label["expect"]}
                   for rule in CURVE_RULES}
    # Class imbalance needs an imbalanced classifier with confusion counts: the tabular and image families.
    assert {rule: sorted(families) for rule, families in families_of.items() if len(families) < 2} == {}
    assert sum(len(families) >= 3 for families in families_of.values()) >= 12


def test_corpus_spans_tasks_optimizers_and_task_kinds():
    runs = {name: run_json(name) for name in LABELS}
    optimizers = {run["env"]["optimizer"]["type"] for run in runs.values()}
    assert {"SGD", "Adam", "AdamW"} <= optimizers and optimizers & {"Adafactor", "NAdam", "RAdam"}
    kinds = [run["task"].get("kind", "unknown" if not run["task"].get("num_classes") else "classification")
             for run in runs.values()]
    assert {"classification", "language_modelling", "regression", "unknown"} <= set(kinds)
    assert kinds.count("unknown") < len(kinds) / 4
    classes = {run["task"].get("num_classes") for run in runs.values()} - {None}
    assert min(classes) == 2 and max(classes) == 1000
    assert any("fine-tune" in LABELS[name]["description"] for name in LABELS)
    # Logging every step, every N steps (window means or not) and per epoch, and logging that starts late.
    every = {run["source"].get("logging_every", 1) for run in runs.values()}
    assert {1, 5, 10, 20} <= every
    assert any("logged from step" in LABELS[name]["description"] for name in LABELS)


def test_stored_labels_are_the_recipes_labels_and_every_run_is_stored():
    """Labels come from how each run was built (make_corpus's recipes), never from what the diagnosis says."""
    pytest.importorskip("torch")
    from tests.diagnosis import make_corpus

    specs = make_corpus.all_specs()
    expected = {spec.name: {"description": spec.description, "healthy": spec.healthy, "family": spec.family,
                            "expect": spec.expect, "forbid": spec.forbid, "allow": spec.allow} for spec in specs}
    assert json.loads(json.dumps(expected)) == LABELS
    assert sorted(name for name in LABELS if not (CORPUS / name / "run.json").is_file()) == []
    # Each stored run was trained from its recipe as it stands (regenerate a run whose recipe changed).
    trained = {spec.name: run_json(spec.name)["config"] for spec in specs}
    assert [spec.name for spec in specs if [trained[spec.name].get(key) for key in ("description", "epochs", "batch_size",
            "seed")] != [spec.description, spec.epochs, spec.batch_size, spec.seed]] == []
    for name, label in LABELS.items():
        assert not (label["healthy"] and label["expect"]), name
        assert set(label["expect"]) | set(label["forbid"]) | set(label["allow"]) <= set(RULES), name
    size = sum(path.stat().st_size for path in CORPUS.rglob("*") if path.is_file())
    assert size < 15 * 2**20, f"the stored corpus is {size / 2**20:.1f} MB"


def first_of_each_family(healthy: bool) -> list[str]:
    """Per family, the first run (by name) that is healthy, or labelled with a problem the rules find."""
    chosen: dict[str, str] = {}
    for name, label in sorted(LABELS.items()):
        if label["healthy"] == healthy and (healthy or label["expect"]) and name not in KNOWN_MISSES:
            chosen.setdefault(label["family"], name)
    return sorted(chosen.values())


@pytest.mark.parametrize("name", first_of_each_family(healthy=False))
def test_one_labelled_problem_per_family_is_found(name):
    check_labels(name)


@pytest.mark.slow  # ~130 corpus runs loaded through the store and diagnosed: ~40 s of CPU on a busy 2-core box
@pytest.mark.parametrize("name", labelled(n for n, label in LABELS.items() if label["expect"]))
def test_labelled_problems_found_at_the_right_steps(name):
    check_labels(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", labelled(n for n, label in LABELS.items() if label["healthy"]))
def test_healthy_runs_get_no_warning_or_critical(name):
    check_labels(name)


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
