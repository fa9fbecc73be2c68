"""Kinds of fault the fourth program hold-out (tests/data/heldout4) missed or misread, each on a small synthetic run.

Each kind is built next to the run it must not be confused with, so the tests
fail if the rule stays quiet on the fault or speaks on the other one. The
runs copy the shapes of the hold-out's curves, not their numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from traindoctor.diagnosis.learning_rate import UNIFORM_LEVEL_SHARE, decayed_too_early, lr_too_high, lr_too_low
from traindoctor.diagnosis.loss import DIVERGED_UNIFORM_SHARE, divergence, loss_spike
from tests.diagnosis.factories import make_run, scalar_rows

LAYERS = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
LN_24 = math.log(24)


# ------------------------------------------------------------------ lr_too_high: stuck at ln V, late steps decayed


def _stuck_language_model(peak_ratio: float):
    """A language model (ln 24 = 3.18) logged every 30 steps whose loss sits at 0.94 of ln 24 from step 60 to
    step 930, under a 5 % warm-up then a linear decay to 0; its update/weight ratio is ``peak_ratio`` × the
    lr's share of its peak (so the late, decayed records are small whatever the peak was)."""
    steps = np.arange(30, 931, 30)
    share = np.minimum(steps / 47, 1.0) * np.clip((940 - steps) / (940 - 47), 0.0, 1.0)
    loss = 0.94 * LN_24 * (1 + 0.004 * np.sin(steps))
    frames = [scalar_rows("lr", 0.1 * share, steps=steps, layer="group0")]
    frames += [scalar_rows("update_ratio", peak_ratio * share, steps=steps, layer=layer) for layer in LAYERS]
    return make_run(loss=loss, steps=steps, frames=frames, task={"kind": "language_modelling", "vocab_size": 24})


@pytest.mark.parametrize(("peak_ratio", "too_high"), [(1.3e-2, True), (3e-3, False)], ids=["large-peak", "working"])
def test_a_language_model_stuck_at_ln_v_is_judged_by_its_steps_at_the_peak_lr(peak_ratio, too_high):
    """1.3e-2 at the peak lr (a late median near 5e-3 × the decay, below the 5e-3 bar) is an lr too high;
    3e-3 at its peak says nothing either way; neither is an lr too low."""
    found = lr_too_high(_stuck_language_model(peak_ratio))
    assert [f.evidence["kind"] for f in found] == (["uniform"] if too_high else [])
    if too_high:
        assert found[0].evidence["median_update_ratio"] < 5e-3 <= found[0].evidence["peak_lr_update_ratio"]
    assert lr_too_low(_stuck_language_model(peak_ratio)) == []


# ------------------------------------------------------------------ lr_too_low: not when layers are dead


def _slow_linear_fall(dead: bool):
    """A loss of unknown kind falling linearly 92 -> 64 over 1,000 steps at a median update/weight ratio of
    6e-4; ``dead``: two of its four layers have a zero gradient at every record (ReLUs dead from the start)."""
    rng = np.random.default_rng(4)
    steps = np.arange(1, 1001)
    loss = np.linspace(92.0, 64.0, len(steps)) * (1 + 0.003 * rng.standard_normal(len(steps)))
    layer_steps = np.arange(20, 1001, 20)
    frames = []
    for index, layer in enumerate(LAYERS):
        gradient = np.zeros(len(layer_steps)) if dead and index >= 2 else np.full(len(layer_steps), 0.5)
        frames += [scalar_rows("grad_norm", gradient, steps=layer_steps, layer=layer),
                   scalar_rows("update_ratio", np.full(len(layer_steps), 6e-4), steps=layer_steps, layer=layer)]
    return make_run(loss=loss, steps=steps, frames=frames)


@pytest.mark.parametrize(("dead", "fires"), [(False, True), (True, False)], ids=["all-alive", "dead-layers"])
def test_a_slow_fall_is_not_put_on_the_lr_when_layers_are_dead(dead, fires):
    assert bool(lr_too_low(_slow_linear_fall(dead))) is fires


# ------------------------------------------------------------------ divergence: a language model back at ln V


