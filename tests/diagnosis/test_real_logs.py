"""Real public training logs (tests/data/real_logs, #12): each imported through ``traindoctor import`` and diagnosed
as a user would, against the label its own authors' conclusion gives. A healthy run gets no warning or critical
finding; a faulty run gets one of the rules its authors' conclusion implies, at warning or critical.

Runs the diagnosis gets wrong today are marked xfail (strict, so a fix is noticed) with the kind of fault named;
thresholds are never tuned to a file here. ``benchmarks/real_logs.py`` prints precision, recall and false alarms.
"""

from __future__ import annotations

import json
import re

import pytest

from traindoctor.store.importers import KINDS
from traindoctor.store.reader import Store
from tests.diagnosis.real_logs import REAL_LOGS, RealLog, real_logs, run_case, score

CASES = real_logs()

# Run → the kind of fault that makes the diagnosis miss it (not the file's quirk).
KNOWN_MISSES = {
    "log-qlora-divergence-lr-entrenar": (
        "too few records: 8 pasted points (loss 1.43 -> 10.03 after its best) are below the curve rules' "
        "MIN_CURVE_POINTS (20), so neither the lr_too_high rebound nor the rise is judged"),
    "log-keras-overfitting-val-acc": (
        "too few records and a gap: 7 per-epoch records (epoch 12, then 95-100); the overfitting happened in the "
        "gap and only the end state (train accuracy 1.0 against validation 0.96) is left"),
    "lightning-mlp-mof-regression": (
        "regression without a target scale: the authors found the RMSE too high, but no rule may call a "
        "regression loss level poor without knowing the targets' scale (#12: a level is judged only against ln C "
        "or an expected initial loss)"),
    # Held-out runs (provenance held_out, added 2026-11-30): labelled and committed before traindoctor ran on them.
    "log-fairseq-roberta-csqa-stuck-at-chance": (
        "too few records and no task: 3 records, accuracy printed in percent (20) with the 5 answer choices the log "
        "does not state, so neither the baseline nor the underfitting rule has a class count or enough curve"),
    # log-maskrcnn-coco-nan-lr, missed while its summed loss "losses" was not read as the loss, is found since the
    # name table maps it (2026-12-01, after seeing it: in sample from then on).
    # Third hold-out (provenance third_hold_out, added 2026-11-30): labelled and committed before traindoctor ran on
    # them, scored once (cbc553e); these are what it got wrong, by kind. Three more (a pre-trained model's first
    # loss above ln V, a val loss rising while WER improves, validation-only swings) were fixed as kinds after
    # seeing them (docs/accuracy.md, "Kinds fixed after the third real-log hold-out"): no longer held out.
    "csv-keras-lipnet-overfitting": (
        "overfitting from the first epoch: validation accuracy 0.24-0.36 against training 0.88-0.996 and a validation "
        "loss of 5-8.6 that never improves for long; the rules read overfitting as a rise after a best, and 6 noisy "
        "epochs hold no such rise (a train/validation gap present from the start is not judged)"),
    "log-caffe-loss-stuck-accuracy-flat": (
        "too few records and no task: 5 loss records (87.3, then 8.24-8.28) and a test accuracy of 0.00028 twice; "
        "without a class count the stuck level cannot be compared with chance, and the curve rules need 20 points "
        "(the importer also files Caffe's 'Test net output' accuracy under train)"),
    "log-keras-cnn-not-learning": (
        "too few records and no task: 9 epochs with the validation loss flat at 1.79-1.86 and validation accuracy "
        "0.16-0.24 while the training loss falls; without a class count the baseline rule has no chance level"),
    "log-llava-lora-abnormal-loss-rise": (
        "too few records: 5 per-step records around one 4.27 step among 0.56-0.82; the spike test needs more "
        "history (the importer also drops the first dict, printed before any tqdm bar)"),
    "log-time-series-lib-lr-decayed-plateau": (
        "too few records and the lr not read: 5 epochs of a plateau whose printed 'Updating learning rate to "
        "1.7e-24' the importer keeps as a user metric, so decayed_too_early has no lr, and 5 records are below the "
        "curve rules' minimum"),
    # Fourth hold-out (provenance fourth_hold_out, added 2026-12-01): gathered by a helper that never ran traindoctor
    # nor read its rules, labelled from the authors' words, scored once (5 of 9 faulty found, 0 of 6 healthy
    # warned, at this session's start rules and after its changes alike); these are what it got wrong, by kind.
    # mmskeleton#311's ST-GCN, missed because the prior-loss test asked 10 records of every log, is found since
    # (docs/accuracy.md: in sample from then on).
    "log-chemts-gru-loss-jumps-at-epoch-20": (
        "too few records: 4 pasted epochs (0.39 at epoch 19, 0.88, 0.77, then 0.58 at epoch 100, numbered 1-4) hold "
        "a jump the spike test needs history for, and the gap to epoch 100 does not show"),
    "log-hf-grokfast-exploding-grad-norm": (
        "the excerpt starts after the explosion: the gradient norm is 3.8e12 at its first record and grows 1.5x a "
        "record to 1.4e14 (38x over 10 records), under the 100x growth and 10x-its-running-median tests; no rule "
        "judges a norm's absolute size"),
    "log-r2c-vcr-loss-stuck-at-chance": (
        "no task and few records: the validation loss sits at 1.386 (ln 4) with accuracy 0.249 over 4 epochs, but "
        "the issue does not state the 4 answer choices, so no class count gives the chance level"),
}


