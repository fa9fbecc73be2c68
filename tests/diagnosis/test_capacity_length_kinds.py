"""Kinds of miss of the capacity and length rules (issue #12), each pinned by a small run built here.

Each kind found on the corpus's leave-one-family-out list has a run of
that shape that the rule must now find, and a healthy counterpart that
it must still leave alone:

- ``train_longer``: the shares of the total improvement are swamped by
  the first fast drop, so a classifier stopped while still far from
  fitting (loss >= 30 % of ln C) was passed over; a fitted classifier
  whose val loss keeps falling as its confidence sharpens must not be.
- ``train_longer``: per-epoch means of a short run (2 training records)
  were never judged.
- ``train_longer``: windowed means of a short run of another task (a
  language model, an encoder of no known task: 4-6 training records) were
  only judged by the classifier's level test, so never; the share test now
  runs on the last third of each curve's records.
- ``train_longer``: for regression (the loss is the task's measure) a
  val gain >= 10 % over the last third is that much better a model.
- ``underfitting``: a regression run whose training and validation loss
  are flat together is info (no level can be called poor); one whose
  training loss keeps falling below the validation loss is not.
- ``underfitting`` (false alarm): a short run stopped while its val loss
  still sets a new best at every eval was told "more capacity" (its
  per-batch training loss looked flat); it is train_longer's. The same run
  with a val loss that flattened still is underfitting. With 3 evals (one
  an epoch) each must improve on the one before.
- ``underfitting`` (false alarm): a classifier below 0.9 training accuracy
  whose loss is under 30 % of ln C fits by the loss measure (overlapping
  classes); one at the same accuracy with a high loss still underfits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from traindoctor.diagnosis.generalisation import train_longer, underfitting
from traindoctor.store.frames import Table
from tests.diagnosis.factories import make_run, scalar_rows


def _rules(findings) -> list[tuple[str, str]]:
    return [(f.rule, f.severity) for f in findings]


def _two_speed(n: int, start: float, knee: float, end: float, seed: int, noise: float = 0.004) -> np.ndarray:
    """A fast drop from ``start`` to about ``knee`` in the first fifth, then a slow steady fall to ``end``."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, n)
    fast = (start - knee) * np.exp(-x / 0.07)
    slow = knee + (end - knee) * (1 - np.exp(-x / 0.9)) / (1 - np.exp(-1 / 0.9))
    return (fast + slow) * (1 + noise * rng.standard_normal(n))


def _classifier(train_end: float, val_end: float, classes: int = 6):
    """A classifier with a constant lr: 260 steps logged every 10, 16 evaluations; both curves fall fast from
    ln C and then slowly, still falling at the end."""
    start = math.log(classes)
    steps = np.arange(10, 270, 10)
    eval_steps = np.arange(16, 272, 16)
    train = _two_speed(len(steps), start, train_end * 1.25, train_end, seed=1)
    val = _two_speed(len(eval_steps), start, val_end * 1.25, val_end, seed=2, noise=0.0)
    return make_run(frames=[scalar_rows("loss", train, steps),
                            scalar_rows("loss", val, eval_steps, split="val"),
                            scalar_rows("lr", np.full(len(steps), 2e-4), steps, layer="group0")],
                    task={"num_classes": classes})


def test_a_classifier_stopped_far_from_fitting_is_told_to_train_longer_whatever_its_share():
    run = _classifier(train_end=1.15, val_end=1.15)
    found = train_longer(run)
    assert _rules(found) == [("train_longer", "info")]
    evidence = found[0].evidence
    # The old test alone would pass it over: small shares, a modest gain.
    assert evidence["val_share_last_third"] < 0.10 and evidence["train_share_last_quarter"] < 0.15
    assert evidence["share_of_reference_loss"] >= 0.30


def test_a_fitted_classifier_whose_val_loss_still_sharpens_is_not_told_to_train_longer():
    """The same shape near a fit (the loss at 13 % of ln 6): the falling val loss is confidence, not learning."""
    run = _classifier(train_end=0.23, val_end=0.23)
    assert train_longer(run) == []


