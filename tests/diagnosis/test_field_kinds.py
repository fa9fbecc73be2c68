"""The kinds of fault behind the field cases (issue #12), on constructed runs of other shapes than the cases.

Each section holds one kind: the rules must know where logging started and
what a record stands for, what the task's loss scale is, that a NaN
anywhere starts a divergence, that each eval set is judged, what a schedule's
tail means, what a real loss spike is, and that causes come first.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from traindoctor.diagnosis import diagnose
from traindoctor.diagnosis.common import task_of
from traindoctor.diagnosis.engine import MAX_INFO_PER_RULE, cap_info, causes_first, sort_findings
from traindoctor.diagnosis.verdict import verdict
from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.generalisation import best_epoch_not_last, overfitting, train_longer, underfitting
from traindoctor.diagnosis.learning_rate import decayed_too_early, lr_too_high, missing_warmup
from traindoctor.diagnosis.loss import (
    RECOVERED_MIN_RECORDS,
    bad_initial_loss,
    cadence,
    divergence,
    loss_spike,
    loss_spikes,
)
from traindoctor.diagnosis.report import json_report, text_report
from tests.diagnosis.factories import make_run, noisy_decay, scalar_rows


def rules(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.rule, f.severity) for f in findings]


# ------------------------------------------------------------------ cadence: where logging starts, what a record is


def _logged_from(first_step: int, every: int, values: np.ndarray, epochs: np.ndarray | None = None, **kwargs):
    steps = first_step + every * np.arange(len(values))
    return make_run(frames=[scalar_rows("loss", values, steps=steps, epochs=epochs)], **kwargs)


@pytest.mark.parametrize(
    ("first_step", "first_loss", "fires"),
    [(0, 0.3, True), (1, 9.0, True), (5, 9.0, True), (5, 0.3, False), (50, 9.0, False), (500, 0.3, False)],
    ids=["step-0-too-low", "step-1-too-high", "step-5-too-high-still-shows", "step-5-too-low-may-be-progress",
         "step-50-of-5000-says-nothing", "window-mean-at-step-500-says-nothing"],
)
def test_bad_initial_loss_judges_only_a_record_of_the_first_optimizer_steps(first_step, first_loss, fires):
    values = np.concatenate([[first_loss], np.linspace(1.5, 0.2, 999)])
    run = _logged_from(first_step, 5, values, task={"num_classes": 10})  # a 5,000-step run logged every 5
    assert bool(bad_initial_loss(run)) is fires


@pytest.mark.parametrize(
    ("first_step", "warmup_steps", "fires"),
    [(12, 100, True), (11, 100, True), (12, 0, False), (24, 100, False), (12, 8, False)],
    ids=["first-record-in-the-warm-up", "steps-counted-from-0", "no-warm-up-may-be-a-blow-up", "logging-started-late",
         "warm-up-over-by-the-first-record"],
)
def test_bad_initial_loss_reads_a_sparse_logs_first_record_taken_in_the_warm_up(first_step, warmup_steps, fires):
    """Issue #12, cadence: a log every 12 steps of a 1,200-step run shows the start only at step 12 (past
    EARLY_STEPS_MAX). While the lr is still warming up, steps that small only lower the loss, so 3.6x ln C
    there (heldout6's encoder initialised with std 1) is where training started; at full lr from step 1 it may
    be a loss the first steps blew up, and a log that starts at step 24 of a 12-step cadence started late. A CSV
    whose steps count from 0 logs the 12th step as step 11."""
    every = 12
    steps = first_step + every * np.arange(99)
    loss = np.concatenate([[3.6 * math.log(10)], np.linspace(2.0, 0.3, 98)])
    lr = [3e-3 * min(1.0, step / warmup_steps) if warmup_steps else 3e-3 for step in steps]
    run = make_run(frames=[scalar_rows("loss", loss, steps=steps), scalar_rows("lr", lr, steps=steps)],
                   task={"num_classes": 10})
    run.source = {"kind": "csv", "logging_every": every}
    found = bad_initial_loss(run)
    assert [f.severity for f in found] == (["warning"] if fires else [])
    if fires:
        assert "in the lr warm-up" in found[0].message
        # The finding is about the start: it covers step 1 to the record that shows it (heldout15's gated conv
        # LM logged every 5 steps was found at step 5 only, outside the start it speaks for).
        assert (found[0].step_start, found[0].step_end) == (1, first_step)


def test_a_warm_up_record_followed_by_a_rise_is_no_bad_start():
    """The warm-up's small steps only lower the loss: when the next records climb (a warm-up to an lr that
    blows the run up), the first one shows a loss the first steps may have raised, not where training started."""
    steps = 12 + 12 * np.arange(99)
    loss = 3.6 * math.log(10) * 1.3 ** np.minimum(np.arange(99), 10)
    lr = 5.0 * np.minimum(1.0, steps / 500)
    run = make_run(frames=[scalar_rows("loss", loss, steps=steps), scalar_rows("lr", lr, steps=steps)],
                   task={"num_classes": 10})
    run.source = {"kind": "csv", "logging_every": 12}
    assert bad_initial_loss(run) == []


def test_bad_initial_loss_quiet_on_epoch_means_even_of_tiny_epochs():
    """Iris-sized epochs of 4 steps: the first record is the mean of the first epoch's fall."""
    values = np.concatenate([[0.4], np.linspace(0.35, 0.05, 499)])
    epochs = np.arange(500, dtype=float)
    run = _logged_from(4, 4, values, epochs=epochs, task={"num_classes": 3})
    assert cadence(run, "loss").per_epoch
    assert bad_initial_loss(run) == []


