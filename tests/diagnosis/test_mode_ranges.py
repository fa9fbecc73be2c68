"""Mode mistakes report every affected step range and how many steps (#17): a model.train()
forgotten for steps 44-430 reads "387 training steps ran in eval mode: steps 44–430"."""

from __future__ import annotations

import numpy as np
import pytest

from traindoctor.diagnosis import setup
from tests.diagnosis.factories import make_run, scalar_rows

EVAL, RESTORED, TRAIN_IN_EVAL = "eval_mode_during_training", "train_mode_restored", "train_mode_during_eval"


def _oracle_ranges(in_eval: np.ndarray) -> list[list[int]]:
    """Inclusive step ranges of a per-step boolean mask (steps from 1), computed the plain way."""
    ranges, start = [], None
    for step, flag in enumerate(in_eval, start=1):
        if flag and start is None:
            start = step
        if not flag and start is not None:
            ranges.append([start, step - 1])
            start = None
    if start is not None:
        ranges.append([start, len(in_eval)])
    return ranges


def _events_as_the_probe_writes_them(in_eval: np.ndarray) -> list[tuple[str, str, int]]:
    """One event at the first step of each stretch in eval mode, one at the first step back."""
    events, previous = [], False
    for step, flag in enumerate(in_eval, start=1):
        if flag != previous:
            events.append((EVAL if flag else RESTORED, "", step))
        previous = flag
    return events


@pytest.mark.parametrize("stretches, steps", [
    ([(44, 431)], 430),                           # model.train() forgotten from step 44 to the end
    ([(44, 200)], 600),                           # restored at step 200
    ([(10, 20), (110, 120), (210, 220)], 300),    # after each of three evaluations, for ten steps
    ([(1, 2)], 50),                               # the first step only
], ids=["forgotten-to-the-end", "restored", "three-stretches", "one-step"])
def test_eval_mode_ranges_match_a_per_step_oracle(stretches, steps):
    in_eval = np.zeros(steps, dtype=bool)
    for start, stop in stretches:
        in_eval[start - 1:stop - 1] = True
    run = make_run(loss=np.linspace(2, 1, steps), events=_events_as_the_probe_writes_them(in_eval))
    (found,) = setup.eval_mode_during_training(run)
    expected = _oracle_ranges(in_eval)
    assert found.evidence["ranges"] == expected
    assert found.evidence["steps"] == int(in_eval.sum())
    assert (found.step_start, found.step_end) == (expected[0][0], expected[-1][1])


def test_a_forgotten_model_train_reads_as_its_steps():
    run = make_run(loss=np.linspace(2, 1, 430), events=[(EVAL, "", 44)])
    (found,) = setup.eval_mode_during_training(run)
    assert "387 training steps ran in eval mode: steps 44–430." in found.message
    assert "time(s)" not in found.message


def test_many_stretches_are_listed_up_to_a_bound_then_counted():
    in_eval = np.zeros(1000, dtype=bool)
    for start in range(10, 1000, 50):  # 20 stretches of 5 steps
        in_eval[start - 1:start + 4] = True
    run = make_run(loss=np.ones(1000), events=_events_as_the_probe_writes_them(in_eval))
    (found,) = setup.eval_mode_during_training(run)
    assert "100 training steps ran in eval mode in 20 stretches: steps 10–14, 60–64" in found.message
    assert f"and {20 - setup.LISTED_RANGES} more ranges" in found.message
    assert len(found.evidence["ranges"]) == 20


@pytest.mark.parametrize("affected, expected_ranges, expected_text", [
    ([100, 200, 300, 400], [[100, 400]], "All 4 evaluation passes ran in train mode: steps 100–400."),
    ([100, 200, 500], [[100, 200], [500, 500]], "3 of 5 evaluation passes ran in train mode: steps 100–200, 500."),
    ([300], [[300, 300]], "1 of 5 evaluation passes ran in train mode: step 300."),
], ids=["every-pass", "two-ranges", "one-pass"])
def test_train_mode_during_eval_groups_consecutive_passes(affected, expected_ranges, expected_text):
    val = scalar_rows("loss", [1.0] * 5, steps=[100, 200, 300, 400, 500], split="val")
    if affected == [100, 200, 300, 400]:
        val = val[val["step"] <= 400]
    run = make_run(loss=np.ones(500), frames=[val], events=[(TRAIN_IN_EVAL, "", step) for step in affected])
    (found,) = setup.train_mode_during_eval(run)
    assert found.evidence["ranges"] == expected_ranges
    assert found.evidence["passes"] == len(affected)
    assert expected_text in found.message
    assert (found.step_start, found.step_end) == (expected_ranges[0][0], expected_ranges[-1][1])


def test_adam_hyperparameters_is_one_finding_for_every_param_group():
    lints = [("config_lint", {"rule": "adam_hyperparameters", "params": [],
                              "message": f"param group {group}: Adam beta2=0.999 on an attention model"}, None)
             for group in range(3)]
    lints.append(("config_lint", {"rule": "adam_hyperparameters", "params": [],
                                  "message": "param group 1: Adam eps=1e-08 under fp16"}, None))
    (found,) = setup.adam_hyperparameters(make_run(loss=[1.0], events=lints))
    assert found.message == ("param groups 0, 1, 2: Adam beta2=0.999 on an attention model; "
                             "param group 1: Adam eps=1e-08 under fp16")
