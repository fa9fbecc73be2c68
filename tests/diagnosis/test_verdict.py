"""The verdict (#17): the most likely cause comes first, on runs the real probe recorded, and the
evidence a finding quotes never contradicts its claim."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from traindoctor.diagnosis.engine import diagnose
from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.report import json_report, text_report
from traindoctor.diagnosis.verdict import first_advice, verdict
from traindoctor.store.reader import Store
from traindoctor.store.run_data import load_run

REPO = Path(__file__).resolve().parents[2]
# (store, run name): the lr-too-high sample (SGD lr 0.3 on an MLP), and a digits classifier
# trained at 10x its good lr whose hidden ReLUs die (tests/data/lr10x/make_run.py).
LR_TOO_HIGH_RUNS = {
    "lr-too-high-sample": (REPO / "sample_runs" / "store", "lr-too-high"),
    "digits-lr10x": (REPO / "tests" / "data" / "lr10x" / "store", "digits-lr10x"),
}
QUOTED_RATIO = re.compile(r"update/weight ratio (?:of |is )?([0-9.]+e[-+]?[0-9]+)")


def _load(tmp_path: Path, key: str):
    """The run, from a copy of its folder: the tests never write into the repository's stores (a
    catalog there would leave its summaries and index behind)."""
    source, name = LR_TOO_HIGH_RUNS[key]
    folder = max(folder for folder in source.iterdir() if (folder / "run.json").exists()
                 and json.loads((folder / "run.json").read_text()).get("name") == name)
    shutil.copytree(folder, tmp_path / "store" / folder.name,
                    ignore=shutil.ignore_patterns("summary.json", ".findings.json"))
    return load_run(Store(tmp_path / "store"), folder.name)


@pytest.mark.parametrize("key", LR_TOO_HIGH_RUNS, ids=LR_TOO_HIGH_RUNS)
def test_the_verdict_on_an_lr_too_high_run_is_lr_too_high(tmp_path, key):
    """Regression (#17): on the digits run "no better than the majority class" (critical) came first
    and lr_too_high second; on the sample the lr finding was 5th of 12."""
    run = _load(tmp_path, key)
    findings = diagnose(run, strict=True)
    found = verdict(findings)
    assert found is not None and found.rule == "lr_too_high" and found.index == 0
    assert findings[0].rule == "lr_too_high" and findings[0].explained_by is None
    assert all(f.explained_by == "lr_too_high" for f in findings[1:] if f.rule in found.explains)
    first_line = text_report([(run, findings)]).splitlines()[0]
    assert "(lr_too_high, steps" in first_line and first_line.startswith(run.name)
    assert json_report([(run, findings)])["runs"][0]["verdict"]["rule"] == "lr_too_high"


def test_dead_layers_are_folded_under_the_lr_that_killed_them(tmp_path):
    findings = diagnose(_load(tmp_path, "digits-lr10x"), strict=True)
    under = {f.rule: f.explained_by for f in findings}
    assert under["no_better_than_baseline"] == "lr_too_high" and under["dead_layers"] == "lr_too_high"


@pytest.mark.parametrize("key", LR_TOO_HIGH_RUNS, ids=LR_TOO_HIGH_RUNS)
def test_lr_too_high_never_quotes_a_small_update_ratio(tmp_path, key):
    """Regression (#17): lr_too_high quoted a median update/weight ratio of 2.9e-07 (its layers had
    died): evidence for "too high" must be above the ~1e-3 rule of thumb, or not quoted."""
    findings = [f for f in diagnose(_load(tmp_path, key), strict=True) if f.rule == "lr_too_high"]
    assert findings
    for finding in findings:
        quoted = [float(value) for value in QUOTED_RATIO.findall(finding.message)]
        assert all(value > 1e-3 for value in quoted), finding.message
        for name in ("median_update_ratio", "moving_update_ratio"):
            if finding.evidence.get(name) is not None and finding.evidence.get("kind") == "rebound":
                assert finding.evidence[name] > 1e-3


def _finding(rule: str, severity: str, **fields) -> Finding:
    return Finding(rule=rule, severity=severity, title=f"{rule} title", message=f"{rule} message",
                   advice="Do this; then that.", **fields)


@pytest.mark.parametrize(("findings", "expected"), [
    ([], None),
    ([_finding("train_longer", "info")], None),
    ([_finding("overfitting", "warning", step_start=5, step_end=9)], ("overfitting", "warning")),
    ([_finding("divergence", "critical"), _finding("overfitting", "warning")], ("divergence", "critical")),
    # a warning cause whose consequence is critical ranks first, and carries the group's severity
    ([_finding("overfitting", "warning"), _finding("lr_too_high", "warning", explains=("no_better_than_baseline",)),
      _finding("no_better_than_baseline", "critical", explained_by="lr_too_high")], ("lr_too_high", "critical")),
    # a configuration hint over the whole run (sorted first by the engine) yields to what the data shows
    ([_finding("weight_decay_on_norm_and_bias", "warning"), _finding("adam_hyperparameters", "warning"),
      _finding("no_better_than_baseline", "warning", step_start=1, step_end=200)], ("no_better_than_baseline", "warning")),
    ([_finding("weight_decay_on_norm_and_bias", "warning")], ("weight_decay_on_norm_and_bias", "warning")),
    ([_finding("adam_hyperparameters", "critical"), _finding("overfitting", "warning")], ("adam_hyperparameters", "critical")),
], ids=["none", "info-only", "one-warning", "critical-first", "cause-of-a-critical-symptom", "data-before-hints",
        "a-hint-alone", "severity-before-hint"])
def test_verdict_picks_the_head_of_the_worst_group(findings, expected):
    found = verdict(findings)
    assert (None if found is None else (found.rule, found.severity)) == expected


def test_the_configuration_hints_are_rules_that_read_the_optimizer_settings():
    from traindoctor.diagnosis.engine import RECORDS
    from traindoctor.diagnosis.verdict import CONFIGURATION_HINTS

    assert CONFIGURATION_HINTS <= set(RECORDS)
    assert all("env.optimizer" in RECORDS[rule].metadata for rule in CONFIGURATION_HINTS)


@pytest.mark.parametrize(("advice", "first"), [
    ("Lower the lr (×0.3 to ×0.1) or decay it; clip gradients.", "Lower the lr (×0.3 to ×0.1) or decay it."),
    ("Retrain with fewer epochs. Or lower the lr.", "Retrain with fewer epochs."),
    ("Check requires_grad (frozen by mistake?), that forward() uses every module",
     "Check requires_grad (frozen by mistake?), that forward() uses every module."),
    ("", ""),
    # amp_skipped_steps' advice: cut at the first ';' it read "... with fp16 (scaler.scale(loss).backward()."
    ("Use torch.amp.GradScaler with fp16 (scaler.scale(loss).backward(); scaler.step(opt); scaler.update()), "
     "or bf16 autocast, which needs no scaler.",
     "Use torch.amp.GradScaler with fp16 (scaler.scale(loss).backward(); scaler.step(opt); scaler.update()), "
     "or bf16 autocast, which needs no scaler."),
], ids=["semicolon", "two-sentences", "question-mark-inside-parentheses", "empty", "semicolons-inside-parentheses"])
def test_the_one_thing_to_try_first_is_the_advice_first_clause(advice, first):
    assert first_advice(advice) == first
