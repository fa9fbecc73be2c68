"""Kinds of learning-rate fault the third program hold-out (tests/data/heldout3) missed, each on a small synthetic run.

Each kind is built next to the healthy run it must not be confused with, so
the tests fail if the rule stays quiet on the fault or speaks on the healthy
one. The runs copy the shapes of the hold-out's curves, not their numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from traindoctor.diagnosis.learning_rate import (decayed_too_early, lr_too_high, lr_too_low, missing_warmup,
                                                 val_loss_swings)
from tests.diagnosis.factories import make_run, scalar_rows

LAYERS = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")

# ------------------------------------------------------------------ lr_too_high: layers killed before the log starts


def _late_logged_dead_net(killed: bool):
    """A regression net logged every 10 steps from step 50 (its first drop unseen): the loss sits at 0.15 from
    its first record. ``killed``: every hidden layer's gradient is 0 from its first record (step 25) while its
    update/weight ratio is 3e-2 there and fades to 0 (large steps killed its ReLUs); else the layers were
    frozen by mistake (ratio 0 throughout). The output layer keeps learning in both."""
    rng = np.random.default_rng(3)
    steps = np.arange(50, 661, 10)
    loss = 0.15 * (1 + 0.02 * rng.standard_normal(len(steps)))
    layer_steps = np.arange(25, 651, 25)
    fade = 3e-2 * 0.1 ** np.arange(len(layer_steps)) if killed else np.zeros(len(layer_steps))
    frames = [scalar_rows("lr", np.full(len(steps), 0.1), steps=steps, layer="group0")]
    for layer in LAYERS[:2]:
        frames += [scalar_rows("grad_norm", np.zeros(len(layer_steps)), steps=layer_steps, layer=layer),
                   scalar_rows("update_ratio", fade, steps=layer_steps, layer=layer)]
    for layer in ("out.weight", "out.bias"):
        frames += [scalar_rows("grad_norm", 0.05 + 0.01 * rng.random(len(layer_steps)), steps=layer_steps,
                               layer=layer),
                   scalar_rows("update_ratio", np.full(len(layer_steps), 2e-3), steps=layer_steps, layer=layer)]
    return make_run(loss=loss, steps=steps, frames=frames, task={"kind": "regression"})


def test_layers_killed_before_the_log_started_are_lr_too_high_without_a_visible_drop():
    found = lr_too_high(_late_logged_dead_net(killed=True))
    assert [f.evidence["kind"] for f in found] == ["killed_layers"]
    assert set(found[0].evidence["killed_layers"]) == set(LAYERS[:2])


def test_layers_frozen_by_mistake_in_a_late_log_are_no_lr_too_high():
    assert lr_too_high(_late_logged_dead_net(killed=False)) == []


# ------------------------------------------------------------------ lr_too_high: val swings on a loss with a high floor


def _language_model(val: list[float], vocab: int = 400):
    """A language model (ln 400 = 5.99) whose training loss is logged every 50 steps (18 records, too few for
    a curve shape) and whose validation loss is ``val``, one evaluation per 78-step epoch."""
    steps = np.arange(50, 901, 50)
    loss = np.linspace(5.4, 4.7, len(steps))
    eval_steps = 78 * np.arange(1, len(val) + 1)
    return make_run(loss=loss, steps=steps,
                    frames=[scalar_rows("loss", val, steps=eval_steps, split="val"),
                            scalar_rows("lr", np.full(len(steps), 80.0), steps=steps, layer="group0")],
                    task={"kind": "language_modelling", "vocab_size": vocab})


SWINGING = [5.66, 5.18, 6.18, 5.33, 6.66, 5.37, 5.66, 5.45, 5.23, 5.44, 6.27, 6.41]  # never 1.3x its best
SETTLING = [5.66, 5.18, 5.05, 4.98, 4.93, 4.90, 4.95, 4.88, 4.86, 4.89, 4.85, 4.84]  # noise of a few hundredths


@pytest.mark.parametrize(("val", "swings"), [(SWINGING, [546, 858]), (SETTLING, [])], ids=["swinging", "settling"])
def test_swings_of_a_language_model_are_measured_against_what_it_learned(val, swings):
    """Jumps ≥ half the drop from ln V to the best count for a language model, whose loss cannot fall far below
    its best level; a settling curve's noise does not."""
    run = _language_model(val)
    assert val_loss_swings(run) == swings
    assert [f.evidence["kind"] for f in lr_too_high(run)] == (["swings"] if swings else [])


