"""diagnose(): every rule, robustness to odd data, ordering; the text and JSON reports."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from traindoctor.diagnosis import RULES, Finding, RunData, diagnose
from traindoctor.diagnosis.engine import drop_explained, sort_findings
from traindoctor.diagnosis.report import json_report, text_report, worst_severity
from tests.diagnosis.factories import confusion_frame, full_run, make_run, noisy_decay, scalar_rows

RULES_MD_IDS = {
    "lr_too_high", "lr_too_low", "decayed_too_early", "divergence", "loss_spike", "overfitting",
    "best_epoch_not_last", "underfitting", "train_longer", "bad_initial_loss", "no_better_than_baseline",
    "missing_warmup", "exploding_gradients", "vanishing_gradients", "update_ratio_out_of_band", "dead_layers",
    "amp_skipped_steps", "eval_mode_during_training", "train_mode_during_eval", "weight_decay_on_norm_and_bias",
    "adam_hyperparameters", "underperforming_classes", "class_imbalance",
}


def test_every_rules_md_id_has_a_rule_with_a_docstring():
    assert set(RULES) == RULES_MD_IDS
    for rule in RULES.values():
        doc = rule.__doc__ or ""
        assert all(part in doc for part in ("Symptom", "Likely cause", "Try", "Source")), rule.__name__


@pytest.mark.parametrize("n", [1, 2, 7, 50, 3000], ids=lambda n: f"{n}-steps")
@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "resumed"])
def test_every_rule_runs_on_runs_of_any_length(n, resumed):
    diagnose(full_run(n, resumed=resumed), strict=True)


ODD_RUNS = {
    "empty": RunData(run_id="e", name="e"),
    "loss-only": make_run(loss=noisy_decay(200)),
    "all-nan": make_run(loss=[math.nan] * 30, frames=[scalar_rows("grad_norm", [math.nan] * 30)]),
    "inf-everywhere": make_run(loss=[math.inf] * 10, frames=[scalar_rows("update_ratio", [math.inf] * 10, layer="w")]),
    "object-dtype-values": make_run(frames=[scalar_rows("loss", np.array([1.0, 2.0], dtype=object))]),
    "object-dtype-layer-values": make_run(frames=[
        scalar_rows(name, np.array([0.1, 0.2, None, 0.3], dtype=object), layer=layer)
        for name in ("grad_norm", "update_ratio", "weight_norm") for layer in ("0.weight", "2.weight")]),
    "eval-only": make_run(frames=[scalar_rows("accuracy", [0.5], split="val")]),
    "confusion-only": make_run(confusion=confusion_frame(np.array([[1]]))),
    "events-without-steps": make_run(events=[("eval_mode_during_training", "", None), ("amp_step_skipped", "", None)]),
}


@pytest.mark.parametrize("run", list(ODD_RUNS.values()), ids=list(ODD_RUNS))
def test_odd_runs_do_not_break_any_rule(run):
    diagnose(run, strict=True)


def test_a_constant_or_healthy_loss_only_run_has_no_warnings():
    for loss in (np.full(500, 1.3), noisy_decay(5000, noise=0.05)):
        assert [f for f in diagnose(make_run(loss=loss), strict=True) if f.severity != "info"] == []


def _boom(run: RunData) -> list[Finding]:
    raise ValueError("odd data")


def test_a_failing_rule_does_not_kill_the_others_but_strict_shows_it(caplog):
    rules = {"boom": _boom, "divergence": RULES["divergence"]}
    run = make_run(loss=list(noisy_decay(50)) + [math.nan] * 3)
    assert [f.rule for f in diagnose(run, rules=rules)] == ["divergence"]
    assert "rule boom failed" in caplog.text
    with pytest.raises(ValueError, match="odd data"):
        diagnose(run, rules=rules, strict=True)


def _finding(rule: str, severity: str, step: int | None) -> Finding:
    return Finding(rule=rule, severity=severity, title=rule, message="m", advice="a", step_start=step, step_end=step)


def test_findings_sorted_by_severity_then_step():
    findings = [_finding("a", "info", 1), _finding("b", "critical", 50), _finding("c", "warning", 7),
                _finding("d", "critical", 3), _finding("e", "warning", None)]
    assert [f.rule for f in sort_findings(findings)] == ["d", "b", "e", "c", "a"]


def test_more_specific_causes_explain_underfitting_away():
    findings = [_finding("underfitting", "warning", 1), _finding("vanishing_gradients", "warning", 1)]
    assert [f.rule for f in drop_explained(findings)] == ["vanishing_gradients"]
    info_only = [_finding("underfitting", "warning", 1), _finding("divergence", "info", 1)]
    assert [f.rule for f in drop_explained(info_only)] == ["underfitting", "divergence"]


# ------------------------------------------------------------------ reports


def test_worst_severity():
    assert worst_severity([]) is None
    assert worst_severity([_finding("a", "info", 1), _finding("b", "warning", 2)]) == "warning"
    assert worst_severity([_finding("a", "critical", 1), _finding("b", "warning", 2)]) == "critical"


def test_json_report_has_the_design_shape_and_is_serialisable():
    run = make_run(loss=list(noisy_decay(60)) + [math.nan] * 5, name="r1")
    findings = diagnose(run, strict=True)
    report = json.loads(json.dumps(json_report([(run, findings), (RunData(run_id="r2", name="two"), [])])))
    assert [(r["run_id"], r["name"]) for r in report["runs"]] == [("r1", "r1"), ("r2", "two")]
    first = report["runs"][0]["findings"][0]
    assert set(first) == {"rule", "severity", "title", "message", "advice", "step_start", "step_end", "evidence",
                          "source", "explains", "explained_by"}
    assert first["rule"] == "divergence" and first["step_start"] == 61
    assert report["runs"][1]["findings"] == []
    assert report["runs"][1]["recording_problems"] == []


def test_dropped_rows_and_a_second_writer_are_reported_before_any_finding(tmp_path, capsys):
    """Regression (#18 item 3): rows the writer had to drop were in the run's events, but
    `diagnose` said nothing, so a gap in the record read as a healthy stretch."""
    from traindoctor.cli import main
    from traindoctor.store.segments import RunWriter

    writer = RunWriter(tmp_path, name="gappy", background=False)
    for step in range(1, 41):
        writer.add_scalars(step=step, name="loss", value=2.0 / step)
    writer.add_event("rows_dropped", "120 scalars rows of steps 11-20 dropped: the store was read-only", step=11)
    writer.add_event("concurrent_writer", "writer b was recording rank 0 beside writer a", step=30)
    writer.close()
    assert main(["diagnose", "gappy", "--store", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "RECORDING: 2 problem(s)" in text
    assert text.index("[rows_dropped] (step 11) 120 scalars rows") < text.index("[concurrent_writer] (step 30)")
    assert main(["diagnose", "gappy", "--store", str(tmp_path), "--json"]) == 0
    problems = json.loads(capsys.readouterr().out)["runs"][0]["recording_problems"]
    assert [(p["kind"], p["step"]) for p in problems] == [("rows_dropped", 11), ("concurrent_writer", 30)]


def test_text_report_groups_by_severity_with_steps_and_advice():
    run = RunData(run_id="20260101-abc", name="resnet")
    findings = [_finding("loss_spike", "warning", 120), _finding("divergence", "critical", 900),
                _finding("train_longer", "info", None)]
    text = text_report([(run, sort_findings(findings)), (RunData(run_id="r2", name="r2"), [])])
    assert text.index("CRITICAL") < text.index("WARNING") < text.index("INFO")
    assert "resnet (20260101-abc)" in text and "[divergence] divergence (step 900)" in text
    assert "(whole run)" in text and "advice: a" in text
    assert "r2: no problem found.\n" in text and "  No findings" in text


def test_evidence_is_strict_json_with_numpy_and_non_finite_values():
    from traindoctor.diagnosis.common import finding

    made = finding("divergence", "critical", "t", "m", "a", "s", np.int64(3), np.int64(9),
                   {"peak": np.float32(1.5), "count": np.int64(4), "ratio": math.inf, "ok": np.bool_(True),
                    "layers": ("a", "b"), "nested": {"gap": np.float64(0.123456789)}})
    payload = json.loads(json.dumps(made.to_dict(), allow_nan=False))
    assert payload["evidence"] == {"peak": 1.5, "count": 4, "ratio": "inf", "ok": True, "layers": ["a", "b"],
                                   "nested": {"gap": 0.1235}}
    assert (payload["step_start"], payload["step_end"]) == (3, 9)


@pytest.mark.parametrize(("start", "end", "expected"), [
    (None, None, None), (5, None, (5, 5)), (None, 9, (9, 9)), (5, 9, (5, 9)), (7, 7, (7, 7)),
], ids=["whole-run", "start-only", "end-only", "range", "one-step"])
def test_finding_step_range(start, end, expected):
    finding = Finding("loss_spike", "warning", "t", "m", "a", step_start=start, step_end=end)
    assert finding.step_range == expected
