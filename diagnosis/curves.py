"""Rules on the learning curves: loss, accuracy and lr (train and evaluation splits)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from traindoctor.diagnosis.classes import last_confusion
from traindoctor.diagnosis.common import describe_epoch, eval_frame, finding, layer_values, lr_series, train_loss
from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.robust import (
    binned_medians,
    finite,
    mad_sigma,
    median,
    trailing_mad_sigma,
    trailing_median,
    true_runs,
    window_median,
)
from traindoctor.store.run_data import RunData

# ---------------------------------------------------------------- divergence
# "Rises above its starting level and stays there": the smoothed loss stays
# 10 % above the starting level (median of the first points) to the end...
DIVERGED_MARGIN = 0.10
# ...for at least 5 records and 2 % of the run, so a noisy last point is not divergence.
DIVERGED_MIN_POINTS = 5
DIVERGED_MIN_FRACTION = 0.02
# Starting level: median of the first 5 finite losses (one noisy batch does not set it).
START_POINTS = 5
# Smoothing before the "stays above" test: centred rolling median of 5
# records; the last 3 raw values must be above too (a recovery at the very
# end is not divergence).
DIVERGED_SMOOTHING = 5
DIVERGED_TAIL_POINTS = 3

# ---------------------------------------------------------------- loss spikes
# Running level: median of the previous SPIKE_WINDOW losses (clamped to the
# run's length); noise scale: robust sigma of the residuals over 4 windows.
SPIKE_WINDOW_MAX = 50
SPIKE_WINDOW_MIN = 5
SPIKE_MIN_HISTORY = 5
SPIKE_SCALE_WINDOWS = 4
# The noise scale never drops below 1 % of the level, so a constant loss
# with one tiny wobble is not a spike.
SPIKE_SCALE_FLOOR = 0.01
# A spike: a peak ≥ 10 robust sigmas and ≥ 20 % above the running level,
# with ≥ 3 records ≥ 5 sigmas above it (gaps of ≤ 2 allowed): a real spike
# damages the model for a few steps, a noisy batch does not. Lightning's
# detector uses 3× a 10-step mean, llm-foundry 2× a 100-step mean held for
# 5 steps; the corpus' noisy small-batch runs need the robust scale.
SPIKE_PEAK_SIGMAS = 10.0
SPIKE_ELEVATED_SIGMAS = 5.0
SPIKE_MIN_RELATIVE_HEIGHT = 0.20
SPIKE_MIN_POINTS = 3
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
# Recovered: the loss comes back within 10 % of the pre-spike level.
SPIKE_RECOVERED_MARGIN = 0.10
SPIKE_MAX_REPORTED = 10

# ---------------------------------------------------------------- lr rules
# Curves are judged on a 40-bin median profile (robust to minibatch noise,
# fixed cost for any length).
PROFILE_BINS = 40
# ...with at least 10 records per bin, so the profile's minimum is not one lucky batch.
PROFILE_MIN_BIN_SIZE = 10
MIN_CURVE_POINTS = 20
# lr_too_high needs a real first drop (≥ 10 % of the start), then either
# climbs back ≥ 30 % of the way from its best to its start and stays there
# (the last 20 % of the run)...
MIN_DROP = 0.10
REBOUND_FRACTION = 0.30
REBOUND_NOISE_SIGMAS = 5.0
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

# lr_too_low: the loss dropped < 50 % of its start and the second half
# dropped ≥ 50 % as much as the first (almost linear, no deceleration), and
# still falls in the last quarter.
SLOW_TOTAL_DROP = 0.50
LINEAR_HALVES_RATIO = 0.50
STILL_FALLING = 0.01
# Levels are medians of 10 % windows; each drop must exceed 3 standard errors of such a median,
# and each window needs ≥ 10 records (100 in all) for that error to mean anything.
DROP_SIGMAS = 3.0
LR_TOO_LOW_MIN_POINTS = 100

# decayed_too_early: lr down to ≤ 10 % of its peak before 50 % of the run,
# while the loss had fallen ≥ 5 % over the preceding stretch, and afterwards
# the loss improves < 5 % more.
DECAY_FACTOR = 0.10
DECAY_EARLY_FRACTION = 0.50
DECAY_HEADING_DOWN = 0.05
DECAY_FLAT_AFTER = 0.05

# ---------------------------------------------------------------- train/val
MIN_EVALS = 4
# Overfitting: validation loss's late level ≥ 10 % above its best, ≥ 3 evals
# after the best, while the training loss kept falling (late ≤ level at best).
OVERFIT_RISE = 0.10
OVERFIT_MIN_EVALS_AFTER = 3
OVERFIT_NOISE_SIGMAS = 3.0
# best_epoch_not_last: on evals smoothed by a centred median of 3, the best
# val score is in the first 80 % of evals, and the end is worse by > 2
# binomial standard errors (accuracy; 0.02 without counts) or > 10 % and 3
# noise sigmas (loss). Warning (not info) past 5 accuracy points or +30 % loss.
EVAL_SMOOTHING = 3
BEST_EPOCH_POSITION = 0.80
BEST_EPOCH_SE = 2.0
BEST_EPOCH_ACCURACY_GAP = 0.02
BEST_EPOCH_LOSS_RISE = 0.10
BEST_EPOCH_BIG_ACCURACY = 0.05
BEST_EPOCH_BIG_LOSS = 1.30
# Underfitting: training loss flat (< 5 % better in the last quarter, and
# that quarter < 10 % of the total drop: a slow steady fall is lr_too_low's),
# train accuracy < 0.9 ("far from perfect"), val within 10 % of train loss
# (or 0.05 accuracy).
UNDERFIT_FLAT = 0.05
UNDERFIT_FLAT_SHARE = 0.10
UNDERFIT_TRAIN_ACCURACY = 0.90
UNDERFIT_GAP_LOSS = 0.10
UNDERFIT_GAP_ACCURACY = 0.05
# High plateau without accuracy: late loss ≥ 30 % of the start.
UNDERFIT_HIGH_LOSS = 0.30
# train_longer: over the last third of evals the val loss still improves
# ≥ 2 % and the best eval is among the last two; train loss fell ≥ 3 % in
# its last quarter.
TRAIN_LONGER_VAL_IMPROVEMENT = 0.02
TRAIN_LONGER_TRAIN_IMPROVEMENT = 0.03
# ...and these last stretches still bring a real share of the total
# improvement: ≥ 10 % of the val gain in the last third of evals, ≥ 15 % of
# the train drop in the last quarter (a converged run got nearly all of it
# early: healthy corpus runs, two seeds each, ≤ 7 % and ≤ 10 %; stopped-early
# runs ≥ 10.7 % and ≥ 18 %).
TRAIN_LONGER_VAL_SHARE = 0.10
TRAIN_LONGER_TRAIN_SHARE = 0.15

# bad_initial_loss: first loss more than 50 % away from ln(C) (or the
# user's expected value). Default PyTorch init lands within ±30 % of ln C in
# every healthy corpus run (the largest: +26 %, healthy_cancer_logistic).
INITIAL_LOSS_TOLERANCE = 0.50

# no_better_than_baseline: final accuracy not above the majority-class
# rate by more than 2 binomial standard errors (and at least 1 point).
BASELINE_SE = 2.0
BASELINE_MIN_MARGIN = 0.01

# missing_warmup: lr at step 1 already ≥ 50 % of its peak (no ramp); Adam
# lr ≥ 1e-3 counts as "large" for a non-attention model (the seeds' recipe
# starts transformers at 5e-5). Early instability, within the first 20 % of
# the run: for attention models a loss ≥ 30 % above its start (ln C at init,
# so any rise is the model getting worse) or a gradient norm ≥ 5× its first
# value; without attention the bar is higher (small MLPs on noisy minibatches
# wobble by 20 %): the smoothed loss ≥ 50 % above its start, or a loss spike.
WARMUP_START_FRACTION = 0.50
LARGE_ADAM_LR = 1e-3
EARLY_FRACTION = 0.20
EARLY_LOSS_RISE_ATTENTION = 0.30
EARLY_GRAD_GROWTH = 5.0
EARLY_LOSS_RISE = 0.50

SOURCE_LR = "seed 004 (step 6: look at learning curves)"
SOURCE_TRAIN_VAL = "seed 004 (train/val accuracy rules)"


# ------------------------------------------------------------------ helpers


def _start_level(loss: pd.Series) -> float:
    return median(loss.to_numpy()[:START_POINTS])


def _smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Centred rolling median (no lag: a stretch above a level starts where the values do)."""
    return pd.Series(values).rolling(window, center=True, min_periods=1).median().to_numpy()


