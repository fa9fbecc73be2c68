"""Importers record what a run's loss measures (run.json's task), as the probe does (#12): from an HF config.json,
a Lightning hparams.yaml or ``--task``; and a run without a task never has its loss level judged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from traindoctor.cli import main
from traindoctor.store.importers import import_source
from traindoctor.store.reader import Store

# The loss-level rules: they need a scale (ln C, the expected first loss) to call a level high or poor.
LOSS_LEVEL_RULES = {"underfitting", "bad_initial_loss"}


def _hf_run(folder: Path, model_config: dict | None) -> Path:
    folder.mkdir(parents=True)
    history = [{"step": step, "epoch": step / 40, "loss": 2.0 / step ** 0.3, "learning_rate": 1e-4} for step in
               range(10, 41, 10)]
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": history, "global_step": 40}))
    if model_config is not None:
        (folder / "config.json").write_text(json.dumps(model_config))
    return folder


def _lightning_run(folder: Path, hparams: str | None) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("epoch,step,train_loss,val_loss\n0,9,1.5,\n0,9,,1.4\n1,19,1.1,\n1,19,,1.2\n")
    if hparams is not None:
        (folder / "hparams.yaml").write_text(hparams)
    return folder


def _task(store_root: Path, run_id: str) -> dict:
    return Store(store_root).run_meta(run_id)["task"]


@pytest.mark.parametrize(
    ("model_config", "task"),
    [({"architectures": ["LlamaForCausalLM"], "vocab_size": 32000},
      {"kind": "language_modelling", "vocab_size": 32000}),
     ({"architectures": ["GPT2LMHeadModel"], "vocab_size": 50257}, {"kind": "language_modelling", "vocab_size": 50257}),
     ({"architectures": ["BertForMaskedLM"], "vocab_size": 30522}, {"kind": "language_modelling", "vocab_size": 30522}),
     ({"architectures": ["DistilBertForSequenceClassification"], "vocab_size": 30522,
       "id2label": {"0": "neg", "1": "neu", "2": "pos"}},
      {"kind": "classification", "num_classes": 3, "class_names": ["neg", "neu", "pos"]}),
     ({"architectures": ["ViTForImageClassification"], "id2label": {"0": "a", "1": "b"}},
      {"kind": "classification", "num_classes": 2, "class_names": ["a", "b"]}),
     ({"architectures": ["BertForSequenceClassification"], "problem_type": "regression", "id2label": {"0": "LABEL_0"}},
      {"kind": "regression"}),
     ({"architectures": ["BertForSequenceClassification"], "id2label": {"0": "LABEL_0"}}, {"kind": "regression"}),
     ({"architectures": ["BertForSequenceClassification"], "problem_type": "multi_label_classification",
       "id2label": {"0": "a", "1": "b", "2": "c"}}, {"kind": "unknown"}),
     ({"architectures": ["BertModel"], "vocab_size": 30522}, {}),
     (None, {})],
    ids=["causal-lm", "lm-head-model", "masked-lm", "sequence-classifier", "image-classifier", "problem-type-regression",
         "one-label-is-regression", "multi-label-has-no-ln-c", "bare-encoder", "no-config"],
)
def test_hf_config_json_gives_the_task(tmp_path, model_config, task):
    [result] = import_source("hf", tmp_path / "store", _hf_run(tmp_path / "out", model_config))
    assert _task(tmp_path / "store", result.run_id) == task


@pytest.mark.parametrize(
    ("hparams", "task"),
    [("num_classes: 10\nlr: 0.01\n", {"kind": "classification", "num_classes": 10}),
     ("model:\n  num_labels: 4\n  vocab_size: 30522\n", {"kind": "classification", "num_classes": 4}),
     ("vocab_size: 50258\nd_model: 492\n", {"kind": "language_modelling", "vocab_size": 50258}),
     ("lr: 0.01\nnum_classes: 1\n", {}),
     (None, {})],
    ids=["num-classes", "nested-text-classifier", "vocab-size", "one-class-is-no-count", "no-hparams"],
)
def test_lightning_hparams_give_the_task(tmp_path, hparams, task):
    [result] = import_source("lightning", tmp_path / "store", _lightning_run(tmp_path / "version_0", hparams))
    assert _task(tmp_path / "store", result.run_id) == task


@pytest.mark.parametrize(
    ("arguments", "task"),
    [(("--task", "lm:50257"), {"kind": "language_modelling", "vocab_size": 50257}),
     (("--task", "classification:10"), {"kind": "classification", "num_classes": 10}),
     (("--task", "regression"), {"kind": "regression"}),
     (("--task", "unknown"), {"kind": "unknown"}),
     (("--num-classes", "5"), {"kind": "classification", "num_classes": 5}),
     (("--num-classes", "5", "--task", "classification:5"), {"kind": "classification", "num_classes": 5})],
    ids=["lm", "classification", "regression", "unknown", "num-classes", "both-agree"],
)
def test_task_option_overrides_the_source(tmp_path, capsys, arguments, task):
    source = _hf_run(tmp_path / "out", {"architectures": ["BertForSequenceClassification"],
                                        "id2label": {"0": "a", "1": "b", "2": "c"}})
    assert main(["import", "hf", str(source), "--store", str(tmp_path / "store"), "--run", "r", "--no-progress",
                 "--no-diagnose", *arguments]) == 0
    [run_id] = [folder.name for folder in (tmp_path / "store").iterdir() if not folder.name.startswith(".")]
    assert _task(tmp_path / "store", run_id) == task


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(("--task", "segmentation"), "use classification[:C], lm[:V], regression or unknown"),
     (("--task", "regression:3"), "only classification:C and lm:V take a size"),
     (("--task", "lm:1"), "vocabulary size must be a whole number >= 2"),
     (("--task", "classification:ten"), "class count must be a whole number >= 2"),
     (("--task", "lm:50257", "--num-classes", "10"), "contradicts --task"),
     (("--task", "classification:3", "--num-classes", "10"), "contradicts --task")],
    ids=["unknown-kind", "size-of-a-regression", "vocabulary-of-one", "count-not-a-number", "lm-with-classes",
         "two-counts"],
)
def test_a_bad_task_is_a_one_line_error_and_no_run(tmp_path, capsys, arguments, message):
    source = _hf_run(tmp_path / "out", None)
    assert main(["import", "hf", str(source), "--store", str(tmp_path / "store"), "--no-progress", *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error
    assert not (tmp_path / "store").exists() or not [p for p in (tmp_path / "store").iterdir()
                                                     if not p.name.startswith(".")]


def _flat_high_loss_csv(path: Path) -> Path:
    """A run whose loss settles at 2.0 with validation close to it: poor for a 10-class classifier (ln 10 = 2.3),
    unremarkable for a language model, meaningless without a task."""
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "split", "name", "value"])
        for step in range(1, 2001):
            writer.writerow([step, "train", "loss", 2.0 + 0.25 * np.exp(-step / 150) + 0.03 * rng.standard_normal()])
            writer.writerow([step, "train", "lr", 0.01])
            if step % 200 == 0:
                writer.writerow([step, "val", "loss", 2.02 + 0.01 * rng.standard_normal()])
    return path


@pytest.mark.parametrize(
    ("arguments", "judged"),
    [((), False), (("--task", "unknown"), False), (("--task", "lm:50257"), False),
     (("--task", "regression"), "info"), (("--task", "classification:10"), True)],
    ids=["no-task", "unknown", "language-model", "regression", "ten-classes"],
)
def test_only_a_known_scale_lets_a_rule_call_the_loss_level_poor(tmp_path, capsys, arguments, judged):
    """#12 Must hold: ``traindoctor diagnose`` on a run without a task kind never claims a loss level is poor. The
    same curve with ten classes is judged (underfitting), so the quiet cases are quiet for the task, not the curve.
    A regression plateau is a hint (951b46d) that says its level cannot be judged: its loss has the targets' units."""
    source = _flat_high_loss_csv(tmp_path / "flat.csv")
    store = str(tmp_path / "store")
    assert main(["import", "csv", str(source), "--store", store, "--run", "flat", "--no-progress", *arguments]) == 0
    capsys.readouterr()
    main(["diagnose", "flat", "--store", store, "--json", "--no-cache"])
    findings = json.loads(capsys.readouterr().out)["runs"][0]["findings"]
    level = [f for f in findings if f["rule"] in LOSS_LEVEL_RULES]
    if judged == "info":
        assert [(f["rule"], f["severity"]) for f in level] == [("underfitting", "info")], findings
        assert "cannot say whether that level is high" in level[0]["message"]
    else:
        assert bool(level) == judged, findings
    main(["diagnose", "flat", "--store", store, "--no-cache"])
    assert ("poor" in capsys.readouterr().out.lower()) <= (judged is True)