def _per_epoch(train: list[float], val: list[float], classes: int = 5):
    """Two epochs logged as epoch means (2 training records), 4 evaluations an epoch."""
    epoch_steps = [165, 330]
    eval_steps = np.linspace(41, 330, len(val)).astype(int)
    return make_run(frames=[scalar_rows("loss", train, epoch_steps, epochs=[1, 2]),
                            scalar_rows("loss", val, eval_steps, split="val")],
                    task={"num_classes": classes})


def test_two_epoch_means_of_a_classifier_far_from_fitting_are_judged():
    run = _per_epoch([1.06, 0.73], [1.14, 0.91, 0.81, 0.73, 0.70, 0.67, 0.65, 0.63])
    assert _rules(train_longer(run)) == [("train_longer", "info")]


def test_two_epoch_means_of_a_fitted_classifier_are_not_told_to_train_longer():
    assert train_longer(_per_epoch([0.35, 0.20], [0.40, 0.31, 0.27, 0.25, 0.24, 0.23, 0.225, 0.22])) == []
    # Nor one whose training loss rose at its last record.
    assert train_longer(_per_epoch([0.73, 0.76], [1.14, 0.91, 0.81, 0.73, 0.70, 0.66, 0.64, 0.63])) == []


def _windowed_lm(train: list[float], val: list[float], kind: str = "language_modelling"):
    """A language model (V = 24) logged as 20-step window means, evaluated every 20 steps."""
    steps = np.arange(20, 20 * len(train) + 1, 20)
    eval_steps = np.arange(20, 20 * len(val) + 1, 20)
    task = {"kind": kind, "vocab_size": 24} if kind == "language_modelling" else {"kind": kind}
    return make_run(frames=[scalar_rows("loss", train, steps), scalar_rows("loss", val, eval_steps, split="val")],
                    task=task)


# Stopped after 120 of 450 steps: both curves still fall a real share of their total over their last third.
STOPPED_TRAIN = [2.89, 2.63, 2.57, 2.49, 2.46, 2.40]
STOPPED_VAL = [2.68, 2.59, 2.53, 2.48, 2.43, 2.39]


@pytest.mark.parametrize("kind", ["language_modelling", "unknown"])
def test_a_short_windowed_log_of_another_task_stopped_while_improving_is_told_to_train_longer(kind):
    found = train_longer(_windowed_lm(STOPPED_TRAIN, STOPPED_VAL, kind))
    assert _rules(found) == [("train_longer", "info")]
    assert found[0].evidence["train_records"] == 6
    assert found[0].evidence["val_share_last_third"] >= 0.10


def test_a_short_windowed_log_that_flattened_or_whose_training_loss_rose_is_not():
    flat_val = [2.68, 2.45, 2.42, 2.41, 2.405, 2.40]  # the last third brings 2 % of the val gain
    assert train_longer(_windowed_lm(STOPPED_TRAIN, flat_val)) == []
    rose = STOPPED_TRAIN[:-1] + [2.47]  # the training loss not at its lowest at its last record
    assert train_longer(_windowed_lm(rose, STOPPED_VAL)) == []


def _regression(kind: str, val_tail: float):
    """A regression-shaped run stopped early: the val loss falls fast, then ``val_tail`` over its last third."""
    steps = np.arange(4, 124, 4)
    eval_steps = np.arange(10, 130, 10)
    train = _two_speed(len(steps), 0.21, 0.09, 0.045, seed=3)
    val = _two_speed(len(eval_steps), 0.21, 0.09, 0.046, seed=4, noise=0.0)
    val[-4:] = val[-4] * (1 - val_tail * np.linspace(0, 1, 4))
    task = {"kind": kind} if kind != "classification" else {"num_classes": 10}
    return make_run(frames=[scalar_rows("loss", train, steps), scalar_rows("loss", val, eval_steps, split="val")],
                    task=task)


def test_a_regression_loss_still_falling_fast_at_the_end_is_told_to_train_longer():
    found = train_longer(_regression("regression", 0.15))
    assert _rules(found) == [("train_longer", "info")]
    assert found[0].evidence["train_share_last_quarter"] < 0.15  # the share test alone would pass it over


def test_the_same_curve_of_a_fitted_classifier_or_an_unknown_task_is_not():
    """A classifier at 2 % of ln 10 is sharpening its confidence; an unknown loss has no measure."""
    assert train_longer(_regression("classification", 0.15)) == []
    assert train_longer(_regression("unknown", 0.15)) == []