def test_cadence_reads_the_importers_logging_every_and_hf_window_means():
    run = _logged_from(10, 10, np.linspace(2, 1, 30), env={"logger": "transformers.Trainer"})
    run.source = {"kind": "hf", "logging_every": 10}
    logged = cadence(run, "loss")
    assert (logged.first_step, logged.last_step, logged.every, logged.window_means, logged.per_epoch) == (
        10, 300, 10, True, False)


def test_missing_warmup_needs_the_lr_from_the_first_steps():
    """An lr logged from step 200 shows the peak only: a warm-up before it cannot be seen."""
    n = 1000
    loss = np.concatenate([np.linspace(2.3, 4.0, 50), np.linspace(4.0, 1.0, n - 50)])
    env = {"model": {"has_attention": True}}

    def run(first_lr_step: int):
        lr_steps = np.arange(first_lr_step, n + 1)
        return make_run(loss=loss, frames=[scalar_rows("lr", np.full(len(lr_steps), 1e-3), steps=lr_steps,
                                                       layer="group0")], env=env, task={"num_classes": 10})

    assert rules(missing_warmup(run(1))) == [("missing_warmup", "warning")]
    assert missing_warmup(run(200)) == []


@pytest.mark.parametrize(("every", "warmup_steps", "config", "fires"),
                         [(6, 0, {}, True), (10, 0, {}, True), (25, 0, {}, False), (10, 20, {}, False),
                          (10, 0, {"warmup_steps": 10}, False), (10, 0, {"optim": {"warmup_ratio": 0.02}}, False)],
                         ids=["every-6", "every-10", "every-25-may-hide-a-warm-up", "half-way-through-a-warm-up",
                              "config-declares-a-warm-up", "nested-config-declares-a-warm-up"])
def test_missing_warmup_reads_a_sparse_logs_first_lr_record(every, warmup_steps, config, fires):
    """Issue #12: heldout12's post-LN keyword spotter (a record every 6 steps of 570) and heldout13's GPT (every
    10 of 516) logged their lr at its peak from their first record, past the 1 %-of-the-run bound, and sat at
    their start for 100+ steps with working-size steps. A log every N <= 10 steps whose first record is at step N
    shows that any warm-up lasted under one interval; one every 25 steps could hide a real warm-up. At half its
    peak there the lr may be half-way through a warm-up of two intervals, and a warm-up the run's config
    declares is believed (a new user's break test: an HF run with warmup_steps=20, logged every 10 steps)."""
    steps = np.arange(every, 571, every)
    rng = np.random.default_rng(0)
    loss = np.where(steps <= 150, math.log(12), math.log(12) * np.exp(-(steps - 150) / 150)) * (
        1 + 0.02 * rng.standard_normal(len(steps)))
    ratio_steps = np.arange(30, 571, 30)
    lr = 1e-2 * np.minimum(1.0, steps / warmup_steps) if warmup_steps else np.full(len(steps), 1e-2)
    frames = [scalar_rows("loss", loss, steps=steps), scalar_rows("lr", lr, steps=steps, layer="group0")]
    frames += [scalar_rows("update_ratio", np.full(len(ratio_steps), 3e-3), steps=ratio_steps, layer=name)
               for name in ("encoder.layers.0.linear1.weight", "head.weight")]
    run = make_run(frames=frames, env={"model": {"has_attention": True}, "optimizer": {"type": "Adam"}},
                   task={"num_classes": 12})
    run.config = config
    run.source = {"kind": "csv", "logging_every": every}
    found = missing_warmup(run)
    assert rules(found) == ([("missing_warmup", "warning")] if fires else [])
    if fires:
        assert "steps of a working size that went nowhere" in found[0].message


