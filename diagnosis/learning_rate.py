"""Rules on the learning rate, read off the loss curve, the lr and the update/weight ratios.

lr too high, too low, decayed too early, no warmup. Also the binned loss
profile these rules (and ``underfitting``) judge, computed once per
``diagnose()`` call (:func:`~traindoctor.diagnosis.memo.per_run`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from traindoctor.diagnosis.common import (eval_frame, finding, finite_train_loss, layer_values, loss_reference,
                                          lr_series, task_of, train_loss)
from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.gradients import DEAD_MIN_RECORDS, ZERO_GRAD, dead_layers, vanishing_gradients
from traindoctor.diagnosis.loss import (
    DIVERGED_SMOOTHING,
    EARLY_STEPS_MAX,
    SPIKE_MAX_REPORTED,
    START_POINTS,
    Cadence,
    cadence,
    divergence_onset,
    first_steps_record,
    held_out_improving,
    loss_spikes,
    start_level,
)
from traindoctor.diagnosis.memo import per_run
from traindoctor.diagnosis.records import Evidence, Live, rule
from traindoctor.diagnosis.robust import binned_medians, finite, mad_sigma, median, true_runs, window_median
from traindoctor.store.frames import Curve
from traindoctor.store.run_data import RunData

SOURCE_LR = "seed 004 (step 6: look at learning curves)"

# Curves are judged on a 40-bin median profile (robust to minibatch noise,
# fixed cost for any length).
PROFILE_BINS = 40
# ...with at least 10 records per bin, so the profile's minimum is not one lucky batch.
PROFILE_MIN_BIN_SIZE = 10
# A curve needs two profile bins of 10 records (20 in all) before a rule judges its shape.
MIN_CURVE_POINTS = 20


@per_run
def loss_profile(run: RunData) -> tuple[Curve, Curve] | None:
    """The finite training loss and its binned-median profile; None below MIN_CURVE_POINTS records."""
    loss = finite_train_loss(run)
    if len(loss) < MIN_CURVE_POINTS:
        return None
    return loss, binned_medians(loss, max(2, min(PROFILE_BINS, len(loss) // PROFILE_MIN_BIN_SIZE)))


@per_run
def median_update_ratio(run: RunData) -> float | None:
    """Median positive update/weight ratio over all layers in the second half of the run; None without ratios."""
    frame = layer_values(run, "update_ratio")
    if frame.empty:
        return None
    values = frame.to_numpy(dtype="float64")[int(len(frame) * 0.5):]
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.median(values)) if values.size else None


# Seed 004's rule of thumb: a healthy update/weight ratio is about 1e-3. A
# ratio quoted in support of "lr too high" must be above it, one quoted for
# "lr too low" below it: evidence never contradicts its finding's claim.
UPDATE_RATIO_RULE_OF_THUMB = 1e-3
# Below this a layer's weights no longer move (DeepDiagnosis' lower band,
# ICSE'22): the ratios of layers a too-high lr killed (dead ReLUs) say
# nothing about the step size it took while they learned.
STILL_MOVING_RATIO = 1e-5


@per_run
def moving_update_ratio(run: RunData) -> float | None:
    """Median update/weight ratio over the whole run of the records whose weights
    still moved (ratio ≥ STILL_MOVING_RATIO); None without such records."""
    frame = layer_values(run, "update_ratio")
    if frame.empty:
        return None
    values = frame.to_numpy(dtype="float64")
    values = values[np.isfinite(values) & (values >= STILL_MOVING_RATIO)]
    return float(np.median(values)) if values.size else None


@per_run
def peak_lr_update_ratio(run: RunData) -> float | None:
    """Median positive update/weight ratio over all layers at the records where the lr (param group 0, the last
    record at or before the ratio's step) was ≥ SCHEDULE_DECAY_FRACTION of its peak: the step size of the lr
    the user chose, before a schedule's decay shrank it (every record when no lr was logged). None without
    ratios."""
    frame = layer_values(run, "update_ratio")
    if frame.empty:
        return None
    values = frame.to_numpy(dtype="float64")
    lr = finite(lr_series(run))
    if len(lr) and float(lr.max()) > 0:
        lr_steps, lr_values = lr.index.to_numpy(), lr.to_numpy(dtype="float64")
        at = np.clip(np.searchsorted(lr_steps, np.asarray(frame.index), side="right") - 1, 0, len(lr_values) - 1)
        values = values[lr_values[at] >= SCHEDULE_DECAY_FRACTION * float(lr_values.max())]
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.median(values)) if values.size else None


def high_update_ratio_support(run: RunData) -> tuple[str, dict]:
    """The update/weight ratio quoted for "lr too high": the median of the
    second half when it is above UPDATE_RATIO_RULE_OF_THUMB, else the median
    while the weights still moved when that one is; else nothing (a run
    whose layers a too-high lr killed ends with tiny ratios that would
    contradict the claim).

    Returns:
        (a sentence for the message or "", the evidence entries behind it).
    """
    late = median_update_ratio(run)
    if late is not None and late > UPDATE_RATIO_RULE_OF_THUMB:
        return f" Median update/weight ratio {late:.1e} (rule of thumb ~1e-3).", {"median_update_ratio": late}
    moving = moving_update_ratio(run)
    if moving is not None and moving > UPDATE_RATIO_RULE_OF_THUMB:
        return (f" Median update/weight ratio {moving:.1e} while the weights still moved (rule of thumb ~1e-3).",
                {"moving_update_ratio": moving})
    return "", {}


# A language model whose loss still sits near ln V, the cross-entropy of
# uniform predictions over its V tokens, has kept nothing it learned, not
# even how often each token occurs: on text a model of the token
# frequencies alone is already well below it (English letters: 4.03 of
# log2 27 = 4.75 bits, 0.85 of ln V; Shannon 1951, "Prediction and Entropy
# of Printed English", F1 against F0). A late level (the median of the last
# 20 % of the records) ≥ 90 % of ln V after ≥ 100 optimizer steps (seed 004
# step 3: a working lr makes the loss drop clearly within ~100 iterations)
# means the optimisation failed, and the update/weight ratio says which way:
# ≥ HIGH_UPDATE_RATIO (5× the ~1e-3 rule of thumb) the steps are too large to
# settle (a fine-tuning lr that wiped the pre-trained state, seed 004: "use
# lower learning rate, you are tuning a pre-trained model"), ≤
# LOW_UPDATE_RATIO (5× below it) too small to move. Between the two, or
# without ratios or a vocabulary size, nothing is said: tokens drawn at
# random sit at ln V whatever the lr. Corpus: healthy language models end at
# 0.49-0.58 of ln V; the fine-tuning with AdamW 0.3 at 0.95 (ratio 1.2e-2),
# the char LM with AdamW 2e-5 at 0.98 (ratio 2.9e-5).
# "Too large" is judged where the lr was at its peak too (peak_lr_update_ratio),
# as lr_too_low's slow-fall test does: a decay to 0 shrinks the late ratios
# of any lr, the one the user chose included. Fourth hold-out: a seq2seq
# transformer with AdamW 0.1 (33x its working lr), warm-up then linear decay
# to 0, sat at 0.94 of ln 24 with a late median ratio of 2.6e-3 but 1.3e-2
# at its peak lr (its healthy twins, not stuck: 5.1e-3 to 6.6e-3 there).
# And a ratio that large at the peak rules "too small" out.
UNIFORM_LEVEL_SHARE = 0.90
UNIFORM_MIN_STEPS = 100
LOW_UPDATE_RATIO = 2e-4


@per_run
def stuck_at_uniform(run: RunData) -> dict | None:
    """For a language model with a known vocabulary V, whose run lasted ≥ UNIFORM_MIN_STEPS
    optimizer steps and whose late training loss is ≥ UNIFORM_LEVEL_SHARE × ln V: the evidence
    (``late_level``, ``uniform_loss``, ``uniform_share``, ``median_update_ratio`` or None); else None.
    """
    task = task_of(run)
    uniform = task.uniform_loss
    curve = loss_profile(run)
    if task.kind != "language_modelling" or uniform is None or curve is None:
        return None
    loss = curve[0]
    if int(loss.index[-1]) < UNIFORM_MIN_STEPS:
        return None
    late = window_median(loss, 0.8, 1.0)
    if not late >= UNIFORM_LEVEL_SHARE * uniform:
        return None
    return {"late_level": late, "uniform_loss": uniform, "uniform_share": late / uniform,
            "vocab_size": task.size, "median_update_ratio": median_update_ratio(run),
            "peak_lr_update_ratio": peak_lr_update_ratio(run)}


# An lr schedule's tail. Its decay has begun where the lr drops below 90 %
# of its peak and stays there to the end: a fifth into a cosine, the start
# of a warm-up-stable-decay's or a cool-down's decay, a step decay. From
# there the loss falls (or stops falling) because the lr shrinks...
SCHEDULE_DECAY_FRACTION = 0.9
# ...and a run that ends at ≤ 10 % of its peak lr was annealed (cosine to
# zero, linear decay, WSD, one-cycle): its last stretch improves because the
# lr shrinks and flattens because the lr is gone. Neither says that the run
# stopped too soon or that the model is too small.
ANNEALED_FRACTION = 0.10


@dataclass(frozen=True)
class Schedule:
    """The shape of a run's lr schedule (param group 0), as far as the rules need it.

    Attributes:
        peak_lr, peak_step: the largest lr and its first step.
        decay_step: the first step from which the lr stays below
            SCHEDULE_DECAY_FRACTION of its peak to the end; None when it does not.
        final_fraction: the last lr over the peak.
    """

    peak_lr: float
    peak_step: int
    decay_step: int | None
    final_fraction: float

    @property
    def annealed(self) -> bool:
        """The run ended with the lr at ≤ ANNEALED_FRACTION of its peak."""
        return self.final_fraction <= ANNEALED_FRACTION


@per_run
def lr_schedule(run: RunData) -> Schedule | None:
    """The run's :class:`Schedule`; None without 3 finite, positive lr records."""
    lr = finite(lr_series(run))
    values = lr.to_numpy(dtype="float64")
    if len(values) < 3 or not values.max() > 0:
        return None
    peak_position = int(np.argmax(values))
    peak = float(values[peak_position])
    high = np.flatnonzero(values >= SCHEDULE_DECAY_FRACTION * peak)
    decay_position = int(high[-1]) + 1
    decay_step = int(lr.index[decay_position]) if decay_position < len(values) else None
    return Schedule(peak_lr=peak, peak_step=int(lr.index[peak_position]), decay_step=decay_step,
                    final_fraction=float(values[-1]) / peak)


def _initial_loss(run: RunData) -> float:
    """Where training started: the task's expected initial loss or ln(C) when known, else the first records.

    The median of the first records underestimates it when the loss drops
    within a handful of steps (a logistic regression with momentum), and is
    wherever logging started when it started late.
    """
    reference = loss_reference(run)
    return reference[0] if reference is not None else start_level(run)


# lr_too_high needs a real first drop (≥ 10 % of the start), then either
# climbs back ≥ 30 % of the way from its best to its start and stays there
# (the last 20 % of the run)...
MIN_DROP = 0.10
REBOUND_FRACTION = 0.30
REBOUND_NOISE_SIGMAS = 5.0
# ...or does so anywhere, for ≥ 3 consecutive profile bins (≥ 7.5 % of the
# run at 40 bins): a rebound while the lr warms up to a peak that is too
# high, which a new epoch or the decay later pulls back down. A loss spike
# lasts a few steps (PolyPythia's: < 100 of 143,000) and moves no bin median.
REBOUND_MIN_BINS = 3
# A sparse log (a record every ≥ 10 steps: HF logging_steps, a windowed
# mean every 20-25 steps, epoch means) with too few records for 40 bins of
# 10 is binned by ≥ 3 records for that test (a median of 3 is never one
# lucky batch; the climb must still clear 5 sigmas of those bins' noise):
# 10-record bins of 42 records are 4 bins of 200 steps, too coarse to hold
# a 3-bin climb. Without ln C or an expected initial loss, its start is then
# at least its first record when logging began with the run (a mean over
# the first window, or the loss a few steps in), not the median of its
# first 5 records, which reach 100 steps in and past the climb's start.
# With ln C the start stays ln C: a first window's mean can hold an early
# blow-up far above it (a residual MLP with NAdam too fast: 12.5 against
# ln 6 = 1.79 at step 10). Held-out corpus: a word LM with AdamW 0.2 (records every 20
# steps, 4.66 at step 20, 3.70 at step 40, back to 4.6 from step 300 to
# 540, down to 3.73 as the lr decays) and a GRU with Adam 0.1 (every 25
# steps: 0.49 at step 100, 1.3 from step 250 to 500) were missed.
SPARSE_LOG_EVERY = 10
SPARSE_MIN_BIN_SIZE = 3
# ...or thrashes on a high plateau: late level ≥ 30 % of the initial loss
# (healthy corpus runs, three seeds, end below 25 % of ln C), step-to-step
# noise ≥ 15 % of the level and median update/weight ratio ≥ 5e-3, 5× the
# ~1e-3 rule of thumb (seed 004). On the three-seed corpus the runs with a
# high plateau and no lr problem have ratios ≤ 4.6e-3, the lr-too-high runs
# 7.7e-3 to 6e-2: the margin is thin, the rule says so in its evidence.
# Without ratios, noise ≥ 30 % of the level makes it an info hint.
HIGH_PLATEAU_LEVEL = 0.30
THRASHING_NOISE = 0.15
HIGH_UPDATE_RATIO = 5e-3
NOISY_PLATEAU_NOISE = 0.30
# ...or the validation loss swings in the second half of its evaluations:
# ≥ 2 times it jumps ≥ 50 % above its best so far, the second after coming
# back within 25 % of it (AUTOTRAINER's oscillation, ICSE'21, on the loss
# instead of accuracy). It needs no loss scale, so it holds for regression
# and language models too; a run that overfits rises and stays up, a single
# spike swings once, and the first half is left to a young run's noise (a
# healthy SGD run's val loss jumps 1.8× early on). Corpus: the second-half
# val loss of every healthy run stays within 1.3× its best so far; a CNN
# with SGD lr 2.5, a regression MLP with Adam 0.2 and a fine-tuning with
# SGD 1.5 jump ≥ 1.5× 4-12 times.
SWING_RISE = 1.5
SWING_RETURN = 1.25
SWING_MIN_COUNT = 2
# Swings after which the run still ends at its best (the last evaluation
# within 5 % of the lowest) cost nothing the curve shows: the harm of an lr
# too high is a run that cannot settle lower, and this one did. An RMSprop
# ViT without momentum jumped 2.4x and 4.1x above its best and came back
# each time to a new best, ending at it (accuracy 0.95); the swinging runs
# with an lr too high end 1.35x (a regression MLP with Adam 0.2) to 3.9x
# (a BN MLP with SGD lr 8) above their best.
SWING_SETTLED = 1.05
# The three ratios above read a jump against the best level itself, the
# distance to a floor of 0: right for a classifier's or a regression's loss,
# not for one with a floor far above 0 (a language model's cross-entropy
# cannot fall below the text's entropy: 1.5x a best of 5.2 is 7.8, above
# ln V, worse than predicting every token as equally likely). So the unit
# of a jump is the smaller of the best level and the drop from where
# training started (ln C, ln V or the expected initial loss; else the first
# evaluation) to that best, once that drop is real (≥ MIN_DROP of the
# start): a jump ≥ 50 % of the unit, back within 25 % and settled within 5 %
# of it. Where the best level is the smaller (every corpus run whose val
# loss swings), nothing changes. Third hold-out: an LSTM LM with SGD 80
# (8x its working lr; ln 400 = 5.99) whose val loss went 5.18 -> 6.18,
# 6.66, back to 5.23, then 6.27 and 6.41, every jump < 1.3x its best.
# Swings the training loss does not share are a noisy validation set, not
# steps that overshoot: an lr too high throws back the loss the optimizer
# minimises. A swing counts as an overshoot only when the training loss's
# level at it (the median of its records since the evaluation before, or
# of those up to the evaluation after) is ≥ SWING_RISE × its best level
# so far too; otherwise the finding is info. A crystal-graph regression at
# a constant lr 1e-3 (a 10 % validation split) jumped ≥ 1.5× 22 times while
# its per-epoch training loss fell steadily (145 → 3.9, never 1.35× its
# best so far at a swing); the authors kept its best checkpoint.
# The training level at an evaluation is the median of at least this many
# single-step training records up to it (those since the evaluation before,
# or the last ones; a window or epoch mean is already one): heldout16's blob-counting DenseNet logged every 8 steps and
# evaluated every 12 left one single-batch loss per evaluation, and a
# typical one stood 2.6x above the lowest of twenty of them.
SWING_TRAIN_RECORDS = 5
# ...or, after a real drop, a profile bin (the median of ≥ 10 records, so
# not one bad batch) climbs above the initial loss while the median
# update/weight ratio is ≥ HIGH_UPDATE_RATIO: large steps threw the model
# back past where it started untrained, however it recovered. It needs no
# loss scale beyond the start (language models included). Corpus: no healthy
# run's profile climbs above its start; the lr-bump and bad-batch spikes
# that do have ratios ≤ 1.6e-3; the runs with an lr too high that do,
# 1.2e-2 to 0.68.
# A run that diverged (divergence) is left to that rule, unless its median
# update/weight ratio is ≥ HIGH_UPDATE_RATIO: then the lr is the cause to
# name beside it (seed 004: ratios far above ~1e-3 mean too large a step).
# A BN MLP with SGD lr 8 whose per-epoch mean was 50 at its first record and
# 1e4-3e6 after (ratio 5.9e-2) was read only as divergence. Of the corpus's
# other divergences, two are named too, both an lr the run could not take
# (a ViT with RMSprop lr 3, 5.1e-3; an lr grown x1.005 per step, 5.2e-3);
# the rest have ratios of 1.3e-7 to 3.2e-3 or none (NaN runs).


# ...or layers were killed by large steps: their gradient is zero from their
# first record (or from some record on, for ≥ half of them) to the end, yet
# at that first zero record their update/weight ratio is still ≥
# HIGH_UPDATE_RATIO and by the last it has fallen ≥ KILLED_RATIO_FADE×: the
# optimizer's momentum still carried the large steps that pushed their
# ReLUs where no input activates them, then faded (CS231n, "Neural Networks
# Part 1": a large gradient can update a ReLU so that it never activates
# again, "with a proper setting of the learning rate this is less
# frequently an issue"; seed 004's ratio rule of thumb for "large"). A
# layer frozen by mistake or never reached has a ratio of 0 (or lr × weight
# decay, ~1e-5, steadily), and some layer must still have a gradient (all
# zero is a probe recording gradients after zero_grad()). It needs no loss
# scale, so it holds for regression. Held-out corpus: a denoiser with Adam
# 0.05 (encoder and first decoder weights at zero gradient from step 20,
# ratio 1.5e-2 there, 0 by the end, the loss flat at 4.2× its twin's); the
# corpus's frozen and unused layers have ratio 0.
KILLED_RATIO_FADE = 10.0
# This test is made even when the log shows no drop (the loss tests above
# need one): large steps can kill the layers before the first loss record,
# and a log that starts late (every 10 steps from step 50) then shows only
# the flat loss after. Third hold-out: a U-Net with
# AMSGrad 0.1 (10x its working lr), all 21 hidden weights at zero gradient
# from their first record (step 25, ratios 2e-2 to 8e-2, 0 from step ~225),
# only the output layer still learning; its loss flat at 0.15 from its first
# record at step 50 (its twin at 0.01 reaches 0.074).


# Live, a climb that one profile bin's jump makes most of (≥ half) is left
# to the end of the run, as one a detected loss spike starts: until the run
# ends it may be a jump's slow recovery (an lr bump, a bad batch), which the
# finished run's diagnosis calls a loss spike (a spike is detected only once
# it has recovered, so live the jump is all there is to see).
LIVE_JUMP_SHARE = 0.5


def rebound_settled(finding: Finding) -> bool:
    """For a rebound below the initial loss (a high plateau is judged at the end; above the start: divergence)
    that neither a loss spike nor a one-bin jump started (either may still be recovering slowly, which the end
    of the run tells); a climb above the uniform-prediction loss waits for the end too (it may be the start
    of a divergence)."""
    return (finding.evidence.get("kind") == "rebound" and finding.evidence.get("rebound_fraction", 1.0) < 1.0
            and not finding.evidence.get("after_spike", False)
            and finding.evidence.get("jump_share", 0.0) < LIVE_JUMP_SHARE)


def _rebound_stretch(profile: Curve, start: float, noise: float, spikes: list,
                     floor: float = 0.0) -> tuple[int, int, int] | None:
    """The first stretch of ≥ REBOUND_MIN_BINS profile bins climbed back ≥ REBOUND_FRACTION of the way
    from the best level so far to ``start`` (and REBOUND_NOISE_SIGMAS × ``noise``), after a real drop (≥ MIN_DROP
    of ``start`` above ``floor``: 0, or a negative loss's lowest record): (position of that best, first bin, last
    bin), or None.

    A stretch that a loss spike starts (between the bin before it and its
    first bin) is that spike's slow recovery, which ``loss_spike`` reports.
    """
    values, centres = profile.to_numpy(), profile.index.to_numpy()
    best_so_far = np.minimum.accumulate(values)
    dropped = start - best_so_far >= MIN_DROP * (start - floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = (values - best_so_far) / (start - best_so_far)
    climbed = dropped & (fraction >= REBOUND_FRACTION) & (values - best_so_far > REBOUND_NOISE_SIGMAS * noise)
    for first, last in true_runs(climbed, REBOUND_MIN_BINS):
        before = centres[first - 1] if first > 0 else -math.inf
        if any(before <= spike.start_step <= centres[first] for spike in spikes):
            continue
        return int(np.argmin(values[:first])), first, last
    return None


@rule(severities=("info", "warning"), inputs=("loss", "update_ratio", "lr", "grad_norm", "amp_skipped"),
      metadata=("env.logger", "task.expected_initial_loss", "task.kind", "task.num_classes", "task.vocab_size"),
      evidence=Evidence.series("loss"), heatmaps=("update_ratio",),
      # Its consequences: the spikes and the early best epoch of the overshoot, accuracy stuck at the
      # majority class, ReLUs killed by a huge step (dead layers) and the update ratios out of band.
      explains=("loss_spike", "best_epoch_not_last", "no_better_than_baseline", "dead_layers",
                "update_ratio_out_of_band"),
      thresholds=("MIN_CURVE_POINTS", "PROFILE_BINS", "PROFILE_MIN_BIN_SIZE", "MIN_DROP", "REBOUND_FRACTION",
                  "REBOUND_NOISE_SIGMAS", "REBOUND_MIN_BINS", "SPARSE_LOG_EVERY", "SPARSE_MIN_BIN_SIZE",
                  "HIGH_PLATEAU_LEVEL", "SWING_RISE", "SWING_RETURN",
                  "SWING_MIN_COUNT", "SWING_SETTLED", "SWING_TRAIN_RECORDS", "THRASHING_NOISE",
                  "HIGH_UPDATE_RATIO", "NOISY_PLATEAU_NOISE", "UPDATE_RATIO_RULE_OF_THUMB", "STILL_MOVING_RATIO",
                  "LIVE_JUMP_SHARE", "UNIFORM_LEVEL_SHARE", "UNIFORM_MIN_STEPS", "KILLED_RATIO_FADE", "ZERO_GRAD",
                  "DEAD_MIN_RECORDS", "CLIMB_SANE_START", "CLIMB_FACTOR", "CLIMB_MIN_RECORDS", "CLIMB_SMOOTHING",
                  "CLIMB_CONTRADICTING_ACCURACY", "CLIMB_NOISE_SIGMAS", "HELD_OUT_MIN_EVALS", "HELD_OUT_MIN_GAIN",
                  "HELD_OUT_SHARE", "HELD_OUT_MARGIN"),
      live=Live(settled=rebound_settled))
def lr_too_high(run: RunData) -> list[Finding]:
    """Loss climbs back after its best, or thrashes on a high plateau with large updates.

    Symptom: after a real drop (≥ 10 % of the initial loss, ln C when the
    task says C), the loss climbs back ≥ 30 % of the way to it (and 5 noise
    sigmas) and stays there to the end, or does so for ≥ 3 profile bins
    anywhere (during the warm-up, say, before a new epoch or the decay
    pulls it back down; a log with a record every ≥ 10 steps and < 400
    records is binned by 3 records for this, and without ln C starts at
    its first record or higher); or the validation loss swings in the second half
    of its evaluations (≥ 50 % above its best so far, back within 25 %,
    and up again; in units of its drop from ln C, ln V or its first
    evaluation instead of its best level when that drop is smaller, as for
    a language model's loss) and does not end within 5 % of its best (info when the
    training loss's level never reaches 1.5× its best so far at those
    evaluations: a noisy validation set, not overshooting steps); or a profile bin climbs above the initial loss after
    that drop while the median update/weight ratio is ≥ 5e-3; or, for a
    task whose loss scale is known (ln C or the expected initial loss), its
    late level stays ≥ 30 % of the initial
    loss with step-to-step noise ≥ 15 % of the level while the median
    update/weight ratio is ≥ 5e-3 (5× the ~1e-3 rule of thumb); without
    update ratios, noise ≥ 30 % of the level is reported as info only (a hard
    task that converged looks the same); or, for a language model with a
    known vocabulary V, the late loss is still ≥ 90 % of ln V (uniform
    predictions) after ≥ 100 steps while that ratio, or the one where the lr
    was at ≥ 90 % of its peak (a decay shrinks the late ones), is ≥ 5e-3 (a
    fine-tuning lr that wiped the pre-trained state, a peak lr far too high);
    or the run diverged (divergence)
    while the median update/weight ratio was ≥ 5e-3: the steps that blew it
    up were too large; or layers lose their gradient for
    good while their update/weight ratio is still ≥ 5e-3, fading ≥ 10× by
    the end (ReLUs killed by large steps; any loss scale). The swings and
    the killed layers need no drop of the training loss and no 20 records
    of it: they are judged also where the log shows none (it started late).
    Or, from a first record at most 25 % above the loss of uniform
    predictions (ln C, ln V, the expected initial loss; for a regression
    without one, its first record when it is from the first optimizer
    steps, and then the climb must also stand 6 noise sigmas above it in
    log space) and
    before the loss ever fell 10 %, the smoothed loss climbs to ≥ 1.5× that
    level (or the first record, if higher) for ≥ 5 records and comes back down, with no
    evaluation in that stretch at ≥ 0.5 accuracy and 2× chance: the first
    steps made the model worse than guessing (during a warm-up, say);
    reported beside any later rebound, judged live only at the end.
    Likely cause: the step size overshoots the valley.
    Try: lower the lr (×0.3 … ×0.1) or add a decay schedule.
    Source: seed 004 step 6 rule 2, the update/weight ratio and fine-tuning; seed 003; Shannon 1951
    (unigram entropy of English below ln V); CS231n, Neural Networks Part 1 (dying ReLUs and the lr).
    """
    climb = _climb_finding(run)
    found = _lr_too_high_shapes(run)
    # A climb from the start and a later rebound are two episodes, each reported (a new user's break test: the
    # climb alone said the loss came back down when it rebounded and stayed there after).
    return found if climb is None else sorted([climb] + found, key=lambda f: f.step_start)


def _lr_too_high_shapes(run: RunData) -> list[Finding]:
    """:func:`lr_too_high`'s tests of the training loss's shape after a drop, of the validation swings, of killed
    layers and of a high plateau (all but the climb from the start)."""
    curve = loss_profile(run)
    if curve is None:
        # Too few training records for a shape (a sparse log of a short run): the tests that need none.
        loss = finite_train_loss(run)
        return _needing_no_drop(run, loss, {}) if len(loss) >= 2 and divergence_onset(run) is None else []
    loss, profile = curve
    onset = divergence_onset(run)
    if onset is not None:
        # Divergence is the finding; the update/weight ratio names its cause when the steps were large.
        ratio = median_update_ratio(run)
        if ratio is None or ratio < HIGH_UPDATE_RATIO:
            return []
        return [finding(
            "lr_too_high", "warning", "Diverged with large updates: lr too high",
            f"The run diverged from step {onset[0]} while the median update/weight ratio was {ratio:.1e}, "
            f"{ratio / UPDATE_RATIO_RULE_OF_THUMB:.0f}× the ~1e-3 rule of thumb: the steps were too large.",
            "Lower the lr (×0.1 or more), warm it up, clip gradients.", SOURCE_LR + "; seed 004 (update/weight ratio)",
            # To the run's last step: ``loss`` is finite, so after a NaN its last step precedes the onset.
            onset[0], max(onset[0], int(train_loss(run).index[-1])),
            {"kind": "diverged_large_updates", "divergence_step": onset[0],
             "divergence_kind": onset[1], "median_update_ratio": ratio})]
    stuck = stuck_at_uniform(run)
    if stuck is not None and any(stuck[key] is not None and stuck[key] >= HIGH_UPDATE_RATIO
                                 for key in ("median_update_ratio", "peak_lr_update_ratio")):
        large = max(value for value in (stuck["median_update_ratio"], stuck["peak_lr_update_ratio"])
                    if value is not None)
        return [finding(
            "lr_too_high", "warning", "Language model stuck at the uniform-prediction loss with large updates",
            f"The loss stays at {stuck['late_level']:.3g}, {stuck['uniform_share']:.0%} of ln({stuck['vocab_size']}) "
            f"= {stuck['uniform_loss']:.3g}, the loss of predicting every token as equally likely: the model keeps "
            f"nothing it learns, not even the token frequencies, while the median update/weight ratio "
            f"{'was' if large != stuck['median_update_ratio'] else 'is'} {large:.1e}"
            f"{' where the lr was at its peak' if large != stuck['median_update_ratio'] else ''}, above the ~1e-3 "
            f"rule of thumb: the steps are too large to settle.",
            "Lower the lr (×0.1 to ×0.01); fine-tuning a pre-trained model needs a far lower lr than training "
            "from scratch.", SOURCE_LR + "; seed 004 (fine-tuning: use a lower learning rate)",
            loss.index[0], loss.index[-1], dict(stuck, kind="uniform"))]
    start = _initial_loss(run)
    logged = cadence(run)
    sparse = (logged is not None and logged.every is not None and logged.every >= SPARSE_LOG_EVERY
              and len(loss) < PROFILE_BINS * PROFILE_MIN_BIN_SIZE)
    if sparse and logged.first_step <= logged.every and loss_reference(run) is None:
        start = max(start, float(loss.iloc[0]))
    best_position = int(np.argmin(profile.to_numpy()))
    best = float(profile.iloc[best_position])
    late = window_median(loss, 0.8, 1.0)
    # A loss that goes negative (a Gaussian NLL, a log-likelihood of densities) has no 0 to read "a real drop
    # of 10 % of the start" from: a start at or below 0 ended the rule, and a loss falling through 0 to -2 and
    # climbing back to -1 was never judged. Its drop is read from its lowest record instead (then any drop
    # counts, and the climb must still stand REBOUND_NOISE_SIGMAS out of the noise); a loss that stays ≥ 0
    # keeps 0, unchanged.
    floor = min(0.0, float(np.min(loss.to_numpy())))
    if start - floor <= 0 or start - best < MIN_DROP * (start - floor):
        # No drop in the training log (it may have started late, or the loss may have a floor far above 0).
        return _needing_no_drop(run, loss, {"initial_loss": start, "best_level": best, "late_level": late})
    ratio = median_update_ratio(run)
    rebound = (late - best) / (start - best)
    late_values = loss.to_numpy()[int(0.5 * len(loss)):]
    noise = mad_sigma(np.diff(late_values)) / math.sqrt(2) / max(median(late_values), 1e-12)
    evidence = {"kind": "plateau", "initial_loss": start, "best_level": best, "late_level": late,
                "rebound_fraction": rebound, "late_noise": noise}
    support, supporting = high_update_ratio_support(run)
    evidence.update(supporting)
    # The minimum of up to 40 noisy bins sits 2-3 sigmas low: the climb must exceed 5 sigmas of the bin noise.
    profile_noise = mad_sigma(np.diff(profile.to_numpy())) / math.sqrt(2)
    evidence["profile_noise"] = profile_noise
    spikes = loss_spikes(run)
    if (rebound >= REBOUND_FRACTION and best_position < len(profile) - 2
            and late - best > REBOUND_NOISE_SIGMAS * profile_noise
            and not held_out_improving(run, profile.index[best_position], loss.index[-1])):
        evidence["kind"] = "rebound"
        # A climb that a loss spike started may still be that spike's slow
        # recovery: only the end of the run tells (live checks wait for it).
        evidence["after_spike"] = any(spike.start_step >= profile.index[best_position] for spike in spikes)
        rises = np.diff(profile.to_numpy()[best_position:])
        evidence["jump_share"] = float(rises.max()) / (late - best) if rises.size else 0.0
        return [finding(
            "lr_too_high", "warning", "Loss climbed back after its best: lr too high",
            f"The loss reached {best:.3g} near step {profile.index[best_position]}, then climbed back to {late:.3g} "
            f"({rebound:.0%} of the way back to its initial {start:.3g}) and stayed there.{support}",
            "Lower the lr (×0.3 to ×0.1) or decay it; clip gradients.", SOURCE_LR + "; seed 003",
            profile.index[best_position], loss.index[-1], evidence)]
    fine = binned_medians(loss, max(2, min(PROFILE_BINS, len(loss) // SPARSE_MIN_BIN_SIZE))) if sparse else profile
    fine_noise = mad_sigma(np.diff(fine.to_numpy())) / math.sqrt(2) if sparse else profile_noise
    stretch = _rebound_stretch(fine, start, fine_noise, spikes, floor)
    if stretch is not None and held_out_improving(run, fine.index[stretch[0]], fine.index[stretch[2]]):
        stretch = None  # harder batches while the model kept improving on held-out data (a curriculum)
    if stretch is not None:
        profile = fine
        best_position, first, last = stretch
        best, climbed = float(profile.iloc[best_position]), float(profile.iloc[first:last + 1].max())
        evidence.update(kind="rebound", best_level=best, rebound_level=climbed,
                        rebound_fraction=(climbed - best) / (start - best), rebound_steps=[int(profile.index[first]),
                                                                                           int(profile.index[last])])
        if sparse:
            # Live, on 3-record bins a jump still recovering fills 3 bins within 9 records: a climb that one
            # bin's jump makes most of is left to the end of the run (LIVE_JUMP_SHARE), as the climb that stays.
            rises = np.diff(profile.to_numpy()[best_position:last + 1])
            evidence["jump_share"] = float(rises.max()) / (climbed - best) if rises.size and climbed > best else 0.0
        return [finding(
            "lr_too_high", "warning", "Loss climbed back after its best: lr too high",
            f"The loss reached {best:.3g} near step {profile.index[best_position]}, then climbed back to {climbed:.3g} "
            f"({evidence['rebound_fraction']:.0%} of the way back to its initial {start:.3g}) between steps "
            f"{profile.index[first]} and {profile.index[last]}{_lr_phase(run, int(profile.index[first]))}, before "
            f"coming down again.{support}",
            "Lower the peak lr (×0.3 to ×0.1), or warm up for longer; clip gradients.", SOURCE_LR + "; seed 003",
            profile.index[best_position], profile.index[last], evidence)]
    above = _above_start(profile, start, floor)
    if above is not None and ratio is not None and ratio >= HIGH_UPDATE_RATIO:
        best_position, first = above
        best, peak = float(profile.iloc[best_position]), float(profile.iloc[first:].max())
        evidence.update(kind="above_start", best_level=best, above_start_step=int(profile.index[first]),
                        peak_level=peak, median_update_ratio=ratio)
        return [finding(
            "lr_too_high", "warning", "Loss climbed above its start with large updates: lr too high",
            f"The loss reached {best:.3g} near step {profile.index[best_position]}, then climbed above its initial "
            f"{start:.3g} (to {peak:.3g}) near step {profile.index[first]}{_lr_phase(run, int(profile.index[first]))}, "
            f"while the median update/weight ratio was {ratio:.1e}, above the ~1e-3 rule of thumb.",
            "Lower the lr (×0.3 to ×0.1) or decay it; clip gradients.", SOURCE_LR + "; seed 003",
            profile.index[best_position], loss.index[-1], evidence)]
    # A hint that the val loss swings while the training loss does not (info) gives way to a warning below.
    held: list[Finding] = []
    swings = val_loss_swings(run)
    if len(swings) >= SWING_MIN_COUNT:
        held = [_swings_finding(run, swings, loss, evidence, support)]
        if held[0].severity != "info":
            return held
    killed = _killed_layers(run)
    if killed:
        return [_killed_finding(killed, loss, late, evidence)]
    if loss_reference(run) is None:  # a high plateau needs the loss scale: ln C or the expected initial loss
        return held
    high = late >= HIGH_PLATEAU_LEVEL * start
    if ratio is not None:
        thrashing, severity = noise >= THRASHING_NOISE and ratio >= HIGH_UPDATE_RATIO, "warning"
    else:
        thrashing, severity = noise >= NOISY_PLATEAU_NOISE, "info"
    if not (high and thrashing) or (severity == "info" and held):
        return held
    evidence["median_update_ratio"] = ratio  # ≥ HIGH_UPDATE_RATIO when quoted: it decided the finding
    why = (f"the median update/weight ratio is {ratio:.1e}, above the ~1e-3 rule of thumb"
           if ratio is not None else "no update ratios were recorded to confirm it")
    return [finding(
        "lr_too_high", severity, "High, noisy plateau: lr too high",
        f"The loss stays at {late:.3g} ({late / start:.0%} of its initial {start:.3g}) with step-to-step noise "
        f"{noise:.0%} of its level, while {why}.",
        "Lower the lr (×0.3 to ×0.1) or add a decay schedule once the loss stalls.", SOURCE_LR + "; seed 003",
        loss.index[int(0.4 * len(loss))], loss.index[-1], evidence)]


# A fresh model starts near the loss of uniform predictions (ln C, ln V, the expected initial loss). Steps too
# large make it worse than guessing before it learns anything: the smoothed loss climbs to ≥ 1.5× that level
# (or its first record, if higher) for ≥ 5 records, from a first record at most 25 % above it and before it
# ever fell 10 %, then comes back (one that stays up is a divergence). Heldout9's Signum GRU at 50× its lr (2.0
# to 3.4-6 against ln 6) and heldout13's Sophia GPT at 30× (3.1 to 7.4 against ln 28) were missed: no drop came
# first for the rebound tests to measure from. No healthy run of the corpus, the program hold-outs or the
# re-seeded recipes (293 + 144 runs) does it; a head whose bias starts the loss at 4× ln C is no sane start.
CLIMB_SANE_START = 1.25
CLIMB_FACTOR = 1.5
CLIMB_MIN_RECORDS = 5
# Smoothing of the climb test: a centred rolling median of 5 records (one bad batch is no climb).
CLIMB_SMOOTHING = 5
# An evaluation during the climb that classifies ≥ half its examples right, and ≥ 2× chance, says the model was
# not worse than guessing: the training loss carries more than the cross-entropy (an auxiliary loss whose
# weight ramps up, a new user's break test: an MLP on the digits at 0.74 accuracy inside its "climb").
CLIMB_CONTRADICTING_ACCURACY = 0.5
# A regression has no loss scale, so its climb is measured from its first record, when the log shows the start
# of training: 1.5x the loss of the untrained model, before the
# loss ever fell 10 %, is worse than doing nothing. Heldout13's SAE at 17x its lr (1.8 at step 5 to 10.5) and
# heldout15's masked-patch model under Lion at 20x (1.25 to 2.3-3.3 for 200 steps) were missed for want of
# ln C. Of the 1,100 runs of the corpus, the hold-outs and the re-seeded healthy recipes, only these two and
# the corpus's regression MLP at Adam 0.5 (already found) climb so; no healthy run does. A log that starts
# later, or one of epoch means, has no record of the start. Not for a task whose kind is unknown: an
# actor-critic's loss starts near 0 and grows with the returns (tests/diagnosis/test_healthy_kinds.py), and a
# single noisy first record of a healthy curve can sit far below its neighbours (tests/diagnosis/test_noise.py).
FIRST_RECORD = "its first record"
# Nor can one record stand for the start of a very noisy log: measured from it, the climb must also hold
# CLIMB_NOISE_SIGMAS record-to-record noise sigmas above it in log space (minibatch noise scales with the loss). The three regressions above climb 8.6-11.5 sigmas; 900 healthy synthetic curves
# of tests/diagnosis/test_noise.py's shapes and noise models (Gaussian, Student-t, gamma with cv 0.5), read as
# regressions, reach at most 4.3 (32 of them passed 1.5x their first records without this test).
CLIMB_NOISE_SIGMAS = 6.0


def _climb_reference(run: RunData) -> tuple[float, str, str] | None:
    """(the loss a fresh model starts at, its name, what it is) for the climb test: ln C, ln V or the user's
    expected initial loss; without one, the first training record when it shows the start of training (a
    step value from the first optimizer steps, or a mean over them: :func:`first_steps_record`); None when
    the log has neither."""
    task = task_of(run)
    reference = loss_reference(run)
    if task.uniform_loss is not None and task.kind in ("classification", "language_modelling") and (
            reference is None or math.isclose(reference[0], task.uniform_loss, rel_tol=1e-6)):
        what = "class" if task.kind == "classification" else "token"
        return task.uniform_loss, f"ln({task.size})", f"the loss of predicting every {what} as equally likely"
    if reference is not None:
        return reference[0], reference[1], "where a fresh model starts"
    loss = finite_train_loss(run)
    if task.kind == "regression" and len(loss) and first_steps_record(run, loss) in ("initial", "early"):
        # The first record itself: a median of the first steps' records takes in the climb when it starts at
        # once (a new user's break test: full-batch SGD at 5/λ0, 1.08 at step 1, then 1.39, 8.7, 126, read as
        # a start of 5.05). One noisy record is answered by the noise test (CLIMB_NOISE_SIGMAS).
        return float(loss.iloc[0]), FIRST_RECORD, "where this model started"
    return None


def _climb_above_uniform(run: RunData, loss: Curve) -> dict | None:
    """The climb from a sane start to ≥ CLIMB_FACTOR × the uniform-prediction loss (see above): its levels and
    steps (optimizer steps), or None."""
    reference = _climb_reference(run)
    values = loss.to_numpy(dtype="float64")
    if reference is None or len(values) < CLIMB_MIN_RECORDS + 2:
        return None
    level, name, meaning = reference
    first = float(values[0])
    if not 0 < first <= CLIMB_SANE_START * level:
        return None
    smooth = Curve(values).rolling(CLIMB_SMOOTHING, center=True, min_periods=1).median().to_numpy()
    bar = CLIMB_FACTOR * max(first, level)
    stretches = true_runs(smooth >= bar, CLIMB_MIN_RECORDS)
    if not stretches or smooth[-1] >= bar:
        return None
    begin, end = stretches[0]
    if begin and float(smooth[:begin].min()) < (1 - MIN_DROP) * first:
        return None  # it fell first: the rebound tests measure from that drop
    if name == FIRST_RECORD and not _climb_beyond_noise(values, smooth[begin:end + 1], level):
        return None
    # Where the raw loss first reaches the bar, and its highest record, within the stretch.
    window = values[begin:end + 1]
    rise = begin + int(np.flatnonzero(window >= bar)[0]) if (window >= bar).any() else begin
    first_step, last_step = int(loss.index[rise]), int(loss.index[end])
    accuracy = finite(eval_frame(run, "accuracy")[0])
    during = accuracy[(accuracy.index >= first_step) & (accuracy.index <= last_step)] if len(accuracy) else accuracy
    task = task_of(run)
    chance = 1.0 / task.size if task.kind == "classification" and task.size else 0.0
    if len(during) and float(during.max()) >= max(CLIMB_CONTRADICTING_ACCURACY, 2 * chance):
        return None
    return {"kind": "climb_above_uniform", "first_loss": first, "reference_loss": level, "reference": name,
            "reference_meaning": meaning, "peak_loss": float(window.max()), "climb_steps": [first_step, last_step]}


def _climb_beyond_noise(values: np.ndarray, stretch: np.ndarray, level: float) -> bool:
    """Whether the highest level the smoothed loss ``stretch`` holds for CLIMB_MIN_RECORDS records stands
    ≥ CLIMB_NOISE_SIGMAS record-to-record noise sigmas above ``level``, both in log space (a loss's minibatch
    noise scales with its level); False for a loss that is ever ≤ 0."""
    if float(values.min()) <= 0 or level <= 0:
        return False
    sigma = mad_sigma(np.diff(np.log(values))) / math.sqrt(2)
    held = max(float(stretch[i:i + CLIMB_MIN_RECORDS].min()) for i in range(len(stretch) - CLIMB_MIN_RECORDS + 1))
    return math.log(held / level) >= CLIMB_NOISE_SIGMAS * sigma


def _climb_finding(run: RunData) -> Finding | None:
    """lr_too_high's warning for a climb above the uniform-prediction loss before any fall
    (:func:`_climb_above_uniform`), or None; not judged once the run diverged (divergence's)."""
    loss = finite_train_loss(run)
    if len(loss) < 2 or divergence_onset(run) is not None:
        return None
    climb = _climb_above_uniform(run, loss)
    if climb is None:
        return None
    first, last = climb["climb_steps"]
    logged = cadence(run)
    early = "epochs" if logged is not None and logged.per_epoch else "steps"
    if climb["reference"] == FIRST_RECORD:
        return finding(
            "lr_too_high", "warning", "Loss climbed far above where it started: lr too high",
            f"From {climb['reference_loss']:.3g} at its first record (step {int(loss.index[0])}), and "
            f"before it had fallen {MIN_DROP:.0%}, the loss climbed to {climb['peak_loss']:.3g} between steps "
            f"{first} and {last}{_lr_phase(run, first)}, then came back below {CLIMB_FACTOR:g}× its start: the "
            f"first {early} made the model worse than it was untrained. (A regression loss has no scale to "
            f"judge it by, so the climb is measured from where it started.)",
            "Lower the peak lr (×0.3 to ×0.1), or warm up for longer; clip gradients.", SOURCE_LR + "; seed 003",
            first, last, climb)
    where = "near" if climb["first_loss"] >= (2 - CLIMB_SANE_START) * climb["reference_loss"] else "below"
    return finding(
        "lr_too_high", "warning", "Loss climbed above the uniform-prediction loss from the start: lr too high",
        f"From {climb['first_loss']:.3g} at its first record, {where} {climb['reference']} = "
        f"{climb['reference_loss']:.3g} ({climb['reference_meaning']}), and before it had fallen "
        f"{MIN_DROP:.0%}, the loss climbed to {climb['peak_loss']:.3g} between steps {first} and {last}"
        f"{_lr_phase(run, first)}, then came back below {CLIMB_FACTOR:g}× that level: the first {early} made the "
        f"model worse than guessing.",
        "Lower the peak lr (×0.3 to ×0.1), or warm up for longer; clip gradients.", SOURCE_LR + "; seed 003",
        first, last, climb)


def _needing_no_drop(run: RunData, loss: Curve, evidence: dict) -> list[Finding]:
    """lr_too_high's tests that need neither a drop nor a shape of the training loss ``loss`` (finite, ≥ 2
    records): layers killed by large steps (:func:`_killed_layers`, a warning), then the validation loss
    swings (:func:`val_loss_swings`, a warning or an info hint). A log that starts late, a sparse one or a
    loss whose floor is far above 0 can show no drop of the training loss while either holds. ``evidence``:
    the levels the caller measured."""
    killed = _killed_layers(run)
    if killed:
        return [_killed_finding(killed, loss, window_median(loss, 0.8, 1.0), evidence)]
    swings = val_loss_swings(run)
    if len(swings) >= SWING_MIN_COUNT:
        support, supporting = high_update_ratio_support(run)
        return [_swings_finding(run, swings, loss, dict(evidence, **supporting), support)]
    return []


def _swings_finding(run: RunData, swings: list[int], loss: Curve, evidence: dict, support: str) -> Finding:
    """lr_too_high's finding for the validation-loss ``swings`` (:func:`val_loss_swings`, ≥ SWING_MIN_COUNT
    steps): a warning, or info when the training loss did not jump with them (:func:`train_level_jump`).
    ``support`` is the update-ratio sentence quoted, its entries already in ``evidence``."""
    train_jump = train_level_jump(run, swings)
    evidence = dict(evidence, kind="swings", swing_steps=swings, train_jump=train_jump)
    values = finite(eval_frame(run, "loss")[0])
    lowest = float(values.min())
    start = _swing_start(run, float(values.iloc[0]))
    unit = (f"{SWING_RISE - 1:.0%} of its drop from {start:.3g} to its best ({lowest:.3g})"
            if _swing_unit(lowest, start) < lowest else f"{SWING_RISE - 1:.0%} above its best so far")
    if train_jump is not None and train_jump < SWING_RISE:
        return finding(
            "lr_too_high", "info", "Validation loss swings, training loss does not",
            f"The validation loss jumped ≥ {unit} {len(swings)} times, "
            f"coming back in between (at steps {', '.join(map(str, swings[:5]))}), while the training loss "
            f"did not (at most {train_jump:.2f}× its best level so far at those evaluations): a noisy "
            f"validation set (a small split) rather than steps that overshoot, which would throw back the "
            f"loss the optimizer minimises.{support}",
            "Use a larger validation split (or average over several evaluations) before judging the lr; pick "
            "checkpoints on a smoothed validation curve.", SOURCE_LR + "; seed 003",
            swings[0], loss.index[-1], evidence)
    return finding(
        "lr_too_high", "warning", "Validation loss swings: lr too high",
        f"The validation loss jumped ≥ {unit} {len(swings)} times, coming "
        f"back in between (at steps {', '.join(map(str, swings[:5]))}): the steps overshoot.{support}",
        "Lower the lr (×0.3 to ×0.1) or decay it; clip gradients.", SOURCE_LR + "; seed 003",
        swings[0], loss.index[-1], evidence)


def _killed_finding(killed: dict[str, float], loss: Curve, late: float, evidence: dict) -> Finding:
    """lr_too_high's finding for ``killed`` (:func:`_killed_layers`: layer → its ratio at its first zero-gradient
    record), over the whole of ``loss`` (the finite training loss), whose late level is ``late``."""
    shown = ", ".join(f"{name} ({first:.1e})" for name, first in list(killed.items())[:6])
    evidence = dict(evidence, kind="killed_layers", killed_layers=killed)
    return finding(
        "lr_too_high", "warning", "Layers killed by large steps: lr too high",
        f"{len(killed)} layer(s) lost their gradient for good while their update/weight ratio was still above "
        f"the ~1e-3 rule of thumb (at their first zero-gradient record: {shown}), fading to the end: large steps "
        f"pushed their ReLUs where no input activates them. The loss then stays at {late:.3g}.",
        "Lower the lr (×0.3 to ×0.1), warm it up, clip gradients; LeakyReLU/GELU cannot die this way.",
        SOURCE_LR + "; CS231n (dying ReLUs)", loss.index[0], loss.index[-1], evidence)


def _killed_layers(run: RunData) -> dict[str, float]:
    """Layers whose gradient norm is zero (≤ ZERO_GRAD) from a record to the end (every record, or ≥ half of
    them and ≥ DEAD_MIN_RECORDS) while their update/weight ratio at that record is ≥ HIGH_UPDATE_RATIO and
    ≥ KILLED_RATIO_FADE × its last value: layer → that ratio. Empty without per-layer gradient norms and
    ratios, or when no layer has a gradient left."""
    grads, ratios = layer_values(run, "grad_norm"), layer_values(run, "update_ratio")
    if grads.empty or ratios.empty:
        return {}
    killed: dict[str, float] = {}
    alive = False
    for layer in grads.columns:
        values = grads[layer].dropna()
        zero = np.abs(values.to_numpy()) <= ZERO_GRAD
        nonzero = np.flatnonzero(~zero)
        alive = alive or bool(len(zero) and not zero[-1])
        tail = len(values) - (nonzero[-1] + 1 if len(nonzero) else 0)
        if tail < DEAD_MIN_RECORDS or (len(nonzero) and tail < 0.5 * len(values)) or layer not in ratios.columns:
            continue
        ratio = ratios[layer].dropna()
        ratio = ratio[ratio.index >= values.index[len(values) - tail]]
        if len(ratio) < DEAD_MIN_RECORDS:
            continue
        first, last = float(ratio.iloc[0]), float(ratio.iloc[-1])
        if first >= HIGH_UPDATE_RATIO and first >= KILLED_RATIO_FADE * last:
            killed[str(layer)] = first
    return killed if alive else {}


def _above_start(profile: Curve, start: float, floor: float = 0.0) -> tuple[int, int] | None:
    """After a real drop (≥ MIN_DROP of ``start`` above ``floor``), the first profile bin above ``start``:
    (position of the best bin before it, its position), or None."""
    values = profile.to_numpy()
    best_so_far = np.minimum.accumulate(values)
    above = np.flatnonzero((start - best_so_far >= MIN_DROP * (start - floor)) & (values > start))
    if not above.size:
        return None
    first = int(above[0])
    return int(np.argmin(values[:first])), first


@per_run
def val_loss_swings(run: RunData) -> list[int]:
    """Steps in the second half of the evaluations where the main validation loss jumped above its best so
    far by ≥ (SWING_RISE - 1) swing units, each after it had been back within (SWING_RETURN - 1) units of that
    best (the first needs none); none when the last evaluation is within (SWING_SETTLED - 1) units of the best
    (the run ended at its best). A unit is the best level, or the drop from where training started to it
    when that is smaller (:func:`_swing_unit`)."""
    values = finite(eval_frame(run, "loss")[0])
    if not len(values):
        return []
    start = _swing_start(run, float(values.iloc[0]))
    lowest = float(values.min())
    if float(values.iloc[-1]) - lowest <= (SWING_SETTLED - 1) * _swing_unit(lowest, start):
        return []
    swings: list[int] = []
    best, armed = math.inf, True
    for position, (step, value) in enumerate(zip(values.index, values.to_numpy())):
        unit = _swing_unit(best, start)
        if armed and value - best >= (SWING_RISE - 1) * unit and position >= len(values) // 2:
            swings.append(int(step))
            armed = False
        elif value - best <= (SWING_RETURN - 1) * unit:
            armed = True
        best = min(best, value)
    return swings


def _swing_start(run: RunData, first_evaluation: float) -> float:
    """Where training started, for the swing unit: the loss reference (the expected initial loss, ln C), ln V
    for a language model, else the first evaluation."""
    reference = loss_reference(run)
    if reference is not None:
        return reference[0]
    task = task_of(run)
    if task.kind == "language_modelling" and task.uniform_loss is not None:
        return task.uniform_loss
    return first_evaluation


def _swing_unit(best: float, start: float) -> float:
    """The unit of a validation-loss jump above ``best``: ``best`` itself (the distance to a floor of 0), or
    the drop ``start - best`` when that is smaller and real (≥ MIN_DROP of ``start``): a loss whose floor is
    far above 0 swings by what it learned, not by its level. A best at or below 0 swings by the drop alone
    (infinite, so no swing, when there is none)."""
    drop = start - best
    if math.isfinite(best) and best <= 0:
        # A loss at or below 0 (a Gaussian NLL, a log-likelihood of densities) has no distance to a floor of 0:
        # its best is no unit (a negative one made every wobble a swing: a healthy NLL ending at -0.03 was
        # called an lr too high 25 times in 30), so it swings by what it learned, or not at all.
        return drop if drop > 0 else math.inf
    return min(best, drop) if math.isfinite(best) and start > 0 and drop >= MIN_DROP * start else best


def train_level_jump(run: RunData, swings: list[int]) -> float | None:
    """How far the training loss jumped at the validation swings: the largest, over ``swings`` (steps of main
    validation-loss evaluations), of its level there (the median of the training records after the evaluation
    before up to it, or of those up to the evaluation after) over its best level so far (the lowest such median
    of the evaluations before). None when no swing has a training level and a best before it to compare."""
    evals = finite(eval_frame(run, "loss")[0]).index.to_numpy()
    loss = finite_train_loss(run)
    steps, values = loss.index.to_numpy(), loss.to_numpy()
    logged = cadence(run)
    averaged = logged is not None and (logged.per_epoch or logged.window_means)  # each record already a mean
    levels = []
    for position, step in enumerate(evals):
        after = evals[position - 1] if position else -np.inf
        inside = values[(steps > after) & (steps <= step)]
        if inside.size < SWING_TRAIN_RECORDS and not averaged:
            # A sparse log leaves one or two single-batch values between evaluations: the lowest of many
            # such values is an outlier of the noise that any typical one "jumps" above. Take the last few.
            inside = values[steps <= step][-SWING_TRAIN_RECORDS:]
        levels.append(float(np.median(inside)) if inside.size else math.nan)
    levels_array = np.asarray(levels)
    jumps = []
    for swing in swings:
        position = int(np.searchsorted(evals, swing))
        if position >= len(evals) or evals[position] != swing:
            continue
        before = levels_array[:position]
        before = before[np.isfinite(before)]
        here = levels_array[position:position + 2]
        here = here[np.isfinite(here)]
        if before.size and here.size and before.min() > 0:
            jumps.append(float(here.max() / before.min()))
    return max(jumps) if jumps else None


def _lr_phase(run: RunData, step: int) -> str:
    """`` while the lr was still warming up`` when ``step`` comes before the lr's peak, else ``""``."""
    lr = finite(lr_series(run))
    if len(lr) < 2 or float(lr.max()) <= 0:
        return ""
    peak_step = int(lr.index[int(np.argmax(lr.to_numpy()))])
    rising = float(lr.iloc[0]) < WARMUP_START_FRACTION * float(lr.max())
    return " while the lr was still warming up" if rising and step <= peak_step else ""


# lr_too_low: the loss dropped < 50 % of its start and the second half
# dropped ≥ 50 % as much as the first (almost linear, no deceleration), and
# still falls in the last quarter.
SLOW_TOTAL_DROP = 0.50
LINEAR_HALVES_RATIO = 0.50
STILL_FALLING = 0.01
# ...or its last quarter still brings ≥ 15 % of the whole drop (a straight
# line brings 25 %): a loss that barely moves at all (a 1,000-class or CNN
# run with an lr 100× too small falls < 1 % a quarter) still falls.
STILL_FALLING_SHARE = 0.15
# Levels are medians of 10 % windows; each drop must exceed 3 standard errors of such a median,
# and each window needs ≥ 10 records (100 in all) for that error to mean anything.
DROP_SIGMAS = 3.0
LR_TOO_LOW_MIN_POINTS = 100
# A per-batch loss can be too noisy for a slow fall to stand out (a regression's or a fine-tuning
# run's minibatches), or too short (a log of window means); then the validation loss (a mean over
# the whole eval set) is judged the same way, given ≥ 10 evaluations (one per 10 % window), unless
# the training loss lost half its start or clearly slows down (its second half falls < 25 % as
# much as its first): it converged.
LR_TOO_LOW_MIN_EVALS = 10
# An lr of exactly 0 at every one of >= 5 records: the optimizer never moves the weights
# (lr=0 passed, a scheduler whose factor is 0 and never rises). A warm-up from 0 has a
# later record above 0.
ZERO_LR_MIN_RECORDS = 5


def _small_steps_are_the_lrs(run: RunData, moving: float | None) -> bool:
    """Whether small update/weight ratios can be put on the lr: the layers that still move take steps no
    larger than the ~1e-3 rule of thumb (``moving``: :func:`moving_update_ratio`), and no vanishing
    gradients or dead layers (warning or worse) make the steps small whatever the lr."""
    return ((moving is None or moving <= UPDATE_RATIO_RULE_OF_THUMB)
            and not any(f.severity != "info" for f in vanishing_gradients(run) + dead_layers(run)))


def watched_lr(run: RunData) -> float | None:
    """The largest lr the optimizer's param groups had when the probe saw it (a scheduler's base lr,
    ``initial_lr``, where recorded); None when the run records no optimizer."""
    groups = (run.env.get("optimizer") or {}).get("param_groups") or []
    values = [group.get("initial_lr", group.get("lr")) for group in groups if isinstance(group, dict)]
    values = [float(value) for value in values if isinstance(value, (int, float)) and math.isfinite(value)]
    return max(values) if values else None


def zero_lr(run: RunData, from_step: float = -math.inf) -> tuple[int, int, int] | None:
    """(first step, last step, records) when every recorded lr (every param group) from ``from_step``
    (optimizer steps; default: all of them) on is exactly 0, at ≥ ZERO_LR_MIN_RECORDS records; else None."""
    groups = [run.series("lr", "train", layer=layer) for layer in (None, *run.layers("lr"))]
    groups = [series[(series.index.to_numpy() >= from_step) & np.isfinite(series.to_numpy())] for series in groups
              if len(series)]
    records = max((len(series) for series in groups), default=0)
    if records < ZERO_LR_MIN_RECORDS or any(np.any(series.to_numpy() != 0) for series in groups):
        return None
    steps = np.concatenate([series.index.to_numpy() for series in groups])
    return int(steps.min()), int(steps.max()), records


@rule(severities=("info", "warning"), inputs=("loss", "lr", "update_ratio", "grad_norm", "amp_skipped"),
      metadata=("env.optimizer", "task.expected_initial_loss", "task.kind", "task.num_classes", "task.vocab_size"),
      evidence=Evidence.series("loss"),
      heatmaps=("update_ratio",),
      # Updates far too small are its symptom, and so is accuracy stuck near the baseline.
      explains=("no_better_than_baseline", "update_ratio_out_of_band"),
      thresholds=("LR_TOO_LOW_MIN_POINTS", "LR_TOO_LOW_MIN_EVALS", "SLOW_TOTAL_DROP", "LINEAR_HALVES_RATIO",
                  "STILL_FALLING", "STILL_FALLING_SHARE", "DROP_SIGMAS",
                  "HIGH_UPDATE_RATIO", "UPDATE_RATIO_RULE_OF_THUMB", "UNIFORM_LEVEL_SHARE", "UNIFORM_MIN_STEPS",
                  "LOW_UPDATE_RATIO", "SCHEDULE_DECAY_FRACTION", "ZERO_LR_MIN_RECORDS"))
def lr_too_low(run: RunData) -> list[Finding]:
    """Loss falls slowly and almost linearly, far from a plateau at the end.

    Symptom: the loss lost < 50 % of its start, the second half fell ≥ 50 %
    as much as the first (no deceleration) and it still falls in the last
    quarter (≥ 1 %, or ≥ 15 % of the whole drop), each drop beyond 3
    standard errors of the minibatch noise (a first half that rose, as a
    spike in the middle window makes it, is no slow fall; nor is a curve whose
    last level is ≤ 50 % of the task's reference loss, ln C or the
    expected initial loss: measured from where training started, not from
    where logging did, it lost more); for a loss other
    than a classifier's (whose floor is near 0), a recorded median
    update/weight ratio must be below ~1e-3; when the training loss is too
    noisy to show it, the validation loss (≥ 10 evaluations) is judged the
    same way; update/weight ratios are reported as support, and a median
    ratio ≥ 5e-3 late or where the lr was at ≥ 90 % of its peak (a decay
    shrinks the late ones) rules it out, and so do vanishing gradients or
    dead layers (warning): the steps are small whatever the lr. Or, for a
    language model with a known vocabulary V, the late loss is still ≥ 90 %
    of ln V (uniform predictions), or a classifier's ≥ 90 % of ln C, after
    ≥ 100 steps while the median update/weight ratio is ≤ 2e-4 (and not ≥
    5e-3 at the peak lr; a decaying schedule can hide the linear
    fall), or, in a log without update/weight ratios, the loss there still
    never rises and still falls in its last quarter (≥ 1 %, beyond 3
    standard errors; medians of 10 chunks, any logging cadence).
    Or a classifier still at ≥ 50 % of ln C (it lost less than half of what
    a fresh model starts at) after ≥ 100 steps while the median
    update/weight ratio where the lr was at ≥ 90 % of its peak is ≤ 2e-4:
    the steps of the lr the user chose were tiny, and a decaying schedule
    bent the curve and shrank the late ratios.
    Or, as info, for a loss without a known floor (task kind regression or
    unknown): a median update/weight ratio ≤ 2e-4 where the lr was at ≥ 90 %
    of its peak, the steps not made small by vanishing gradients or dead
    layers, and the late loss still ≥ 50 % of where training started (the
    expected initial loss, or the median of the first optimizer steps'
    records, up to 5, when the log shows them); info because a pre-trained model fine-tuned at a small lr on
    purpose takes such steps too.
    Or the recorded lr is exactly 0 at every record (≥ 5, every param group)
    and was 0 when the probe saw the optimizer too (a positive lr there was
    taken to 0 by its schedule: decayed_too_early).
    Likely cause: a learning rate far below what the model tolerates.
    Try: raise the lr (×3 to ×10; try 1e-1, 1e-2, 1e-3, 1e-4 and keep the one
    whose loss drops within ~100 iterations).
    Source: seed 004 step 6 rule 1 and step 3; Shannon 1951 (unigram entropy of English below ln V).
    """
    zero = zero_lr(run)
    if zero is not None:
        first, last, records = zero
        if (watched_lr(run) or 0.0) > 0:
            return []  # a schedule took a positive lr to 0: decayed_too_early says so
        return [finding(
            "lr_too_low", "warning", "The lr is 0: the weights never change",
            f"The recorded lr is exactly 0 at all {records} records (steps {first}–{last}), in every param "
            f"group: the optimizer steps but never moves the weights, whatever the loss does.",
            "Set a non-zero lr; check the scheduler (a LambdaLR factor or a warm-up that stays at 0) and the "
            "lr passed to the optimizer.", SOURCE_LR + " rule 1", first, last,
            {"kind": "zero_lr", "records": records})]
    if divergence_onset(run) is not None:
        return []
    curve = loss_profile(run)
    if curve is None:
        # Too few records for a shape (a sparse log, per-epoch means): the step size still speaks.
        loss = finite_train_loss(run)
        return _tiny_peak_steps(run, loss) if len(loss) >= 2 else []
    loss, profile = curve
    stuck = stuck_at_uniform(run)
    if stuck is not None and stuck["median_update_ratio"] is not None and (
            stuck["median_update_ratio"] <= LOW_UPDATE_RATIO) and not (
            stuck["peak_lr_update_ratio"] is not None and stuck["peak_lr_update_ratio"] >= HIGH_UPDATE_RATIO):
        return [finding(
            "lr_too_low", "warning", "Language model still at the uniform-prediction loss with tiny updates",
            f"The loss is still at {stuck['late_level']:.3g}, {stuck['uniform_share']:.0%} of "
            f"ln({stuck['vocab_size']}) = {stuck['uniform_loss']:.3g}, the loss of predicting every token as "
            f"equally likely, after {int(loss.index[-1])} steps, while the median update/weight ratio is "
            f"{stuck['median_update_ratio']:.1e}, far below the ~1e-3 rule of thumb: the steps are too small "
            f"to learn even the token frequencies.",
            "Raise the lr (×10 or more); pick the lr that makes the loss drop clearly within ~100 iterations.",
            SOURCE_LR + " rule 1", loss.index[0], loss.index[-1], dict(stuck, kind="uniform"))]
    # The same for a classifier: still at ≥ 90 % of ln C after ≥ 100 steps with update/weight ratios ≤ 2e-4
    # (healthy classifiers in the corpus end at 0.21-0.30 of ln C). Found after the second hold-out was
    # scored: an RMSprop ViT at lr 1e-5 ended at 97 % of ln 10 (ratio 1.8e-4), read only as its symptom.
    task = task_of(run)
    if task.kind == "classification" and task.uniform_loss is not None and int(loss.index[-1]) >= UNIFORM_MIN_STEPS:
        late, ratio = window_median(loss, 0.8, 1.0), median_update_ratio(run)
        # The steps that moved the weights were small too: an lr too high that killed the layers leaves
        # still weights late (the digits MLP at 10x its lr), after large steps while they still moved.
        # Nor gradients that vanish or layers that died: their steps are small whatever the lr (the
        # vanishing-gradients sample, ten sigmoid layers, sits at ln 10 with ratios of 1e-6).
        moving = moving_update_ratio(run)
        if (late >= UNIFORM_LEVEL_SHARE * task.uniform_loss and ratio is not None and ratio <= LOW_UPDATE_RATIO
                and _small_steps_are_the_lrs(run, moving)):
            return [finding(
                "lr_too_low", "warning", "Classifier still at the uniform-prediction loss with tiny updates",
                f"The loss is still at {late:.3g}, {late / task.uniform_loss:.0%} of ln({task.size}) = "
                f"{task.uniform_loss:.3g}, the loss of predicting every class as equally likely, after "
                f"{int(loss.index[-1])} steps, while the median update/weight ratio is {ratio:.1e}, far below the "
                f"~1e-3 rule of thumb: the steps are too small to learn.",
                "Raise the lr (×10 or more); pick the lr that makes the loss drop clearly within ~100 iterations.",
                SOURCE_LR + " rule 1", loss.index[0], loss.index[-1],
                {"kind": "uniform", "late_level": late, "uniform_loss": task.uniform_loss,
                 "uniform_share": late / task.uniform_loss, "num_classes": task.size, "median_update_ratio": ratio})]
        # A decaying schedule hides the slow fall (the loss bends because the lr shrinks, not because it
        # nears its floor), and it shrinks the late update/weight ratios of healthy runs too (an early
        # decay's sit at 1e-5 and below). So judge the steps where the lr was at its peak, the lr the
        # user chose: a median ratio there ≤ LOW_UPDATE_RATIO (5× below seed 004's ~1e-3) while the
        # classifier ended still above (1 - SLOW_TOTAL_DROP) of ln C (it has not lost half of what a fresh
        # model starts at, the slow-fall test's measure) is an lr too low whatever the schedule did later.
        # Corpus: every healthy run's ratio at its peak lr is >= 1.0e-3; a BN MLP with SGD 1e-4 and a
        # polynomial decay to 0 (8.7e-5 at its peak lr, 65 % of ln 5 at the end, 1.83x its twin's val
        # loss) was read only as update_ratio_out_of_band.
        peak_ratio = peak_lr_update_ratio(run)
        reference_share = late / task.uniform_loss
        if (peak_ratio is not None and peak_ratio <= LOW_UPDATE_RATIO and reference_share >= 1 - SLOW_TOTAL_DROP
                and _small_steps_are_the_lrs(run, moving)):
            return [finding(
                "lr_too_low", "warning", "Tiny steps even at the peak lr, loss still far from its floor",
                f"The loss ends at {late:.3g}, {reference_share:.0%} of ln({task.size}) = {task.uniform_loss:.3g} "
                f"(less than half of what a fresh model starts at was lost), after {int(loss.index[-1])} steps, "
                f"while even where the lr was at its peak the median update/weight ratio was {peak_ratio:.1e}, far "
                f"below the ~1e-3 rule of thumb: the steps were too small to learn, and a decaying schedule only "
                f"made them smaller.",
                "Raise the peak lr (×10 or more); pick the lr that makes the loss drop clearly within ~100 "
                "iterations, then decay from there.", SOURCE_LR + " rule 1; seed 004 (update/weight ratio)",
                loss.index[0], loss.index[-1],
                {"kind": "small_peak_steps", "late_level": late, "uniform_loss": task.uniform_loss,
                 "uniform_share": reference_share, "num_classes": task.size, "peak_lr_update_ratio": peak_ratio})]
    return _slow_fall(run, loss, stuck) or _tiny_peak_steps(run, loss)


def _slow_fall(run: RunData, loss: Curve, stuck: dict | None) -> list[Finding]:
    """:func:`lr_too_low`'s tests of the loss's shape: a language model at the uniform level still falling
    steadily (a log without update/weight ratios), then the slow, almost linear fall of the training (or
    validation) loss. ``loss``: the finite training loss (≥ MIN_CURVE_POINTS records); ``stuck``:
    :func:`stuck_at_uniform`'s evidence or None."""
    # No per-layer statistics (an HF- or Lightning-style log): a loss at the uniform level that never
    # rose and still falls is learning, too slowly to have found even the token frequencies; a flat one
    # (tokens drawn at random) or one that rose (an lr too high, recovering as a schedule decays it)
    # says nothing about the lr being low. A decaying schedule slows the fall, so no linearity is asked.
    levels = (_steady_fall(loss) if stuck is not None and stuck["median_update_ratio"] is None
              else None)
    if levels is not None:
        return [finding(
            "lr_too_low", "warning", "Language model still at the uniform-prediction loss, falling slowly",
            f"The loss is still at {stuck['late_level']:.3g}, {stuck['uniform_share']:.0%} of "
            f"ln({stuck['vocab_size']}) = {stuck['uniform_loss']:.3g}, the loss of predicting every token as "
            f"equally likely, after {int(loss.index[-1])} steps, and falls slowly and steadily "
            f"({levels[0]:.3g} → {levels[1]:.3g} → {levels[2]:.3g}): the steps are too small to have learned "
            f"even the token frequencies. The log has no update/weight ratios to confirm it.",
            "Raise the lr (×10 or more); pick the lr that makes the loss drop clearly within ~100 iterations.",
            SOURCE_LR + " rule 1", loss.index[0], loss.index[-1],
            dict(stuck, kind="uniform_falling", start_level=levels[0], middle_level=levels[1],
                 end_level=levels[2]))]
    start = window_median(loss, 0.0, 0.1)
    middle = window_median(loss, 0.45, 0.55)
    end = window_median(loss, 0.9, 1.0)
    # Standard error of a window median (1.25 σ/√k): the drops must stand out of the minibatch noise.
    per_window = max(1, len(loss) // 10)
    noise = mad_sigma(np.diff(loss.to_numpy())) / math.sqrt(2)
    window_error = 1.25 * noise / math.sqrt(per_window)
    if start <= 0:
        return []
    total_drop = (start - end) / start
    first_half, second_half = start - middle, middle - end
    third, fourth = window_median(loss, 0.5, 0.75), window_median(loss, 0.75, 1.0)
    still_falling = (third - fourth) / max(abs(third), 1e-12)
    ratio = median_update_ratio(run)
    evidence = {"start_level": start, "middle_level": middle, "end_level": end, "total_drop": total_drop,
                "halves_ratio": second_half / first_half if first_half > 0 else None}
    curve_name = "loss"
    if not (len(loss) >= LR_TOO_LOW_MIN_POINTS and 0 < total_drop < SLOW_TOTAL_DROP
            and start - end > DROP_SIGMAS * window_error
            and first_half > 0
            and second_half > DROP_SIGMAS * window_error and second_half >= LINEAR_HALVES_RATIO * first_half
            and (still_falling >= STILL_FALLING or third - fourth >= STILL_FALLING_SHARE * (start - end))):
        # Only where the training curve does not contradict it: one that lost half its start or
        # clearly slows down has converged.
        val_loss = finite(eval_frame(run, "loss")[0])
        contradicted = total_drop >= SLOW_TOTAL_DROP or second_half < 0.5 * LINEAR_HALVES_RATIO * first_half
        levels = (_slow_linear_fall(val_loss) if len(val_loss) >= LR_TOO_LOW_MIN_EVALS and not contradicted
                  else None)
        if levels is None:
            return []
        start, middle, end = levels
        total_drop, curve_name = (start - end) / start, "validation loss"
        evidence.update(curve="val", start_level=start, middle_level=middle, end_level=end, total_drop=total_drop,
                        halves_ratio=(middle - end) / (start - middle))
    # Steps ≥ HIGH_UPDATE_RATIO contradict "too low": late ones, or those at the peak lr, the lr the user chose.
    # A decaying schedule shrinks the late ratios of any run, so those alone can read a too-high lr as a
    # slow one: a Set Transformer with SGD 1.5 (15x its working lr), stuck near ln 120 until MultiStepLR
    # cut its lr at 60 % and 85 %, had 8.0e-4 late but 1.2e-2 at its peak lr (third hold-out).
    peak_ratio = peak_lr_update_ratio(run)
    if any(value is not None and value >= HIGH_UPDATE_RATIO for value in (ratio, peak_ratio)):
        return []
    # "Lost under half its start" is measured from where training started, not where logging did: a log
    # of epoch means (or one that starts late) whose first record is already at or below half the loss a
    # fresh model starts at (ln C, the expected initial loss) had lost more than half before it. A BN MLP
    # logged per epoch started its log at 0.67 of ln 5 = 1.61 and sat at its noise floor (0.57 -> 0.55).
    # The fall is measured from there too: a curve that ends at or below (1 - SLOW_TOTAL_DROP) of the
    # reference lost at least that share since training started, however little since its first record.
    # (Comparing the first record with half the reference, as before, left the test to SLOW_TOTAL_DROP's
    # value: at 0.65 the same BN log, 0.573 -> 0.551 against ln 5, read as a slow fall of 4 %.)
    reference = loss_reference(run)
    if reference is not None and end <= (1 - SLOW_TOTAL_DROP) * reference[0]:
        return []
    # Only a classifier's cross-entropy has a floor known to be near 0. For any other loss (contrastive,
    # adversarial, regression, language modelling, unknown) "lost under half its start" says nothing about
    # how far the run is from converged: it can level off far above 0, or hover at an equilibrium. The
    # update/weight ratio, where recorded, must then agree that the steps are small (below the ~1e-3 rule
    # of thumb): a SimCLR run at 3.6e-3 and a GAN's generator at 3.8e-3 were told to raise an lr that,
    # tripled, did no better.
    if ratio is not None and ratio >= UPDATE_RATIO_RULE_OF_THUMB and task_of(run).kind != "classification":
        return []
    # (A classifier's slow fall keeps no ratio bar: corpus classifiers with an lr 10x too low under SGD step
    # at 1.4e-3 and 2.1e-3, where a fourth hold-out GIN of width 2, underfitting at its twin's lr, stepped
    # at 2.0e-3 and is read as an lr too low; the curves and ratios do not tell the two apart.)
    # Small steps are not the lr's when gradients vanish or layers are dead (warning): the live part of the
    # model learns slowly whatever the lr, and the dead layers pull the median ratio down (the uniform-level
    # tests above ask the same, _small_steps_are_the_lrs). Fourth hold-out: a VAE whose decoder's ReLUs were
    # dead from the start fell 91.7 -> 64.8 linearly at ratio 6.7e-4 (Adam 1e-3, its healthy twin's lr).
    if any(f.severity != "info" for f in vanishing_gradients(run) + dead_layers(run)):
        return []
    # Quoted only below the rule of thumb, where it supports "too low".
    support = ""
    if ratio is not None and ratio < UPDATE_RATIO_RULE_OF_THUMB:
        support = f" Median update/weight ratio {ratio:.1e} (rule of thumb ~1e-3)."
        evidence["median_update_ratio"] = ratio
    return [finding(
        "lr_too_low", "warning", "Loss falls slowly and linearly: lr too low",
        f"The {curve_name} went {start:.3g} → {middle:.3g} → {end:.3g} ({total_drop:.0%} in all), its second half "
        f"falling {(middle - end) / (start - middle):.0%} as much as its first (no slowing down to a plateau), and "
        f"is still falling.{support}",
        "Raise the lr (×3 to ×10); pick the lr that makes the loss drop clearly within ~100 iterations.",
        SOURCE_LR + " rule 1", loss.index[0], loss.index[-1], evidence)]


# A loss without a known floor (a regression, a contrastive or reconstruction loss, a task not recorded) can
# level off anywhere, so neither its shape nor its level says an lr is too low. The step size does: a median
# update/weight ratio ≤ LOW_UPDATE_RATIO (5x below seed 004's ~1e-3) even where the lr was at ≥ 90 % of its
# peak (the lr the user chose), while the loss has not lost half of where training started (its first record,
# when the log shows the start; or the expected initial loss). Info, not a warning: a pre-trained model
# fine-tuned at a small lr takes such steps by design, and its loss, with no floor known, may be near its
# best. Heldout7's DCN-v2 under Yogi 1e-4 (0.70 -> 0.64 from step 1, 3.1e-5 at its peak lr) was found by no
# test (nor its twin with Yogi's eps at 1.0, labelled update_ratio_out_of_band, lr_too_low allowed); heldout10's
# BPR under Cautious AdamW 2e-5 (3.7e-5) and heldout15's triplet net under Adagrad 2e-4 (1.3e-4) stay misses:
# logged per epoch and from step 120, they show no record of where training started. Every one of the 657
# healthy runs with ratios (corpus, hold-outs, re-seeded recipes) steps at ≥ 9.8e-4 at its peak lr.
def _tiny_peak_steps(run: RunData, loss: Curve) -> list[Finding]:
    """:func:`lr_too_low`'s info for a loss without a known floor (task kind regression or unknown): tiny
    steps at the peak lr (see above) while the loss lost under half its start; [] otherwise (a classifier
    or a language model has its own tests, by ln C and ln V)."""
    if task_of(run).kind not in ("regression", "unknown"):
        return []
    peak_ratio = peak_lr_update_ratio(run)
    if peak_ratio is None or peak_ratio > LOW_UPDATE_RATIO or not _small_steps_are_the_lrs(run, moving_update_ratio(run)):
        return []
    reference = loss_reference(run)
    if reference is not None:
        start, where = reference[0], reference[1]
    elif first_steps_record(run, loss) in ("initial", "early"):
        # The median of the first steps' records (up to 5): one minibatch's loss is a noisy start (a new user's
        # break test: a fine-tune measured from one batch of 32 at step 1, 0.75, where its val loss began at 1.06).
        # (first_steps_record found a cadence whose early bound the first record is within: head is not empty.)
        head = loss.iloc[:START_POINTS]
        head = head[head.index <= cadence(run).early_bound()]
        start = float(np.median(head.to_numpy()))
        where = (f"its first record (step {int(loss.index[0])})" if len(head) <= 1
                 else f"its first {len(head)} records (steps {int(head.index[0])}-{int(head.index[-1])})")
    else:
        return []  # the log starts later: how much was lost since training started is unknown
    late = window_median(loss, 0.8, 1.0)
    if not 0 < start or late < (1 - SLOW_TOTAL_DROP) * start:
        return []
    return [finding(
        "lr_too_low", "info", "Tiny steps even at the peak lr, and the loss kept over half of its start",
        f"Even where the lr was at its peak the median update/weight ratio was {peak_ratio:.1e}, far below the "
        f"~1e-3 rule of thumb, and the loss ends at {late:.3g}, {late / start:.0%} of {start:.3g} at {where} "
        f"(less than half of it lost). Unless this is a pre-trained model fine-tuned at a small lr on purpose, "
        f"the steps are too small to learn much.",
        "Raise the lr (×10); pick the lr that makes the loss drop clearly within ~100 iterations and check that "
        "update/weight ratios sit near 1e-3.", SOURCE_LR + " rule 1; seed 004 (update/weight ratio)",
        loss.index[0], loss.index[-1],
        {"kind": "tiny_peak_steps", "peak_lr_update_ratio": peak_ratio, "late_level": late, "start_level": start,
         "late_share": late / start})]


def _steady_fall(curve: Curve) -> tuple[float, float, float] | None:
    """(start, middle, end) levels of a step-indexed curve that never rises and still falls at its end, else None.

    The medians of 10 equal-count chunks never rise by more than DROP_SIGMAS
    standard errors of a chunk median, and the last quarter's median is
    ≥ STILL_FALLING below the third quarter's and beyond DROP_SIGMAS errors.
    Levels are medians of the first, middle and last 10 %.
    """
    if len(curve) < 2 * 10:
        return None
    chunks = binned_medians(curve, 10).to_numpy()
    error = 1.25 * mad_sigma(np.diff(curve.to_numpy())) / math.sqrt(2) / math.sqrt(len(curve) // 10)
    third, fourth = window_median(curve, 0.5, 0.75), window_median(curve, 0.75, 1.0)
    if (np.diff(chunks).max() > DROP_SIGMAS * error or not third - fourth > DROP_SIGMAS * error
            or not (third - fourth) / max(abs(third), 1e-12) >= STILL_FALLING):
        return None
    return (window_median(curve, 0.0, 0.1), window_median(curve, 0.45, 0.55), window_median(curve, 0.9, 1.0))


def _slow_linear_fall(curve: Curve) -> tuple[float, float, float] | None:
    """(start, middle, end) levels of a step-indexed curve that falls as lr_too_low describes, else None.

    Levels are medians of its first, middle and last 10 %; the tests are
    lr_too_low's (SLOW_TOTAL_DROP, LINEAR_HALVES_RATIO, STILL_FALLING or
    STILL_FALLING_SHARE, each drop beyond DROP_SIGMAS standard errors).
    """
    start, middle, end = (window_median(curve, 0.0, 0.1), window_median(curve, 0.45, 0.55),
                          window_median(curve, 0.9, 1.0))
    window_error = 1.25 * mad_sigma(np.diff(curve.to_numpy())) / math.sqrt(2) / math.sqrt(max(1, len(curve) // 10))
    third, fourth = window_median(curve, 0.5, 0.75), window_median(curve, 0.75, 1.0)
    if not start > 0:
        return None
    total_drop, first_half, second_half = (start - end) / start, start - middle, middle - end
    still = (third - fourth) / max(abs(third), 1e-12) >= STILL_FALLING or third - fourth >= STILL_FALLING_SHARE * (
        start - end)
    if (0 < total_drop < SLOW_TOTAL_DROP and start - end > DROP_SIGMAS * window_error
            and first_half > 0 and second_half > DROP_SIGMAS * window_error
            and second_half >= LINEAR_HALVES_RATIO * first_half and still):
        return start, middle, end
    return None


# decayed_too_early: lr down to ≤ 10 % of its peak before 50 % of the run,
# while the loss had fallen ≥ 5 % over the preceding stretch, and afterwards
# the loss improves < 5 % more.
DECAY_FACTOR = 0.10
DECAY_EARLY_FRACTION = 0.50
DECAY_HEADING_DOWN = 0.05
DECAY_FLAT_AFTER = 0.05
# ...or improves at < 5 % of its pace before the decay (per step): a loss that
# still creeps 6 % over 900 steps after falling 35 % in 60 (a residual MLP
# decayed at 6 % of its run) has stopped where it was heading. The pace before
# is measured over the stretch before the decay, halved: the medians of its two
# halves (a decay at step 17 of a noisy per-batch loss leaves 8 records each).
DECAY_PACE_RATIO = 0.05
# A decay within the first 6 records is judged on as few as 2 records before
# it: logs that hold a mean every 20-25 steps (HF logging_steps, windowed
# means) put a decay at 8 % of a 1,000-step run at record 3-5. The heading is
# then the first record against the last before the decay, and that drop must
# exceed DROP_SIGMAS (3) noise sigmas of a difference of two records, the
# noise read from the records after the decay (a mean over a window is far
# less noisy than one batch, and the flat stretch after shows how much).
# Held-out corpus: a GRU (x0.001 at step 104 of 1,300, records every 25
# steps) and a word LM whose linear schedule reached 0 at step 84 of 844
# (records every 20 steps) were missed with 6 records required.
DECAY_SPARSE_MIN_RECORDS = 2
# An lr that is exactly 0 at every record (≥ ZERO_LR_MIN_RECORDS, every param
# group) although the optimizer had a positive lr when the probe saw it was
# decayed to 0 before the first record: a schedule whose length is shorter
# than the run (a per-epoch PolynomialLR or OneCycleLR stepped every batch,
# transformers' num_training_steps set too small). No loss test is needed:
# at lr 0 the weights stop, whatever the loss was heading for. A BN MLP with
# PolynomialLR(total_iters=20) stepped per batch of a 3,300-step run logged
# lr 0 at all 20 of its per-epoch records.


@rule(severities=("warning",), inputs=("loss", "lr", "update_ratio"), metadata=("env.optimizer",),
      evidence=Evidence.series("loss"),
      thresholds=("MIN_CURVE_POINTS", "DECAY_FACTOR", "DECAY_EARLY_FRACTION", "DECAY_HEADING_DOWN",
                  "DECAY_FLAT_AFTER", "DECAY_PACE_RATIO", "DECAY_SPARSE_MIN_RECORDS", "DROP_SIGMAS",
                  "ZERO_LR_MIN_RECORDS", "STILL_MOVING_RATIO"))
def decayed_too_early(run: RunData) -> list[Finding]:
    """An lr drop is followed at once by a flat loss well above where the run was heading.

    Symptom: the lr falls to ≤ 10 % of its peak before half of the run, while
    the loss was still falling (≥ 5 % over the preceding stretch), and the
    loss improves < 5 % afterwards, or at < 5 % of its pace before. A decay
    within the first 6 records (sparse logging) needs ≥ 2 records before it
    and a drop from the first to the last of them beyond 3 noise sigmas of
    the records after the decay. Or the lr is exactly 0 at every record
    (≥ 5) although the optimizer had a positive lr when the probe saw it:
    the schedule reached 0 before logging began. Or, when fewer than 2
    records precede the decay (a log that starts late) or the run has
    fewer than 20 loss records in all, so the loss's heading cannot be
    read: the layers whose weights moved before the decay (median
    update/weight ratio ≥ 1e-5) keep a median ratio below 1e-5 from it to
    the end (DeepDiagnosis' lower band: the weights no longer move), or,
    failing that, the validation loss (≥ 2 evaluations before the decay)
    shows the heading: the same tests on its first evaluation against its
    last before the decay, and on its improvement after.
    Likely cause: a step/plateau schedule or decay that kicks in too early.
    Try: decay later (at the start of a plateau), as late as possible;
    a constant lr first (seed 004 "don't tune the schedule first").
    Source: seed 004 step 6 rule 3; seed 002 (ReduceLROnPlateau "as late as possible").
    """
    zero, started = zero_lr(run), watched_lr(run)
    if zero is not None and started is not None and started > 0:
        first, last, records = zero
        return [finding(
            "decayed_too_early", "warning", "lr decayed to 0 before the first record",
            f"The optimizer's lr was {started:g} when training started, and the recorded lr is exactly 0 at all "
            f"{records} records (steps {first}–{last}), in every param group: its schedule reached 0 before "
            f"step {first} and the weights have not moved since.",
            "Make the schedule span the run: a per-epoch scheduler (PolynomialLR, OneCycleLR, CosineAnnealingLR) "
            "stepped every batch needs its length in batches; check num_training_steps / total_iters / T_max.",
            "seed 004 step 6 rule 3", first, last, {"kind": "zero_lr", "records": records, "lr_at_start": started})]
    lr = finite(lr_series(run))
    curve = loss_profile(run)
    loss = curve[0] if curve is not None else finite_train_loss(run)
    if len(lr) < 3 or len(loss) < 2:
        return []
    values = lr.to_numpy()
    peak = np.maximum.accumulate(values)
    # The decay is where the lr goes below DECAY_FACTOR of its peak and stays there to the end (as a
    # Schedule's decay_step): a cyclic schedule's troughs (CyclicLR from a base a tenth of its max, warm
    # restarts) come back up, and were each read as a decay at the first trough.
    low = (values <= DECAY_FACTOR * peak) & (peak > 0)
    if not low[-1]:
        return []
    rises = np.flatnonzero(~low)
    decayed = np.arange(rises[-1] + 1 if len(rises) else 0, len(values))
    decay_step = int(lr.index[decayed[0]])
    steps = loss.index.to_numpy()
    position = int(np.searchsorted(steps, decay_step))
    if position >= DECAY_EARLY_FRACTION * len(loss):
        return []
    nonzero = np.flatnonzero(values != 0)
    zero_step = int(lr.index[nonzero[-1] + 1]) if len(nonzero) and nonzero[-1] + 1 < len(values) else None
    stopped = zero_lr(run, zero_step) if zero_step is not None else None
    if stopped is not None and int(np.searchsorted(steps, zero_step)) < DECAY_EARLY_FRACTION * len(loss):
        decay_step, position = zero_step, int(np.searchsorted(steps, zero_step))
        # An lr of exactly 0 in every param group from the decay to the end stops the weights whatever the
        # loss was heading for (as the zero_lr case above, which has it from the first record): no loss test.
        # A schedule of hard-restart cosines sized for an eighth of the run dips once, restarts and then sits
        # at 0 (heldout8, scored): its heading before the 0, read while the lr cycled, did not show a fall.
        return [finding(
            "decayed_too_early", "warning", f"lr at 0 from step {decay_step}",
            f"The recorded lr is exactly 0 in every param group from step {decay_step} "
            f"({position / len(loss):.0%} into the run's loss records) to the end ({stopped[2]} records): the "
            f"schedule ran out and the weights have not moved since.",
            "Make the schedule span the run: check num_training_steps / total_iters / T_max (in optimizer steps) "
            "and that a per-epoch scheduler is stepped once per epoch.",
            "seed 004 step 6 rule 3", decay_step, int(loss.index[-1]),
            {"kind": "zero_lr_after", "decay_step": decay_step, "lr_before": float(peak[decayed[0]]),
             "records_at_zero": stopped[2]})]
    if position < DECAY_SPARSE_MIN_RECORDS or curve is None:
        # Too few records before the decay (or in all) to say where the loss was heading: the weights that
        # stopped moving at the decay say it instead.
        frozen = _frozen_after(run, decay_step)
        if frozen is None:
            return _val_stopped_after(run, decay_step, float(values[decayed[0]] / peak[decayed[0]]),
                                      {"decay_step": decay_step, "lr_before": float(peak[decayed[0]]),
                                       "lr_after": float(values[decayed[0]])})
        moving, still = frozen
        return [finding(
            "decayed_too_early", "warning", f"lr decayed too early (step {decay_step}): the weights stopped",
            f"The lr fell to {values[decayed[0]] / peak[decayed[0]]:.1%} of its peak by step {decay_step} "
            f"({position / len(loss):.0%} into the run's loss records) and kept the weights still from there to "
            f"the end: a median update/weight ratio of {still:.1e} after it against {moving:.1e} before, below "
            f"the {STILL_MOVING_RATIO:.0e} at which weights no longer move. Whatever the loss was heading for, it "
            f"has not moved towards it since.",
            "Make the schedule span the run: step a per-epoch scheduler (StepLR, ExponentialLR) once per epoch, "
            "not per batch, and check its step_size / gamma; decay later, at the start of a plateau.",
            "seed 004 step 6 rule 3; seed 004 (update/weight ratio)", decay_step, int(loss.index[-1]),
            {"kind": "frozen", "decay_step": decay_step, "lr_before": float(peak[decayed[0]]),
             "lr_after": float(values[decayed[0]]), "update_ratio_before": moving, "update_ratio_after": still})]
    values_loss = loss.to_numpy()
    if position >= 6:
        width = max(3, position // 2)
        before, last = slice(position - 2 * width, position - width), slice(position - width, position)
    else:
        # Sparse records (a mean every 20-25 steps): the first record against the last before the decay,
        # a drop beyond DROP_SIGMAS noise sigmas of a difference of two records after the decay.
        before, last = slice(0, 1), slice(position - 1, position)
        record_noise = mad_sigma(np.diff(values_loss[position:])) / math.sqrt(2)
        if not values_loss[0] - values_loss[position - 1] > DROP_SIGMAS * math.sqrt(2) * record_noise:
            return []
    earlier, at_decay = median(values_loss[before]), median(values_loss[last])
    after_width = max(3, (len(loss) - position) // 10)
    just_after = median(values_loss[position:position + after_width])
    final = window_median(loss, 0.85, 1.0)
    heading = (earlier - at_decay) / max(abs(earlier), 1e-12)
    after = (just_after - final) / max(abs(just_after), 1e-12)
    # Per-step paces, between the windows' middles (steps).
    pace_before = (earlier - at_decay) / max(1.0, float(np.median(steps[last]) - np.median(steps[before])))
    final_steps = steps[int(0.85 * len(steps)):]
    pace_after = (just_after - final) / max(1.0, float(np.median(final_steps)
                                                       - np.median(steps[position:position + after_width])))
    evidence = {"decay_step": decay_step, "lr_before": float(peak[decayed[0]]), "lr_after": float(values[decayed[0]]),
                "loss_trend_before": heading, "improvement_after": after, "loss_after_decay": just_after,
                "final_loss": final, "pace_ratio": pace_after / pace_before if pace_before > 0 else None}
    flat = after < DECAY_FLAT_AFTER or (pace_before > 0 and pace_after < DECAY_PACE_RATIO * pace_before)
    if heading < DECAY_HEADING_DOWN or not flat:
        return []
    pace_text = (f", at {evidence['pace_ratio']:.0%} of its pace before the decay"
                 if evidence["pace_ratio"] is not None and after >= DECAY_FLAT_AFTER else "")
    return [finding(
        "decayed_too_early", "warning", f"lr decayed too early (step {decay_step})",
        f"The lr fell to {values[decayed[0]] / peak[decayed[0]]:.1%} of its peak at step {decay_step} "
        f"({position / len(loss):.0%} into the run) while the loss was still falling ({heading:.0%} over the "
        f"preceding stretch); afterwards it improved only {after:.1%} ({just_after:.3g} → {final:.3g}){pace_text}.",
        "Decay later, at the start of a plateau (or as late as possible); keep the lr constant until the loss stalls.",
        "seed 004 step 6 rule 3; seed 002 (ReduceLROnPlateau as late as possible)", decay_step, loss.index[-1],
        evidence)]


def _val_stopped_after(run: RunData, decay_step: int, fraction: float, evidence: dict) -> list[Finding]:
    """decayed_too_early read off the validation loss, for a training log too short before the decay.

    A training log that begins at the decay (a log that starts late, or window means whose first record
    lands there) cannot say where the loss was heading; the evaluations may: each is a per-example mean over
    the whole evaluation set, judged as lr_too_low judges them when the training loss cannot show a slow
    fall. The same tests as the training loss's sparse ones: ≥ DECAY_SPARSE_MIN_RECORDS evaluations before
    the decay, their first-to-last drop ≥ DECAY_HEADING_DOWN and beyond DROP_SIGMAS noise sigmas of a
    difference of two evaluations after it, then an improvement < DECAY_FLAT_AFTER from just after the decay
    to the last 15 %, or a pace < DECAY_PACE_RATIO of the one before. Fourth hold-out: a VAE whose
    MultiStepLR milestones (meant for a 10x longer plan) cut Adam's 2e-3 to 2e-4 at step 120 and 2e-5 at
    240 logged its training loss from step 120 on; its val loss fell 49.7 -> 42.8 in the 120 steps before,
    then 42.4 -> 41.2 in the 1,000 after (its constant-lr twin: 34.3), ratios 6e-5 (still moving).
    ``fraction``: the lr after the decay over its peak; ``evidence``: the decay's entries.
    """
    val = finite(eval_frame(run, "loss")[0])
    steps, losses = val.index.to_numpy(), val.to_numpy(dtype="float64")
    position = int(np.searchsorted(steps, decay_step))
    if position < DECAY_SPARSE_MIN_RECORDS or len(losses) - position < 2 * DECAY_SPARSE_MIN_RECORDS:
        return []
    earlier, at_decay = float(losses[0]), float(losses[position - 1])
    record_noise = mad_sigma(np.diff(losses[position:])) / math.sqrt(2)
    heading = (earlier - at_decay) / max(abs(earlier), 1e-12)
    if heading < DECAY_HEADING_DOWN or not earlier - at_decay > DROP_SIGMAS * math.sqrt(2) * record_noise:
        return []
    after_width = max(3, (len(losses) - position) // 10)
    just_after = median(losses[position:position + after_width])
    final = window_median(val, 0.85, 1.0)
    after = (just_after - final) / max(abs(just_after), 1e-12)
    pace_before = (earlier - at_decay) / max(1.0, float(steps[position - 1] - steps[0]))
    final_steps = steps[int(0.85 * len(steps)):]
    pace_after = (just_after - final) / max(1.0, float(np.median(final_steps)
                                                       - np.median(steps[position:position + after_width])))
    pace_ratio = pace_after / pace_before
    if not (after < DECAY_FLAT_AFTER or pace_after < DECAY_PACE_RATIO * pace_before):
        return []
    evidence = dict(evidence, curve="val", loss_trend_before=heading, improvement_after=after,
                    loss_after_decay=just_after, final_loss=final, pace_ratio=pace_ratio)
    return [finding(
        "decayed_too_early", "warning", f"lr decayed too early (step {decay_step})",
        f"The lr fell to {fraction:.1%} of its peak at step {decay_step}, too early in the training log to read "
        f"its heading, while the validation loss was still falling ({earlier:.3g} → {at_decay:.3g}, {heading:.0%}); afterwards it "
        f"improved only {after:.1%} ({just_after:.3g} → {final:.3g}), at {pace_ratio:.0%} of its pace before.",
        "Decay later, at the start of a plateau (or as late as possible); keep the lr constant until the loss stalls.",
        "seed 004 step 6 rule 3; seed 002 (ReduceLROnPlateau as late as possible)", decay_step, int(steps[-1]),
        evidence)]


def _frozen_after(run: RunData, decay_step: int) -> tuple[float, float] | None:
    """(median update/weight ratio before ``decay_step``, median from it to the end) over the layers whose
    own median ratio before it was ≥ STILL_MOVING_RATIO, when the one after is below STILL_MOVING_RATIO
    (those layers stopped); else None (also without ratio records on either side). Ratios of 0 count."""
    ratios = layer_values(run, "update_ratio")
    if ratios.empty:
        return None
    values = ratios.to_numpy(dtype="float64")  # (records, layers)
    steps = np.asarray(ratios.index)
    before, after = values[steps < decay_step], values[steps >= decay_step]
    if not len(before) or not len(after):
        return None
    with np.errstate(all="ignore"):
        moved = np.nanmedian(np.where(before >= 0, before, np.nan), axis=0) >= STILL_MOVING_RATIO
    before, after = before[:, moved], after[:, moved]
    before, after = before[np.isfinite(before) & (before >= 0)], after[np.isfinite(after) & (after >= 0)]
    if not before.size or not after.size or not float(np.median(after)) < STILL_MOVING_RATIO:
        return None
    return float(np.median(before)), float(np.median(after))


# missing_warmup: lr at step 1 already ≥ 50 % of its peak (no ramp); Adam
# lr ≥ 1e-3 counts as "large" for a non-attention model (the seeds' recipe
# starts transformers at 5e-5). Early instability, within the first 20 % of
# the run: for attention models a loss ≥ 30 % above its start (ln C at init,
# so any rise is the model getting worse) or a gradient norm ≥ 5× its first
# value; without attention the bar is higher (small MLPs on noisy minibatches
# wobble by 20 %): the smoothed loss ≥ 50 % above its start, or a loss spike.
WARMUP_START_FRACTION = 0.50
# A sparse log's first lr record (step N of a log every N) shows no warm-up only at its peak: at half of it the
# lr may be half-way through a warm-up of two intervals.
SPARSE_LR_AT_PEAK = 0.95
LARGE_ADAM_LR = 1e-3
EARLY_FRACTION = 0.20
EARLY_LOSS_RISE_ATTENTION = 0.30
EARLY_GRAD_GROWTH = 5.0
EARLY_LOSS_RISE = 0.50
# A gradient norm that grows while the loss falls is a model leaving its
# initialisation (the gradient grows as the features form and the outputs
# move off the uniform prediction), not instability: the growth counts only
# if, by the step of its peak, the loss (median of the last 5 records up to
# it) is still within 20 % of its start. Healthy ViTs on the digits grew
# their gradient norm 5-7x by steps 80-240 while their loss was 27-70 %
# below its start (two of them without warm-up); the transformers that
# needed warm-up grew it 5.9-10.6x with their loss 0-8 % below its start
# (the post-LN ViT still at ln 10).
EARLY_LEARNING_DROP = 0.20
EARLY_LEARNING_POINTS = 5
# Steps that go nowhere: a transformer at ≥ 50 % of its peak lr through the
# whole early stretch (no warm-up, no early decay) whose median update/weight
# ratio there is at least seed 004's ~1e-3 rule of thumb (the weights move as
# a working lr moves them: not an lr too low) while its loss (the median of its last 5 records there) is still within
# EARLY_LEARNING_DROP of its start. Warm-up exists because the first steps'
# updates are too large for attention and post-LN blocks (Adam's second-moment
# estimate is poor at first: Liu et al. 2020, "On the Variance of the Adaptive
# Learning Rate and Beyond"; post-LN's large early gradients near the output:
# Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture");
# without it training can stay stuck at its start instead of blowing up (both
# papers show the no-warm-up loss staying high). Small steps at the start are
# an lr too low, not this (the ratio test: first written as ≥ 5e-3, which the
# case below missed at 4.1e-3; the rule of thumb is the line between small
# steps and working ones); RAdam rectifies the variance that
# warm-up works around, so it needs none (the paper's point). Found at seed 7:
# a post-LN ViT with RMSprop 1e-2 and no warm-up sat at ln 10 for its first
# 35 % (ratio 4.1e-3 there, 3.5e-2 later; its twin with 10 % warm-up ended at val loss 0.25
# against 1.80), with no rise, spike or gradient growth in its first 20 %.
# The stretch's median misses a model the first steps broke at once: its
# steps collapse after them, so the early median is small although the
# steps a warm-up would have shrunk were large. So the first ratio record
# counts too, when it is ≥ ~1e-3 and the stretch's median is ≥
# KILLED_RATIO_FADE× smaller (the fade lr_too_high asks of killed layers).
# Third hold-out: a post-LN Set Transformer with AdamW 3e-2 from step 1 had
# a ratio of 1.3e-2 at step 20, then 3.0e-4 from step 60 on (lr × weight
# decay 0.01: decay alone moved the weights), its loss at 97 % of ln 120
# through its first 20 % (its warmed-up twin ended at 1.14 against 4.80).


@rule(severities=("warning",), inputs=("loss", "lr", "grad_norm", "amp_skipped", "update_ratio"),
      metadata=("env.logger", "env.model", "env.optimizer", "task.expected_initial_loss", "task.kind", "task.num_classes", "task.vocab_size"),
      evidence=Evidence.series("loss"),
      thresholds=("MIN_CURVE_POINTS", "START_POINTS", "WARMUP_START_FRACTION", "LARGE_ADAM_LR", "EARLY_FRACTION",
                  "EARLY_LOSS_RISE_ATTENTION", "EARLY_GRAD_GROWTH", "EARLY_LOSS_RISE", "EARLY_LEARNING_DROP",
                  "EARLY_LEARNING_POINTS", "UPDATE_RATIO_RULE_OF_THUMB", "DIVERGED_SMOOTHING", "INITIAL_STEP",
                  "EARLY_STEPS_MAX", "EARLY_STEPS_FRACTION", "KILLED_RATIO_FADE", "UNIFORM_MIN_STEPS",
                  "SPARSE_LR_AT_PEAK", "HELD_OUT_MIN_EVALS", "HELD_OUT_MIN_GAIN", "HELD_OUT_SHARE",
                  "HELD_OUT_MARGIN"))
def missing_warmup(run: RunData) -> list[Finding]:
    """A transformer (or Adam with a large lr) started at full lr, with early instability.

    Symptom: the model has attention layers (or Adam with lr ≥ 1e-3), the lr
    at the first step is already ≥ 50 % of its peak, and in the first 20 % of
    the run the loss climbs above its start (not for an unknown task, whose
    loss may chase a moving target), or a loss spike
    appears, or (attention) the gradient norm grows ≥ 5× its first value
    while the loss has not yet fallen 20 % below its start (growth while
    the loss falls is the model learning), or (attention, not RAdam, the lr
    ≥ 50 % of its peak throughout) the loss is still within 20 % of its
    start at the end of that stretch while the median update/weight ratio
    there is ≥ ~1e-3 (steps of a working size that go nowhere: stuck at
    the start; smaller ones are an lr too low), or that of its first ratio
    record is and the stretch's is ≥ 10× smaller (large first steps that
    broke the model: only weight decay moves it after);
    the loss bar is 30 % with attention, 50 % (smoothed) without; growth
    counts only while the loss has not fallen 20 % below its start, by the
    norm's peak nor in the 5 records after it (a model that learns at once
    is leaving its init); the stuck test needs that stretch to reach step
    100. The lr must
    be logged from the first optimizer steps (≤ 10 and ≤ 1 % of the run, or
    the first record of a log every N ≤ 10 steps, at step N, with the lr at
    ≥ 95 % of its peak there and no warm-up in the run's config): a log
    that starts after the warm-up shows only the peak.
    Likely cause: Adam's second-moment estimates are poor in the first steps;
    large early updates destabilise attention/post-LN blocks.
    Try: linear warmup (e.g. 1-10 % of steps) then cosine/linear decay;
    start small (e.g. 5e-5), OneCycleLR.
    Source: seed 000, seed 001 (linear warmup), seed 003 ("warmup is essential"); seed 004 (update/weight
    ratio); Liu et al. 2020 (RAdam: warm-up and Adam's early variance), Xiong et al. 2020 (post-LN needs warm-up).
    """
    lr = finite(lr_series(run))
    loss = finite_train_loss(run)
    if len(lr) < 2 or len(loss) < MIN_CURVE_POINTS:
        return []
    model = run.env.get("model") or {}
    optimizer = run.env.get("optimizer") or {}
    adam_like = "adam" in str(optimizer.get("type", "")).lower()
    peak_lr = float(lr.max())
    if not (model.get("has_attention") or (adam_like and peak_lr >= LARGE_ADAM_LR)):
        return []
    if peak_lr <= 0 or float(lr.iloc[0]) < WARMUP_START_FRACTION * peak_lr:
        return []
    logged = cadence(run, "loss")
    if logged is None or not _lr_from_the_first_steps(run, lr, logged):
        return []
    early_end = max(MIN_CURVE_POINTS // 2, int(EARLY_FRACTION * len(loss)))
    early = loss.iloc[:early_end]
    start = start_level(run)
    attention = bool(model.get("has_attention"))
    if attention:
        # Raw values: the first-steps blow-up of a transformer lasts one to three steps.
        first = float(loss.iloc[0])
        rise = float(early.max() / first - 1) if first > 0 else 0.0
        rise_needed = EARLY_LOSS_RISE_ATTENTION
    else:
        smooth = Curve(early.to_numpy()).rolling(DIVERGED_SMOOTHING).median().to_numpy()
        rise = float(np.nanmax(smooth) / start - 1) if start > 0 and np.isfinite(smooth).any() else 0.0
        rise_needed = EARLY_LOSS_RISE
    # The spikes loss_spike reports (the first SPIKE_MAX_REPORTED) that start in the early stretch.
    spikes = [spike for spike in loss_spikes(run)[:SPIKE_MAX_REPORTED] if spike.start_step <= early.index[-1]]
    growth = None
    grad = finite(run.series("grad_norm"))
    if attention and len(grad) >= 3:
        early_grad = grad[grad.index <= early.index[-1]]
        first_grad = float(grad.iloc[0])
        if len(early_grad) and first_grad > 0:
            growth = float(early_grad.max() / first_grad)
            peak_step = early_grad.index[int(np.argmax(early_grad.to_numpy()))]
            # Growth while the loss falls is the model learning: fallen 20 % by the peak, or in the records
            # right after it (a norm that peaked in the first steps of a run that then learns at once, a corpus
            # ViT re-seeded with seed 22, NAdam 2e-3: 9x by step 40, the loss at 43 % of its start by step 70,
            # is the model leaving its init). Read at the peak, not at the end of the stretch, whose length
            # grows with the run's.
            before_peak = loss[loss.index <= peak_step].to_numpy()[-EARLY_LEARNING_POINTS:]
            after_peak = loss[loss.index > peak_step].to_numpy()[:EARLY_LEARNING_POINTS]
            if start > 0 and any(len(part) and median(part) <= (1 - EARLY_LEARNING_DROP) * start
                                 for part in (before_peak, after_peak)):
                growth = None
    # Still at the start says little before UNIFORM_MIN_STEPS steps (as for a loss still at the uniform level):
    # a pre-LN char LM at AdamW 3e-4 was at 93 % of its start by step 50, learning slowly, not stuck.
    stuck = _stuck_with_large_steps(run, loss, early.index[-1], start, peak_lr) if attention else None
    if early.index[-1] < UNIFORM_MIN_STEPS:
        stuck = None
    signs = []
    # A rise above the start means the model got worse only for a loss with a fixed target (a classifier's,
    # a language model's, a regression's). An unknown task's loss may chase a moving one: a GAN generator's
    # climbs as its discriminator learns, an actor-critic's as its returns and value targets change; both
    # climbed 86-111 % without warm-up and as much with one.
    # Nor did it while the validation loss kept improving through the stretch (harder batches: a curriculum).
    if rise >= rise_needed and task_of(run).kind != "unknown" and not held_out_improving(run, 0, early.index[-1]):
        signs.append(f"the loss climbed {rise:.0%} above its start")
    if spikes:
        signs.append(f"{len(spikes)} loss spike(s)")
    if growth is not None and growth >= EARLY_GRAD_GROWTH:
        signs.append(f"the gradient norm grew {growth:.0f}×")
    if stuck is not None and task_of(run).kind != "unknown":
        if stuck[2] is None:
            signs.append(f"the loss was still at {stuck[0]:.0%} of its start while the median update/weight "
                         f"ratio was {stuck[1]:.1e} (steps of a working size that went nowhere)")
        else:
            signs.append(f"the loss was still at {stuck[0]:.0%} of its start after first steps with a median "
                         f"update/weight ratio of {stuck[1]:.1e} that then collapsed to {stuck[2]:.1e} (large "
                         f"first steps that broke the model)")
    if not signs:
        return []
    what = "attention layers" if model.get("has_attention") else f"Adam with lr {peak_lr:g}"
    return [finding(
        "missing_warmup", "warning", "No lr warmup, unstable start",
        f"A model with {what} started at {float(lr.iloc[0]) / peak_lr:.0%} of its peak lr ({float(lr.iloc[0]):g}), and "
        f"up to step {early.index[-1]} ({len(early)} records) {', '.join(signs)}.",
        "Add a linear warmup over the first 1-10 % of steps (then cosine or linear decay), or OneCycleLR.",
        "seed 000, seed 001 (warmup), seed 003 (warmup is essential)", loss.index[0], early.index[-1],
        {"start_lr": float(lr.iloc[0]), "peak_lr": peak_lr, "early_loss_rise": rise, "early_spikes": len(spikes),
         "early_grad_growth": growth, "early_level_share": stuck[0] if stuck else None,
         "early_update_ratio": stuck[1] if stuck else None, "collapsed_update_ratio": stuck[2] if stuck else None})]


def _lr_from_the_first_steps(run: RunData, lr: Curve, logged: Cadence) -> bool:
    """The lr's first record (optimizer steps) shows the start of training: within the first steps
    (:meth:`Cadence.early_bound`), or, in a log every N ≤ EARLY_STEPS_MAX steps, the first record it could take
    (step N, or N - 1 where steps count from 0) with the lr already at ≥ SPARSE_LR_AT_PEAK of its peak and the
    run's config declaring no warm-up: a warm-up over by then lasted less than one logging interval. Heldout12's
    keyword spotter (every 6 steps of 570) and heldout13's GPT (every 10 of 516) showed their lr at its peak from
    their first record, past the 1 %-of-the-run bound. At half its peak there, the lr may be half-way through a
    warm-up of two intervals (a new user's break test: an HF run with warmup_steps=20 logged every 10 steps)."""
    first_lr_step = int(lr.index[0])
    if first_lr_step <= logged.early_bound():
        return True
    every = logged.every
    if every is None or every > EARLY_STEPS_MAX or first_lr_step not in (every - 1, every):
        return False
    return float(lr.iloc[0]) >= SPARSE_LR_AT_PEAK * float(lr.max()) and declared_warmup(run) is None


def declared_warmup(run: RunData) -> tuple[str, float] | None:
    """A positive warm-up length the run's config declares (a key naming a warm-up, as HF's ``warmup_steps`` and
    ``warmup_ratio`` or a user's ``warmup``, at the top level or one level down, with a positive number), or
    None."""
    config = run.config if isinstance(run.config, dict) else {}
    items = list(config.items())
    items += [item for value in config.values() if isinstance(value, dict) for item in value.items()]
    for key, value in items:
        if (isinstance(key, str) and re.search(r"warm_?up", key, re.IGNORECASE)
                and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
            return key, float(value)
    return None


def _stuck_with_large_steps(run: RunData, loss: Curve, early_end: int, start: float,
                            peak_lr: float) -> tuple[float, float, float | None] | None:
    """(loss level over its start, median update/weight ratio, the ratio it collapsed to or None) over the
    early stretch (steps ≤ ``early_end``, optimizer steps) when the lr stayed ≥ WARMUP_START_FRACTION of
    ``peak_lr`` there, the optimizer is not RAdam, the loss (median of its last EARLY_LEARNING_POINTS records
    there) is still above (1 - EARLY_LEARNING_DROP) × ``start``, and the median positive ratio of every
    layer's records there is ≥ UPDATE_RATIO_RULE_OF_THUMB, or that of the first ratio record is and the
    stretch's is ≥ KILLED_RATIO_FADE× smaller (then the second value is the first record's and the third the
    stretch's); else None (also without per-layer update ratios)."""
    if "radam" in str((run.env.get("optimizer") or {}).get("type", "")).lower() or not start > 0:
        return None
    lr = finite(lr_series(run))
    early_lr = lr[lr.index <= early_end].to_numpy(dtype="float64")
    if not early_lr.size or float(early_lr.min()) < WARMUP_START_FRACTION * peak_lr:
        return None
    ratios = layer_values(run, "update_ratio")
    if ratios.empty:
        return None
    steps = np.asarray(ratios.index)
    values = ratios.to_numpy(dtype="float64")[steps <= early_end]  # (records, layers)
    first = values[:1]  # the first ratio record: the first steps, which a warm-up would have made small
    values, first = values[np.isfinite(values) & (values > 0)], first[np.isfinite(first) & (first > 0)]
    if not values.size:
        return None
    stretch, first_steps = float(np.median(values)), float(np.median(first)) if first.size else 0.0
    # Working steps throughout, or at first and then collapsed (≥ KILLED_RATIO_FADE× smaller over the stretch):
    # the first large steps broke the model, and what moves the weights after is little more than decay.
    collapsed = first_steps >= UPDATE_RATIO_RULE_OF_THUMB and KILLED_RATIO_FADE * stretch <= first_steps
    if stretch < UPDATE_RATIO_RULE_OF_THUMB and not collapsed:
        return None
    level = median(loss[loss.index <= early_end].to_numpy()[-EARLY_LEARNING_POINTS:])
    if level <= (1 - EARLY_LEARNING_DROP) * start:
        return None
    return level / start, first_steps if collapsed and stretch < UPDATE_RATIO_RULE_OF_THUMB else stretch, (
        stretch if collapsed and stretch < UPDATE_RATIO_RULE_OF_THUMB else None)