def test_a_classifier_keeps_its_best_level_as_the_swing_unit():
    """A classifier near 0 (best 0.20, ln 10 = 2.30): a jump to 0.27 is 3 % of its drop but 35 % of its level,
    below the 50 % asked; the unit is the smaller of the two, so nothing changes for it."""
    steps = np.arange(1, 401)
    val = [1.0, 0.5, 0.3, 0.2, 0.27, 0.21, 0.27, 0.21, 0.27, 0.26]
    run = make_run(loss=np.linspace(2.0, 0.2, 400), steps=steps,
                   frames=[scalar_rows("loss", val, steps=40 * np.arange(1, 11), split="val")],
                   task={"num_classes": 10})
    assert val_loss_swings(run) == []


# ------------------------------------------------------------------ lr_too_low: a decay shrinks the late ratios


def _slow_classifier(peak_ratio: float):
    """A 120-class classifier (ln 120 = 4.79) whose loss falls slowly and linearly (4.6 -> 4.0) under a
    MultiStepLR (x0.1 at 60 % and 85 %); its update/weight ratio is ``peak_ratio`` at the peak lr and shrinks
    with the lr."""
    rng = np.random.default_rng(5)
    steps = np.arange(1, 761)
    lr = np.where(steps < 456, 1.0, np.where(steps < 646, 0.1, 0.01))
    loss = np.linspace(4.6, 4.0, len(steps)) * (1 + 0.01 * rng.standard_normal(len(steps)))
    ratio_steps = steps[steps % 20 == 0]
    ratio = peak_ratio * lr[ratio_steps - 1]
    frames = [scalar_rows("lr", lr, steps=steps, layer="group0")]
    frames += [scalar_rows("update_ratio", ratio, steps=ratio_steps, layer=layer) for layer in LAYERS]
    return make_run(loss=loss, steps=steps, frames=frames, task={"num_classes": 120})


@pytest.mark.parametrize(("peak_ratio", "fires"), [(1.2e-2, False), (1e-4, True)], ids=["large-peak-steps", "tiny"])
def test_large_steps_at_the_peak_lr_rule_out_lr_too_low_whatever_the_decay_left(peak_ratio, fires):
    """With 1.2e-2 at its peak lr (8e-4 in the second half, after the decays) the lr was not too low; with
    1e-4 at its peak it was."""
    assert bool(lr_too_low(_slow_classifier(peak_ratio))) is fires


# ------------------------------------------------------------------ decayed_too_early: the weights stop at once


def _stepped_every_epoch(after_ratio: float, decay_record: int = 1):
    """A language model logged every 50 steps from step 50 (18 records) under a StepLR x0.1 that reaches
    record ``decay_record`` (x0.1 per record from there on); its loss flattens after the decay. Its four
    layers' update/weight ratio is 2e-2 before the decay and ``after_ratio`` after it."""
    steps = np.arange(50, 901, 50)
    lr = 10.0 * 0.1 ** np.maximum(0, np.arange(len(steps)) - decay_record + 1)
    loss = np.where(np.arange(len(steps)) < decay_record, 5.27, 5.13) + 0.002 * np.sin(np.arange(len(steps)))
    ratio_steps = np.arange(25, 901, 25)
    ratio = np.where(ratio_steps < steps[decay_record], 2e-2, after_ratio)
    frames = [scalar_rows("lr", lr, steps=steps, layer="group0")]
    frames += [scalar_rows("update_ratio", ratio, steps=ratio_steps, layer=layer) for layer in LAYERS]
    return make_run(loss=loss, steps=steps, frames=frames, task={"kind": "language_modelling", "vocab_size": 400})


@pytest.mark.parametrize(
    ("after_ratio", "decay_record", "kinds"),
    [(1e-8, 1, ["frozen"]),   # the weights stopped at the decay: decayed too early
     (3e-4, 1, []),           # they still move after it: the heading cannot be read, nothing is said
     (1e-8, 10, [])],         # a decay past half of the run is not early
    ids=["frozen", "still-moving", "late-decay"],
)
def test_a_decay_that_stops_the_weights_before_the_log_shows_a_heading_is_decayed_too_early(after_ratio,
                                                                                            decay_record, kinds):
    found = decayed_too_early(_stepped_every_epoch(after_ratio, decay_record))
    assert [f.evidence["kind"] for f in found] == kinds