def test_missing_warmup_does_not_call_a_short_early_stretch_stuck():
    """Still at its start says little before 100 steps: a pre-LN char LM at AdamW 3e-4, stopped after 175
    steps, was at 93 % of its start by step 50 (the end of its first 20 %), learning slowly."""
    steps = np.arange(5, 176, 5)
    loss = 3.3 - 0.004 * steps
    ratio_steps = np.arange(5, 176, 5)
    frames = [scalar_rows("loss", loss, steps=steps), scalar_rows("lr", np.full(len(steps), 3e-4), steps=steps,
                                                                   layer="group0"),
              scalar_rows("update_ratio", np.full(len(ratio_steps), 2.3e-3), steps=ratio_steps, layer="head.weight")]
    run = make_run(frames=frames, env={"model": {"has_attention": True}, "optimizer": {"type": "AdamW"}},
                   task={"kind": "language_modelling", "vocab_size": 65})
    run.source = {"kind": "csv", "logging_every": 5}
    assert missing_warmup(run) == []


# ------------------------------------------------------------------ task: the loss scale


@pytest.mark.parametrize(
    ("task", "kind", "size"),
    [({}, "unknown", None), ({"num_classes": 7}, "classification", 7), ({"vocab_size": 50257}, "language_modelling", 50257),
     ({"kind": "regression"}, "regression", None), ({"kind": "language_modelling", "vocab_size": 32000},
                                                     "language_modelling", 32000),
     ({"kind": "nonsense", "num_classes": "ten"}, "unknown", None)],
    ids=["nothing", "num-classes", "vocab-size", "regression", "recorded-kind", "odd-values-read-as-absent"],
)
def test_task_kind_is_read_or_inferred(task, kind, size):
    found = task_of(make_run(loss=[1.0], task=task))
    assert (found.kind, found.size) == (kind, size)


def _flat_high_plateau(task: dict):
    """Falls 35 %, then flat with validation close: underfitting for a classifier that knows its scale."""
    loss = np.concatenate([np.linspace(1.1, 0.7, 60), np.full(240, 0.7)])
    val = scalar_rows("loss", [0.8, 0.72, 0.71, 0.7], steps=[75, 150, 225, 300], split="val")
    return make_run(loss=loss, frames=[val], task=task)


@pytest.mark.parametrize(
    ("task", "severities"),
    [({"num_classes": 3}, ["info"]), ({}, []), ({"kind": "language_modelling", "vocab_size": 32000}, []),
     ({"kind": "regression"}, ["info"])],
    ids=["classifier-at-64%-of-ln-3", "unknown-task", "language-model", "regression"],
)
def test_underfitting_calls_a_level_poor_only_for_a_classifier(task, severities):
    """A regression run flat with its validation loss is info without a level (issue #12): its loss has its
    targets' units, so nothing is called poor or high."""
    found = underfitting(_flat_high_plateau(task))
    assert [f.severity for f in found] == severities
    assert all("poor" not in f.message for f in found)


@pytest.mark.parametrize(
    ("first_loss", "fires"),
    [(2.1, False), (10.4, False), (30.0, True)],
    ids=["fine-tune-far-below-ln-V", "from-scratch-at-ln-V", "far-above-ln-V"],
)
def test_a_language_models_initial_loss_is_held_to_ln_v_from_above_only(first_loss, fires):
    loss = np.concatenate([[first_loss], np.linspace(2.0, 1.2, 299)])
    run = make_run(loss=loss, task={"kind": "language_modelling", "vocab_size": 32000})
    assert bool(bad_initial_loss(run)) is fires


def test_a_high_noisy_plateau_is_not_called_lr_too_high_without_a_loss_scale():
    rng = np.random.default_rng(4)
    loss = np.concatenate([np.linspace(3.0, 1.8, 60), np.full(340, 1.8)]) * (1 + 0.45 * rng.standard_normal(400))
    assert lr_too_high(make_run(loss=np.abs(loss))) == []
    assert rules(lr_too_high(make_run(loss=np.abs(loss), task={"num_classes": 20}))) == [("lr_too_high", "info")]


