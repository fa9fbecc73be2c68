"""Kinds of learning-rate fault from issue #12's leave-one-family-out misses, each on a small synthetic run.

Each test builds the kind and a healthy counterpart the change must not
flag, so it fails if the rule stays quiet on the fault or warns on the
healthy kind (docs/accuracy.md, "Learning-rate kinds, issue #12").
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from traindoctor.diagnosis.learning_rate import lr_too_low, missing_warmup, peak_lr_update_ratio
from traindoctor.diagnosis.thresholds import overridden
from tests.diagnosis.factories import make_run, scalar_rows

# ------------------------------------------------------------------ lr_too_low: a decay hides the slow fall

EPOCH = 165  # optimizer steps per epoch; one per-epoch mean per record, as Lightning's on_epoch logging


def _poly_decayed(end_level: float, peak_ratio: float, layers: int = 3):
    """A 5-class classifier (ln 5 = 1.61) logged per epoch for 20 epochs under a polynomial lr decay to ~0
    (power 2). Its loss bends from ln 5 towards ``end_level`` as the lr shrinks (the fall in each epoch is
    proportional to that epoch's lr), and every layer's update/weight ratio is ``peak_ratio`` × lr / peak lr."""
    steps = np.arange(EPOCH, EPOCH * 21, EPOCH)
    lr = 1e-4 * (1 - (steps - EPOCH) / (EPOCH * 20)) ** 2
    fall = np.cumsum(lr) / lr.sum()
    rng = np.random.default_rng(12)
    loss = (math.log(5) - (math.log(5) - end_level) * fall) * (1 + 0.002 * rng.standard_normal(len(steps)))
    frames = [scalar_rows("lr", lr, steps=steps, layer="group0")]
    frames += [scalar_rows("update_ratio", peak_ratio * lr / lr[0] * (1 + 0.1 * layer), steps=steps,
                           layer=f"body.{layer}.weight") for layer in range(layers)]
    return make_run(loss=loss, steps=steps, frames=frames, task={"num_classes": 5},
                    env={"optimizer": {"type": "SGD", "param_groups": [{"lr": 1e-4}]}})


def test_tiny_steps_at_the_peak_lr_with_the_loss_far_from_its_floor_is_lr_too_low():
    """SGD 1e-4 with a polynomial decay: 1.61 -> 1.05 (65 % of ln 5), ratio 9e-5 at the peak lr, 2e-8 at the end.
    The decay bends the curve, so the slow-linear-fall test does not see it; the steps at the peak lr do."""
    run = _poly_decayed(1.05, 9e-5)
    assert 8e-5 < peak_lr_update_ratio(run) < 1.1e-4  # the first two epochs' records (lr >= 90 % of its peak)
    found = lr_too_low(run)
    assert [f.evidence["kind"] for f in found] == ["small_peak_steps"]
    assert found[0].evidence["peak_lr_update_ratio"] < 2e-4


def test_a_healthy_decayed_run_whose_late_steps_are_tiny_is_no_lr_too_low():
    """The same schedule and curve with a healthy 2e-3 at the peak lr (late ratios still fall to ~4e-7, as an
    early decay's do): the lr the user chose was fine; nothing is said about it."""
    assert lr_too_low(_poly_decayed(1.05, 2e-3)) == []


@pytest.mark.parametrize("slow_total_drop", [0.5, 0.65], ids=["default", "tuned-0.65"])
def test_tiny_steps_that_still_lost_most_of_the_loss_are_no_lr_too_low(slow_total_drop):
    """A run with tiny steps that still ended at 0.45 (28 % of ln 5) learned most of what it could (a
    fine-tuning of a large pre-trained model has small ratios): no finding at either setting."""
    with overridden({"lr_too_low": {"SLOW_TOTAL_DROP": slow_total_drop}}):
        assert lr_too_low(_poly_decayed(0.45, 9e-5)) == []


def test_the_ratio_at_the_peak_lr_ignores_the_decayed_tail():
    """Ratios 2e-3 while the lr is at its peak and 1e-6 once decayed: the peak-lr median is 2e-3."""
    steps = np.arange(1, 201)
    lr = np.where(steps <= 50, 1e-2, 1e-5)
    ratio = np.where(steps <= 50, 2e-3, 1e-6)
    run = make_run(loss=np.linspace(2.0, 1.0, 200), steps=steps,
                   frames=[scalar_rows("lr", lr, steps=steps, layer="group0"),
                           scalar_rows("update_ratio", ratio, steps=steps, layer="fc.weight")])
    assert peak_lr_update_ratio(run) == pytest.approx(2e-3)


# ------------------------------------------------------------------ missing_warmup: stuck at the start


def _transformer_at_full_lr(early_share: float, ratio: float, optimizer: str = "RMSprop", warmup: bool = False):
    """A 10-class transformer (ln 10 = 2.30) logged every 10 steps for 1,200 steps at a constant lr 1e-2: its
    loss goes from ln 10 to ``early_share`` × ln 10 over the first 30 % (1.0: it sits there) and then falls to
    1.2; no rise, no spike and a steady gradient norm. Update/weight ratios ``ratio`` on two layers every 50
    steps; ``warmup``: the lr ramps up over the first 10 %."""
    rng = np.random.default_rng(7)
    steps = np.arange(10, 1201, 10)
    third = early_share * math.log(10)
    level = np.where(steps <= 360, math.log(10) - (math.log(10) - third) * steps / 360,
                     third - (third - 1.2) * (steps - 360) / 840)
    loss = level * (1 + 0.005 * rng.standard_normal(len(steps)))
    lr = 1e-2 * (np.minimum(1.0, steps / 120) if warmup else np.ones(len(steps)))
    ratio_steps = steps[steps % 50 == 0]
    frames = [scalar_rows("lr", lr, steps=steps, layer="group0"),
              scalar_rows("grad_norm", 0.5 * (1 + 0.05 * rng.standard_normal(len(steps))), steps=steps)]
    frames += [scalar_rows("update_ratio", np.full(len(ratio_steps), ratio * scale), steps=ratio_steps, layer=layer)
               for layer, scale in (("blocks.0.attn.weight", 1.0), ("head.weight", 1.2))]
    return make_run(loss=loss, steps=steps, frames=frames, task={"num_classes": 10},
                    env={"model": {"has_attention": True}, "optimizer": {"type": optimizer}})


def test_a_transformer_stuck_at_its_start_with_working_steps_is_missing_warmup():
    """The post-LN ViT at seed 7: at ln 10 for its first third with ratios 4e-3, no rise, spike or gradient growth."""
    found = missing_warmup(_transformer_at_full_lr(1.0, 4e-3))
    assert [f.rule for f in found] == ["missing_warmup"]
    assert found[0].evidence["early_level_share"] == pytest.approx(1.0, abs=0.02)
    assert found[0].evidence["early_update_ratio"] >= 1e-3


@pytest.mark.parametrize(
    ("early_share", "ratio", "optimizer", "warmup"),
    [(1.0, 1e-4, "RMSprop", False),   # tiny steps: an lr too low, not instability
     (1.0, 4e-3, "RAdam", False),     # RAdam rectifies what warm-up works around
     (1.0, 4e-3, "RMSprop", True),    # warmed up: whatever it is, it is not a missing warm-up
     (0.6, 4e-3, "RMSprop", False)],  # 27 % below ln 10 by step 240: the model is learning
    ids=["tiny-steps", "radam", "warmed-up", "learning"],
)
def test_no_missing_warmup_for_a_slow_start_with_small_steps_radam_a_warmup_or_learning(early_share, ratio,
                                                                                         optimizer, warmup):
    assert missing_warmup(_transformer_at_full_lr(early_share, ratio, optimizer, warmup)) == []
