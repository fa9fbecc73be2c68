"""Kinds of false alarm fixed after the third real-log hold-out (2026-11-30), each on a small synthetic run.

Each test builds the kind and its faulty counterpart, so it fails if the rule
either warns on the healthy kind again or goes quiet on the fault
(docs/accuracy.md, "Kinds fixed after the third real-log hold-out").
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from traindoctor.diagnosis.generalisation import best_epoch_not_last, overfitting
from traindoctor.diagnosis.learning_rate import lr_too_high
from traindoctor.diagnosis.loss import bad_initial_loss
from tests.diagnosis.factories import make_run, noisy_decay, scalar_rows


def _severities(findings) -> list[str]:
    return [f.severity for f in findings]


# ------------------------------------------------------------------ bad_initial_loss: a pre-trained model


@pytest.mark.parametrize(
    ("model", "severity"),
    [({"type": "MT5ForConditionalGeneration", "name_or_path": "google/mt5-small"}, "info"),
     ({"type": "MT5ForConditionalGeneration"}, "warning"),
     (None, "warning")],
    ids=["loaded-from-a-checkpoint-is-info", "no-checkpoint-named-warns", "probe-run-warns"],
)
def test_bad_initial_loss_of_a_model_loaded_from_a_checkpoint_is_info(model, severity):
    """A language model whose first loss is 2x ln V (vocabulary 1000): a fresh model should start at ln V,
    a pre-trained one starts wherever its pre-training left it."""
    loss = 2 * math.log(1000) * np.exp(-np.arange(200) / 40) + 1.0
    env = {"model": model} if model is not None else None
    run = make_run(loss=loss, task={"kind": "language_modelling", "vocab_size": 1000}, env=env)
    [found] = bad_initial_loss(run)
    assert found.severity == severity
    assert ("google/mt5-small" in found.message) is (severity == "info")


def test_a_users_expected_initial_loss_still_warns_for_a_loaded_model():
    run = make_run(loss=[9.0] + [1.0] * 99, task={"expected_initial_loss": 3.0},
                   env={"model": {"name_or_path": "bert-base-uncased"}})
    assert _severities(bad_initial_loss(run)) == ["warning"]


@pytest.mark.parametrize(("origin", "recorded"), [("google/mt5-small", "google/mt5-small"), ("", None), (None, None)],
                         ids=["named", "empty-from-config", "absent"])
def test_the_hf_importer_records_the_checkpoint_config_json_names(tmp_path, origin, recorded):
    from traindoctor.cli import main
    from traindoctor.store.reader import Store

    folder = tmp_path / "run"
    folder.mkdir()
    history = [{"step": step, "epoch": step / 100, "loss": 20.0 / step ** 0.3, "learning_rate": 1e-4}
               for step in range(10, 210, 10)]
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": history, "global_step": 200}))
    config = {"architectures": ["MT5ForConditionalGeneration"], "model_type": "mt5", "vocab_size": 250112}
    if origin is not None:
        config["_name_or_path"] = origin
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["import", "hf", str(folder / "trainer_state.json"), "--store", str(tmp_path / "store"),
                 "--no-progress", "--no-diagnose"]) == 0
    store = Store(tmp_path / "store")
    [meta] = [store.run_meta(run_id) for run_id in store.runs()["run_id"]]
    assert meta["env"]["model"].get("name_or_path") == recorded


# ------------------------------------------------------------------ overfitting: the loss/metric divergence


def _fine_tuning(metric: str, values: list[float]):
    """5 evals every 100 steps; the val loss rises 0.31 -> 0.47 (+50 %) while the training loss falls."""
    steps = [100, 200, 300, 400, 500]
    frames = [scalar_rows("loss", [0.31, 0.36, 0.42, 0.45, 0.47], steps=steps, split="val"),
              scalar_rows(metric, values, steps=steps, split="val")]
    return make_run(loss=noisy_decay(500, start=1.5, end=0.01, noise=0.02), frames=frames)


@pytest.mark.parametrize(
    ("metric", "values", "severity"),
    [("wer", [34.6, 33.1, 32.6, 32.0, 31.8], "info"),
     ("wer", [34.6, 33.1, 32.6, 33.4, 34.0], "warning"),
     ("wer", [34.6, 34.6, 34.6, 34.6, 34.6], "warning"),
     ("accuracy", [0.80, 0.82, 0.83, 0.84, 0.85], "info"),
     ("accuracy", [0.80, 0.82, 0.78, 0.74, 0.70], "warning"),
     ("runtime", [10.0, 9.0, 8.0, 7.0, 6.0], "warning")],
    ids=["wer-still-falling-is-info", "wer-worsening-warns", "wer-stalled-warns", "accuracy-still-rising-is-info",
         "accuracy-falling-warns", "not-a-task-metric-warns"],
)
def test_val_loss_rising_while_the_task_metric_improves_is_info(metric, values, severity):
    run = _fine_tuning(metric, values)
    found = overfitting(run) + best_epoch_not_last(run)
    assert [f.rule for f in found] == ["overfitting", "best_epoch_not_last"]
    assert _severities(found) == [severity, severity]
    if severity == "info":
        assert f"eval_{metric} still improves: choose checkpoints by {metric}" in found[0].advice


# ------------------------------------------------------------------ lr_too_high: validation-only swings


def _swinging(train_loss: np.ndarray):
    """40 evals (one per 10 steps); in the second half the val loss jumps 2x above its best every 4th eval and
    comes back, ending 2x above it."""
    rng = np.random.default_rng(0)
    val = 10.0 + 8.0 * np.exp(-np.arange(40) / 6) + rng.normal(0, 0.2, 40)
    val[[22, 26, 30, 34, 39]] *= 2.0
    steps = np.arange(10, 410, 10)
    frames = [scalar_rows("loss", val, steps=steps, split="val"),
              scalar_rows("lr", np.full(400, 1e-3), layer="group0")]
    return make_run(loss=train_loss, frames=frames, task={"kind": "regression"})


def test_validation_swings_with_a_smoothly_falling_training_loss_are_info():
    [found] = lr_too_high(_swinging(noisy_decay(400, start=145, end=3.9, noise=0.05)))
    assert (found.severity, found.evidence["kind"]) == ("info", "swings")
    assert found.evidence["train_jump"] < 1.5


def test_validation_swings_the_training_loss_shares_warn():
    train = noisy_decay(400, start=145, end=3.9, noise=0.05)
    for swing in (22, 26, 30, 34, 39):  # the training records of each swing's interval jump 3x too
        train[swing * 10:swing * 10 + 10] *= 3.0
    [found] = lr_too_high(_swinging(train))
    assert (found.severity, found.evidence["kind"]) == ("warning", "swings")
    assert found.evidence["train_jump"] >= 1.5


@pytest.mark.parametrize(("counted", "severity"), [(False, "info"), (True, "warning")],
                         ids=["no-count-a-creep-is-improvement", "creep-within-binomial-noise-is-a-stall"])
def test_an_accuracy_creeping_within_its_noise_is_a_stall(counted, severity):
    """Accuracy 0.80 -> 0.806 over the rise: with 500 counted examples (a confusion matrix) two standard errors
    are 0.036, so the creep is a stall and the rising loss is overfitting."""
    from tests.diagnosis.factories import confusion_frame

    run = _fine_tuning("accuracy", [0.800, 0.801, 0.803, 0.804, 0.806])
    if counted:
        run = make_run(loss=run.series("loss"), frames=[run.scalars[run.scalars["split"] == "val"]],
                       confusion=confusion_frame(np.array([[200, 50], [47, 203]]), step=500))
    assert _severities(overfitting(run)) == [severity]


# ------------------------------------------------------------------ divergence: a blow-up at the last record


@pytest.mark.parametrize(("val_last", "severity"), [(1.9e7, "critical"), (2.9, None), (None, None)],
                         ids=["validation-blew-up-too", "validation-fine", "no-validation"])
def test_a_blow_up_at_the_last_record_is_a_divergence_when_the_evaluation_blew_up_with_it(val_last, severity):
    """LadderNet (juntang-zhuang/LadderNet#1, a wrong lr): five epochs, the training loss 0.16 -> 1.6e18 at the
    last, the validation loss 3.0 -> 1.9e7 with it. One exploded last record alone may be a spike (nothing
    after it shows whether it stayed up); the evaluation four orders of magnitude up at once is the weights."""
    from traindoctor.diagnosis.loss import divergence

    train = [0.35, 0.22, 0.175, 0.16, 1.6e18]
    frames = []
    if val_last is not None:
        frames.append(scalar_rows("loss", [5.1, 3.3, 3.2, 3.05, val_last], split="val"))
    run = make_run(loss=train, frames=frames)
    found = [f for f in divergence(run) if f.severity in ("critical", "warning")]
    assert [f.severity for f in found] == ([severity] if severity else [])
    if severity:
        assert found[0].step_start == 5 and "validation loss blew up with it" in found[0].message


def test_a_sparse_logs_single_batch_losses_are_not_read_as_the_training_loss_swinging():
    """heldout16's blob-counting DenseNet logged one step's loss every 8 steps and evaluated every 12: one
    single-batch value per evaluation, and a typical one stood 2.6x above the lowest of twenty, so its noisy
    validation swings were called an lr too high (warning). The training level at an evaluation is now the
    median of its last 5 single-step records; a real jump of the training loss still warns."""
    rng = np.random.default_rng(3)
    steps = np.arange(8, 408, 8)
    train = 4.0 * np.exp(-steps / 30) + 1.0 + np.abs(rng.normal(0, 0.6, len(steps)))  # single batches, noisy
    run = _swinging(np.zeros(1))
    run = make_run(frames=[scalar_rows("loss", train, steps=steps)] + [
        scalar_rows("loss", run.series("loss", "val").to_numpy(), steps=np.arange(10, 410, 10), split="val"),
        scalar_rows("lr", np.full(400, 1e-3), layer="group0")], task={"kind": "regression"})
    [found] = lr_too_high(run)
    assert (found.severity, found.evidence["kind"]) == ("info", "swings")
    jumped = train.copy()
    jumped[steps > 215] *= 3.0  # the training loss climbs with the swings
    run = make_run(frames=[scalar_rows("loss", jumped, steps=steps)] + [
        scalar_rows("loss", _swinging(np.zeros(1)).series("loss", "val").to_numpy(), steps=np.arange(10, 410, 10),
                    split="val"), scalar_rows("lr", np.full(400, 1e-3), layer="group0")], task={"kind": "regression"})
    assert [f.severity for f in lr_too_high(run) if f.evidence["kind"] == "swings"] == ["warning"]


# heldout16's count_healthy_adamw_wsd_every_8: its validation loss at each of its 20 evaluations (every 12 steps).
NOISY_DENSENET_VAL = [0.491, 0.176, 0.106, 0.088, 0.071, 0.075, 0.069, 0.068, 0.072, 0.094, 0.059, 0.065, 0.055,
                      0.115, 0.075, 0.075, 0.055, 0.097, 0.21, 0.067]


def test_one_outlier_at_the_last_eval_of_a_long_noisy_curve_is_not_the_end_level():
    """heldout16's healthy blob-counting DenseNet ended 0.21, 0.067 after a best of 0.055: the centred median of
    3, cut to the last two evals, is their mean (0.139), and the run was warned best-epoch-not-last. On a curve
    of >= 10 evals the end level is the median of the last 3 (0.097): no warning. A short curve (the public
    Whisper logs, 4-6 evals) keeps the cut window, whose last 3 evals would reach back to the best."""
    from traindoctor.diagnosis.generalisation import _smooth_evals
    from traindoctor.store.frames import Curve

    steps = 12 * np.arange(1, 21)
    run = make_run(loss=noisy_decay(240, start=0.7, end=0.05),
                   frames=[scalar_rows("loss", NOISY_DENSENET_VAL, steps=steps, split="val")],
                   task={"kind": "regression"})
    assert [f.severity for f in best_epoch_not_last(run) if f.severity != "info"] == []
    long_curve = _smooth_evals(Curve(np.array(NOISY_DENSENET_VAL), steps))
    assert long_curve[-1] == pytest.approx(0.097) and long_curve[0] == pytest.approx(0.176)
    short = np.array(NOISY_DENSENET_VAL[-5:])
    short_curve = _smooth_evals(Curve(short, steps[-5:]))
    assert short_curve[-1] == pytest.approx((0.21 + 0.067) / 2) and short_curve[0] == pytest.approx((0.075 + 0.055) / 2)
