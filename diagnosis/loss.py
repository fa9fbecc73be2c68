"""Rules on the training loss itself: divergence, loss spikes, the initial loss.

Also the intermediate results other rules build on: the starting level, the
divergence onset (rules that judge a curve stay quiet on a diverged run) and
the list of spikes (``missing_warmup`` counts the early ones). Each is
computed once per ``diagnose()`` call (:func:`~traindoctor.diagnosis.memo.per_run`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from traindoctor.diagnosis.common import (
    eval_frame,
    eval_splits,
    finding,
    finite_train_loss,
    loss_reference,
    lr_series,
    masked_train_losses,
    non_finite_steps,
    task_of,
    train_loss,
)
from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.memo import per_run
from traindoctor.diagnosis.records import Evidence, Live, rule
from traindoctor.diagnosis.robust import (
    finite,
    mad_sigma,
    median,
    trailing_mad_sigma,
    trailing_median,
    trailing_quantile_at,
    true_runs,
    window_median,
)
from traindoctor.store.frames import Curve, to_float
from traindoctor.store.run_data import RunData

# Starting level: median of the first 5 finite losses (one noisy batch does not set it).
START_POINTS = 5


@per_run
def start_level(run: RunData) -> float:
    """Median of the first finite training losses: where the curve starts."""
    return median(finite_train_loss(run).to_numpy()[:START_POINTS])


# "Rises above its starting level and stays there": the smoothed loss stays
# 10 % above the starting level (median of the first points) to the end...
DIVERGED_MARGIN = 0.10
# ...or, when no reference loss gives the task's scale (regression, a
# language model, an unknown loss), twice the starting level: a loss with no
# floor to compare with can rise by design (a GAN's generator loss climbing
# from 0.60 to 0.79 as its discriminator learns, a regulariser whose weight
# is annealed up), and a diverged run's loss does more than that (the
# corpus's rise-divergences settle 3.4-5.9x above their start).
DIVERGED_MARGIN_UNSCALED = 1.0
# A language model's loss has that scale after all: ln V, the loss of uniform
# predictions, which a model of the token frequencies alone beats (0.85 of
# ln V on English letters, Shannon 1951). One that rises above its start and
# settles at >= 90 % of ln V kept nothing it learned: the same share at which
# learning_rate.stuck_at_uniform (UNIFORM_LEVEL_SHARE) calls a late level
# uniform.
DIVERGED_UNIFORM_SHARE = 0.90
# ...for at least 5 records and 2 % of the run, so a noisy last point is not divergence.
DIVERGED_MIN_POINTS = 5
DIVERGED_MIN_FRACTION = 0.02
# Smoothing before the "stays above" test: centred rolling median of 5
# records; the last 3 raw values must be above too (a recovery at the very
# end is not divergence).
DIVERGED_SMOOTHING = 5
DIVERGED_TAIL_POINTS = 3


def _smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Centred rolling median (no lag: a stretch above a level starts where the values do)."""
    return Curve(values).rolling(window, center=True, min_periods=1).median().to_numpy()


# A jump of many orders of magnitude needs no noise estimate: a record ≥ 1e4×
# the level before it is a numerical failure (an overflowing activation, a
# blown-up update), not minibatch noise. Per-batch losses are heavy-tailed,
# but a converged classifier's hard batches jump 10-100×. Measured as below
# over the 132 corpus runs, the 10 external curves and the 46 real logs: the
# largest jump of a healthy run is 3.1×, of an lr too high 48×, of the
# labelled glitch spike 2.0e3×; the corpus divergences jump 2e7-1e34× and
# the loss explosions pasted into bug reports 4e16-1e22× (TF Object
# Detection API). A float16 overflow is ~6e4× a loss of order 1.
MAGNITUDE_FACTOR = 1e4
# The level is the larger of the median of the (up to 50) finite records before
# the jump and the median of the run's first ≤ 5 records (START_POINTS): a
# converged loss near 0 has no level to be 1e4× above (0.001 → 10 is not a
# blow-up when the run started at 2.3). At least 3 records before it, so that
# one odd record (a log that opens on an explosion) does not set the level.
MAGNITUDE_WINDOW = 50
MAGNITUDE_MIN_HISTORY = 3


@dataclass(frozen=True)
class Jumps:
    """Records of the finite training loss ≥ MAGNITUDE_FACTOR × the level before them.

    Attributes:
        positions: their positions in the finite training loss, ascending.
        levels: the level each is judged against (same length).
    """

    positions: np.ndarray
    levels: np.ndarray


@per_run
def magnitude_jumps(run: RunData) -> Jumps:
    """The training loss's jumps of ≥ 4 orders of magnitude (MAGNITUDE_FACTOR) above the level before them.

    Costs O(n) plus O(window) per candidate: the level is at least the start's,
    so only records ≥ 1e4× the start are candidates (none in an ordinary run).
    """
    values = finite_train_loss(run).to_numpy(dtype="float64")
    if len(values) <= MAGNITUDE_MIN_HISTORY:
        return Jumps(np.array([], dtype="int64"), np.array([], dtype="float64"))
    # The start level before each record: the median of the first min(START_POINTS, position) records.
    start = np.full(len(values), median(values[:START_POINTS]))
    for position in range(MAGNITUDE_MIN_HISTORY, min(START_POINTS, len(values))):
        start[position] = median(values[:position])
    candidates = np.flatnonzero((np.arange(len(values)) >= MAGNITUDE_MIN_HISTORY) & (start > 0)
                                & (values >= MAGNITUDE_FACTOR * start))
    recent = trailing_quantile_at(values, candidates, MAGNITUDE_WINDOW, MAGNITUDE_MIN_HISTORY, 0.5)
    levels = np.fmax(recent, start[candidates])
    keep = values[candidates] >= MAGNITUDE_FACTOR * levels
    return Jumps(candidates[keep], levels[keep])


# A NaN or ±Inf anywhere (the training loss, the global gradient norm, an
# evaluation loss) starts a divergence, which lasts to the end unless the
# run recovers: after the last non-finite record the training loss stays
# finite for ≥ 10 records and ≥ 5 % of its records. A GradScaler's skipped
# step or one bad batch is followed by hundreds of finite steps; a run whose
# weights or activations have gone unstable keeps producing NaNs every few
# records (the field case: gaps of 1 to 5 records over 20). The same stretch
# separates one episode of non-finite values from the next: the onset is the
# first record of the last episode.
RECOVERED_MIN_RECORDS = 10
RECOVERED_MIN_FRACTION = 0.05
# Steps listed by number in a message or in evidence; the rest are counted.
LISTED_STEPS = 5


@dataclass(frozen=True)
class NonFinite:
    """A run's non-finite records that count toward divergence, and those that do not.

    Attributes:
        steps: sorted steps with a counted non-finite record (any series).
        by_series: what went non-finite (``train loss``, ``grad_norm``,
            ``<split> loss``) → its counted steps.
        masked: steps whose finite-looking train loss hides a NaN (HF Trainer's filter).
        skipped: steps of a lone non-finite gradient norm followed by a
            finite loss, or flagged by a GradScaler (``amp_skipped``): the
            update was skipped (an applied NaN update makes every later loss
            NaN), so it is not a divergence.
        train_steps: the training loss's steps, and ``train_finite`` whether each value is finite.
    """

    steps: np.ndarray
    by_series: dict[str, np.ndarray]
    masked: np.ndarray
    skipped: np.ndarray
    train_steps: np.ndarray
    train_finite: np.ndarray

    def finite_records_between(self, after: float, before: float) -> int:
        """Finite training-loss records strictly between two steps."""
        low = np.searchsorted(self.train_steps, after, side="right")
        high = np.searchsorted(self.train_steps, before, side="left")
        return int(self.train_finite[low:high].sum()) if high > low else 0

    def recovery_stretch(self) -> int:
        """Finite training-loss records a recovery needs (RECOVERED_MIN_RECORDS, RECOVERED_MIN_FRACTION)."""
        return int(max(RECOVERED_MIN_RECORDS, math.ceil(RECOVERED_MIN_FRACTION * len(self.train_steps))))


def _skipped_gradient_steps(run: RunData, grad: Curve, loss: Curve) -> np.ndarray:
    """Non-finite gradient norms that mark a skipped update, not a broken run (see :class:`NonFinite`)."""
    values = grad.to_numpy(dtype="float64")
    bad = ~np.isfinite(values)
    if not bad.any():
        return np.array([], dtype="int64")
    steps = grad.index.to_numpy()
    amp = run.series("amp_skipped", "train")
    by_scaler = np.isin(steps, amp.index.to_numpy()[amp.to_numpy(dtype="float64") > 0])
    lone = bad & ~np.concatenate([[False], bad[:-1]]) & ~np.concatenate([bad[1:], [False]])
    loss_steps, loss_values = loss.index.to_numpy(), loss.to_numpy(dtype="float64")
    following = np.searchsorted(loss_steps, steps, side="right")
    followed_by_finite = np.zeros(len(steps), dtype=bool)
    has_next = following < len(loss_steps)
    followed_by_finite[has_next] = np.isfinite(loss_values[following[has_next]])
    same_step = np.isin(steps, loss_steps[~np.isfinite(loss_values)])
    return steps[bad & (by_scaler | (lone & followed_by_finite & ~same_step))]