def divergence_onset(run: RunData) -> tuple[int, str, dict] | None:
    """Step where the run diverged for good (non-finite tail or a rise that stays), with the kind and numbers."""
    raw = train_loss(run)
    if raw.empty:
        return None
    values = raw.to_numpy()
    bad = ~np.isfinite(values)
    if bad[-1]:
        good_positions = np.flatnonzero(~bad)
        first_bad = good_positions[-1] + 1 if len(good_positions) else 0
        return int(raw.index[first_bad]), "non_finite", {"non_finite_steps": int(bad[first_bad:].sum()),
                                                         "first_non_finite_step": int(raw.index[first_bad])}
    loss = finite(raw)
    if len(loss) < START_POINTS + DIVERGED_MIN_POINTS:
        return None
    start = _start_level(loss)
    smooth = _smoothed(loss.to_numpy(), DIVERGED_SMOOTHING)
    threshold = start + DIVERGED_MARGIN * abs(start)
    below = np.flatnonzero(smooth <= threshold)
    first_above = below[-1] + 1 if len(below) else 0
    stretch = len(loss) - first_above
    if stretch < max(DIVERGED_MIN_POINTS, DIVERGED_MIN_FRACTION * len(loss)):
        return None
    if not np.all(loss.to_numpy()[-DIVERGED_TAIL_POINTS:] > threshold):
        return None
    tail = float(np.median(loss.to_numpy()[first_above:]))
    return int(loss.index[first_above]), "rise", {"start_level": start, "diverged_level": tail,
                                                  "steps_above": stretch}


