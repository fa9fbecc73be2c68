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
- ``train_longer``: for regression (the loss is the task's measure) a
  val gain >= 10 % over the last third is that much better a model.
- ``underfitting``: a regression run whose training and validation loss
  are flat together is info (no level can be called poor); one whose
  training loss keeps falling below the validation loss is not.
"""

from __future__ import annotations

import math

import numpy as np

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