@per_run
def non_finite(run: RunData) -> NonFinite:
    """The run's non-finite records: training loss (masked NaNs included), global gradient norm, evaluation losses."""
    loss = train_loss(run)
    masked = masked_train_losses(run)
    if len(masked):
        values = loss.to_numpy(dtype="float64").copy()
        values[np.isin(loss.index.to_numpy(), masked)] = np.nan
        loss = Curve(values, loss.index, loss.name)
    grad = run.series("grad_norm", "train")
    skipped = _skipped_gradient_steps(run, grad, loss)
    by_series = {"train loss": non_finite_steps(loss)}
    by_series["grad_norm"] = np.setdiff1d(non_finite_steps(grad), skipped)
    for split in eval_splits(run, "loss"):
        by_series[f"{split} loss"] = non_finite_steps(eval_frame(run, "loss", split)[0])
    by_series = {label: steps for label, steps in by_series.items() if len(steps)}
    steps = np.unique(np.concatenate(list(by_series.values()))) if by_series else np.array([], dtype="int64")
    return NonFinite(steps=steps.astype("int64"), by_series=by_series, masked=masked,
                     skipped=skipped, train_steps=loss.index.to_numpy(),
                     train_finite=np.isfinite(loss.to_numpy(dtype="float64")))


def _last_episode_start(records: NonFinite) -> int:
    """Position in ``records.steps`` of the first record of the last episode (episodes end in a recovery stretch)."""
    stretch = records.recovery_stretch()
    for position in range(len(records.steps) - 1, 0, -1):
        if records.finite_records_between(records.steps[position - 1], records.steps[position]) >= stretch:
            return position
    return 0


def _steps_text(steps: np.ndarray) -> str:
    shown = ", ".join(str(int(step)) for step in steps[:LISTED_STEPS])
    return shown + (f" and {len(steps) - LISTED_STEPS} more" if len(steps) > LISTED_STEPS else "")


@per_run
def divergence_onset(run: RunData) -> tuple[int, str, dict] | None:
    """Step where the run diverged for good (non-finite values it did not recover from, or a rise that stays),
    with the kind and numbers."""
    records = non_finite(run)
    if len(records.steps):
        last = int(records.steps[-1])
        after = records.finite_records_between(last, math.inf)
        if after < records.recovery_stretch():
            first = int(records.steps[_last_episode_start(records)])
            series = {label: int(((steps >= first) & (steps <= last)).sum())
                      for label, steps in records.by_series.items() if ((steps >= first) & (steps <= last)).any()}
            return first, "non_finite", {
                "non_finite_steps": int(((records.steps >= first) & (records.steps <= last)).sum()),
                "first_non_finite_step": first, "last_non_finite_step": last, "non_finite_records": series,
                "finite_records_after": after, "recovery_needs": records.recovery_stretch(),
                "masked_steps": [int(step) for step in records.masked[:LISTED_STEPS]],
                "skipped_steps": [int(step) for step in records.skipped[:LISTED_STEPS]]}
    return _rise_onset(run) or _explosion_onset(run) or _above_reference_onset(run)


# A training loss that climbs while the model keeps getting better on held-out data is not the model getting
# worse: the training batches got harder (a curriculum, an augmentation or regulariser ramped up, a shifting data
# stream). The main evaluation split says so when, with ≥ HELD_OUT_MIN_EVALS evaluations in the stretch (and
# the first one after it: a climb over the first steps may hold one evaluation or none), none of them is worse
# than the best evaluation before it by more than the larger of HELD_OUT_SHARE of the improvement made by then
# (from the first evaluation) and HELD_OUT_MARGIN of that best (eval noise), and the last is HELD_OUT_MIN_GAIN
# below the first. A new user's break test: competence-based curriculum regressions whose training loss rose
# 2-7x over the first 200 steps while their validation loss fell (1.92 -> 0.67, then to its best, 0.145,
# within 0.01) read as a critical divergence, a missing warm-up and an lr too high. The corpus's word LM at
# 100x its lr climbs back while its validation loss goes from 4.18 to 4.61 (+10 % over its best, which was its
# first evaluation) and back to 4.14: not improving through the climb, and still found.
HELD_OUT_MIN_EVALS = 2
# ...and the last at least this share below the first: a validation loss flat at the uniform level while the
# training loss blows up in the first steps (the sample post-LN transformer without warm-up: 2.80, 2.78, 2.79
# against ln 16 = 2.77) is stuck, not improving.
HELD_OUT_MIN_GAIN = 0.05
HELD_OUT_SHARE = 0.10
HELD_OUT_MARGIN = 0.02


def held_out_improving(run: RunData, first_step: float, last_step: float) -> bool:
    """Whether the main evaluation split's loss kept improving through steps ``first_step``..``last_step``
    (optimizer steps, inclusive) and at the first evaluation after them (see above for the test). False without
    ≥ HELD_OUT_MIN_EVALS such evaluations."""
    values, _ = eval_frame(run, "loss")
    if not len(values):
        return False
    v = values.to_numpy(dtype="float64")
    steps = np.asarray(values.index)
    keep = np.isfinite(v)
    v, steps = v[keep], steps[keep]
    inside = np.flatnonzero((steps >= first_step) & (steps <= last_step))
    after = np.flatnonzero(steps > last_step)
    if len(after):  # and the first evaluation after it: a short stretch (the first steps) may hold one or none
        inside = np.r_[inside, after[0]]
    if len(inside) < HELD_OUT_MIN_EVALS or not v[inside[0]] - v[inside[-1]] >= HELD_OUT_MIN_GAIN * abs(v[inside[0]]):
        return False
    for position in inside:
        if position == 0:
            continue
        best = float(v[:position].min())
        allowance = max(HELD_OUT_SHARE * (float(v[0]) - best), HELD_OUT_MARGIN * abs(best))
        if v[position] > best + allowance:
            return False
    return True


def _rise_onset(run: RunData) -> tuple[int, str, dict] | None:
    """The smoothed loss ≥ DIVERGED_MARGIN above its start from some record to the end (needs ≥ 10 records),
    and, where the task gives a reference loss, settled at or above it; without one, ≥ DIVERGED_MARGIN_UNSCALED
    above its start."""
    loss = finite_train_loss(run)
    if len(loss) < START_POINTS + DIVERGED_MIN_POINTS:
        return None
    start = start_level(run)
    smooth = _smoothed(loss.to_numpy(), DIVERGED_SMOOTHING)
    reference = loss_reference(run)
    task = task_of(run)
    if reference is None and task.kind == "language_modelling" and task.uniform_loss is not None:
        # ln V is no start (a fine-tuned LM starts far below it) but it is a scale: the cross-entropy of
        # predicting every token as equally likely, which text's token frequencies alone beat (Shannon 1951).
        # A language model's loss cannot climb back there by design, as a GAN's may rise: one that rises
        # above its start and settles near ln V kept nothing it learned. Fourth hold-out: a seq2seq
        # transformer whose lr grew x1.01 a step fell 3.2 -> 1.25 in window means, climbed to 3.66, blew up
        # to 1.4e4 and settled at 3.13-3.15 (ln 24 = 3.18), 1.1x its start: under the unscaled 2x margin.
        # "At ln V" is the share of it at which stuck_at_uniform calls a language model's loss uniform.
        reference = DIVERGED_UNIFORM_SHARE * task.uniform_loss, f"{DIVERGED_UNIFORM_SHARE:.0%} of ln({task.size})"
    threshold = start + (DIVERGED_MARGIN if reference is not None else DIVERGED_MARGIN_UNSCALED) * abs(start)
    below = np.flatnonzero(smooth <= threshold)
    first_above = below[-1] + 1 if len(below) else 0
    stretch = len(loss) - first_above
    if stretch < max(DIVERGED_MIN_POINTS, DIVERGED_MIN_FRACTION * len(loss)):
        return None
    if not np.all(loss.to_numpy()[-DIVERGED_TAIL_POINTS:] > threshold):
        return None
    tail = float(np.median(loss.to_numpy()[first_above:]))
    if held_out_improving(run, int(loss.index[first_above]), math.inf):
        return None  # harder batches (a curriculum), not a model blowing up: see held_out_improving
    if reference is not None and 0 <= start and tail < reference[0]:  # a negative loss is no cross-entropy
        # Still below the loss of uniform predictions (ln C, or the expected initial loss): the
        # model predicts better than one that learned nothing, so training has not blown up; a
        # climb that settles there is an lr too high (its rebound test), not a divergence. A
        # window-mean log's start can already be past the first fall (a GRU logged every 25
        # steps: start 0.82, settled at 1.0 against ln 4 = 1.39); every labelled rise-divergence
        # in the corpus ends 3-6x above its reference.
        return None
    return int(loss.index[first_above]), "rise", {"start_level": start, "diverged_level": tail,
                                                  "steps_above": stretch}