def test_an_annealed_schedule_is_never_told_to_train_longer():
    """Cosine to zero: the tail improves because the lr anneals, as planned."""
    run = _classifier(train_end=1.15, val_end=1.15)
    steps = np.arange(10, 270, 10)
    lr = 1e-3 * 0.5 * (1 + np.cos(np.pi * (steps - 10) / (steps[-1] - 10)))
    scalars = run.scalars
    value = np.array(scalars["value"], dtype="float64")
    value[np.asarray(scalars["name"] == "lr", dtype=bool)] = lr
    run.scalars = Table({**{name: scalars[name] for name in scalars.columns}, "value": value})
    assert train_longer(run) == []


def _plateau(kind: str, train_end: float, seed: int = 5):
    """400 steps: the loss falls from 0.33 to about 0.074 in the first 50, then stays; validation every 10
    steps at 0.0725; a warm-up-stable-decay lr (decay over the last 18 %) that lowers nothing.
    ``train_end`` < 0.074 makes the training loss keep falling below the validation loss instead."""
    rng = np.random.default_rng(seed)
    steps = np.arange(4, 1604, 4)
    x = np.linspace(0, 1, len(steps))
    plateau = 0.074 + (train_end - 0.074) * x
    train = (plateau + (0.33 - 0.074) * np.exp(-x / 0.02)) * (1 + 0.01 * rng.standard_normal(len(steps)))
    eval_steps = np.arange(40, 1640, 40)
    ex = np.linspace(0, 1, len(eval_steps))
    val = 0.0725 + (0.51 - 0.0725) * np.exp(-ex / 0.04)
    lr = np.where(steps < 1316, 3e-3, 3e-3 * np.clip((1600 - steps) / 284, 0.003, 1))
    lr[:20] = 3e-3 * np.arange(1, 21) / 20
    task = {"kind": kind} if kind != "classification" else {"num_classes": 10}
    return make_run(frames=[scalar_rows("loss", train, steps), scalar_rows("loss", val, eval_steps, split="val"),
                            scalar_rows("lr", lr, steps, layer="group0")], task=task)


def test_a_regression_run_flat_with_its_validation_loss_is_info_underfitting():
    found = underfitting(_plateau("regression", 0.074))
    assert _rules(found) == [("underfitting", "info")]
    assert "cannot say whether that level is high" in found[0].message and "poor" not in found[0].message


def test_a_regression_run_that_keeps_fitting_its_training_data_is_no_underfitting():
    assert underfitting(_plateau("regression", 0.02)) == []


def test_language_models_and_unknown_tasks_are_never_underfitting():
    for kind in ("language_modelling", "unknown"):
        assert underfitting(_plateau(kind, 0.074)) == []