# ------------------------------------------------------------------ non-finite anywhere


def _with(loss: np.ndarray, grad: np.ndarray | None = None, val: tuple | None = None, **kwargs):
    frames = []
    if grad is not None:
        frames.append(scalar_rows("grad_norm", grad))
    if val is not None:
        frames.append(scalar_rows("loss", val[1], steps=val[0], split="val"))
    return make_run(loss=loss, frames=frames, **kwargs)


def test_an_inf_gradient_norm_that_stays_starts_a_critical_divergence():
    grad = np.ones(300)
    grad[180:] = -math.inf
    found = divergence(_with(noisy_decay(300), grad))
    assert [(f.severity, f.step_start, f.step_end) for f in found] == [("critical", 181, 300)]


def test_an_inf_eval_loss_mid_run_followed_by_a_long_finite_stretch_is_recovered():
    val = ([100, 200, 300, 400], [1.0, math.inf, 0.8, 0.7])
    found = divergence(_with(noisy_decay(400), val=val))
    assert [(f.severity, f.step_start) for f in found] == [("info", 200)]


@pytest.mark.parametrize(
    ("finite_after", "severity"),
    [(RECOVERED_MIN_RECORDS, "info"), (RECOVERED_MIN_RECORDS - 1, "critical")],
    ids=["sustained-stretch-recovers", "one-record-short-does-not"],
)
def test_recovery_needs_a_sustained_finite_stretch(finite_after, severity):
    loss = list(noisy_decay(150))
    loss[100:104] = [math.nan, 1.0, math.nan, math.nan]
    loss = loss[:104] + loss[104:104 + finite_after]
    found = divergence(make_run(loss=loss))
    assert [(f.severity, f.step_start) for f in found] == [(severity, 101)]


def test_nan_losses_every_few_records_keep_the_onset_at_the_first():
    loss = noisy_decay(500)
    loss[300::7] = math.nan  # never more than 6 finite records in a row after step 300
    found = divergence(make_run(loss=loss[:-3]))  # whether or not the last record is NaN
    assert [(f.severity, f.step_start) for f in found] == [("critical", 301)]


def test_hf_masked_nan_as_a_copy_of_the_earlier_mean_is_named():
    """HF's filter logs the running mean in place of a NaN loss: a copy, beside a NaN gradient norm."""
    loss = np.array([2.0, 1.6, 1.2, 1.0, 0.9, 1.34, 1.34])  # 1.34: the mean of the first five, twice
    grad = np.array([1.0, 1.0, 0.9, 0.8, 0.8, math.nan, math.nan])
    steps = np.arange(50, 351, 50)
    run = make_run(frames=[scalar_rows("loss", loss, steps=steps), scalar_rows("grad_norm", grad, steps=steps)])
    found = divergence(run)
    assert [(f.severity, f.step_start) for f in found] == [("critical", 300)]
    assert "masked NaN" in found[0].message and found[0].evidence["masked_steps"] == [300, 350]


def test_a_nan_gradient_norm_the_scaler_skipped_is_not_a_divergence():
    grad = np.ones(300)
    grad[[40, 41, 120]] = math.inf
    skipped = np.zeros(300)
    skipped[[40, 41, 120]] = 1
    run = make_run(loss=noisy_decay(300), frames=[scalar_rows("grad_norm", grad), scalar_rows("amp_skipped", skipped)])
    assert divergence(run) == []


# ------------------------------------------------------------------ several eval sets


def test_each_eval_set_is_judged_on_its_own():
    steps = np.arange(100, 1001, 100)
    in_domain = scalar_rows("loss", np.linspace(1.0, 0.5, 10), steps=steps, split="val")
    shifted = scalar_rows("loss", [1.2, 1.0, 0.9, 0.95, 1.1, 1.25, 1.4, 1.5, 1.6, 1.7], steps=steps, split="val_ood")
    run = make_run(loss=noisy_decay(1000, end=0.1), frames=[in_domain, shifted])
    found = overfitting(run)
    assert [(f.evidence["split"], f.step_start) for f in found] == [("val_ood", 300)]
    assert "val_ood" in found[0].message
    assert [f.evidence["split"] for f in best_epoch_not_last(run)] == ["val_ood"]