def _explosion_onset(run: RunData) -> tuple[int, str, dict] | None:
    """The first jump of ≥ MAGNITUDE_FACTOR after which every record to the end stays that far above its level.

    However few records a log has: a pasted log of 8 lines that goes 0.06 → 5e19 → 2.5e22 has diverged. The
    explosion must cover the last DIVERGED_TAIL_POINTS records (one exploded last record may be a spike), or,
    with fewer records after it, the evaluation must have blown up with it: every evaluation loss from the
    jump's step on (≥ 1) ≥ MAGNITUDE_FACTOR × the best one before it. Two series four orders of magnitude
    up at once are the weights, not a bad batch (a per-epoch log ending 0.16 → 1.6e18 with its validation
    loss 3.0 → 1.9e7, LadderNet's wrong lr).
    """
    jumps = magnitude_jumps(run)
    if not len(jumps.positions):
        return None
    loss = finite_train_loss(run)
    values = loss.to_numpy(dtype="float64")
    lowest_after = np.minimum.accumulate(values[::-1])[::-1]  # lowest_after[i]: the minimum of values[i:]
    for position, level in zip(jumps.positions, jumps.levels):
        records = len(values) - position
        if lowest_after[position] >= MAGNITUDE_FACTOR * level and (
                records >= DIVERGED_TAIL_POINTS or _evaluation_blew_up(run, int(loss.index[position]))):
            return int(loss.index[position]), "explosion", {
                "level_before": float(level), "jump_loss": float(values[position]), "last_loss": float(values[-1]),
                "lowest_after": float(lowest_after[position]),
                "orders_of_magnitude": float(np.log10(lowest_after[position] / level)), "steps_above": int(records),
                "evaluation_blew_up": bool(records < DIVERGED_TAIL_POINTS)}
    return None


def _evaluation_blew_up(run: RunData, step: int) -> bool:
    """Every finite evaluation loss of the main split from ``step`` on (≥ 1) is ≥ MAGNITUDE_FACTOR × the
    lowest one before it (≥ 1), and no evaluation after ``step`` is missing its value (NaN counts as up)."""
    values, _ = eval_frame(run, "loss")
    if not len(values):
        return False
    steps, losses = values.index.to_numpy(), values.to_numpy(dtype="float64")
    before, after = losses[steps < step], losses[steps >= step]
    before = before[np.isfinite(before)]
    if not len(before) or not len(after) or before.min() <= 0:
        return False
    return bool(np.all(~np.isfinite(after) | (after >= MAGNITUDE_FACTOR * before.min())))


# A loss that never came within 10× of where a fresh model starts (the
# user's expected initial loss, ln C for a classifier, ln V for a language
# model) and did not fall had diverged before its first record: a log that
# begins with a mean over the first 20-25 steps, or late, has no sane start
# for the rise test to compare with. A fresh classifier's cross-entropy is
# ln C (Karpathy 2019, "verify loss @ init"), and bad_initial_loss already
# calls 1.5× ln C at the first step a broken initialisation; 10× it, to the
# end of the run, is weights blown up (logits in the hundreds). Held-out
# corpus: a GRU with SGD lr 20 logs window means of 189 to 740 against
# ln 4 = 1.39 (136× at its first record); the smoothed loss of every other
# corpus run with a reference (129) comes down to ≤ 1.01× it.
ABOVE_REFERENCE_FACTOR = 10.0
# "Did not fall": its last quarter's median is ≥ half its first quarter's. A
# model learning from a broken start, or a loss summed over a batch (64 ln C
# at the start), falls by more than half; a blown-up one wanders (the GRU's
# window means: 411 in the first quarter, 353 in the last).
ABOVE_REFERENCE_KEPT = 0.5
# Or every evaluation (at least 3) has a loss ≥ 10× the reference: an
# evaluation loss is a per-example mean (no batch sum can inflate it), and a
# model whose every evaluation scores ten times worse than uniform guessing
# has blown up, however its training loss falls after (second hold-out: a
# ViT with RMSprop logged 12,467 at step 10 and fell to 136, its evals 2,702
# to 173 against ln 10 = 2.3; a BN MLP's epoch means 5e15, 182, 179, evals
# 142, 76, 146 against ln 5).
ABOVE_REFERENCE_MIN_EVALS = 3


def _above_reference_onset(run: RunData) -> tuple[int, str, dict] | None:
    """The first record, when every (smoothed) record stays ≥ ABOVE_REFERENCE_FACTOR × the task's initial loss
    and either the last quarter's median is ≥ ABOVE_REFERENCE_KEPT × the first quarter's (≥ DIVERGED_MIN_POINTS
    records) or every evaluation loss (≥ ABOVE_REFERENCE_MIN_EVALS) is that far above it too."""
    reference = loss_reference(run)
    level = reference[0] if reference is not None else task_of(run).uniform_loss
    name = reference[1] if reference is not None else f"ln({task_of(run).size})"
    if level is None:
        return None
    bar = ABOVE_REFERENCE_FACTOR * level
    loss = finite_train_loss(run)
    values = loss.to_numpy(dtype="float64")
    above = bool(len(values)) and bool(np.all(_smoothed(values, DIVERGED_SMOOTHING) >= bar)
                                       and np.all(values[-DIVERGED_TAIL_POINTS:] >= bar))
    evidence = {"reference_loss": float(level), "reference": name,
                "lowest_loss": float(values.min()) if len(values) else None,
                "first_loss": float(values[0]) if len(values) else None,
                "last_loss": float(values[-1]) if len(values) else None, "steps_above": int(len(values))}
    if above and len(values) >= DIVERGED_MIN_POINTS and (
            window_median(loss, 0.75, 1.0) >= ABOVE_REFERENCE_KEPT * window_median(loss, 0.0, 0.25)):
        return int(loss.index[0]), "above_reference", evidence
    evals = finite(eval_frame(run, "loss")[0])
    if (above or not len(values)) and len(evals) >= ABOVE_REFERENCE_MIN_EVALS and bool(
            np.all(evals.to_numpy(dtype="float64") >= bar)):
        first = int(loss.index[0]) if len(values) else int(evals.index[0])
        return first, "above_reference", {**evidence, "eval_losses": int(len(evals)),
                                          "lowest_eval_loss": float(evals.min())}
    return None


# Live, non-finite values are reported once there are 3 of them: a single
# NaN batch (a GradScaler skips it, the next step is finite) is not a divergence.
LIVE_NON_FINITE_RECORDS = 3
# Live, a rise above the starting level is reported once it has lasted 100
# records: a long loss spike also climbs above the start and comes back
# (corpus: an lr bump kept the smoothed loss above its start for 93 records,
# then the run recovered), and only the end of the run tells them apart.
LIVE_RISE_RECORDS = 100


def divergence_settled(finding: Finding) -> bool:
    """Once 3 records were non-finite, or the loss has stayed above its start for 100 records."""
    if finding.evidence.get("kind") == "non_finite":
        return finding.evidence.get("non_finite_steps", 0) >= LIVE_NON_FINITE_RECORDS
    return finding.evidence.get("steps_above", 0) >= LIVE_RISE_RECORDS


@rule(severities=("info", "critical"), inputs=("loss", "grad_norm", "amp_skipped"), evidence=Evidence.series("loss"),
      # The task's reference loss: a log that starts far above where a fresh model starts (1b317a7).
      metadata=("task.expected_initial_loss", "task.kind", "task.num_classes", "task.vocab_size"),
      thresholds=("RECOVERED_MIN_RECORDS", "RECOVERED_MIN_FRACTION", "LISTED_STEPS", "START_POINTS",
                  "DIVERGED_MARGIN", "DIVERGED_MARGIN_UNSCALED", "DIVERGED_UNIFORM_SHARE", "DIVERGED_MIN_POINTS",
                  "DIVERGED_MIN_FRACTION", "DIVERGED_SMOOTHING",
                  "DIVERGED_TAIL_POINTS", "MAGNITUDE_FACTOR", "MAGNITUDE_WINDOW", "MAGNITUDE_MIN_HISTORY",
                  "LIVE_NON_FINITE_RECORDS", "LIVE_RISE_RECORDS", "ABOVE_REFERENCE_FACTOR",
                  "ABOVE_REFERENCE_KEPT", "ABOVE_REFERENCE_MIN_EVALS", "HELD_OUT_MIN_EVALS",
                  "HELD_OUT_MIN_GAIN", "HELD_OUT_SHARE", "HELD_OUT_MARGIN"),
      live=Live(settled=divergence_settled))