def _stopped_early(val_tail: float, seed: int = 7):
    """A 6-class classifier stopped after 200 steps (per-batch loss every 5 steps, noisy; training accuracy
    about 0.6; 8 evaluations): the training loss falls fast from ln 6 to about 1.04, then slowly to 0.94,
    under its minibatch noise. The val loss follows it down and ends at 0.96; ``val_tail`` is its gain over
    the last eval (0: it flattened at its last evals)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(5, 205, 5)
    eval_steps = np.arange(25, 225, 25)
    train = _two_speed(len(steps), math.log(6), 1.04, 0.94, seed=seed, noise=0.06)
    val = _two_speed(len(eval_steps), math.log(6), 1.2, 0.96, seed=seed + 1, noise=0.0)
    if not val_tail:
        val[-3:] = val[-3]
    accuracy = np.clip(0.45 + 0.2 * np.linspace(0, 1, len(steps)) + 0.08 * rng.standard_normal(len(steps)), 0, 1)
    return make_run(frames=[scalar_rows("loss", train, steps), scalar_rows("accuracy", accuracy, steps),
                            scalar_rows("loss", val, eval_steps, split="val"),
                            scalar_rows("lr", np.full(len(steps), 1e-3), steps, layer="group0")],
                    task={"num_classes": 6})


def test_a_short_run_stopped_while_its_val_loss_still_improves_is_train_longer_not_underfitting():
    """Its per-batch training loss looks flat (< 5 % over the last quarter, < 10 % of the total drop) and its
    accuracy is 0.6, so underfitting warned 'more capacity'; the val loss sets a new best at every eval
    (seed 004's rule 1: too few epochs), and train_longer says so."""
    run = _stopped_early(val_tail=0.02)
    assert underfitting(run) == []
    assert _rules(train_longer(run)) == [("train_longer", "info")]


def test_the_same_run_whose_val_loss_flattened_is_still_underfitting():
    assert _rules(underfitting(_stopped_early(val_tail=0.0))) == [("underfitting", "info")]


def _data_limited(train_level: float, seed: int = 9):
    """A 3-class classifier at a constant lr, 400 steps logged every 5: the loss falls from ln 3 to
    ``train_level`` in the first 40 steps and stays; training accuracy about 0.88 (overlapping classes);
    20 evaluations at 1.04 × that level, validation accuracy 0.89."""
    rng = np.random.default_rng(seed)
    steps = np.arange(5, 405, 5)
    x = np.linspace(0, 1, len(steps))
    train = train_level + (math.log(3) - train_level) * np.exp(-x / 0.05)
    train = train * (1 + 0.03 * rng.standard_normal(len(steps)))
    accuracy = np.clip(0.88 + 0.03 * rng.standard_normal(len(steps)), 0, 1)
    eval_steps = np.arange(20, 420, 20)
    return make_run(frames=[scalar_rows("loss", train, steps), scalar_rows("accuracy", accuracy, steps),
                            scalar_rows("loss", np.full(len(eval_steps), 1.04 * train_level), eval_steps, split="val"),
                            scalar_rows("accuracy", np.full(len(eval_steps), 0.89), eval_steps, split="val"),
                            scalar_rows("lr", np.full(len(steps), 1e-2), steps, layer="group0")],
                    task={"num_classes": 3})


def test_a_classifier_below_0_9_accuracy_whose_loss_says_it_fits_is_no_underfitting():
    """0.88 accuracy at 23 % of ln 3 (long_healthy_sgd_constant_20k retrained with seed 13): the model puts
    most of its probability on the right class; the accuracy is the overlapping classes' limit."""
    assert underfitting(_data_limited(0.25)) == []


def test_a_classifier_below_0_9_accuracy_with_a_high_loss_is_underfitting():
    """The same accuracy at 36 % of ln 3, as a linear model on two moons (underfitting_moons_linear)."""
    assert _rules(underfitting(_data_limited(0.40))) == [("underfitting", "info")]


def _three_epochs(val: list[float]):
    """A 6-class classifier trained 3 epochs of 100 steps (per-batch loss every 10 steps, looking flat under
    its noise after the first drop; training accuracy about 0.55), evaluated once an epoch."""
    rng = np.random.default_rng(3)
    steps = np.arange(10, 310, 10)
    train = _two_speed(len(steps), math.log(6), 1.04, 0.94, seed=3, noise=0.06)
    accuracy = np.clip(0.5 + 0.1 * np.linspace(0, 1, len(steps)) + 0.08 * rng.standard_normal(len(steps)), 0, 1)
    return make_run(frames=[scalar_rows("loss", train, steps), scalar_rows("accuracy", accuracy, steps),
                            scalar_rows("loss", val, [100, 200, 300], split="val", epochs=[1, 2, 3]),
                            scalar_rows("lr", np.full(len(steps), 1e-3), steps, layer="group0")],
                    task={"num_classes": 6})


@pytest.mark.parametrize("val, expected", [
    ([1.10, 1.02, 0.98], []),  # better at every eval, 3.9 % at the last: stopped early
    ([1.00, 0.98, 0.985], [("underfitting", "info")]),  # worse at the last eval: a plateau
    ([1.10, 1.00, 0.995], [("underfitting", "info")]),  # 0.5 % at the last: too little to call improving
], ids=["improving-at-every-eval", "last-eval-worse", "last-gain-below-2-percent"])
def test_three_evals_of_a_short_run_still_improving_are_no_underfitting(val, expected):
    """With 3 evals no eval noise can be measured; each must improve on the one before, the last by >= 2 %."""
    assert _rules(underfitting(_three_epochs(val))) == expected