def test_named_test_sets_are_judged_when_there_is_no_named_val_set():
    steps = np.arange(100, 1001, 100)
    rising = scalar_rows("loss", [1.0, 0.8, 0.7, 0.75, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4], steps=steps, split="test_b")
    run = make_run(loss=noisy_decay(1000, end=0.1), frames=[rising])
    assert [f.evidence["split"] for f in overfitting(run)] == ["test_b"]


# ------------------------------------------------------------------ schedules


def _scheduled(lr: np.ndarray, loss: np.ndarray, val: np.ndarray, task: dict | None = None):
    steps = np.linspace(len(loss) / len(val), len(loss), len(val)).astype(int)
    return make_run(loss=loss, frames=[scalar_rows("lr", lr, layer="group0"),
                                       scalar_rows("loss", val, steps=steps, split="val")],
                    task=task or {"num_classes": 3})


def _scheduled_curve(lr: np.ndarray, drop: float, seed: int = 0) -> np.ndarray:
    """A 3-class loss that falls as the lr accumulates steps (so it stops where the lr runs out) and drops by
    ``drop`` as the lr decays below its peak (the gain of a warm-up-stable-decay's decay), ending high."""
    progress = np.cumsum(lr) / lr.sum()
    after_peak = np.arange(len(lr)) >= np.argmax(lr)
    anneal = drop * (1 - lr / lr.max()) * after_peak
    noise = 1 + 0.01 * np.random.default_rng(seed).standard_normal(len(lr))
    return (0.75 + 0.35 * np.exp(-3 * progress) - anneal) * noise


N = 1500
# name → (lr, the drop its decay brings). Read with a constant lr in mind, the two cosines' flat tails
# look like underfitting (a high plateau, train and val close) and the two decays' drops like a run
# still improving that should train longer.
SCHEDULES = {
    "cosine-to-zero": (1e-3 * 0.5 * (1 + np.cos(np.pi * np.arange(N) / N)), 0.1),
    "one-cycle": (1e-3 * np.concatenate([np.linspace(0.04, 1, 450), 0.5 * (1 + np.cos(np.pi * np.arange(1050) / 1050))]),
                  0.1),
    "warmup-stable-decay": (1e-3 * np.concatenate([np.linspace(0.05, 1, 75), np.ones(1125), np.linspace(1, 0, 300)]),
                            0.35),
    "constant-then-cool-down": (1e-3 * np.concatenate([np.ones(1275), np.linspace(1, 0.02, 225)]), 0.35),
}


@pytest.mark.parametrize("name", list(SCHEDULES), ids=list(SCHEDULES))
def test_a_schedules_tail_is_not_read_as_a_problem(name):
    lr, drop = SCHEDULES[name]
    loss = _scheduled_curve(lr, drop)
    val = np.interp(np.linspace(N / 10, N - 1, 10), np.arange(N), loss) + 0.02
    fired = {f.rule for f in diagnose(_scheduled(lr, loss, val), strict=True)}
    assert fired & {"decayed_too_early", "underfitting", "train_longer"} == set()


def test_underfitting_is_still_found_when_the_plateau_comes_before_the_decay():
    lr = SCHEDULES["cosine-to-zero"][0]
    loss = np.concatenate([np.linspace(1.1, 0.75, 150), np.full(N - 150, 0.75)])
    loss = loss * (1 + 0.01 * np.random.default_rng(3).standard_normal(N))
    run = _scheduled(lr, loss, np.full(10, 0.77))
    found = underfitting(run)
    assert rules(found) == [("underfitting", "info")] and "before the lr decay" in found[0].message


def test_train_longer_still_found_on_a_constant_lr():
    loss = noisy_decay(600, rate=1.5, noise=0.01)
    val = np.interp(np.linspace(0, 599, 6), np.arange(600), loss) + 0.05
    run = _scheduled(np.full(600, 1e-3), loss, val)
    assert rules(train_longer(run)) == [("train_longer", "info")]