def test_the_set_is_large_and_balanced_enough():
    """#12 asks for at least 30 runs, healthy ones included (roughly half)."""
    healthy = sum(case.healthy for case in CASES)
    assert len(CASES) >= 30, len(CASES)
    assert 0.35 <= healthy / len(CASES) <= 0.65, (healthy, len(CASES))
    assert set(KNOWN_MISSES) <= {case.name for case in CASES}


def test_the_held_out_set_is_a_mix():
    """The runs added after the rules (provenance held_out): at least 15, six or more of each verdict, each dated."""
    held_out = [case for case in CASES if case.held_out]
    assert len(held_out) >= 15, len(held_out)
    assert sum(case.healthy for case in held_out) >= 6 and sum(not case.healthy for case in held_out) >= 6
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", case.provenance["held_out"]["added"]) for case in held_out)


def test_the_third_hold_out_is_a_mix():
    """The third hold-out (provenance third_hold_out): at least 15 runs, six or more of each verdict, each dated, and
    apart from the second hold-out (a run is in one set only)."""
    third = [case for case in CASES if case.third]
    assert len(third) >= 15, len(third)
    assert sum(case.healthy for case in third) >= 6 and sum(not case.healthy for case in third) >= 6
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", case.provenance["third_hold_out"]["added"]) for case in third)
    assert not [case.name for case in third if case.held_out]


def test_the_fourth_hold_out_is_a_mix():
    """The fourth hold-out (provenance fourth_hold_out): at least 15 runs, six or more of each verdict, each dated,
    and in no other hold-out."""
    fourth = [case for case in CASES if case.fourth]
    assert len(fourth) >= 15, len(fourth)
    assert sum(case.healthy for case in fourth) >= 6 and sum(not case.healthy for case in fourth) >= 6
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", case.provenance["fourth_hold_out"]["added"]) for case in fourth)
    assert not [case.name for case in fourth if case.held_out or case.third]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_provenance_names_the_source_the_conclusion_and_the_input(case: RealLog):
    meta = case.provenance
    source = meta["source"]
    if source["kind"] == "repository":
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]) and source["repository"].count("/") == 1
    else:
        assert source["kind"] == "issue" and re.match(r"https://github\.com/[^/]+/[^/]+/issues/\d+$", source["url"])
    assert len(meta["authors_concluded"]) > 40
    assert meta["label"]["basis"] in ("stated", "released")
    assert case.importer in KINDS and (case.folder / case.input).is_file()
    assert set(case.expect_any) <= _rule_ids() and set(case.forbid) <= _rule_ids()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_files_hold_no_personal_details(case: RealLog):
    """Numbers only: no e-mail addresses, home folders or tokens in what was copied."""
    for path in case.folder.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", text), path
        assert not re.search(r"(/home/|/Users/|C:\\\\Users|/scratch/|hf_[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{20,})", text), path


def _rule_ids() -> set[str]:
    from traindoctor.diagnosis import RULES  # rule id -> rule

    return set(RULES)


def _params():
    for case in CASES:
        marks = []
        if case.name in KNOWN_MISSES:
            marks.append(pytest.mark.xfail(reason=KNOWN_MISSES[case.name], strict=True))
        yield pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", list(_params()))
