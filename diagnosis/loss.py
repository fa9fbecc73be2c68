"""Rules on the training loss itself: divergence, loss spikes, the initial loss.

Also the intermediate results other rules build on: the starting level, the
divergence onset (rules that judge a curve stay quiet on a diverged run) and
the list of spikes (``missing_warmup`` counts the early ones). Each is
computed once per ``diagnose()`` call (:func:`~traindoctor.diagnosis.memo.per_run`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from traindoctor.diagnosis.common import finding, finite_train_loss, train_loss
from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.memo import per_run
from traindoctor.diagnosis.records import Evidence, Live, rule
from traindoctor.diagnosis.robust import mad_sigma, median, trailing_mad_sigma, trailing_median, true_runs
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
    return pd.Series(values).rolling(window, center=True, min_periods=1).median().to_numpy()


@per_run
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
    loss = finite_train_loss(run)
    if len(loss) < START_POINTS + DIVERGED_MIN_POINTS:
        return None
    start = start_level(run)
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


@rule(severities=("info", "critical"), inputs=("loss",), evidence=Evidence.series("loss"),
      thresholds=("START_POINTS", "DIVERGED_MARGIN", "DIVERGED_MIN_POINTS", "DIVERGED_MIN_FRACTION",
                  "DIVERGED_SMOOTHING", "DIVERGED_TAIL_POINTS", "LIVE_NON_FINITE_RECORDS", "LIVE_RISE_RECORDS"),
      live=Live(settled=divergence_settled))
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
    """

    start_step: int
    end_step: int
    peak_step: int
    peak_loss: float
    running_level: float
    sigmas: float
    recovered_at_step: int | None
    persistent: bool


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
    n = len(loss)
    if n <= SPIKE_MIN_HISTORY:
        return []
    values = loss.to_numpy()
    window = _spike_window(n, running=run.status == "running")
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
    start_loss = abs(start_level(run))
    spikes = []
    for start, end in episodes:
        elevated = int((sigmas[start:end + 1] >= SPIKE_ELEVATED_SIGMAS).sum())
        peak = start + int(np.argmax(values[start:end + 1]))
        base = level[start]
        jump = values[peak] - base
        if not (base > 0 and sigmas[peak] >= SPIKE_PEAK_SIGMAS and jump >= SPIKE_MIN_JUMP * start_loss
                and values[peak] >= base * (1 + SPIKE_MIN_RELATIVE_HEIGHT)):
            continue
        persistent = elevated >= SPIKE_MIN_POINTS
        extreme = values[peak] >= SPIKE_SINGLE_FACTOR * base and jump >= SPIKE_SINGLE_MIN_JUMP * start_loss
        if not (persistent or extreme):
            continue
        after = np.flatnonzero(values[peak + 1:] <= base * (1 + SPIKE_RECOVERED_MARGIN))
        recovered_at = int(loss.index[peak + 1 + after[0]]) if len(after) else None
        # Inside a divergence: the divergence rule reports it.
        if end >= cutoff or (onset is not None and recovered_at is None):
            continue
        if len(after):  # the spike ends where the loss is back, whatever noise follows
            end = min(end, peak + after[0])
        spikes.append(Spike(start_step=int(loss.index[start]), end_step=int(loss.index[end]),
                            peak_step=int(loss.index[peak]), peak_loss=values[peak], running_level=base,
                            sigmas=sigmas[peak], recovered_at_step=recovered_at, persistent=persistent))
    return spikes


def spike_settled(finding: Finding) -> bool:
    """Once the spike has recovered (until then it may be the start of a divergence)."""
    return bool(finding.evidence.get("recovered"))


@rule(severities=("info", "warning"), inputs=("loss",), evidence=Evidence.series("loss"),
      live=Live(settled=spike_settled, quiet_after=("divergence",)),
      thresholds=("START_POINTS", "SPIKE_WINDOW_MAX", "SPIKE_WINDOW_MIN", "SPIKE_MIN_HISTORY", "SPIKE_SCALE_WINDOWS",
                  "SPIKE_SCALE_FLOOR", "SPIKE_PEAK_SIGMAS", "SPIKE_ELEVATED_SIGMAS", "SPIKE_MIN_RELATIVE_HEIGHT",
                  "SPIKE_MIN_POINTS", "SPIKE_MAX_GAP", "SPIKE_HOLD_WINDOWS", "SMALL_SAMPLE_RANGE_TO_SIGMA",
                  "SPIKE_SINGLE_FACTOR", "SPIKE_SINGLE_MIN_JUMP", "SPIKE_MIN_JUMP", "SPIKE_RECOVERED_MARGIN",
                  "SPIKE_MAX_REPORTED"))
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
    spikes = loss_spikes(run)
    findings = []
    for index, spike in enumerate(spikes[:SPIKE_MAX_REPORTED]):
        peak_step, recovered_at = spike.peak_step, spike.recovered_at_step
        recovery = (f"recovered to within {SPIKE_RECOVERED_MARGIN:.0%} of the pre-spike level at step {recovered_at} "
                    f"({recovered_at - peak_step} steps later)" if recovered_at is not None
                    else "did not come back to the pre-spike level")
        findings.append(finding(
            "loss_spike", "warning" if spike.persistent else "info",
            f"Loss spike at step {peak_step}" if spike.persistent else f"One-step loss jump at step {peak_step}",
            f"Loss jumped to {spike.peak_loss:.3g} at step {peak_step}, {spike.peak_loss / spike.running_level:.1f}× "
            f"the running level {spike.running_level:.3g} ({spike.sigmas:.0f} robust sigmas; elevated steps "
            f"{spike.start_step}–{spike.end_step}); it {recovery}."
            + (f" {len(spikes)} spikes in all; the first {SPIKE_MAX_REPORTED} are listed."
               if len(spikes) > SPIKE_MAX_REPORTED and index == 0 else "")
            + ("" if spike.persistent else " A single record: most likely one bad batch; it matters if it repeats."),
            "Clip gradients, lengthen the warmup, lower the lr or raise Adam's eps; use bf16/fp32 where fp16 "
            "overflows; check the batch at that step.",
            "seed 000, seed 002 (loss spikes), seed 003", spike.start_step, spike.end_step,
            {"peak_step": peak_step, "peak_loss": spike.peak_loss, "running_level": spike.running_level,
             "height_ratio": spike.peak_loss / spike.running_level, "sigmas": spike.sigmas,
             "recovered": recovered_at is not None, "recovered_at_step": recovered_at, "spike_count": len(spikes),
             "persistent": spike.persistent}))
    return findings


# First loss more than 50 % away from ln(C) (or the user's expected value).
# Default PyTorch init lands within ±30 % of ln C in every healthy corpus run
# (the largest: +26 %, healthy_cancer_logistic).
INITIAL_LOSS_TOLERANCE = 0.50


@rule(severities=("warning",), inputs=("loss",), metadata=("task.expected_initial_loss", "task.num_classes"),
      evidence=Evidence.series("loss"), thresholds=("INITIAL_LOSS_TOLERANCE",))
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
    loss = finite_train_loss(run)
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