def _language_model_climbing_to(level: float):
    """A language model (ln 24) logged every 30 steps: falls 3.2 -> 1.25 by step 330, climbs to ``level`` by
    step 420 and stays there to step 930 (1.1x its start at ln 24: under the 2x margin of a loss with no
    scale)."""
    steps = np.arange(30, 931, 30)
    fall = np.linspace(3.2, 1.25, 11)
    climb = np.linspace(1.25, level, 4)[1:]
    loss = np.concatenate([fall, climb, np.full(len(steps) - 14, level)]) * (1 + 0.003 * np.sin(steps))
    return make_run(loss=loss, steps=steps, task={"kind": "language_modelling", "vocab_size": 24})


@pytest.mark.parametrize(("level", "diverged"), [(0.99 * LN_24, True), (0.6 * LN_24, False)],
                         ids=["back-at-ln-v", "below-ln-v"])
def test_a_language_model_that_climbs_back_to_ln_v_has_diverged(level, diverged):
    """Settled at ln V it kept nothing it learned; settled well below it, it still predicts better than
    uniform (a rebound: lr_too_high's, not a divergence)."""
    assert bool(divergence(_language_model_climbing_to(level))) is diverged


def test_ln_v_counts_as_reached_at_the_share_lr_too_high_calls_uniform():
    assert DIVERGED_UNIFORM_SHARE == UNIFORM_LEVEL_SHARE


# ------------------------------------------------------------------ decayed_too_early: the val loss shows the heading


def _decayed_as_logging_began(keeps_falling: bool):
    """Training loss logged every 8 steps from step 120, the lr cut x0.1 at step 128 and again at 240 (Adam
    2e-3 -> 2e-5); the validation loss (every 40 steps from 40) falls 49.7 -> 42.8 before the cut, then
    ``keeps_falling`` to 34 or flattens at ~41.5. Ratios 6e-5 after the cut: the weights still move."""
    steps = np.arange(120, 1201, 8)
    lr = np.where(steps < 128, 2e-3, np.where(steps < 240, 2e-4, 2e-5))
    eval_steps = np.arange(40, 1201, 40)
    after = eval_steps > 120
    tail = np.linspace(42.4, 34.0 if keeps_falling else 41.3, after.sum())
    val = np.concatenate([[49.7, 46.0, 42.8], tail]) + 0.1 * np.sin(eval_steps)
    loss = (np.linspace(42.8, 34.0, len(steps)) if keeps_falling else np.full(len(steps), 41.8)) + np.sin(steps)
    frames = [scalar_rows("lr", lr, steps=steps, layer="group0"),
              scalar_rows("loss", val, steps=eval_steps, split="val")]
    frames += [scalar_rows("update_ratio", np.where(steps < 128, 1e-2, 6e-5), steps=steps, layer=layer)
               for layer in LAYERS]
    return make_run(loss=loss, steps=steps, frames=frames)


@pytest.mark.parametrize(("keeps_falling", "fires"), [(False, True), (True, False)], ids=["flattens", "keeps-falling"])
def test_a_decay_before_the_training_log_shows_a_heading_is_read_off_the_validation_loss(keeps_falling, fires):
    found = decayed_too_early(_decayed_as_logging_began(keeps_falling))
    assert [f.evidence.get("curve") for f in found] == (["val"] if fires else [])


# ------------------------------------------------------------------ loss_spike: a sparse log of a falling curve


def _sparse_falling_log(bump: bool):
    """A loss logged every 30 steps falling 3.2 -> 0.95 by step 450 (the trailing median lags the fall), then
    0.95 -> 0.7; ``bump``: an lr bump at step 500 lifts three records to 1.8, 2.8, 1.9 before it recovers."""
    steps = np.arange(30, 931, 30)
    loss = np.concatenate([np.linspace(3.2, 0.95, 15), np.linspace(0.95, 0.7, 16)])
    loss = loss * (1 + 0.01 * np.sin(7 * steps))
    if bump:
        loss[16:19] = [1.8, 2.8, 1.9]
    return make_run(loss=loss, steps=steps)


@pytest.mark.parametrize(("bump", "spikes"), [(True, [540]), (False, [])], ids=["lr-bump", "no-bump"])
def test_a_spike_on_a_sparse_falling_log_stands_out_of_the_record_to_record_noise(bump, spikes):
    assert [f.evidence["peak_step"] for f in loss_spike(_sparse_falling_log(bump))] == spikes