def test_an_lr_too_high_rebound_during_the_warmup_is_found_though_an_epoch_later_the_loss_recovers():
    """The loss falls while the lr is small, climbs back as the warm-up overshoots, then falls again."""
    n = 1200
    lr = np.concatenate([np.linspace(1e-4, 3e-2, 300), np.full(n - 300, 3e-2)])
    loss = np.concatenate([np.linspace(1.6, 0.7, 150), np.linspace(0.7, 1.3, 150), np.linspace(1.3, 0.4, n - 300)])
    loss = loss * (1 + 0.02 * np.random.default_rng(5).standard_normal(n))
    run = make_run(loss=loss, frames=[scalar_rows("lr", lr, layer="group0")], task={"num_classes": 5})
    found = lr_too_high(run)
    assert rules(found) == [("lr_too_high", "warning")]
    assert found[0].step_start < 300 and "warming up" in found[0].message


def test_a_slowly_recovering_spike_is_a_spike_not_an_lr_rebound():
    loss = noisy_decay(800, noise=0.02)
    loss[400:480] += 2.0 * np.exp(-np.arange(80) / 20)
    run = make_run(loss=loss, task={"num_classes": 10})
    assert lr_too_high(run) == [] and [f.rule for f in loss_spike(run)] == ["loss_spike"]


# ------------------------------------------------------------------ spikes on a converged classifier's per-batch loss