def divergence(run: RunData) -> list[Finding]:
    """A NaN/Inf in the loss, the gradient norm or an evaluation loss, or a loss that rose above its start and stayed.

    Symptom: a non-finite training loss, global gradient norm or evaluation
    loss from which the run did not recover (critical, from the first such
    record of the last episode); recovering needs ≥ 10 finite training-loss
    records and ≥ 5 % of them after the last one. A train loss of exactly 0.0
    or a copy of the earlier mean beside a NaN gradient norm or eval loss is
    HF Trainer's masked NaN and counts as one; a lone NaN gradient norm
    followed by a finite loss is a skipped update and does not. Or the
    smoothed loss ≥ 10 % above its starting level from some step to the end
    and settled at or above the task's reference loss (ln C, the expected
    initial loss; for a language model 90 % of ln V, the uniform-prediction
    loss), or ≥ 2× its starting level when the task gives none
    (critical; ≥ 10 records), unless the validation loss, evaluated ≥ 2
    times from the rise on, kept improving through it (no evaluation worse
    than the best before it by more than 10 % of the improvement made by
    then or 2 %, the last ≥ 5 % below the first: harder batches, a
    curriculum). Or, however short the log, a jump to ≥ 1e4×
    the level before it (the median of ≥ 3 earlier records, and at least
    the start's) after which every record to the end, ≥ 3 of them, stays
    ≥ 1e4× above that level, or fewer when every evaluation loss from the
    jump on is ≥ 1e4× its best before (critical): four orders of magnitude
    is no minibatch noise (hard batches jump 10-100×) but a numerical
    blow-up.
    Or, when the task gives the loss a fresh model starts at (the expected
    initial loss, ln C, ln V), every smoothed record ≥ 10× that level and
    either the last quarter's median ≥ half the first's or every evaluation
    loss (≥ 3 of them) ≥ 10× that level too (critical, from the first record:
    the run blew up before logging began).
    Non-finite values the run recovered from are info.
    Likely cause: lr too high, no warmup, fp16 overflow (weights or
    activations kept in fp16), bad data.
    Try: lower lr, warmup, gradient clipping (max_grad_norm = 1), Adam eps
    1e-6..1e-4 under fp16, fp32 master weights (bf16 or AMP with a
    GradScaler rather than a model cast to fp16), revert to a checkpoint
    before the divergence.
    Source: seeds 000 and 003 ("diverged training": clipping, warmup), seed 002 (fp16,
    "revert model checkpoints if training diverges"); transformers'
    TrainingArguments.logging_nan_inf_filter; IEEE 754 binary16 (largest
    finite value 65504, ~6e4× a loss of order 1).
    """
    onset = divergence_onset(run)
    records = non_finite(run)
    advice = ("Lower the lr, add warmup, clip gradients (max_grad_norm = 1); under fp16 raise Adam eps to 1e-6..1e-4 "
              "and keep the weights in fp32 (AMP with a GradScaler, or bf16); restart from a checkpoint before the "
              "divergence.")
    source = "seed 000, seed 003 (diverged training), seed 002 (fp16)"
    ends = [int(records.train_steps[-1])] if len(records.train_steps) else []
    ends += [int(records.steps[-1])] if len(records.steps) else []
    if onset is not None:
        step, kind, evidence = onset
        if kind == "non_finite":
            message = _non_finite_message(records, step, evidence)
        elif kind == "explosion" and evidence.get("evaluation_blew_up"):
            message = (f"At step {step}, {evidence['steps_above']} record(s) before the log ends, the loss jumped from a "
                       f"level of {evidence['level_before']:.3g} to {evidence['jump_loss']:.3g} "
                       f"({math.floor(evidence['orders_of_magnitude'])} orders of magnitude), and the validation loss "
                       "blew up with it (every evaluation from there ≥ 1e4× its best before): the weights, not a "
                       "bad batch.")
        elif kind == "explosion":
            message = (f"At step {step} the loss jumped from a level of {evidence['level_before']:.3g} to "
                       f"{evidence['jump_loss']:.3g} and never came back: all {evidence['steps_above']} records from "
                       f"there to the end are ≥ {math.floor(evidence['orders_of_magnitude'])} orders of magnitude "
                       f"above that level (the last {evidence['last_loss']:.3g}). A finite loss this large is a "
                       "numerical blow-up, not noise.")
        elif kind == "above_reference" and evidence.get("eval_losses"):
            train = (f", and so did the training loss (lowest {evidence['lowest_loss']:.3g})"
                     if evidence.get("lowest_loss") is not None else "")
            message = (f"From its first record (step {step}) to the end, every one of its {evidence['eval_losses']} "
                       f"evaluations scored at least {ABOVE_REFERENCE_FACTOR:.0f}× {evidence['reference']} = "
                       f"{evidence['reference_loss']:.3g}, where a fresh model starts (lowest eval loss "
                       f"{evidence['lowest_eval_loss']:.3g}){train}: the run had blown up before its first record.")
        elif kind == "above_reference":
            message = (f"From its first record (step {step}) to the end the loss never came within "
                       f"{ABOVE_REFERENCE_FACTOR:.0f}× of {evidence['reference']} = {evidence['reference_loss']:.3g}, "
                       f"where a fresh model starts (lowest {evidence['lowest_loss']:.3g}, last "
                       f"{evidence['last_loss']:.3g}), and did not fall by half: the run had blown up before its first "
                       "record.")
        else:
            message = (f"From step {step} the loss stayed above its starting level {evidence['start_level']:.3g} to the "
                       f"end (median {evidence['diverged_level']:.3g} over {evidence['steps_above']} records).")
        return [finding("divergence", "critical", "Training diverged", message, advice, source,
                        step, max(ends + [step]), {"kind": kind, **evidence})]
    if not len(records.steps):
        return []
    what = "; ".join(f"{label} at {len(steps)} step(s)" for label, steps in records.by_series.items())
    return [finding(
        "divergence", "info", "Non-finite values (recovered)",
        f"NaN/Inf values at {len(records.steps)} step(s) (first {records.steps[0]}, last {records.steps[-1]}: "
        f"{what}); the training loss then stayed finite for "
        f"{records.finite_records_between(records.steps[-1], math.inf)} records: training recovered.",
        "Usually a skipped fp16 step or a bad batch; if it repeats, clip gradients or lower the lr.",
        source, records.steps[0], records.steps[-1],
        {"kind": "non_finite_recovered", "non_finite_steps": len(records.steps),
         "non_finite_records": {label: len(steps) for label, steps in records.by_series.items()}})]


def _non_finite_message(records: NonFinite, step: int, evidence: dict) -> str:
    """What went non-finite from ``step`` on, why it is not a recovery, and what hid or excused some of it."""
    parts = []
    for label, steps in records.by_series.items():
        steps = steps[steps >= step]
        if len(steps):
            parts.append(f"{label} at step {_steps_text(steps)}")
    message = (f"From step {step} the run produced NaN/Inf values and did not recover: {'; '.join(parts)}. "
               f"After the last one (step {evidence['last_non_finite_step']}) the training loss has "
               f"{evidence['finite_records_after']} finite record(s); a recovery needs {evidence['recovery_needs']}.")
    masked = records.masked[records.masked >= step]
    if len(masked):
        message += (f" The train loss at step {_steps_text(masked)} is HF Trainer's masked NaN: with "
                    "logging_nan_inf_filter (on by default) a NaN/Inf loss is logged as 0.0 or as the running mean; "
                    "set logging_nan_inf_filter=False to see it.")
    skipped = records.skipped[records.skipped < step]
    if len(skipped):
        message += (f" The NaN/Inf gradient norm at step {_steps_text(skipped)} was followed by a finite loss: a "
                    "skipped update, not counted.")
    return message


# Running level: median of the previous SPIKE_WINDOW losses (clamped to the
# run's length: a twentieth of it; a run still being written is judged with
# the longest window, as its length is not known yet); noise scale: robust
# sigma of the residuals over 4 windows.
SPIKE_WINDOW_MAX = 50
SPIKE_WINDOW_MIN = 5
SPIKE_MIN_HISTORY = 5
SPIKE_SCALE_WINDOWS = 4
# The noise scale never drops below 1 % of the level, so a constant loss
# with one tiny wobble is not a spike.
SPIKE_SCALE_FLOOR = 0.01
# Per-batch losses are heavy-tailed: on a converged classifier most batches
# score near 0 and any batch holding a misclassified sample jumps 10-100×,
# sometimes a few in a row. So the noise scale is also read off the upper
# tail: the 99th percentile of the trailing residuals over its Gaussian
# value (2.326 σ). A run's ordinary hard batches are then not many sigmas;
# for Gaussian noise both estimates agree. (The 95th percentile misses hard
# batches rarer than 1 in 20: a simulated converged classifier, 3,000 steps,
# batches of 8 to 64, kept 29 false spikes in 36 runs; the 99th, 2.)
SPIKE_TAIL_QUANTILE = 0.99
SPIKE_TAIL_Z = 2.326
# A single record must also last: the median of the 5 records after it stays
# ≥ 1 robust sigma above the pre-spike level (a damaged model takes steps to
# recover: the corpus' glitch batch lifts its noisy level by 1.4 sigmas for
# ~10 steps). A one-batch jump among ordinary batches leaves that median
# where it was: the median of 5 Gaussian draws passes 1 sigma 3 % of the
# time. A spike of ≥ SPIKE_MIN_POINTS elevated records lasts by definition.
SPIKE_AFTER_POINTS = 5
SPIKE_LASTING_SIGMAS = 1.0
# A spike: a peak ≥ 10 robust sigmas and ≥ 20 % above the running level,
# with ≥ 3 records ≥ 5 sigmas above it (gaps of ≤ 2 allowed): a real spike
# damages the model for a few steps, a noisy batch does not. Lightning's
# detector uses 3× a 10-step mean, llm-foundry 2× a 100-step mean held for
# 5 steps; the corpus' noisy small-batch runs need the robust scale.
SPIKE_PEAK_SIGMAS = 10.0
SPIKE_ELEVATED_SIGMAS = 5.0
SPIKE_MIN_RELATIVE_HEIGHT = 0.20
SPIKE_MIN_POINTS = 3  # optimizer steps: in a log every N ≥ 2 steps, max(2, ⌈3 / N⌉) records
SPIKE_MAX_GAP = 2
# During a spike the level and scale stay those from before it, for up to
# 20 windows (1,000 records at most): long enough for PolyPythia's slow
# recoveries, bounded work on any run.
SPIKE_HOLD_WINDOWS = 20
# Expected range of 5 normal draws in sigmas (tables of the studentised range).
SMALL_SAMPLE_RANGE_TO_SIGMA = 2.33
# A single bad record counts only when extreme: ≥ 3× the running level
# (Lightning's spike factor), and a jump of ≥ 25 % of the starting loss
# (minibatch noise near a zero loss is many sigmas but tiny), on top of the
# SPIKE_PEAK_SIGMAS every peak needs; it is reported as info.
SPIKE_SINGLE_FACTOR = 3.0
SPIKE_SINGLE_MIN_JUMP = 0.25
# Any spike must jump by ≥ 1 % of the starting loss: a loss of 1e-6 rising
# to 1e-4 is many sigmas and 100× but means nothing.
SPIKE_MIN_JUMP = 0.01
# On a loss already near zero (a running level ≤ 5 % of the start: a
# memorised training set) a spike of several records needs the single
# record's bar too, a jump of ≥ 25 % of the starting loss. Its noise scale is
# tiny, and Adam drives a memorised loss through brief benign bursts (the
# "slingshot" of Thilak et al. 2022, arXiv 2206.04817) that leave the run
# where it was. Held-out corpus: a word LM memorising 48 windows goes 0.021
# -> 0.13 -> 0.021 over three 20-step means (a jump of 4.6 % of its start);
# the one labelled spike on so low a level (digits, 3 % of its start) jumps
# 19× its start, and every labelled spike ≥ 35 % of it.
SPIKE_NEAR_ZERO_LEVEL = 0.05
# Recovered: the loss comes back within 10 % of the pre-spike level.
SPIKE_RECOVERED_MARGIN = 0.10
# A sparse log (a record every >= 10 steps: HF logging_steps, window means
# every 20-30 steps, the sparse log lr_too_high's rebound test names) puts
# 5 records' worth of trend (50-150 steps) inside the trailing median, so
# on a falling curve the residuals measure how far the median lags the fall,
# not the noise: the noise scale is then also read off the record-to-record
# differences, centred on their own trailing median (a first difference
# removes a locally linear trend, a MAD then ignores its constant slope),
# divided by sqrt 2 (a difference holds two records' noise), and the smaller
# scale is kept. On a flat log both read the same noise. Fourth hold-out: a
# seq2seq transformer logged every 30 steps whose lr went x30 for 3 steps
# at step 500 rose 0.98 -> 1.79 -> 2.81 -> 1.92 (its level 1.0) while
# falling 3.2 -> 0.95 before: a residual scale of 0.59-0.81 made the peak
# 2.6 sigmas; the differences' scale, ~0.06, makes it ~29.
SPIKE_SPARSE_LOG_EVERY = 10
# Findings for the first 10 spikes only (the first says how many there were): a run that spikes
# hundreds of times needs one piece of advice, not hundreds.
SPIKE_MAX_REPORTED = 10


