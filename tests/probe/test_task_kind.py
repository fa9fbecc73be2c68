"""The probe records what a run's loss measures (run.json's task.kind): the rules that judge a loss level need it."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from traindoctor.probe import Probe  # noqa: E402
from tests.probe.conftest import read_run  # noqa: E402


@pytest.mark.parametrize(
    ("arguments", "task"),
    [({}, {"kind": "unknown"}),
     ({"num_classes": 4}, {"kind": "classification", "num_classes": 4}),
     ({"task": "language_modelling", "vocab_size": 50257}, {"kind": "language_modelling", "vocab_size": 50257}),
     ({"vocab_size": 32000}, {"kind": "language_modelling", "vocab_size": 32000}),
     ({"task": "regression"}, {"kind": "regression"}),
     ({"task": "classification"}, {"kind": "classification"})],
    ids=["nothing-said", "num-classes", "language-model", "vocab-size-alone", "regression", "classes-unknown"],
)
def test_run_json_records_the_task_kind(tmp_path, arguments, task):
    with Probe(run="r", store=tmp_path, **arguments):
        pass
    meta, _, _, _ = read_run(tmp_path)
    assert {key: value for key, value in meta["task"].items() if key in task} == task
    assert "expected_initial_loss" not in meta["task"] or arguments.get("num_classes")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"task": "segmentation"}, "task must be one of"),
     ({"task": "regression", "num_classes": 3}, "num_classes is for classification"),
     ({"num_classes": 3, "vocab_size": 100}, "vocab_size is for"),
     ({"task": "classification", "vocab_size": 100}, "vocab_size is for"),
     ({"vocab_size": 1}, "vocab_size must be an integer >= 2")],
    ids=["unknown-kind", "classes-of-a-regression", "classes-and-vocabulary", "vocabulary-of-a-classifier",
         "vocabulary-of-one"],
)
def test_a_contradictory_task_fails_before_any_run_folder(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        Probe(run="r", store=tmp_path, **arguments)
    assert list(tmp_path.iterdir()) == []