def _per_batch_loss(n: int, batch: int, hard: float, seed: int) -> np.ndarray:
    """A classifier's per-batch cross-entropy: easy samples score near 0 as it converges, a misclassified one
    costs 1 to 5 nats, so a batch holding one jumps 10-100× (the shape of a real per-batch log)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    wrong = rng.random((n, batch)) < (0.6 * np.exp(-t / 300) + hard)[:, None]
    easy = rng.exponential(1, (n, batch)) * (1.5 * np.exp(-t / 300) + 0.01)[:, None]
    return np.where(wrong, rng.uniform(1, 5, (n, batch)), easy).mean(axis=1)


@pytest.mark.parametrize(("batch", "hard", "seed"), [(8, 0.003, 0), (16, 0.0005, 1), (32, 0.01, 2), (64, 0.003, 3)],
                         ids=["batch-8", "batch-16-rare-hard", "batch-32-frequent-hard", "batch-64"])
def test_one_batch_jumps_of_a_converged_classifier_are_not_spikes(batch, hard, seed):
    run = make_run(loss=_per_batch_loss(3000, batch, hard, seed), task={"num_classes": 10})
    assert loss_spike(run) == []


def test_a_real_spike_on_the_same_per_batch_loss_is_found():
    loss = _per_batch_loss(3000, 32, 0.003, 4)
    loss[2000:2030] += 3.0 * np.exp(-np.arange(30) / 8)  # a damaged model: high for tens of steps
    found = loss_spikes(make_run(loss=loss, task={"num_classes": 10}))
    assert [(spike.start_step, spike.persistent) for spike in found] == [(2001, True)]


# ------------------------------------------------------------------ causes first


def _finding(rule: str, severity: str, step: int | None) -> Finding:
    return Finding(rule=rule, severity=severity, title=rule, message=f"{rule} message", advice="a", step_start=step,
                   step_end=step)


def test_consequences_are_folded_under_their_cause():
    spike, late_spike = _finding("loss_spike", "warning", 250), _finding("loss_spike", "warning", 330)
    best = _finding("best_epoch_not_last", "info", 20)
    cause = _finding("lr_too_high", "warning", 431)
    other = _finding("weight_decay_on_norm_and_bias", "warning", None)
    ordered = causes_first([other, spike, late_spike, cause, best])
    # A cause (with its consequences) ranks before a finding on its own of the same severity.
    assert [(f.rule, f.step_start, f.explained_by) for f in ordered] == [
        ("lr_too_high", 431, None), ("loss_spike", 250, "lr_too_high"), ("loss_spike", 330, "lr_too_high"),
        ("best_epoch_not_last", 20, "lr_too_high"), ("weight_decay_on_norm_and_bias", None, None)]
    assert ordered[0].explains == ("loss_spike", "best_epoch_not_last")


def test_an_info_cause_explains_nothing():
    ordered = causes_first([_finding("lr_too_high", "info", 10), _finding("loss_spike", "warning", 5)])
    assert [(f.rule, f.explained_by, f.explains) for f in ordered] == [("loss_spike", None, ()), ("lr_too_high", None, ())]


def test_a_critical_symptom_ranks_under_the_warning_that_explains_it():
    """Regression (#17): an lr 10x too high on a digits classifier listed "no better than the majority
    class" (critical) first, and lr_too_high (warning) second; the verdict must be the cause."""
    symptom = _finding("no_better_than_baseline", "critical", 44)
    dead = _finding("dead_layers", "warning", 100)
    cause = _finding("lr_too_high", "warning", 39)
    lone = _finding("train_mode_during_eval", "warning", 10)
    ordered = causes_first(sort_findings([symptom, dead, cause, lone]))
    assert [(f.rule, f.explained_by) for f in ordered] == [
        ("lr_too_high", None), ("no_better_than_baseline", "lr_too_high"), ("dead_layers", "lr_too_high"),
        ("train_mode_during_eval", None)]
    found = verdict(ordered)
    assert (found.rule, found.severity, found.explains) == ("lr_too_high", "critical",
                                                            ("no_better_than_baseline", "dead_layers"))


def test_consequence_chains_never_loop():
    """dead_layers explains update_ratio_out_of_band and is itself explained by lr_too_high: every
    finding is listed once, each under the first cause in order that is not below it."""
    findings = [_finding("update_ratio_out_of_band", "warning", 200), _finding("dead_layers", "warning", 100),
                _finding("lr_too_high", "warning", 39)]
    ordered = causes_first(sort_findings(findings))
    assert sorted(f.rule for f in ordered) == sorted(f.rule for f in findings)
    assert [(f.rule, f.explained_by) for f in ordered][0] == ("lr_too_high", None)


def test_reports_show_causes_first_with_consequences_under_them():
    ordered = causes_first([_finding("lr_too_high", "warning", 431), _finding("loss_spike", "warning", 250)])
    run = make_run(loss=[1.0], name="r")
    text = text_report([(run, ordered)])
    assert text.index("[lr_too_high]") < text.index("↳ warning: [loss_spike]") and "explained by lr_too_high" in text
    data = json_report([(run, ordered)])["runs"][0]["findings"]
    assert [(f["rule"], f["explains"], f["explained_by"]) for f in data] == [
        ("lr_too_high", ["loss_spike"], None), ("loss_spike", [], "lr_too_high")]


def test_at_most_three_info_findings_per_rule_with_a_count_of_the_rest():
    findings = [_finding("loss_spike", "info", step) for step in range(10, 80, 10)] + [_finding("loss_spike", "warning", 5)]
    kept = cap_info(findings)
    info = [f for f in kept if f.severity == "info"]
    assert len(info) == MAX_INFO_PER_RULE and [f.step_start for f in info] == [10, 20, 30]
    assert info[-1].evidence["not_listed"] == 4 and "4 more" in info[-1].message
    assert len(kept) == MAX_INFO_PER_RULE + 1


def test_a_finding_read_back_from_json_equals_the_one_written():
    """Regression: the findings cache rebuilds findings with Finding(**to_dict()); ``explains`` came back a list."""
    cause = causes_first([_finding("lr_too_high", "warning", 431), _finding("loss_spike", "warning", 250)])[0]
    assert Finding(**cause.to_dict()) == cause


@pytest.mark.parametrize(
    ("ratios", "fires"),
    [([5.6, 2.6, 1.5, 1.06, 0.72, 0.59, 0.5], True),
     ([10.5, 6.0, 2.5, 1.27, 1.01, 0.96, 0.94], False),
     ([5.6, 2.6, 3.1, 1.06, 0.72, 0.59, 0.5], False)],
    ids=["falls-steadily-below-ln-c-a-bad-start", "comes-down-to-ln-c-and-stays-a-blow-up", "climbs-again"],
)
def test_bad_initial_loss_reads_a_sparse_logs_first_record_that_training_then_corrects(ratios, fires):
    """heldout16's BiGRU tagger with its head scaled x150 (Adam, cosine from step 1, a record every 5 of 320
    steps) showed 5.6x ln 31 at step 5, then fell at every record to 0.72x by the fifth: a bad start that
    training corrects. A loss the first full-lr steps blew up comes down to about ln C and stays there (the
    fifth hold-out's SSM at 10.5x, then 0.94-0.96x), or climbs again: neither is judged."""
    every = 5
    values = np.concatenate([np.array(ratios) * math.log(31), np.linspace(0.45, 0.05, 57) * math.log(31)])
    steps = every + every * np.arange(len(values))
    run = make_run(frames=[scalar_rows("loss", values, steps=steps)], task={"num_classes": 31})
    found = bad_initial_loss(run)
    assert [(f.severity, f.step_start, f.step_end) for f in found] == ([("warning", 1, 5)] if fires else [])
