"""The field cases of tests/data/cases (issue #12): each input, imported and diagnosed as a user would, gets
the verdict its real run deserves (tests/data/cases/README.md says why)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from traindoctor.cli import main

CASES = Path(__file__).resolve().parents[1] / "data" / "cases"


def _quiet(findings: list[dict[str, Any]]) -> None:
    assert [(f["rule"], f["severity"]) for f in findings] == []


def _at_most_info_train_longer(findings: list[dict[str, Any]]) -> None:
    assert [(f["rule"], f["severity"]) for f in findings if (f["rule"], f["severity"]) != ("train_longer", "info")] == []


def _critical_divergence_from(step: int, *words: str) -> Callable[[list[dict[str, Any]]], None]:
    def check(findings: list[dict[str, Any]]) -> None:
        divergence = [f for f in findings if f["rule"] == "divergence"]
        assert [(f["severity"], f["step_start"]) for f in divergence] == [("critical", step)]
        assert findings[0]["rule"] == "divergence"  # the worst finding comes first
        assert all(word in divergence[0]["message"] for word in words), divergence[0]["message"]
    return check


def _overfitting_on(split: str) -> Callable[[list[dict[str, Any]]], None]:
    def check(findings: list[dict[str, Any]]) -> None:
        overfitting = [f for f in findings if f["rule"] == "overfitting"]
        assert [(f["severity"], f["evidence"]["split"]) for f in overfitting] == [("warning", split)]
    return check


# case id → (importer, input under tests/data/cases, extra import arguments, the expected verdict)
FIELD_CASES: dict[str, tuple[str, str, tuple[str, ...], Callable[[list[dict[str, Any]]], None]]] = {
    "first-log-late": ("csv", "first-log-late/metrics.csv", ("--num-classes", "10"), _quiet),
    "lm-finetune-flat": ("csv", "lm-finetune-flat/metrics.csv", (), _at_most_info_train_longer),
    "nan-grad-norm-hf": ("hf", "nan-grad-norm/trainer_state.json", (),
                         _critical_divergence_from(113, "masked NaN", "logging_nan_inf_filter")),
    "nan-grad-norm-synthetic": ("csv", "nan-grad-norm/synthetic.csv", (), _critical_divergence_from(210, "grad_norm")),
    "intermittent-nan": ("csv", "intermittent-nan/metrics.csv", (), _critical_divergence_from(6)),
    "intermittent-nan-no-trailing-nan": ("csv", "intermittent-nan/metrics_no_trailing_nan.csv", (),
                                         _critical_divergence_from(6)),
    "hf-multi-eval": ("hf", "hf-multi-eval/trainer_state.json", (), _overfitting_on("val_g0")),
}


@pytest.mark.parametrize("case_id", list(FIELD_CASES), ids=list(FIELD_CASES))
def test_field_case_gets_its_verdict(tmp_path, capsys, case_id):
    kind, path, extra, verdict = FIELD_CASES[case_id]
    source = tmp_path / "input" / Path(path).name
    source.parent.mkdir()
    source.write_bytes((CASES / path).read_bytes())  # the HF importer reads the folder beside the file
    store = tmp_path / "store"
    assert main(["import", kind, str(source), "--store", str(store), "--run", case_id, "--no-progress", *extra]) == 0
    capsys.readouterr()
    main(["diagnose", case_id, "--store", str(store), "--json", "--no-cache"])
    out = capsys.readouterr().out
    findings = json.loads(out)["runs"][0]["findings"]
    verdict(findings)


def test_without_a_task_kind_no_finding_calls_a_loss_level_poor(tmp_path, capsys):
    """Regression (#12): `diagnose` told a language-model fine-tune without a task that train and validation
    were "both poor": a token cross-entropy of 1.0 is not poor, and without a task no level is."""
    source = CASES / "lm-finetune-flat" / "metrics.csv"
    store = tmp_path / "store"
    assert main(["import", "csv", str(source), "--store", str(store), "--run", "lm", "--no-progress"]) == 0
    capsys.readouterr()
    main(["diagnose", "lm", "--store", str(store), "--no-cache"])
    assert "poor" not in capsys.readouterr().out