def _profile(run: RunData) -> tuple[pd.Series, pd.Series] | None:
    loss = finite(train_loss(run))
    if len(loss) < MIN_CURVE_POINTS:
        return None
    return loss, binned_medians(loss, max(2, min(PROFILE_BINS, len(loss) // PROFILE_MIN_BIN_SIZE)))


def _median_update_ratio(run: RunData, start_fraction: float = 0.5) -> float | None:
    frame = layer_values(run, "update_ratio")
    if frame.empty:
        return None
    frame = frame.iloc[int(len(frame) * start_fraction):]
    values = frame.to_numpy(dtype="float64")
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.median(values)) if values.size else None


# ------------------------------------------------------------------ rules


def divergence(run: RunData) -> list[Finding]:
    """The loss became NaN/Inf, or rose above its starting level and stayed there.

    Symptom: non-finite losses to the end of the run (critical); or the
    smoothed loss ≥ 10 % above its starting level from some step to the end
    (critical). Isolated non-finite losses that recover are reported as info.
    Likely cause: lr too high, no warmup, fp16 overflow, bad data.
    Try: lower lr, warmup, gradient clipping (max_grad_norm = 1), Adam eps
    1e-6..1e-4 under fp16, revert to a checkpoint before the divergence.
    Source: seeds 000 and 003 ("diverged training": clipping, warmup), seed 002 (fp16).
    """
    findings = []
    raw = train_loss(run)
    onset = divergence_onset(run)
    advice = ("Lower the lr, add warmup, clip gradients (max_grad_norm = 1); under fp16 raise Adam eps to 1e-6..1e-4; "
              "restart from a checkpoint before the divergence.")
    source = "seed 000, seed 003 (diverged training), seed 002 (fp16)"
    if onset is not None:
        step, kind, evidence = onset
        if kind == "non_finite":
            message = (f"The loss became non-finite at step {step} and stayed so to the end "
                       f"({evidence['non_finite_steps']} steps).")
        else:
            message = (f"From step {step} the loss stayed above its starting level {evidence['start_level']:.3g} to the "
                       f"end (median {evidence['diverged_level']:.3g} over {evidence['steps_above']} records).")
        findings.append(finding("divergence", "critical", "Training diverged", message, advice, source,
                                step, int(raw.index[-1]), {"kind": kind, **evidence}))
        return findings
    if len(raw):
        bad = ~np.isfinite(raw.to_numpy())
        if bad.any():
            steps = raw.index[bad]
            findings.append(finding(
                "divergence", "info", "Non-finite losses (recovered)",
                f"{int(bad.sum())} step(s) had a NaN/Inf loss (first {steps[0]}, last {steps[-1]}); training recovered.",
                "Usually a skipped fp16 step or a bad batch; if it repeats, clip gradients or lower the lr.",
                source, steps[0], steps[-1], {"non_finite_steps": int(bad.sum())}))
    return findings


def _spike_window(n: int) -> int:
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


def loss_spike(run: RunData) -> list[Finding]:
    """A short jump far above the local loss level, robust to noise and to the downward trend.

    Symptom: a peak ≥ 10 robust sigmas and ≥ 20 % above the median of the
    preceding losses, with ≥ 3 records ≥ 5 sigmas above it; one finding per
    spike with its step, height and whether (and how fast) it recovered.
    A single extreme record (≥ 3× the level, ≥ 10 sigmas) is reported as info:
    one bad batch that did not disturb the following steps.
    Spikes inside a divergence are left to the divergence rule.
    Likely cause: a bad batch, too high an lr or too short a warmup, Adam's
    eps too small, fp16 overflow.
    Try: gradient clipping, longer warmup, lower lr, larger Adam eps, higher
    precision (bf16/fp32) for the unstable parts; skip the offending batch.
    Source: seed 000, seed 002 ("loss spikes", higher precision), seed 003.
    """
    loss = finite(train_loss(run))
    n = len(loss)
    if n <= SPIKE_MIN_HISTORY:
        return []
    values = loss.to_numpy()
    window = _spike_window(n)
    level = trailing_median(values, window, SPIKE_MIN_HISTORY)
    residual = values - level
    scale = trailing_mad_sigma(residual, SPIKE_SCALE_WINDOWS * window, SPIKE_MIN_HISTORY)
    # Until enough residuals exist, the spread of the previous values themselves is the scale
    # (a short logbook window like BLOOM's has five records before its spike). With so few
    # values the MAD is unreliable: take the range-based estimate too (E[range] ≈ 2.33 σ for 5).
    for position in np.flatnonzero(~np.isfinite(scale) & np.isfinite(level)):
        previous = values[max(0, position - window):position]
        scale[position] = max(mad_sigma(previous), float(np.ptp(previous)) / SMALL_SAMPLE_RANGE_TO_SIGMA)
    scale = np.fmax(scale, SPIKE_SCALE_FLOOR * np.abs(level))
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
    start_level = abs(_start_level(loss))
    spikes = []
    for start, end in episodes:
        elevated = int((sigmas[start:end + 1] >= SPIKE_ELEVATED_SIGMAS).sum())
        peak = start + int(np.argmax(values[start:end + 1]))
        base = level[start]
        jump = values[peak] - base
        if not (base > 0 and sigmas[peak] >= SPIKE_PEAK_SIGMAS and jump >= SPIKE_MIN_JUMP * start_level
                and values[peak] >= base * (1 + SPIKE_MIN_RELATIVE_HEIGHT)):
            continue
        persistent = elevated >= SPIKE_MIN_POINTS
        extreme = values[peak] >= SPIKE_SINGLE_FACTOR * base and jump >= SPIKE_SINGLE_MIN_JUMP * start_level
        if not (persistent or extreme):
            continue
        after = np.flatnonzero(values[peak + 1:] <= base * (1 + SPIKE_RECOVERED_MARGIN))
        recovered_at = int(loss.index[peak + 1 + after[0]]) if len(after) else None
        # Inside a divergence: the divergence rule reports it.
        if end >= cutoff or (onset is not None and recovered_at is None):
            continue
        if len(after):  # the spike ends where the loss is back, whatever noise follows
            end = min(end, peak + after[0])
        spikes.append((start, end, peak, base, recovered_at, persistent))
    findings = []
    for start, end, peak, base, recovered_at, persistent in spikes[:SPIKE_MAX_REPORTED]:
        peak_step = int(loss.index[peak])
        recovery = (f"recovered to within {SPIKE_RECOVERED_MARGIN:.0%} of the pre-spike level at step {recovered_at} "
                    f"({recovered_at - peak_step} steps later)" if recovered_at is not None
                    else "did not come back to the pre-spike level")
        findings.append(finding(
            "loss_spike", "warning" if persistent else "info",
            f"Loss spike at step {peak_step}" if persistent else f"One-step loss jump at step {peak_step}",
            f"Loss jumped to {values[peak]:.3g} at step {peak_step}, {values[peak] / base:.1f}× the running level "
            f"{base:.3g} ({sigmas[peak]:.0f} robust sigmas; elevated steps {loss.index[start]}–{loss.index[end]}); "
            f"it {recovery}." + (f" {len(spikes)} spikes in all; the first {SPIKE_MAX_REPORTED} are listed."
                                 if len(spikes) > SPIKE_MAX_REPORTED and peak == spikes[0][2] else "")
            + ("" if persistent else " A single record: most likely one bad batch; it matters if it repeats."),
            "Clip gradients, lengthen the warmup, lower the lr or raise Adam's eps; use bf16/fp32 where fp16 "
            "overflows; check the batch at that step.",
            "seed 000, seed 002 (loss spikes), seed 003", loss.index[start], loss.index[end],
            {"peak_step": peak_step, "peak_loss": values[peak], "running_level": base,
             "height_ratio": values[peak] / base, "sigmas": sigmas[peak], "recovered": recovered_at is not None,
             "recovered_at_step": recovered_at, "spike_count": len(spikes), "persistent": persistent}))
    return findings


def _initial_loss(run: RunData, loss: pd.Series) -> float:
    """Where training started: the task's expected initial loss or ln(C) when known, else the first records.

    The median of the first records underestimates it when the loss drops
    within a handful of steps (a logistic regression with momentum).
    """
    expected = run.task.get("expected_initial_loss")
    classes = run.task.get("num_classes")
    if expected is not None and float(expected) > 0:
        return float(expected)
    if classes is not None and int(classes) >= 2:
        return math.log(int(classes))
    return _start_level(loss)


def lr_too_high(run: RunData) -> list[Finding]:
    """Loss climbs back after its best, or thrashes on a high plateau with large updates.

    Symptom: after a real drop (≥ 10 % of the initial loss, ln C when the
    task says C), the loss climbs back ≥ 30 % of the way to it (and 5 noise
    sigmas) and stays there; or its late level stays ≥ 30 % of the initial
    loss with step-to-step noise ≥ 15 % of the level while the median
    update/weight ratio is ≥ 5e-3 (5× the ~1e-3 rule of thumb); without
    update ratios, noise ≥ 30 % of the level is reported as info only (a hard
    task that converged looks the same).
    Likely cause: the step size overshoots the valley.
    Try: lower the lr (×0.3 … ×0.1) or add a decay schedule.
    Source: seed 004 step 6 rule 2 and the update/weight ratio; seed 003.
    """
    curve = _profile(run)
    if curve is None or divergence_onset(run) is not None:
        return []
    loss, profile = curve
    start = _initial_loss(run, loss)
    best_position = int(np.argmin(profile.to_numpy()))
    best = float(profile.iloc[best_position])
    late = window_median(loss, 0.8, 1.0)
    if start <= 0 or start - best < MIN_DROP * start:
        return []
    ratio = _median_update_ratio(run)
    rebound = (late - best) / (start - best)
    late_values = loss.to_numpy()[int(0.5 * len(loss)):]
    noise = mad_sigma(np.diff(late_values)) / math.sqrt(2) / max(median(late_values), 1e-12)
    evidence = {"initial_loss": start, "best_level": best, "late_level": late, "median_update_ratio": ratio,
                "rebound_fraction": rebound, "late_noise": noise}
    support = f" Median update/weight ratio {ratio:.1e} (rule of thumb ~1e-3)." if ratio is not None else ""
    # The minimum of up to 40 noisy bins sits 2-3 sigmas low: the climb must exceed 5 sigmas of the bin noise.
    profile_noise = mad_sigma(np.diff(profile.to_numpy())) / math.sqrt(2)
    evidence["profile_noise"] = profile_noise
    if (rebound >= REBOUND_FRACTION and best_position < len(profile) - 2
            and late - best > REBOUND_NOISE_SIGMAS * profile_noise):
        return [finding(
            "lr_too_high", "warning", "Loss climbed back after its best: lr too high",
            f"The loss reached {best:.3g} near step {profile.index[best_position]}, then climbed back to {late:.3g} "
            f"({rebound:.0%} of the way back to its initial {start:.3g}) and stayed there.{support}",
            "Lower the lr (×0.3 to ×0.1) or decay it; clip gradients.", SOURCE_LR + "; seed 003",
            profile.index[best_position], loss.index[-1], evidence)]
    high = late >= HIGH_PLATEAU_LEVEL * start
    if ratio is not None:
        thrashing, severity = noise >= THRASHING_NOISE and ratio >= HIGH_UPDATE_RATIO, "warning"
    else:
        thrashing, severity = noise >= NOISY_PLATEAU_NOISE, "info"
    if not (high and thrashing):
        return []
    why = (f"the median update/weight ratio is {ratio:.1e}, above the ~1e-3 rule of thumb"
           if ratio is not None else "no update ratios were recorded to confirm it")
    return [finding(
        "lr_too_high", severity, "High, noisy plateau: lr too high",
        f"The loss stays at {late:.3g} ({late / start:.0%} of its initial {start:.3g}) with step-to-step noise "
        f"{noise:.0%} of its level, while {why}.",
        "Lower the lr (×0.3 to ×0.1) or add a decay schedule once the loss stalls.", SOURCE_LR + "; seed 003",
        loss.index[int(0.4 * len(loss))], loss.index[-1], evidence)]


def lr_too_low(run: RunData) -> list[Finding]:
    """Loss falls slowly and almost linearly, far from a plateau at the end.

    Symptom: the loss lost < 50 % of its start, the second half fell ≥ 50 %
    as much as the first (no deceleration) and it still falls in the last
    quarter, each drop beyond 3 standard errors of the minibatch noise;
    update/weight ratios are reported as support.
    Likely cause: a learning rate far below what the model tolerates.
    Try: raise the lr (×3 to ×10; try 1e-1, 1e-2, 1e-3, 1e-4 and keep the one
    whose loss drops within ~100 iterations).
    Source: seed 004 step 6 rule 1 and step 3.
    """
    curve = _profile(run)
    if curve is None or len(curve[0]) < LR_TOO_LOW_MIN_POINTS or divergence_onset(run) is not None:
        return []
    loss, profile = curve
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
    ratio = _median_update_ratio(run)
    evidence = {"start_level": start, "middle_level": middle, "end_level": end, "total_drop": total_drop,
                "halves_ratio": second_half / first_half if first_half > 0 else None,
                "median_update_ratio": ratio}
    if not (0 < total_drop < SLOW_TOTAL_DROP and start - end > DROP_SIGMAS * window_error
            and second_half > DROP_SIGMAS * window_error and second_half >= LINEAR_HALVES_RATIO * first_half
            and still_falling >= STILL_FALLING):
        return []
    if ratio is not None and ratio >= HIGH_UPDATE_RATIO:
        return []
    support = f" Median update/weight ratio {ratio:.1e} (rule of thumb ~1e-3)." if ratio is not None else ""
    return [finding(
        "lr_too_low", "warning", "Loss falls slowly and linearly: lr too low",
        f"The loss went {start:.3g} → {middle:.3g} → {end:.3g} ({total_drop:.0%} in all), as fast in the second half "
        f"as in the first, and is still falling.{support}",
        "Raise the lr (×3 to ×10); pick the lr that makes the loss drop clearly within ~100 iterations.",
        SOURCE_LR + " rule 1", loss.index[0], loss.index[-1], evidence)]


def decayed_too_early(run: RunData) -> list[Finding]:
    """An lr drop is followed at once by a flat loss well above where the run was heading.

    Symptom: the lr falls to ≤ 10 % of its peak before half of the run, while
    the loss was still falling (≥ 5 % over the preceding stretch), and the
    loss improves < 5 % afterwards.
    Likely cause: a step/plateau schedule or decay that kicks in too early.
    Try: decay later (at the start of a plateau), as late as possible;
    a constant lr first (seed 004 "don't tune the schedule first").
    Source: seed 004 step 6 rule 3; seed 002 (ReduceLROnPlateau "as late as possible").
    """
    lr = finite(lr_series(run))
    curve = _profile(run)
    if curve is None or len(lr) < 3:
        return []
    loss, _ = curve
    values = lr.to_numpy()
    peak = np.maximum.accumulate(values)
    decayed = np.flatnonzero((values <= DECAY_FACTOR * peak) & (peak > 0))
    if len(decayed) == 0:
        return []
    decay_step = int(lr.index[decayed[0]])
    steps = loss.index.to_numpy()
    position = int(np.searchsorted(steps, decay_step))
    if position >= DECAY_EARLY_FRACTION * len(loss) or position < 6:
        return []
    values_loss = loss.to_numpy()
    width = max(3, position // 4)
    earlier = median(values_loss[position - 2 * width:position - width])
    at_decay = median(values_loss[position - width:position])
    after_width = max(3, (len(loss) - position) // 10)
    just_after = median(values_loss[position:position + after_width])
    final = window_median(loss, 0.85, 1.0)
    heading = (earlier - at_decay) / max(abs(earlier), 1e-12)
    after = (just_after - final) / max(abs(just_after), 1e-12)
    evidence = {"decay_step": decay_step, "lr_before": float(peak[decayed[0]]), "lr_after": float(values[decayed[0]]),
                "loss_trend_before": heading, "improvement_after": after, "loss_after_decay": just_after,
                "final_loss": final}
    if heading < DECAY_HEADING_DOWN or after >= DECAY_FLAT_AFTER:
        return []
    return [finding(
        "decayed_too_early", "warning", f"lr decayed too early (step {decay_step})",
        f"The lr fell to {values[decayed[0]] / peak[decayed[0]]:.1%} of its peak at step {decay_step} "
        f"({position / len(loss):.0%} into the run) while the loss was still falling ({heading:.0%} over the "
        f"preceding stretch); afterwards it improved only {after:.1%} ({just_after:.3g} → {final:.3g}).",
        "Decay later, at the start of a plateau (or as late as possible); keep the lr constant until the loss stalls.",
        "seed 004 step 6 rule 3; seed 002 (ReduceLROnPlateau as late as possible)", decay_step, loss.index[-1],
        evidence)]


def _eval_losses(run: RunData) -> tuple[pd.Series, pd.Series]:
    values, epochs = eval_frame(run, "loss")
    keep = np.isfinite(values.to_numpy())
    return values[keep], epochs[keep] if len(epochs) else epochs


def _train_level_at(loss: pd.Series, step: int, window: int) -> float:
    position = int(np.searchsorted(loss.index.to_numpy(), step, side="right"))
    return median(loss.to_numpy()[max(0, position - window):position])


def overfitting(run: RunData) -> list[Finding]:
    """Validation loss turns worse while the training loss keeps improving.

    Symptom: the median of the last evals is ≥ 10 % (and 3 noise sigmas)
    above the best validation loss, ≥ 3 evals after it, while the training
    loss at the end is no higher than at the best eval.
    Likely cause: too much capacity or too many epochs for the data.
    Try: more data or augmentation, weight decay/dropout, a smaller model,
    fewer epochs (retrain to the best epoch).
    Source: seed 004 train/val rule 2; seed 002.
    """
    values, epochs = _eval_losses(run)
    loss = finite(train_loss(run))
    if len(values) < MIN_EVALS or len(loss) < MIN_EVALS:
        return []
    v = values.to_numpy()
    best_position = int(np.argmin(v))
    after = len(v) - best_position - 1
    if after < OVERFIT_MIN_EVALS_AFTER:
        return []
    late = float(np.median(v[-max(2, len(v) // 5):]))
    best = float(v[best_position])
    noise = mad_sigma(np.diff(v)) / math.sqrt(2)
    best_step = int(values.index[best_position])
    window = max(3, len(loss) // 20)
    train_at_best = _train_level_at(loss, best_step, window)
    train_end = median(loss.to_numpy()[-window:])
    rise = (late - best) / max(abs(best), 1e-12)
    evidence = {"best_val_loss": best, "best_step": best_step, "late_val_loss": late, "rise": rise,
                "train_loss_at_best": train_at_best, "train_loss_end": train_end}
    if len(epochs) and np.isfinite(epochs.iloc[best_position]):
        evidence["best_epoch"] = int(epochs.iloc[best_position])
    if rise < OVERFIT_RISE or late - best < OVERFIT_NOISE_SIGMAS * noise or train_end > train_at_best:
        return []
    return [finding(
        "overfitting", "warning", "Overfitting: validation loss rising",
        f"Validation loss was best ({best:.3g}) at {describe_epoch(epochs, best_step)} and rose to {late:.3g} "
        f"(+{rise:.0%}) while the training loss kept falling ({train_at_best:.3g} → {train_end:.3g}).",
        "Regularise (weight decay, dropout, augmentation), get more data, use a smaller model, or train for fewer "
        "epochs (about as many as to the best epoch).",
        SOURCE_TRAIN_VAL + " rule 2; seed 002", best_step, values.index[-1], evidence)]


def _smooth_evals(values: pd.Series) -> np.ndarray:
    """Centred rolling median of 3 evals: one lucky or unlucky eval on a small val set is not the trend."""
    return values.rolling(EVAL_SMOOTHING, center=True, min_periods=1).median().to_numpy()


def best_epoch_not_last(run: RunData) -> list[Finding]:
    """The best validation score came well before the end of training.

    Symptom: on evals smoothed over 3, the best val accuracy is in the first
    80 % of evals and the end is worse by more than two binomial standard
    errors (and the val loss, when recorded, is worse too); or the best val
    loss is, and the end is ≥ 10 % (and 3 noise sigmas) worse.
    Likely cause: too many epochs or too high a final lr; an early-stopped
    "best" checkpoint hides it and is a noisy pick on the val set.
    Try: retrain with as many epochs as to the best one (or a lower lr) so the
    last checkpoint is the best, rather than keeping the early-stopped one.
    Source: seed 002 ("don't use early stopping / save best model").
    """
    accuracy, epochs = eval_frame(run, "accuracy")
    accuracy = accuracy[np.isfinite(accuracy.to_numpy())] if len(accuracy) else accuracy
    losses, loss_epochs = _eval_losses(run)
    candidates = []
    if len(accuracy) >= MIN_EVALS:
        smooth = _smooth_evals(accuracy)
        best_position = int(np.argmax(smooth))
        latest = last_confusion(run)
        count = latest[0].sum() if latest is not None else 0
        best, last = float(smooth[best_position]), float(smooth[-1])
        margin = (BEST_EPOCH_SE * math.sqrt(max(best * (1 - best), 1e-4) / count) if count else BEST_EPOCH_ACCURACY_GAP)
        # A val loss still falling to the end says the accuracy dip is noise on a small val set.
        loss_agrees = True
        if len(losses) >= MIN_EVALS:
            smooth_loss = pd.Series(_smooth_evals(losses), index=losses.index)
            at_best = smooth_loss.get(int(accuracy.index[best_position]))
            loss_agrees = at_best is None or not np.isfinite(at_best) or smooth_loss.iloc[-1] > at_best
        if best - last > margin and best_position < BEST_EPOCH_POSITION * (len(smooth) - 1) and loss_agrees:
            candidates.append(("accuracy", accuracy, best_position, best, last, best - last > BEST_EPOCH_BIG_ACCURACY))
    if not candidates and len(losses) >= MIN_EVALS:
        smooth = _smooth_evals(losses)
        best_position = int(np.argmin(smooth))
        best, last = float(smooth[best_position]), float(smooth[-1])
        noise = mad_sigma(np.diff(losses.to_numpy())) / math.sqrt(2)
        if (last > best * (1 + BEST_EPOCH_LOSS_RISE) and last - best > OVERFIT_NOISE_SIGMAS * noise
                and best_position < BEST_EPOCH_POSITION * (len(smooth) - 1)):
            candidates.append(("loss", losses, best_position, best, last, last > BEST_EPOCH_BIG_LOSS * best))
            epochs = loss_epochs
    if not candidates:
        return []
    metric, values, best_position, best, last, big = candidates[0]
    best_step = int(values.index[best_position])
    evidence = {"metric": metric, "best": best, "last": last, "best_step": best_step, "evals": len(values)}
    if len(epochs) and np.isfinite(epochs.get(best_step, np.nan)):
        evidence["best_epoch"] = int(epochs.get(best_step))
    return [finding(
        "best_epoch_not_last", "warning" if big else "info", "Best validation score well before the end",
        f"The best validation {metric} ({best:.3g}, smoothed over {EVAL_SMOOTHING} evals) was at "
        f"{describe_epoch(epochs, best_step)}, eval {best_position + 1} of {len(values)}; at the end it is {last:.3g}.",
        "Retrain with about that many epochs (or a lower lr) so that the last checkpoint is the best, rather than "
        "keeping an early-stopped 'best' checkpoint.",
        "seed 002 (don't use early stopping / save best model)", best_step, values.index[-1], evidence)]


def underfitting(run: RunData) -> list[Finding]:
    """Training loss plateaued high, train and validation close, training accuracy far from perfect.

    Symptom: after falling ≥ 10 %, the last quarter of the training loss
    improves < 5 % on the third and adds < 10 % of the total drop; train
    accuracy < 0.9 (or, without accuracy, the loss ≥ 30 % of its start); an
    evaluation split (required) within 10 % of the train loss (or 0.05
    accuracy).
    Likely cause: too little capacity (or too strong regularisation). The
    curves cannot tell it from irreducible error (overlapping classes, label
    noise), so the advice says to check the confusions.
    Try: a bigger model (wider/deeper), less regularisation, better features;
    then train longer.
    Source: seed 004 train/val rule 3.
    """
    curve = _profile(run)
    if curve is None or divergence_onset(run) is not None:
        return []
    loss, _ = curve
    start = _start_level(loss)
    third, fourth = window_median(loss, 0.5, 0.75), window_median(loss, 0.75, 1.0)
    improvement = (third - fourth) / max(abs(third), 1e-12)
    share = (third - fourth) / max(start - fourth, 1e-12)
    # A loss that never fell (by 10 % of its start) is not learning at all,
    # which is not a lack of capacity.
    if start <= 0 or start - fourth < MIN_DROP * start:
        return []
    # Flat: < 5 % better over the last quarter and < 10 % of the total drop.
    if improvement >= UNDERFIT_FLAT or share >= UNDERFIT_FLAT_SHARE:
        return []
    train_accuracy = finite(run.series("accuracy"))
    val_loss, _ = _eval_losses(run)
    val_accuracy, _ = eval_frame(run, "accuracy")
    evidence = {"train_loss": fourth, "last_quarter_improvement": improvement}
    if len(train_accuracy) >= MIN_EVALS:
        accuracy = window_median(train_accuracy, 0.75, 1.0)
        evidence["train_accuracy"] = accuracy
        if accuracy >= UNDERFIT_TRAIN_ACCURACY:
            return []
    elif fourth < UNDERFIT_HIGH_LOSS * start:
        return []
    close = None
    if len(val_loss):
        val_late = float(np.median(val_loss.to_numpy()[-max(1, len(val_loss) // 5):]))
        evidence["val_loss"] = val_late
        close = abs(val_late - fourth) <= UNDERFIT_GAP_LOSS * max(fourth, 1e-12) or val_late < fourth
    if len(val_accuracy) and "train_accuracy" in evidence:
        val_acc_late = float(np.median(val_accuracy.to_numpy()[-max(1, len(val_accuracy) // 5):]))
        evidence["val_accuracy"] = val_acc_late
        close_accuracy = evidence["train_accuracy"] - val_acc_late <= UNDERFIT_GAP_ACCURACY
        close = close_accuracy if close is None else (close or close_accuracy)
    if close is not True:  # without an evaluation split, "train and val close" cannot be judged
        return []
    accuracy_text = f", training accuracy {evidence['train_accuracy']:.2f}" if "train_accuracy" in evidence else ""
    val_text = f", validation loss {evidence['val_loss']:.3g}" if "val_loss" in evidence else ""
    return [finding(
        "underfitting", "warning", "Underfitting: training loss plateaued high",
        f"Training loss flat at {fourth:.3g} (last quarter {improvement:+.1%}){accuracy_text}{val_text}: "
        "train and validation are close and both poor.",
        "Increase capacity (wider/deeper model, better features) or reduce regularisation; then train longer. "
        "If classes overlap or labels are noisy the plateau may be the data's limit: look at the confusions first.",
        SOURCE_TRAIN_VAL + " rule 3", loss.index[int(len(loss) * 0.5)], loss.index[-1], evidence)]


def train_longer(run: RunData) -> list[Finding]:
    """Training and validation still improving at the last epoch.

    Symptom: validation loss improved ≥ 2 % over the last third of the evals
    with the best among the last two, and the training loss fell ≥ 3 % in its
    last quarter; these late stretches brought ≥ 10 % (val) and ≥ 15 %
    (train) of the total improvement (not converged).
    Likely cause: training stopped before convergence.
    Try: train for more epochs (without decaying the lr early).
    Source: seed 004 train/val rule 1; seed 002 ("make sure training loss converged").
    """
    values, epochs = _eval_losses(run)
    loss = finite(train_loss(run))
    if len(values) < 3 or len(loss) < MIN_CURVE_POINTS or divergence_onset(run) is not None:
        return []
    v = values.to_numpy()
    third = max(2, len(v) // 3)
    earlier = float(v[-third])
    val_gain = (earlier - v[-1]) / max(abs(earlier), 1e-12)
    val_share = (earlier - v[-1]) / max(v[0] - v[-1], 1e-12)
    best_recent = int(np.argmin(v)) >= len(v) - 2
    start = _start_level(loss)
    train_third, train_fourth = window_median(loss, 0.5, 0.75), window_median(loss, 0.75, 1.0)
    train_gain = (train_third - train_fourth) / max(abs(train_third), 1e-12)
    train_share = (train_third - train_fourth) / max(start - train_fourth, 1e-12)
    evidence = {"val_improvement_last_third": val_gain, "val_share_last_third": val_share,
                "train_improvement_last_quarter": train_gain, "train_share_last_quarter": train_share,
                "last_val_loss": float(v[-1])}
    if (val_gain < TRAIN_LONGER_VAL_IMPROVEMENT or val_share < TRAIN_LONGER_VAL_SHARE or not best_recent
            or train_gain < TRAIN_LONGER_TRAIN_IMPROVEMENT or train_share < TRAIN_LONGER_TRAIN_SHARE):
        return []
    return [finding(
        "train_longer", "info", "Still improving at the end: train longer",
        f"Validation loss improved {val_gain:.0%} over the last third of the evals and is best at the end "
        f"({v[-1]:.3g}); training loss fell {train_gain:.0%} in the last quarter.",
        "Train for more epochs (keep the lr schedule proportional), until training loss converges.",
        SOURCE_TRAIN_VAL + " rule 1; seed 002", values.index[-third], values.index[-1], evidence)]


def bad_initial_loss(run: RunData) -> list[Finding]:
    """The first loss is far from ln(C) for C-class cross-entropy (or from the user's expected value).

    Symptom: |first loss / expected − 1| > 0.5, expected = task
    ``expected_initial_loss`` or ln(num_classes).
    Likely cause: a last layer initialised too large or biased, inputs not
    normalised, a wrong loss (e.g. softmax applied twice, wrong reduction) or
    labels that do not match the outputs.
    Try: zero or small init for the last layer, check the loss and the label
    encoding; the first loss should be about −log(1/C).
    Source: seed 004 step 1 ("check initial loss").
    """
    expected = run.task.get("expected_initial_loss")
    classes = run.task.get("num_classes")
    if expected is None and classes is not None and int(classes) >= 2:
        expected = math.log(int(classes))
    loss = finite(train_loss(run))
    if expected is None or float(expected) <= 0 or loss.empty:
        return []
    expected = float(expected)
    first = float(loss.iloc[0])
    deviation = first / expected - 1
    if abs(deviation) <= INITIAL_LOSS_TOLERANCE:
        return []
    basis = "the expected value" if run.task.get("expected_initial_loss") is not None else f"ln({classes})"
    return [finding(
        "bad_initial_loss", "warning", "Initial loss far from the expected value",
        f"The first loss is {first:.3g} at step {loss.index[0]}; {basis} is {expected:.3g} ({deviation:+.0%}).",
        "Initialise the last layer small (or zero) so the first predictions are uniform, normalise the inputs, "
        "check the loss function and the label encoding.",
        "seed 004 step 1 (check the initial loss)", loss.index[0], loss.index[0],
        {"first_loss": first, "expected": expected, "relative_deviation": deviation})]


def no_better_than_baseline(run: RunData) -> list[Finding]:
    """Accuracy not clearly above the majority-class (zero-rule) baseline.

    Symptom: the final evaluation accuracy (median of the last evals) is not
    above the majority-class rate of the evaluation set by more than two
    binomial standard errors (at least one point).
    Likely cause: nothing learned beyond the class prior: labels unrelated to
    inputs, a bug in the data pipeline, collapsed model, heavy imbalance.
    Try: overfit a small batch first; check inputs/labels alignment; compare
    with a simple model; handle imbalance.
    Source: seed 002 ("compare accuracy to a zero-rule baseline").
    """
    accuracy, _ = eval_frame(run, "accuracy")
    accuracy = accuracy[np.isfinite(accuracy.to_numpy())] if len(accuracy) else accuracy
    latest = last_confusion(run)
    if accuracy.empty or latest is None:
        return []
    matrix, step, split = latest
    total = matrix.sum()
    if total <= 0:
        return []
    baseline = float(matrix.sum(axis=1).max() / total)
    final = float(np.median(accuracy.to_numpy()[-min(3, len(accuracy)):]))
    margin = max(BASELINE_MIN_MARGIN, BASELINE_SE * math.sqrt(baseline * (1 - baseline) / total))
    if final > baseline + margin:
        return []
    return [finding(
        "no_better_than_baseline", "critical" if final <= baseline else "warning",
        "No better than predicting the majority class",
        f"Final {split} accuracy {final:.3f} vs the zero-rule baseline {baseline:.3f} (majority class share of "
        f"{int(total)} samples); a clear gain needs > {baseline + margin:.3f}.",
        "Check that inputs and labels line up, overfit one small batch to prove the model can learn, "
        "compare with a simple model; for imbalanced data judge per-class metrics.",
        "seed 002 (zero-rule baseline)", accuracy.index[0], accuracy.index[-1],
        {"accuracy": final, "baseline": baseline, "margin": margin, "samples": int(total)})]


def missing_warmup(run: RunData) -> list[Finding]:
    """A transformer (or Adam with a large lr) started at full lr, with early instability.

    Symptom: the model has attention layers (or Adam with lr ≥ 1e-3), the lr
    at the first step is already ≥ 50 % of its peak, and in the first 20 % of
    the run the loss climbs above its start, or a loss spike
    appears, or (attention) the gradient norm grows ≥ 5× its first value;
    the loss bar is 30 % with attention, 50 % (smoothed) without.
    Likely cause: Adam's second-moment estimates are poor in the first steps;
    large early updates destabilise attention/post-LN blocks.
    Try: linear warmup (e.g. 1-10 % of steps) then cosine/linear decay;
    start small (e.g. 5e-5), OneCycleLR.
    Source: seed 000, seed 001 (linear warmup), seed 003 ("warmup is essential").
    """
    lr = finite(lr_series(run))
    loss = finite(train_loss(run))
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
    early_end = max(MIN_CURVE_POINTS // 2, int(EARLY_FRACTION * len(loss)))
    early = loss.iloc[:early_end]
    start = _start_level(loss)
    attention = bool(model.get("has_attention"))
    if attention:
        # Raw values: the first-steps blow-up of a transformer lasts one to three steps.
        first = float(loss.iloc[0])
        rise = float(early.max() / first - 1) if first > 0 else 0.0
        rise_needed = EARLY_LOSS_RISE_ATTENTION
    else:
        smooth = pd.Series(early.to_numpy()).rolling(DIVERGED_SMOOTHING).median().to_numpy()
        rise = float(np.nanmax(smooth) / start - 1) if start > 0 and np.isfinite(smooth).any() else 0.0
        rise_needed = EARLY_LOSS_RISE
    spikes = [f for f in loss_spike(run) if f.step_start is not None and f.step_start <= early.index[-1]]
    growth = None
    grad = finite(run.series("grad_norm"))
    if attention and len(grad) >= 3:
        early_grad = grad[grad.index <= early.index[-1]]
        first_grad = float(grad.iloc[0])
        if len(early_grad) and first_grad > 0:
            growth = float(early_grad.max() / first_grad)
    signs = []
    if rise >= rise_needed:
        signs.append(f"the loss climbed {rise:.0%} above its start")
    if spikes:
        signs.append(f"{len(spikes)} loss spike(s)")
    if growth is not None and growth >= EARLY_GRAD_GROWTH:
        signs.append(f"the gradient norm grew {growth:.0f}×")
    if not signs:
        return []
    what = "attention layers" if model.get("has_attention") else f"Adam with lr {peak_lr:g}"
    return [finding(
        "missing_warmup", "warning", "No lr warmup, unstable start",
        f"A model with {what} started at {float(lr.iloc[0]) / peak_lr:.0%} of its peak lr ({float(lr.iloc[0]):g}), and "
        f"in the first {len(early)} steps {', '.join(signs)}.",
        "Add a linear warmup over the first 1-10 % of steps (then cosine or linear decay), or OneCycleLR.",
        "seed 000, seed 001 (warmup), seed 003 (warmup is essential)", loss.index[0], early.index[-1],
        {"start_lr": float(lr.iloc[0]), "peak_lr": peak_lr, "early_loss_rise": rise, "early_spikes": len(spikes),
         "early_grad_growth": growth})]