@dataclass(frozen=True)
class Spike:
    """One loss spike, in steps of the training loss.

    Attributes:
        start_step, end_step: the elevated stretch (it ends where the loss is back).
        peak_step, peak_loss: the highest record.
        running_level: the loss level before the spike.
        sigmas: the peak's height above that level in robust sigmas.
        recovered_at_step: first step back within SPIKE_RECOVERED_MARGIN of the level; None if never.
        persistent: several elevated records (a warning), not one bad record (info).
        magnitude: the jump is ≥ MAGNITUDE_FACTOR × the level (a warning however short; ``sigmas`` is NaN when the
            log is too short for a noise scale).
        floor: the zero that heights are read from: 0, or twice the run's lowest training loss when that is
            negative (a Gaussian NLL; see :func:`_noise_spikes`).
    """

    start_step: int
    end_step: int
    peak_step: int
    peak_loss: float
    running_level: float
    sigmas: float
    recovered_at_step: int | None
    persistent: bool
    magnitude: bool = False
    floor: float = 0.0

    @property
    def height_ratio(self) -> float:
        """The peak over the running level, both read from :attr:`floor`."""
        return (self.peak_loss - self.floor) / (self.running_level - self.floor)


def _spike_window(n: int, running: bool = False) -> int:
    if running:
        return SPIKE_WINDOW_MAX
    return int(min(SPIKE_WINDOW_MAX, max(SPIKE_WINDOW_MIN, n // 20)))


def _hold_baseline_through_spikes(values: np.ndarray, level: np.ndarray, scale: np.ndarray, sigmas: np.ndarray,
                                  window: int) -> None:
    """Judge the records after a spike's first one against the pre-spike level and scale (in place).

    The trailing median and MAD soon absorb a spike's own values, which
    would end a persistent spike after a couple of records (on short runs
    whose window is 5 records, at once). Costs one pass over the records
    that follow each elevated start, at most SPIKE_HOLD_WINDOWS windows each.
    """
    elevated = sigmas >= SPIKE_ELEVATED_SIGMAS
    starts = np.flatnonzero(elevated & ~np.concatenate([[False], elevated[:-1]]))
    reach = -1
    for start in starts:
        if start <= reach or not (np.isfinite(level[start]) and scale[start] > 0):
            continue
        base, spread, gap = level[start], scale[start], 0
        position = start + 1
        while position < len(values) and gap <= SPIKE_MAX_GAP and position - start <= SPIKE_HOLD_WINDOWS * window:
            held = (values[position] - base) / spread
            if held >= SPIKE_ELEVATED_SIGMAS:
                sigmas[position] = max(sigmas[position], held)
                gap = 0
            else:
                gap += 1
            position += 1
        reach = position - 1


@per_run
def loss_spikes(run: RunData) -> list[Spike]:
    """The spikes of the training loss, in step order, those inside a divergence left out (see :func:`loss_spike`)."""
    loss = finite_train_loss(run)
    spikes = _noise_spikes(run, loss) if len(loss) > SPIKE_MIN_HISTORY else []
    return _with_magnitude_jumps(run, loss, spikes)


def _with_magnitude_jumps(run: RunData, loss: Curve, spikes: list[Spike]) -> list[Spike]:
    """``spikes`` with each jump of ≥ MAGNITUDE_FACTOR marked, and those the noise test could not judge added.

    A log of a handful of records has no rolling noise scale (SPIKE_MIN_HISTORY), but a loss of 3e15 between
    losses of 0.08 needs none. A jump's spike lasts while the records stay ≥ MAGNITUDE_FACTOR × its level;
    it is left to the divergence rule when the run diverged there or later, or never came back after.
    """
    jumps = magnitude_jumps(run)
    if not len(jumps.positions):
        return spikes
    values, steps = loss.to_numpy(dtype="float64"), loss.index.to_numpy()
    onset = divergence_onset(run)
    spikes = list(spikes)
    reach = -1
    for position, level in zip(jumps.positions, jumps.levels):
        step = int(steps[position])
        covering = [i for i, spike in enumerate(spikes) if spike.start_step <= step <= spike.end_step]
        if covering:
            spikes[covering[0]] = replace(spikes[covering[0]], magnitude=True)
            continue
        if position <= reach:
            continue
        end = position
        while end + 1 < len(values) and values[end + 1] >= MAGNITUDE_FACTOR * level:
            end += 1
        reach = end
        peak = position + int(np.argmax(values[position:end + 1]))
        after = np.flatnonzero(values[peak + 1:] <= level * (1 + SPIKE_RECOVERED_MARGIN))
        recovered_at = int(steps[peak + 1 + after[0]]) if len(after) else None
        if onset is not None and (step >= onset[0] or recovered_at is None):
            continue  # inside a divergence: the divergence rule reports it
        spikes.append(Spike(start_step=step, end_step=int(steps[end]), peak_step=int(steps[peak]),
                            peak_loss=float(values[peak]), running_level=float(level), sigmas=float("nan"),
                            recovered_at_step=recovered_at, persistent=end - position + 1 >= SPIKE_MIN_POINTS,
                            magnitude=True))
    return sorted(spikes, key=lambda spike: spike.start_step)


def _noise_spikes(run: RunData, loss: Curve) -> list[Spike]:
    """The spikes that stand out of the loss's rolling noise scale (:func:`loss_spike`); > SPIKE_MIN_HISTORY records."""
    n = len(loss)
    # A loss that goes negative (a Gaussian negative log-likelihood, the ELBO of
    # continuous data, a log-likelihood of densities) has no zero to read the
    # relative tests of the SPIKE_* thresholds from: a level of -1.4 is not above 0, "3× the level"
    # and "20 % above it" have no meaning, and every spike was passed over. Its
    # heights are read from a floor as far below the run's lowest training loss
    # as that is below 0 (2 × the lowest), so that a level keeps a height about
    # its own size: from the lowest loss itself, a flat NLL's level would sit a
    # hair above it and a 1 % wobble read as 5× that height (a forecaster at a
    # lr of 2e-6 shifted by -2, benchmarks/metamorphic.py). A loss that never
    # goes below 0 keeps 0 as its floor: nothing changes for it.
    raw = loss.to_numpy()
    floor = 2.0 * min(0.0, float(np.min(raw)))
    values = raw - floor  # heights above the floor; the Spike keeps the loss's own values
    window = _spike_window(n, running=run.status == "running")
    level = trailing_median(values, window, SPIKE_MIN_HISTORY)
    residual = values - level
    scale = trailing_mad_sigma(residual, SPIKE_SCALE_WINDOWS * window, SPIKE_MIN_HISTORY)
    logged = cadence(run)
    if logged is not None and logged.every is not None and logged.every >= SPIKE_SPARSE_LOG_EVERY:
        differences = np.concatenate([[np.nan], np.diff(values)])  # differences[i]: values[i] - values[i - 1]
        centred = differences - trailing_median(differences, SPIKE_SCALE_WINDOWS * window, SPIKE_MIN_HISTORY)
        trend_free = trailing_mad_sigma(centred, SPIKE_SCALE_WINDOWS * window, SPIKE_MIN_HISTORY) / math.sqrt(2)
        scale = np.where(np.isfinite(trend_free), np.fmin(scale, trend_free), scale)
    # Until enough residuals exist, the spread of the previous values themselves is the scale
    # (a short logbook window like BLOOM's has five records before its spike). With so few
    # values the MAD is unreliable: take the range-based estimate too (E[range] ≈ 2.33 σ for 5).
    for position in np.flatnonzero(~np.isfinite(scale) & np.isfinite(level)):
        previous = values[max(0, position - window):position]
        scale[position] = max(mad_sigma(previous), float(np.ptp(previous)) / SMALL_SAMPLE_RANGE_TO_SIGMA)
    scale = np.fmax(scale, SPIKE_SCALE_FLOOR * np.abs(level))
    with np.errstate(divide="ignore", invalid="ignore"):
        sigmas = residual / scale
    # The tail estimate only ever widens the scale, so it is needed only where the robust sigma
    # already calls a record elevated (a rolling quantile over every record costs more than the rest).
    candidates = np.flatnonzero(np.isfinite(sigmas) & (sigmas >= SPIKE_ELEVATED_SIGMAS))
    tail = trailing_quantile_at(residual, candidates, SPIKE_SCALE_WINDOWS * window, SPIKE_MIN_HISTORY,
                                SPIKE_TAIL_QUANTILE)
    robust_scale = scale.copy()
    scale[candidates] = np.fmax(scale[candidates], tail / SPIKE_TAIL_Z)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigmas = residual / scale
    sigmas = np.where(np.isfinite(sigmas), sigmas, 0.0)
    _hold_baseline_through_spikes(values, level, scale, sigmas, window)
    onset = divergence_onset(run)
    cutoff = n
    if onset is not None:
        cutoff = int(np.searchsorted(loss.index.to_numpy(), onset[0]))
        cutoff = max(0, cutoff - window)
    episodes = true_runs(sigmas >= SPIKE_ELEVATED_SIGMAS, 1, max_gap=SPIKE_MAX_GAP)
    # Where training started: the first records, or the task's reference loss (ln C, ln V, the expected
    # initial loss) when above them: a log that starts late (heldout11's sorting transformer, from step 100
    # at 0.8 against ln 16 = 2.77) would otherwise measure a memorised loss's benign bursts against a start
    # it had already left.
    reference = loss_reference(run)
    task = task_of(run)
    uniform = (reference[0] if reference is not None else
               task.uniform_loss if task.kind == "language_modelling" and task.uniform_loss is not None else None)
    begun = start_level(run)
    start_loss = abs((max(begun, uniform) if uniform is not None and math.isfinite(begun) else begun) - floor)
    # SPIKE_MIN_POINTS optimizer steps: a log every N ≥ 2 steps shows them in fewer records, but never in one
    # (one record of a sparse step log can be one hard batch).
    every = logged.every if logged is not None and logged.every is not None else 1
    spike_min_records = SPIKE_MIN_POINTS if every <= 1 else max(2, math.ceil(SPIKE_MIN_POINTS / every))
    spikes = []
    for start, end in episodes:
        elevated = int((sigmas[start:end + 1] >= SPIKE_ELEVATED_SIGMAS).sum())
        peak = start + int(np.argmax(values[start:end + 1]))
        base = level[start]
        jump = values[peak] - base
        if not (base > 0 and sigmas[peak] >= SPIKE_PEAK_SIGMAS and jump >= SPIKE_MIN_JUMP * start_loss
                and values[peak] >= base * (1 + SPIKE_MIN_RELATIVE_HEIGHT)):
            continue
        if base <= SPIKE_NEAR_ZERO_LEVEL * start_loss and jump < SPIKE_SINGLE_MIN_JUMP * start_loss:
            continue  # a burst on a memorised, near-zero loss that stays tiny against the start
        persistent = elevated >= spike_min_records
        extreme = values[peak] >= SPIKE_SINGLE_FACTOR * base and jump >= SPIKE_SINGLE_MIN_JUMP * start_loss
        if not (persistent or extreme):
            continue
        following = values[start + 1:start + 1 + SPIKE_AFTER_POINTS]
        if not persistent and not (len(following) and
                                   np.median(following) - base >= SPIKE_LASTING_SIGMAS * robust_scale[start]):
            continue  # no lasting effect: one hard batch among ordinary ones
        after = np.flatnonzero(values[peak + 1:] <= base * (1 + SPIKE_RECOVERED_MARGIN))
        recovered_at = int(loss.index[peak + 1 + after[0]]) if len(after) else None
        # Inside a divergence: the divergence rule reports it.
        if end >= cutoff or (onset is not None and recovered_at is None):
            continue
        if len(after):  # the spike ends where the loss is back, whatever noise follows
            end = min(end, peak + after[0])
        spikes.append(Spike(start_step=int(loss.index[start]), end_step=int(loss.index[end]),
                            peak_step=int(loss.index[peak]), peak_loss=float(values[peak] + floor),
                            running_level=float(base + floor), sigmas=sigmas[peak], recovered_at_step=recovered_at,
                            persistent=persistent, floor=floor))
    return spikes


def spike_settled(finding: Finding) -> bool:
    """Once the spike has recovered (until then it may be the start of a divergence)."""
    return bool(finding.evidence.get("recovered"))


@rule(severities=("info", "warning"), inputs=("loss", "grad_norm", "amp_skipped"), evidence=Evidence.series("loss"),
      # env.logger for the cadence (a sparse log's noise scale); the task through divergence's onset, which
      # spikes defer to.
      metadata=("env.logger", "task.expected_initial_loss", "task.kind", "task.num_classes", "task.vocab_size"),
      live=Live(settled=spike_settled, quiet_after=("divergence",)),
      thresholds=("START_POINTS", "SPIKE_WINDOW_MAX", "SPIKE_WINDOW_MIN", "SPIKE_MIN_HISTORY", "SPIKE_SCALE_WINDOWS",
                  "SPIKE_SCALE_FLOOR", "SPIKE_TAIL_QUANTILE", "SPIKE_TAIL_Z", "SPIKE_AFTER_POINTS",
                  "SPIKE_LASTING_SIGMAS", "SPIKE_PEAK_SIGMAS", "SPIKE_ELEVATED_SIGMAS", "SPIKE_MIN_RELATIVE_HEIGHT",
                  "SPIKE_MIN_POINTS", "SPIKE_MAX_GAP", "SPIKE_HOLD_WINDOWS", "SMALL_SAMPLE_RANGE_TO_SIGMA",
                  "SPIKE_SINGLE_FACTOR", "SPIKE_SINGLE_MIN_JUMP", "SPIKE_MIN_JUMP", "SPIKE_NEAR_ZERO_LEVEL",
                  "SPIKE_RECOVERED_MARGIN", "SPIKE_SPARSE_LOG_EVERY",
                  "SPIKE_MAX_REPORTED", "MAGNITUDE_FACTOR", "MAGNITUDE_WINDOW", "MAGNITUDE_MIN_HISTORY"))
def loss_spike(run: RunData) -> list[Finding]:
    """A short jump far above the local loss level, robust to noise and to the downward trend.

    Symptom: a peak ≥ 10 robust sigmas and ≥ 20 % above the median of the
    preceding losses, with ≥ 3 records ≥ 5 sigmas above it (in a log every
    N ≥ 2 steps, records spanning 3 steps: max(2, ⌈3 / N⌉)); one finding per
    spike with its step, height and whether (and how fast) it recovered.
    A single extreme record (≥ 3× the level, ≥ 10 sigmas) is reported as info
    when it lasts: the median of the 5 records after it stays ≥ 1 robust
    sigma above the level (a one-batch jump among ordinary batches does not).
    On a loss near zero (running level ≤ 5 % of the start: the first
    records, or ln C / ln V / the expected initial loss when above them, as
    in a log that starts late) any spike must
    jump by ≥ 25 % of the start, as a single record must (a memorised
    training loss goes through brief benign bursts: Thilak et al. 2022).
    The noise scale is the larger of the robust sigma and the 99th percentile
    of the recent residuals over 2.326: per-batch losses are heavy-tailed,
    and a converged classifier's hard batches are not spikes. In a sparse
    log (a record every ≥ 10 steps) the robust sigma is the smaller of the
    residuals' and the record-to-record differences' (centred, over √2):
    the trailing median lags a falling curve, and the lag is no noise.
    A jump to ≥ 1e4× the level before it (the median of ≥ 3 earlier
    records, and at least the start's) is a spike and a warning even when
    it is one record or the log is too short for a noise scale: hard
    batches jump 10-100×, four orders of magnitude is a numerical fault,
    and it tends to recur (the message counts them).
    Spikes inside a divergence are left to the divergence rule.
    Likely cause: a bad batch, too high an lr or too short a warmup, Adam's
    eps too small, fp16 overflow.
    Try: gradient clipping, longer warmup, lower lr, larger Adam eps, higher
    precision (bf16/fp32) for the unstable parts; skip the offending batch.
    Source: seed 000, seed 002 ("loss spikes", higher precision), seed 003.
    """
    spikes = loss_spikes(run)
    jumps = sum(spike.magnitude for spike in spikes)
    findings = []
    for index, spike in enumerate(spikes[:SPIKE_MAX_REPORTED]):
        peak_step, recovered_at = spike.peak_step, spike.recovered_at_step
        recovery = (f"recovered to within {SPIKE_RECOVERED_MARGIN:.0%} of the pre-spike level at step {recovered_at} "
                    f"({recovered_at - peak_step} steps later)" if recovered_at is not None
                    else "did not come back to the pre-spike level")
        ratio = spike.height_ratio
        times = f"{ratio:.1f}" if ratio < MAGNITUDE_FACTOR else f"{ratio:.3g}"
        height = (f"{spike.sigmas:.0f} robust sigmas" if np.isfinite(spike.sigmas)
                  else "too few records for a noise scale")
        if spike.magnitude:
            note = (f" A jump of {math.floor(math.log10(ratio))} orders of magnitude is a numerical blow-up (an "
                    "overflowing activation or update), not a hard batch"
                    + (f"; {jumps} such jumps in this run." if jumps > 1 else "."))
        elif not spike.persistent:
            note = " A single record: most likely one bad batch; it matters if it repeats."
        else:
            note = ""
        findings.append(finding(
            "loss_spike", "warning" if spike.persistent or spike.magnitude else "info",
            f"Loss spike at step {peak_step}" if spike.persistent or spike.magnitude
            else f"One-step loss jump at step {peak_step}",
            f"Loss jumped to {spike.peak_loss:.3g} at step {peak_step}, "
            + (f"{times}× the running level {spike.running_level:.3g}" if spike.floor == 0 else
               f"{spike.peak_loss - spike.running_level:.3g} above the running level {spike.running_level:.3g} "
               f"({times}× its height above {spike.floor:.3g}, twice the run's lowest loss: the loss goes negative)")
            + f" ({height}; elevated steps "
            f"{spike.start_step}–{spike.end_step}); it {recovery}."
            + (f" {len(spikes)} spikes in all; the first {SPIKE_MAX_REPORTED} are listed."
               if len(spikes) > SPIKE_MAX_REPORTED and index == 0 else "")
            + note,
            "Clip gradients, lengthen the warmup, lower the lr or raise Adam's eps; use bf16/fp32 where fp16 "
            "overflows; check the batch at that step.",
            "seed 000, seed 002 (loss spikes), seed 003", spike.start_step, spike.end_step,
            {"peak_step": peak_step, "peak_loss": spike.peak_loss, "running_level": spike.running_level,
             "height_ratio": ratio, **({"floor": spike.floor} if spike.floor else {}),
             "sigmas": spike.sigmas if np.isfinite(spike.sigmas) else None,
             "recovered": recovered_at is not None, "recovered_at_step": recovered_at, "spike_count": len(spikes),
             "persistent": spike.persistent, "magnitude": spike.magnitude}))
    return findings


# First loss more than 50 % away from ln(C) (or the user's expected value).
# Default PyTorch init lands within ±30 % of ln C in every healthy corpus run
# (the largest: +26 %, healthy_cancer_logistic).
INITIAL_LOSS_TOLERANCE = 0.50
# ...and, against ln C or ln V, more than this many nats away: 50 % of ln 2 is only 0.35 nats, which
# one batch's first loss under default init exceeds on some seeds (the binary logistic regression on
# breast cancer at seed 24: 1.14 against 0.693), while every initialisation fault seen starts ≥ 3 nats off.
INITIAL_LOSS_MIN_EXCESS = 0.5
# ...and, against ln C or ln V, a warning only from this many nats away (closer: info). Default init
# on standardised but correlated inputs gives a linear head logits with a std of 1-2: the breast-cancer
# logistic regression's first loss, over 200 seeds of its init and first batch, is up to 1.87 nats
# above ln 2 (99th percentile 1.32; seed 31 of the corpus recipes: 1.28 against 0.693, 0.59 nats).
# Every initialisation fault labelled in the corpus and the hold-outs (a head scaled ×40 or biased,
# an embedding std of 1) starts 3.1 to 36 nats off.
INITIAL_LOSS_WARN_EXCESS = 2.0
# Where logging starts. A record at step ≤ 1 shows the initial loss (the
# probe and HF Trainer count optimizer steps from 1, Lightning and
# TensorBoard from 0)...
INITIAL_STEP = 1
# ...a first record a little later (≤ 10 steps and ≤ 1 % of the run) shows
# only whether the start was too high: training lowers the loss from the
# first step, so a low value there may be progress...
EARLY_STEPS_MAX = 10
EARLY_STEPS_FRACTION = 0.01
# ...or a regular log's first record (at step N of a log every N steps: it
# logged from the start) taken while the lr is still warming up (below half
# its peak and rising): steps that small cannot have driven the loss up, so
# a loss too high there is where training started. Without a warm-up a
# first record at step 5-20 cannot tell a bad start from a loss the first
# full-lr steps blew up (three divergence runs of the corpus and an
# lr-too-high state-space LM of the fifth hold-out, 4-5400x ln C there).
WARMUP_RECORD_FRACTION = 0.5
# ...or, without a warm-up, that first record (step N ≤ EARLY_STEPS_MAX of a
# log every N steps) when the records after it fall at every record to below
# FELL_BELOW × the expected loss within FELL_RECORDS records: a loss the
# first full-lr steps blew up does not then train like that (the fifth
# hold-out's lr-too-high SSM fell from 10.5x ln V at step 20 to 0.94x and
# stayed; the corpus's divergence runs never came down), a bad start does
# (heldout16's tagger with its head scaled x150: 5.6x ln 31 at step 5, then
# 2.6x, 1.5x, 1.06x, 0.72x).
FELL_BELOW = 0.75
FELL_RECORDS = 6
# ...and a later one, or an epoch mean (it averages the first epoch's fall),
# says nothing about the initial loss.


@dataclass(frozen=True)
class Cadence:
    """How a training series was logged: where it starts and what one record stands for.

    Attributes:
        first_step, last_step: its first and last records (optimizer steps).
        every: steps between records: run.json's ``source.logging_every``
            when the importer recorded it, else the commonest gap.
        per_epoch: one record per epoch, each an epoch mean (Lightning's
            ``on_epoch``, Keras, HF's ``logging_strategy="epoch"``): every
            record has an epoch of its own, at a whole epoch.
        window_means: each record is the mean over the steps since the
            previous one (HF Trainer's logged loss, epoch means), not the
            value of one step.
    """

    first_step: int
    last_step: int
    every: int | None
    per_epoch: bool
    window_means: bool

    def early_bound(self) -> float:
        """The last step that still counts as the first optimizer steps (INITIAL_STEP, EARLY_STEPS_*)."""
        return max(INITIAL_STEP, min(EARLY_STEPS_MAX, EARLY_STEPS_FRACTION * self.last_step))


def _logging_every(run: RunData, steps: np.ndarray) -> int | None:
    declared = run.source.get("logging_every") if isinstance(run.source, dict) else None
    if isinstance(declared, (int, float)) and not isinstance(declared, bool) and declared >= 1:
        return int(declared)
    gaps = np.diff(steps)
    if not len(gaps):
        return None
    values, counts = np.unique(gaps, return_counts=True)
    return int(values[np.argmax(counts)])


@per_run
def cadence(run: RunData, name: str = "loss") -> Cadence | None:
    """How the training series ``name`` was logged; None when it has no record."""
    rows = run.scalars[run.global_rows(name, "train")]
    if rows.empty:
        return None
    steps = np.asarray(rows["step"], dtype="int64")
    # The last row of each step, in step order (a stable sort keeps the rows' order within a step).
    order = np.argsort(steps, kind="stable")
    keep = order[np.r_[steps[order][1:] != steps[order][:-1], True]]
    steps = steps[keep]
    epochs = to_float(rows["epoch"])[keep]
    per_epoch = bool(len(steps) >= 2 and np.isfinite(epochs).all() and len(np.unique(np.floor(epochs))) == len(epochs)
                     and np.allclose(epochs, np.round(epochs)) and np.all(np.diff(steps) > 1))
    by_trainer = run.env.get("logger") == "transformers.Trainer"
    return Cadence(first_step=int(steps[0]), last_step=int(steps[-1]), every=_logging_every(run, steps),
                   per_epoch=per_epoch, window_means=per_epoch or by_trainer)


def first_steps_record(run: RunData, series: Curve, name: str = "loss") -> str | None:
    """What the first record of a training series shows of the start of training.

    ``"initial"`` (a step value at step ≤ INITIAL_STEP: the start itself),
    ``"early"`` (within the first EARLY_STEPS_MAX steps and EARLY_STEPS_FRACTION
    of the run, or a mean over such a window: the start was at least this
    high), ``"warm-up"`` (the first record of a log every N steps, taken at
    step N while the lr is still warming up and with the next record lower:
    the start was at least this high too), or None (logging started later,
    or an epoch mean).
    """
    logged = cadence(run, name)
    if logged is None or series.empty or logged.per_epoch:
        return None
    step = int(series.index[0])
    if step <= INITIAL_STEP:
        return "initial"
    if step <= logged.early_bound():
        return "early"
    # The premise is that the warm-up's small steps only lower the loss: the record after must show it.
    falls = len(series) >= 2 and float(series.iloc[1]) < float(series.iloc[0])
    return "warm-up" if falls and _in_warmup(run, step, logged) else None


def _fell_to_learning(run: RunData, series: Curve, expected: float) -> bool:
    """A regular log's first record at step N ≤ EARLY_STEPS_MAX (or N - 1, steps counted from 0) after which
    the records fall at every record until one is below FELL_BELOW × ``expected``, within FELL_RECORDS records
    (a bad start that training then corrects, not a blow-up)."""
    logged = cadence(run, "loss")
    if logged is None or logged.every is None or logged.per_epoch or logged.window_means or series.empty:
        return False
    step = int(series.index[0])
    if step not in (logged.every - 1, logged.every) or step > EARLY_STEPS_MAX or expected <= 0:
        return False
    values = series.to_numpy(dtype="float64")[:FELL_RECORDS + 1]
    for position in range(1, len(values)):
        if values[position] >= values[position - 1]:
            return False
        if values[position] < FELL_BELOW * expected:
            return True
    return False


def _in_warmup(run: RunData, step: int, logged: Cadence) -> bool:
    """A regular log's first record (at step ``every``, or ``every - 1`` where a CSV counts steps from 0: it logged
    from the start) taken during the lr's warm-up: the lr there (its last record at or before ``step``, optimizer
    steps) is below WARMUP_RECORD_FRACTION of its peak and its next record is higher."""
    if logged.every is None or step not in (logged.every - 1, logged.every):
        return False
    lr = finite(lr_series(run))
    if len(lr) < 3 or int(lr.index[0]) > step:
        return False
    values, steps = lr.to_numpy(dtype="float64"), lr.index.to_numpy()
    here = int(np.searchsorted(steps, step, side="right")) - 1
    peak = float(values.max())
    return bool(peak > 0 and here + 1 < len(values) and values[here] < WARMUP_RECORD_FRACTION * peak
                and values[here + 1] > values[here])


def loaded_checkpoint(run: RunData) -> str | None:
    """The checkpoint (hub id or folder) the run's model was loaded from: env.model ``name_or_path``, which the
    Hugging Face importer reads from config.json's ``_name_or_path``; None when the run names none."""
    model = (run.env or {}).get("model") if isinstance(run.env, dict) else None
    name = model.get("name_or_path") if isinstance(model, dict) else None
    return name.strip() if isinstance(name, str) and name.strip() else None


@rule(severities=("info", "warning"), inputs=("loss", "lr"),
      metadata=("env.logger", "env.model", "task.expected_initial_loss", "task.kind",
                "task.num_classes", "task.vocab_size"),
      evidence=Evidence.series("loss"),
      thresholds=("INITIAL_LOSS_TOLERANCE", "INITIAL_LOSS_MIN_EXCESS", "INITIAL_LOSS_WARN_EXCESS", "INITIAL_STEP",
                  "EARLY_STEPS_MAX",
                  "EARLY_STEPS_FRACTION",
                  "WARMUP_RECORD_FRACTION", "FELL_BELOW", "FELL_RECORDS",
                  "SUMMED_LOSS_TOLERANCE"))
def bad_initial_loss(run: RunData) -> list[Finding]:
    """The first loss is far from ln(C) for C-class cross-entropy (or from the user's expected value).

    Symptom: |first loss / expected − 1| > 0.5, expected = task
    ``expected_initial_loss`` or ln(num_classes) (against ln C or ln V, also
    more than 0.5 nats away; info under 2 nats), judged only on a record
    of the first optimizer steps: at step ≤ 1 both ways; within the first
    10 steps and 1 % of the run (or a mean over them), or at step N of a
    log every N steps while the lr is still warming up (below half its peak
    and rising: such small steps only lower the loss, and the next record
    must show it), or at step N ≤ 10 of such a log without a warm-up when
    the records after it fall at every record to below 0.75 × the expected
    loss within 6 records (a bad start training corrects, not a blow-up),
    only a start too high.
    A language model is held to ln(vocab_size) from above only (a
    pre-trained one starts far below); a run logged from later on, in epoch
    means, or without a task that sets the loss scale is not judged.
    Likely cause: a last layer initialised too large or biased, inputs not
    normalised, a wrong loss (e.g. softmax applied twice, wrong reduction) or
    labels that do not match the outputs.
    Try: zero or small init for the last layer, check the loss and the label
    encoding; the first loss should be about −log(1/C). A first loss about
    the config's batch size × the expected one (within 15 %) is named as a
    loss summed over the batch (``reduction="sum"``).
    A model loaded from a named checkpoint (env.model ``name_or_path``, an
    HF config.json's ``_name_or_path``) gets info, not a warning, against
    ln C or ln V: those are where a model starts at initialisation, and a
    pre-trained one starts wherever its pre-training left it (a user's
    expected initial loss still warns).
    Source: seed 004 step 1 ("check initial loss").
    """
    loss = finite_train_loss(run)
    if loss.empty:
        return []
    reference = loss_reference(run)
    only_too_high = False
    if reference is None:
        task = task_of(run)
        if task.kind != "language_modelling" or task.uniform_loss is None:
            return []
        reference, only_too_high = (task.uniform_loss, f"ln({task.size})"), True
    shows = first_steps_record(run, loss)
    if shows is None and _fell_to_learning(run, loss, reference[0]):
        shows = "fell"
    if shows is None:
        return []
    only_too_high = only_too_high or shows != "initial"
    expected, basis = reference
    first, step = float(loss.iloc[0]), int(loss.index[0])
    deviation = first / expected - 1
    if abs(deviation) <= INITIAL_LOSS_TOLERANCE or (only_too_high and deviation < 0):
        return []
    task = task_of(run)
    if (task.uniform_loss is not None and math.isclose(expected, task.uniform_loss)
            and abs(first - expected) <= INITIAL_LOSS_MIN_EXCESS):
        return []
    where = (f"at step {step}" if shows == "initial"
             else f"at step {step}, where logging starts (training has only lowered it since step 1"
                  + (", in the lr warm-up" if shows == "warm-up" else
                     ": the records after fall steadily to well below it, as from a bad start, not a blow-up"
                     if shows == "fell" else "") + ")")
    advice = ("Initialise the last layer small (or zero) so the first predictions are uniform, normalise the inputs, "
              "check the loss function and the label encoding.")
    if task.kind == "classification" and task.uniform_loss is not None and math.isclose(expected, task.uniform_loss):
        # ln C assumes the training loss is the head's plain cross-entropy; a composite objective
        # (distillation's T²-scaled KL, auxiliary terms, a regulariser) starts elsewhere by design.
        imported = (run.source or {}).get("kind") not in (None, "probe")
        advice += (" If the training loss is not the plain cross-entropy over these classes (distillation, "
                   "auxiliary terms), " + (
                       "ln C is not its reference and this finding does not apply to this imported log; a run "
                       "recorded with the probe can give Probe(expected_initial_loss=...) its value at init."
                       if imported else "give Probe(expected_initial_loss=...) its value at init instead."))
    evidence = {"first_loss": first, "expected": expected, "relative_deviation": deviation, "first_record": shows}
    summed = _summed_over_batch(run, first / expected)
    if summed is not None:
        # A loss summed over the batch (reduction="sum") starts at batch_size × ln C: the
        # initialisation is fine, the loss scale is not, and the lr then acts batch_size× larger.
        evidence["batch_size"] = summed
        advice = (f"The first loss is {first / expected:.3g}× {basis}, about the batch size ({summed}): the loss is "
                  f"probably summed over the batch (reduction='sum') rather than averaged; use the mean, or "
                  f"divide the lr by the batch size. Otherwise: " + advice[0].lower() + advice[1:])
    severity, message = "warning", f"The first loss is {first:.3g} {where}; {basis} is {expected:.3g} ({deviation:+.0%})."
    if (task.uniform_loss is not None and math.isclose(expected, task.uniform_loss)
            and abs(first - expected) < INITIAL_LOSS_WARN_EXCESS and summed is None):
        severity = "info"
        message += (f" That is {abs(first - expected):.2g} nats off, within what default initialisation gives a "
                    f"linear head on correlated inputs (logits with a std of 1-2): a mild start, not a broken one.")
    checkpoint = loaded_checkpoint(run)
    if checkpoint is not None and task.expected_initial_loss is None:
        # ln C / ln V is the loss of a model at initialisation; one loaded from a checkpoint starts where
        # its pre-training left it (mT5-small fine-tuned: 25.5 at step 10 against ln V = 12.4).
        evidence["loaded_from"] = checkpoint
        severity = "info"
        message += (f" The model was loaded from {checkpoint!r} (its config's name_or_path): {basis} is the loss of a "
                    f"model at initialisation, and a pre-trained one starts wherever its pre-training left it, so "
                    f"this is not an initialisation fault. If only the config came from there and the weights are "
                    f"fresh, it is one.")
        advice = ("Nothing to fix if the weights are pre-trained. If the model was built from scratch with that "
                  "config: " + advice[0].lower() + advice[1:])
    return [finding(
        "bad_initial_loss", severity, "Initial loss far from the expected value",
        # A later record (early, in the warm-up) speaks for the start: the finding covers the steps up to it.
        message, advice, "seed 004 step 1 (check the initial loss)", min(step, INITIAL_STEP), step, evidence)]


# A first loss within 15 % of batch_size × the expected loss reads as a loss summed over the batch.
SUMMED_LOSS_TOLERANCE = 0.15


def _summed_over_batch(run: RunData, ratio: float) -> int | None:
    """The run's batch size (config ``batch_size``, ``per_device_train_batch_size``,
    ``train_batch_size``) when ``ratio`` (first loss / expected) is within
    SUMMED_LOSS_TOLERANCE of it and it is ≥ 4; else None."""
    for key in ("batch_size", "per_device_train_batch_size", "train_batch_size"):
        value = (run.config or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 4 and math.isfinite(value):
            if abs(ratio / value - 1) <= SUMMED_LOSS_TOLERANCE:
                return int(value)
    return None