# ------------------------------------------------------------------ missing_warmup: the first steps broke the model


def _post_ln_transformer(first_ratio: float, later_ratio: float, warmup: bool = False):
    """A 120-class transformer (ln 120 = 4.79) at a constant AdamW lr 3e-2 from step 1 (``warmup``: ramped
    over the first 40 steps), its loss within 4 % of its start through its first 20 %. Its update/weight ratio
    is ``first_ratio`` at its first record (step 20) and ``later_ratio`` from step 40 on."""
    rng = np.random.default_rng(9)
    steps = np.arange(1, 761)
    loss = math.log(120) * (1.0 - 0.05 * steps / 760) * (1 + 0.003 * rng.standard_normal(len(steps)))
    lr = 3e-2 * (np.minimum(1.0, steps / 40) if warmup else np.ones(len(steps)))
    ratio_steps = np.arange(20, 761, 20)
    ratio = np.where(ratio_steps == 20, first_ratio, later_ratio)
    frames = [scalar_rows("lr", lr, steps=steps, layer="group0"),
              scalar_rows("grad_norm", 0.3 * (1 + 0.05 * rng.standard_normal(len(steps))), steps=steps)]
    frames += [scalar_rows("update_ratio", ratio, steps=ratio_steps, layer=layer) for layer in LAYERS]
    return make_run(loss=loss, steps=steps, frames=frames, task={"num_classes": 120},
                    env={"model": {"has_attention": True}, "optimizer": {"type": "AdamW"}})


@pytest.mark.parametrize(
    ("first_ratio", "later_ratio", "warmup", "fires"),
    [(1.3e-2, 3e-4, False, True),    # large first steps, then only decay moves the weights
     (1.3e-2, 3e-4, True, False),    # the same with a warm-up: not a missing one
     (5e-4, 3e-4, False, False),     # small steps from the first: an lr too low, not instability
     (1.3e-2, 4e-3, False, True)],   # working steps throughout (the seed-7 kind, unchanged)
    ids=["collapsed", "warmed-up", "small-from-the-start", "working-throughout"],
)
def test_a_transformer_whose_first_large_steps_collapsed_is_missing_warmup(first_ratio, later_ratio, warmup, fires):
    found = missing_warmup(_post_ln_transformer(first_ratio, later_ratio, warmup))
    assert bool(found) is fires
    if fires:
        assert found[0].evidence["early_update_ratio"] >= 1e-3


def test_a_swing_hint_does_not_hide_a_high_noisy_plateau():
    """A 3-class classifier (ln 3 = 1.10) on noisy labels: its training loss thrashes at 0.53 (noise ~27 % of
    the level) with update/weight ratios of 1.2e-2, and its validation loss (best 0.78, a floor far above 0)
    swings by half its drop while the training loss does not. The swings alone are an info hint; the plateau
    is the warning, as before the swing unit (the corpus's lr_too_high_adam_noisy_classification)."""
    rng = np.random.default_rng(11)
    steps = np.arange(1, 401)
    level = np.where(steps <= 80, 1.1 - 0.57 * steps / 80, 0.53)
    loss = level * (1 + 0.27 * rng.standard_normal(len(steps)))
    val = [1.0, 0.85, 0.78, 0.8, 0.79, 0.97, 0.8, 0.79, 0.98, 0.97]
    ratio_steps = steps[steps % 20 == 0]
    frames = [scalar_rows("loss", val, steps=40 * np.arange(1, 11), split="val")]
    frames += [scalar_rows("update_ratio", np.full(len(ratio_steps), 1.2e-2), steps=ratio_steps, layer=layer)
               for layer in LAYERS]
    run = make_run(loss=np.abs(loss), steps=steps, frames=frames, task={"num_classes": 3})
    assert len(val_loss_swings(run)) == 2
    found = lr_too_high(run)
    assert [(f.severity, f.evidence["kind"]) for f in found] == [("warning", "plateau")]