def test_real_log_gets_the_verdict_its_authors_reached(tmp_path, case: RealLog):
    findings = run_case(case, tmp_path)
    result = score(case, findings)
    [meta] = [Store(tmp_path / "store").run_meta(run_id) for run_id in Store(tmp_path / "store").runs()["run_id"]]
    if (meta.get("task") or {}).get("kind") in (None, "unknown", "regression"):
        # #12 Must hold: without a loss scale no finding calls a loss level poor.
        assert not [f for f in findings if "poor" in (f["title"] + f["message"]).lower()], findings
    summary = json.dumps([(f["rule"], f["severity"], f["message"][:160]) for f in findings], indent=1)
    assert not result.forbidden, f"false alarm on {case.name}: {summary}"
    if not case.healthy:
        assert result.detected, f"{case.name}: none of {case.expect_any} at warning/critical; got {summary}"


@pytest.mark.parametrize(
    ("healthy", "expect", "forbid", "findings", "passed", "detected"),
    [(True, (), (), [("train_longer", "info")], True, None),
     (True, (), (), [("overfitting", "warning")], False, None),
     (True, (), ("divergence",), [("divergence", "info")], False, None),
     (False, ("divergence",), (), [("divergence", "critical"), ("loss_spike", "info")], True, True),
     (False, ("overfitting", "best_epoch_not_last"), (), [("best_epoch_not_last", "info")], False, False),
     (False, ("lr_too_high",), (), [], False, False)],
    ids=["healthy-info-only", "healthy-warning", "forbidden-at-any-severity", "faulty-found",
         "faulty-only-at-info", "faulty-quiet"],
)
def test_score_reads_a_label_the_way_the_benchmark_counts_it(healthy, expect, forbid, findings, passed, detected):
    case = RealLog(name="x", importer="csv", input="x.csv", import_args=(), healthy=healthy, expect_any=expect,
                   forbid=forbid, provenance={})
    result = score(case, [{"rule": rule, "severity": severity} for rule, severity in findings])
    assert (result.passed, result.detected) == (passed, detected)


def test_every_folder_is_a_case():
    """A folder without a readable provenance.json would silently drop out of the set."""
    folders = {path.name for path in REAL_LOGS.iterdir() if path.is_dir()}
    assert folders == {case.name for case in CASES}


# The task each source states (config.json's head, hparams.yaml, or the --task its provenance justifies).
EXPECTED_TASKS = {
    "hf-distilbert-sentiment-3class": {"kind": "classification", "num_classes": 3},
    "hf-vit-irrigation-2class": {"kind": "classification", "num_classes": 2},
    "hf-bert-mlm-canine-model": {"kind": "language_modelling", "vocab_size": 30522},
    "hf-nllb-amharic-to-geez": {"kind": "language_modelling", "vocab_size": 256204},
    "lightning-char-gpt-shakespeare": {"kind": "language_modelling", "vocab_size": 65},
    "lightning-mnist-cnn": {"kind": "classification", "num_classes": 10},
    "lightning-mlp-mof-regression": {"kind": "regression"},
    "hf-gpt2-pseudocode-to-code": {"kind": "language_modelling"},
    "hf-falcon-lora-imdb": {},
    "hf-t5-small-summarization": {"kind": "language_modelling", "vocab_size": 32128},
    "hf-whisper-small-mongolian": {"kind": "language_modelling", "vocab_size": 51865},
    "hf-whisper-lora-turkish-early-stop": {"kind": "language_modelling"},
    "hf-mt5-small-azerbaijani-summarization": {"kind": "language_modelling", "vocab_size": 250112},
    "log-cgcnn-crystal-regression": {"kind": "regression"},
    "log-custom-loop-mnist-example": {"kind": "classification", "num_classes": 10},
}


@pytest.mark.parametrize("name", list(EXPECTED_TASKS), ids=list(EXPECTED_TASKS))
def test_import_records_the_task_the_source_states(tmp_path, name):
    from traindoctor.cli import main

    [case] = [case for case in CASES if case.name == name]
    source = tmp_path / "input"
    source.mkdir()
    for path in case.folder.iterdir():
        if path.name != "provenance.json":
            (source / path.name).write_bytes(path.read_bytes())
    assert main(["import", case.importer, str(source / case.input), "--store", str(tmp_path / "store"), "--no-progress",
                 "--no-diagnose", *case.import_args]) == 0
    store = Store(tmp_path / "store")
    [task] = [store.run_meta(run_id)["task"] for run_id in store.runs()["run_id"]]
    assert {key: value for key, value in task.items() if key != "class_names"} == EXPECTED_TASKS[name]
