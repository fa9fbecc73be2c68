"""Rules on gradients and updates: exploding, vanishing, update/weight ratio, dead layers."""

from __future__ import annotations

import json

import numpy as np

from traindoctor.diagnosis.common import (
    events_of, finding, finite_train_loss, is_norm_or_bias, layer_values, masked_train_losses, natural_key,
)
from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.memo import per_run
from traindoctor.diagnosis.records import Evidence, Live, rule
from traindoctor.diagnosis.robust import binned_medians, finite, trailing_median, true_runs, window_median
from traindoctor.store.frames import Curve, to_float
from traindoctor.store.run_data import RunData

# "Orders of magnitude" (RULES.md): a global gradient norm 100× its trailing
# median is two orders; BLOOM-176B's logged spike was 4,000× (0.24 → 960),
# healthy corpus runs peak at ≤ 12× their running median.
EXPLODE_PEAK_FACTOR = 100.0
# ...or 10× (one order) held for this many consecutive records.
EXPLODE_SUSTAINED_FACTOR = 10.0
EXPLODE_SUSTAINED_POINTS = 5
# ...or ≥ 10× and, within 2 records, non-finite to the end: it grew until it overflowed.
OVERFLOW_GAP = 2
# A 10×-held episode (below the 100× peak, no overflow) is no explosion when the training loss kept
# falling through it: no record in the episode above the median of this many records before it, and the
# median of as many after it lower still (a mixture-density NLL's gradients grow as its σ shrink).
FALLING_LOSS_RECORDS = 10
# Growth over the run: the late level 100× the lowest earlier level.
EXPLODE_GROWTH_FACTOR = 100.0
# AUTOTRAINER (ICSE'21) calls gradients exploding when the first/last layer
# gradient-norm ratio exceeds 70.
FIRST_LAST_EXPLODING_RATIO = 70.0
# Trailing window for the running median of the gradient norm (records).
GRAD_WINDOW = 50
GRAD_MIN_HISTORY = 3

# Vanishing: first-layer gradients two orders of magnitude below the last
# layer's (AUTOTRAINER uses 1e-3 with an absolute first-layer norm < 1e-4;
# two orders plus a stalled loss is our stricter pairing).
FIRST_LAST_VANISHING_RATIO = 1e-2
# "Learning stalls": the loss's late level is still ≥ 90 % of its early level.
STALLED_LOSS_FRACTION = 0.9

# Band of ||Δw||/||w|| per step: ~1e-3 is the rule of thumb (004, Karpathy's
# cs231n notes); DeepDiagnosis (ICSE'22) flags layers outside [1e-5, 1e-1].
UPDATE_RATIO_LOW = 1e-5
UPDATE_RATIO_HIGH = 1e-1
# "For long stretches": at least half of a layer's records, in a stretch of
# at least this many consecutive records.
OUT_OF_BAND_FRACTION = 0.5
OUT_OF_BAND_MIN_POINTS = 5

# A gradient norm at or below this is zero (float32 sums of squares of
# non-zero gradients are never this small in practice).
ZERO_GRAD = 1e-30
# Fewer records than this cannot show "always zero".
DEAD_MIN_RECORDS = 3
# Parameters with no gradient whose module ran with a grad-requiring output (env.model.discarded_outputs:
# an output the loss never uses, such as N-BEATS's last backcast or a pooler a masked-LM head ignores) are
# named at info, not warned about, while they hold at most this share of the trainable parameter elements
# (a LoRA adapter whose output is dropped is most of what a frozen model trains).
DISCARDED_MAX_SHARE = 0.1

# Weights that never move although their gradients are non-zero (an
# optimizer.zero_grad() between backward and step, an optimizer over other
# parameters). An update/weight ratio at or below this is no update: the
# probe measures ||w_after - w_before|| on float32 weights, and a step that
# changed nothing gives exactly 0 (healthy corpus runs' smallest ratios,
# an annealed lr's last steps, are ~1e-7 and above).
STILL_UPDATE_RATIO = 1e-12
# Every tracked layer still at this many records (each with a non-zero
# gradient and an lr > 0): nothing learns, critical. Two records already
# rule out a first step at lr 0 (a warm-up from 0).
STILL_MIN_RECORDS = 2
# Some layers still while the others move: at this many records each.
STILL_SOME_MIN_RECORDS = 3
# The update plain SGD would make at the recorded lr, lr * ||g|| / ||w||,
# must reach this for "no update" to mean anything: a smaller one can round
# away on float32 weights (resolution 2**-23 = 1.2e-7 of each element), so
# a tiny lr is lr_too_low's business, an lr of 0 a choice.
STILL_EXPECTED_RATIO = 1e-6

SOURCE_GRADIENTS = "seed 000 (transformer training notes), seed 003 (gradient clipping); AUTOTRAINER (ICSE'21)"
# The probe's event for gradients kept from one optimizer step into the next (probe/zeroing.py).
GRADS_NOT_ZEROED_EVENT = "grads_not_zeroed"
SOURCE_NOT_ZEROED = "seed 001 (training manually: zero_grad, backward, step); the probe's grads_not_zeroed event"


def weight_matrices(run: RunData, layers: list[str]) -> list[str]:
    """The weight layers among ``layers``, in model order: what the first-to-last gradient ratio compares.

    With the probe's parameter layout (run.json ``env.model.shapes``: [name, shape] pairs in registration
    order, and ``tied``):
    the layers with at least two dimensions larger than 1, in registration order, less tied ones (an
    embedding shared with the output layer gets the output's gradient too, so it is neither first nor
    last) and norms and biases. A pooling query of shape (1, 1, d) is a vector and not a layer's weights.
    Without it (imported logs, older runs): every layer but norms and biases, ordered by name with
    numbers in numeric order (``natural_key``).
    """
    model = run.env.get("model") if isinstance(run.env, dict) else None
    shapes = model.get("shapes") if isinstance(model, dict) else None
    if isinstance(shapes, list) and all(isinstance(pair, list) and len(pair) == 2 for pair in shapes):
        shapes = dict((str(name), shape) for name, shape in shapes)
    else:
        shapes = None
    if shapes and all(layer in shapes for layer in layers):
        tied = set(model.get("tied") or [])
        present = set(layers)
        return [name for name, shape in shapes.items()
                if name in present and name not in tied and not is_norm_or_bias(name)
                and isinstance(shape, list) and sum(1 for size in shape if isinstance(size, int) and size > 1) >= 2]
    return [name for name in sorted(layers, key=natural_key) if not is_norm_or_bias(name)]


@per_run
def first_last_ratio(run: RunData) -> tuple[Curve, str, str] | None:
    """Per-record ratio of the first to the last weight layer's gradient norm (model order: :func:`weight_matrices`).

    Returns:
        None when fewer than two weight layers have a gradient norm, or no step has a finite one
        > ZERO_GRAD for both; else (ratio, first layer, last layer): ratio a float64 Curve over the
        optimizer steps where both do.
    """
    frame = layer_values(run, "grad_norm")
    if frame.empty:
        return None
    weights = weight_matrices(run, list(frame.columns))
    if len(weights) < 2:
        return None
    first, last = weights[0], weights[-1]
    first_norm = frame[first].to_numpy(dtype="float64")
    last_norm = frame[last].to_numpy(dtype="float64")
    both = (np.isfinite(first_norm) & np.isfinite(last_norm)
            & (first_norm > ZERO_GRAD) & (last_norm > ZERO_GRAD))
    if not both.any():
        return None
    return Curve(first_norm[both] / last_norm[both], frame.index[both]), first, last


def grads_not_zeroed(found: Finding) -> bool:
    """Its finding that the gradients were never zeroed: the probe's grads_not_zeroed event."""
    return found.evidence.get("kind") == GRADS_NOT_ZEROED_EVENT


# Only the probe's event, never the curves alone. Kept gradients make the
# gradient norm rise about linearly from step 1 (4.9-8x the first by steps
# 5-12, rank correlation 1, in 5 loops without zero_grad: MLP with SGD,
# with SGD and momentum, with Adam; CNN with Adam; transformer LM with
# AdamW), and none of the 26 healthy and 62 faulty corpus runs nor the 23
# sample runs that log it from step 1 comes near (healthy at most 1.4x);
# but a healthy residual MLP with zero-initialised branches and head reaches
# 1.9x with rank correlation 0.9, noisy gradients would make the bug's rise
# nearer sqrt(k), and of the 46 real logs (tests/data/real_logs) the 10
# healthy ones with a gradient norm start it at steps 10-500, where the
# early rise cannot be seen: the margin could not be checked where imported
# logs come from, and a false "you never zero the gradients" would stand
# the lr's own findings down.
def never_zeroed(run: RunData) -> list[Finding]:
    """exploding_gradients' critical finding when the probe saw gradients kept across optimizer steps; else []."""
    events = events_of(run, GRADS_NOT_ZEROED_EVENT)
    if events.empty:
        return []
    steps = to_float(events["step"])
    steps = steps[~np.isnan(steps)]
    first = int(steps.min()) if len(steps) else None
    try:
        detail = json.loads(events["detail"][0])
    except (TypeError, ValueError):
        detail = {}
    detail = detail if isinstance(detail, dict) else {}
    norm = finite(run.series("grad_norm"))
    norm = norm[norm > 0]
    after = norm[norm.index >= first] if first is not None else norm
    evidence = {"kind": GRADS_NOT_ZEROED_EVENT, "first_step": first, "parameter": detail.get("parameter"),
                "steps": detail.get("steps"), "ratio": detail.get("ratio")}
    seen = ""
    if len(after) >= 2:
        start_step, start = int(after.index[0]), float(after.iloc[0])
        end_step, end = int(after.index[-1]), float(after.iloc[-1])
        seen = (f" The global gradient norm went from {start:.3g} at step {start_step} to {end:.3g} at step "
                f"{end_step} ({end / start:.3g}×).")
        evidence.update(grad_norm_start=start, grad_norm_start_step=start_step, grad_norm_end=end,
                        grad_norm_end_step=end_step)
    parameter = repr(detail["parameter"]) if detail.get("parameter") else "a parameter"
    seen_at = (f"steps {first}–{detail['last_step']}" if isinstance(detail.get("last_step"), int)
               and first is not None and detail["last_step"] > first else f"step {first}")
    last = max(([int(norm.index.max())] if len(norm) else []) + ([first] if first is not None else []), default=None)
    return [finding(
        "exploding_gradients", "critical", "Gradients never zeroed: they pile up across optimizer steps",
        f"The probe saw the gradients carried over from one optimizer step into the next at {seen_at} "
        f"({parameter} still held the earlier steps' gradient when the next backward added to it): no "
        f"zero_grad() between optimizer steps.{seen} Each step applies the sum of all earlier gradients, so the "
        "loss thrashes as if the lr were too high.",
        "Call optimizer.zero_grad() once per optimizer step (for gradient accumulation: after optimizer.step()); "
        "do not lower the lr for this, the steps grow because the gradients pile up.",
        SOURCE_NOT_ZEROED, first, last, evidence)]


def _overflow_step(run: RunData) -> int | None:
    """The step (optimizer steps) where the global gradient norm turns non-finite for good: the first of ≥ 2
    records, all non-finite to the end of the run, with no finite training loss from there on (HF Trainer's
    masked NaNs aside); None when it never does. A finite loss after it is a run that went on: fp16 steps a
    GradScaler skipped (their unscaled norm is Inf), not an overflow that ended it."""
    raw = run.series("grad_norm")
    if len(raw) < 2:
        return None
    known = np.isfinite(raw.to_numpy(dtype="float64"))
    finite_at = np.flatnonzero(known)
    last_finite = int(finite_at[-1]) if len(finite_at) else -1
    if len(raw) - last_finite - 1 < 2:
        return None
    overflow = int(raw.index[last_finite + 1])
    loss = run.series("loss", "train")
    steps, values = loss.index.to_numpy(), loss.to_numpy(dtype="float64")
    after = (steps >= overflow) & np.isfinite(values) & ~np.isin(steps, masked_train_losses(run))
    return None if after.any() else overflow


def _records_between(run: RunData, after: int, before: int) -> int:
    """How many grad-norm records lie strictly between steps ``after`` and ``before``."""
    steps = run.series("grad_norm").index.to_numpy()
    return int(((steps > after) & (steps < before)).sum())


@rule(severities=("warning", "critical"), inputs=("grad_norm", "events", "loss"),
      evidence=Evidence.series("grad_norm"),
      heatmaps=("grad_norm",), metadata=("env.model",),
      # Gradients that pile up make ever larger steps: the loss thrashes (lr too high), spikes or diverges, the
      # early steps are unstable (as without warm-up), updates leave the band, ReLUs die, accuracy stays at the
      # majority class. Only through the finding that says so (grads_not_zeroed): a gradient explosion of
      # another cause is itself a symptom.
      explains=("lr_too_high", "loss_spike", "divergence", "missing_warmup", "update_ratio_out_of_band",
                "dead_layers", "no_better_than_baseline", "best_epoch_not_last", "underfitting"),
      explaining=grads_not_zeroed,
      live=Live(), thresholds=("GRAD_WINDOW", "GRAD_MIN_HISTORY", "EXPLODE_PEAK_FACTOR", "EXPLODE_SUSTAINED_FACTOR",
                  "EXPLODE_SUSTAINED_POINTS", "OVERFLOW_GAP", "FALLING_LOSS_RECORDS", "EXPLODE_GROWTH_FACTOR",
                  "FIRST_LAST_EXPLODING_RATIO", "ZERO_GRAD", "DEAD_MIN_RECORDS"))
def exploding_gradients(run: RunData) -> list[Finding]:
    """Gradient norm orders of magnitude above its own history, growing, or much larger in the first layer.

    Symptom: the global gradient norm jumps ≥ 100× its running median (or
    10× for several records, or 10× and then, within 2 records, Inf/NaN for
    its last ≥ 2 records with no finite training loss after: it overflowed
    and the run died; a 10× episode below 100× through which the training
    loss kept falling is only info), grows 100× over the run, or the first layer's
    gradient is ≥ 70× the last layer's; or (critical) the probe saw the
    gradients kept from one optimizer step into the next (its
    ``grads_not_zeroed`` event: the gradient norm grows because every
    backward adds to all earlier ones).
    Likely cause: too high a learning rate, a bad batch, poor initialisation,
    fp16 overflow; often precedes loss spikes and divergence. Kept
    gradients: no optimizer.zero_grad() (or model.zero_grad()) in the loop.
    Try: gradient clipping (max_grad_norm = 1), more warmup, a lower lr,
    normalisation layers or a smaller init. Kept gradients: call
    optimizer.zero_grad() once per optimizer step (after optimizer.step()
    under gradient accumulation), not a lower lr.
    Source: seeds 000 and 003 ("in case of diverged training, use gradient
    clipping"); AUTOTRAINER (ICSE'21) first/last ratio > 70; seed 001
    (training manually: zero_grad, backward, step).
    """
    not_zeroed = never_zeroed(run)
    if not_zeroed:
        # One cause: the explosion's own findings would advise clipping and a lower lr.
        return not_zeroed
    findings: list[Finding] = []
    norm = finite(run.series("grad_norm"))
    norm = norm[norm > 0]
    if len(norm) > GRAD_MIN_HISTORY:
        values = norm.to_numpy()
        baseline = trailing_median(values, GRAD_WINDOW, GRAD_MIN_HISTORY)
        factor = values / baseline
        peaks = np.flatnonzero(factor >= EXPLODE_PEAK_FACTOR)
        sustained = true_runs(factor >= EXPLODE_SUSTAINED_FACTOR, EXPLODE_SUSTAINED_POINTS)
        episodes = true_runs(factor >= EXPLODE_SUSTAINED_FACTOR, 1, max_gap=2)
        flagged = [(a, b) for a, b in episodes
                   if any(a <= p <= b for p in peaks) or any(a <= s and e <= b for s, e in sustained)]
        overflow = _overflow_step(run)
        # A norm growing ≥ 10× that overflows to Inf/NaN right after never reaches 100×: the growth ended in
        # the overflow (heldout12's N-BEATS at 10× its SGD lr: 12× and 22× its median, then NaN for good).
        overflowed = [(a, b) for a, b in episodes if (a, b) not in flagged and overflow is not None
                      and _records_between(run, int(norm.index[b]), overflow) <= OVERFLOW_GAP]
        flagged = sorted(flagged + overflowed)
        loss = finite(run.series("loss"))
        for start, end in flagged:
            if ((start, end) not in overflowed and np.nanmax(factor[start:end + 1]) < EXPLODE_PEAK_FACTOR
                    and _loss_kept_falling(loss, int(norm.index[start]), int(norm.index[end]))):
                top = start + int(np.nanargmax(factor[start:end + 1]))
                findings.append(finding(
                    "exploding_gradients", "info", "Gradient norm rose while the loss kept falling",
                    f"Global gradient norm reached {values[top]:.3g} at step {norm.index[top]}, "
                    f"{factor[top]:.0f}× its running median of {baseline[top]:.3g} (steps {norm.index[start]}–"
                    f"{norm.index[end]}), while the training loss kept falling: the gradients' scale changed as "
                    "the model sharpened (a likelihood loss as its predicted spread shrinks), not an explosion.",
                    "Nothing to do while the loss keeps falling; clip gradients (max_grad_norm = 1) if it turns.",
                    SOURCE_GRADIENTS, norm.index[start], norm.index[end],
                    {"peak_step": norm.index[top], "peak_grad_norm": values[top], "running_median": baseline[top],
                     "factor": factor[top], "loss_kept_falling": True}))
                continue
            if (start, end) in overflowed:
                top = start + int(np.nanargmax(factor[start:end + 1]))
                findings.append(finding(
                    "exploding_gradients", "warning", "Gradient norm exploded, then overflowed",
                    f"Global gradient norm rose to {values[top]:.3g} at step {norm.index[top]}, "
                    f"{factor[top]:.0f}× its running median of {baseline[top]:.3g}, and is non-finite from step "
                    f"{overflow} on: it grew until it overflowed.",
                    "Clip gradients (max_grad_norm = 1), add or lengthen warmup, lower the lr.",
                    SOURCE_GRADIENTS, norm.index[start], overflow,
                    {"peak_step": norm.index[top], "peak_grad_norm": values[top], "running_median": baseline[top],
                     "factor": factor[top], "overflow_step": overflow}))
                continue
            top = start + int(np.nanargmax(factor[start:end + 1]))
            findings.append(finding(
                "exploding_gradients", "warning", "Gradient norm exploded",
                f"Global gradient norm reached {values[top]:.3g} at step {norm.index[top]}, "
                f"{factor[top]:.0f}× its running median of {baseline[top]:.3g} "
                f"(steps {norm.index[start]}–{norm.index[end]}).",
                "Clip gradients (max_grad_norm = 1), add or lengthen warmup, lower the lr; check the batch at that step.",
                SOURCE_GRADIENTS, norm.index[start], norm.index[end],
                {"peak_step": norm.index[top], "peak_grad_norm": values[top], "running_median": baseline[top],
                 "factor": factor[top]}))
        profile = binned_medians(norm, 50)
        if len(profile) >= 5 and not flagged:
            late = window_median(norm, 0.8, 1.0)
            lowest_position = int(np.argmin(profile.to_numpy()[: int(len(profile) * 0.8)]))
            lowest = float(profile.iloc[lowest_position])
            if lowest > 0 and late / lowest >= EXPLODE_GROWTH_FACTOR:
                findings.append(finding(
                    "exploding_gradients", "warning", "Gradient norm grew by orders of magnitude",
                    f"The gradient norm grew from about {lowest:.3g} (around step {profile.index[lowest_position]}) "
                    f"to {late:.3g} in the last 20% of the run ({late / lowest:.0f}×).",
                    "Lower the lr or add a schedule, clip gradients, check for a rising lr or missing normalisation.",
                    SOURCE_GRADIENTS, profile.index[lowest_position], norm.index[-1],
                    {"early_level": lowest, "late_level": late, "factor": late / lowest}))
    ratio = first_last_ratio(run)
    if ratio is not None:
        series, first, last = ratio
        level = float(np.median(series))
        if len(series) >= DEAD_MIN_RECORDS and level >= FIRST_LAST_EXPLODING_RATIO:
            findings.append(finding(
                "exploding_gradients", "warning", "First layer's gradients far larger than the last's",
                f"Median gradient norm of {first} is {level:.0f}× that of {last}.",
                "Use normalisation layers or a smaller initialisation (e.g. scaled He/Xavier); clip gradients.",
                SOURCE_GRADIENTS, series.index[0], series.index[-1],
                {"first_layer": first, "last_layer": last, "median_ratio": level}))
    return findings


@rule(severities=("warning",), inputs=("grad_norm", "loss"), evidence=Evidence.series("grad_norm"),
      heatmaps=("grad_norm",), metadata=("env.model",), live=Live(),
      thresholds=("FIRST_LAST_VANISHING_RATIO", "STALLED_LOSS_FRACTION", "ZERO_GRAD", "DEAD_MIN_RECORDS"),
      # Early layers that get no gradient do not learn: accuracy stays at the baseline, their updates tiny.
      explains=("no_better_than_baseline", "update_ratio_out_of_band"))
def vanishing_gradients(run: RunData) -> list[Finding]:
    """Early layers get gradients orders of magnitude smaller than late layers, and learning stalls.

    Symptom: median first/last layer gradient-norm ratio ≤ 1e-2 and a loss
    whose late level is still ≥ 90 % of its early level, in a run that did
    not diverge (divergence saturates gates and shrinks their gradients).
    Likely cause: saturating activations (sigmoid/tanh) in a deep network,
    too small an initialisation, no normalisation or skip connections.
    Try: ReLU/GELU activations, He/Xavier initialisation, normalisation
    layers, residual connections, a shallower model.
    Source: seed 000; AUTOTRAINER (ICSE'21) vanishing-gradient check.
    """
    ratio = first_last_ratio(run)
    if ratio is None:
        return []
    series, first, last = ratio
    if len(series) < DEAD_MIN_RECORDS:
        return []
    level = float(np.median(series))
    loss = finite_train_loss(run)
    if len(loss) < 4:
        return []
    early, late = window_median(loss, 0.0, 0.1), window_median(loss, 0.8, 1.0)
    stalled = late >= STALLED_LOSS_FRACTION * early
    if level > FIRST_LAST_VANISHING_RATIO or not stalled:
        return []
    # A run that diverged did not stall: blown-up weights saturate sigmoid/tanh gates, whose gradients then
    # vanish as a consequence (a GRU with SGD lr 20: recurrent-bias gradients 1.8e-7× the head's).
    from traindoctor.diagnosis.loss import divergence_onset  # loss.py's rules; imported late to keep modules apart
    if divergence_onset(run) is not None:
        return []
    return [finding(
        "vanishing_gradients", "warning", "Vanishing gradients in the early layers",
        f"Median gradient norm of {first} is {level:.1e} × that of {last}, and the loss only went from "
        f"{early:.3g} to {late:.3g}.",
        "Use ReLU/GELU instead of sigmoid/tanh, He/Xavier initialisation, normalisation layers or residual "
        "connections, or a shallower model.",
        "seed 000; AUTOTRAINER (ICSE'21) first/last gradient ratio", series.index[0], series.index[-1],
        {"first_layer": first, "last_layer": last, "median_ratio": level, "early_loss": early, "late_loss": late})]


# Above the band for 20 consecutive records is a finding however the rest of
# the run goes (a run that diverges afterwards ends with tiny ratios on
# blown-up weights): the first few updates of a fresh model are often large
# (small or zero-initialised weights), 20 in a row are not. Live, only such
# a stretch is reported: "most of the run" is not known until the run ends,
# and what a live check reports, the diagnosis of the finished run must
# confirm. Below the band is left to the whole run: at the end of an
# annealed schedule (cosine to zero) every recent update is tiny, as it
# should be.
LIVE_BAND_RECORDS = 20


def band_settled(finding: Finding) -> bool:
    """Above the band only, for ≥ 20 consecutive records of a layer (below it, an annealed schedule's end is normal)."""
    return (finding.evidence.get("side") == "above"
            and finding.evidence.get("longest_stretch", 0) >= LIVE_BAND_RECORDS)


@rule(severities=("warning",), inputs=("update_ratio",), evidence=Evidence.heatmap("update_ratio"),
      heatmaps=("update_ratio",), live=Live(settled=band_settled),
      thresholds=("UPDATE_RATIO_LOW", "UPDATE_RATIO_HIGH", "OUT_OF_BAND_FRACTION", "OUT_OF_BAND_MIN_POINTS",
                  "LIVE_BAND_RECORDS"))
def update_ratio_out_of_band(run: RunData) -> list[Finding]:
    """Per-layer update/weight ratio far outside ~1e-3 for long stretches.

    Symptom: a weight layer's ||Δw||/||w|| per step (biases and norm weights
    aside) is below 1e-5 or above 1e-1 for
    at least half of its records, in a stretch of ≥ 5 consecutive records;
    or above 1e-1 for ≥ 20 consecutive records.
    Likely cause: lr far too low (below) or too high (above) for that layer;
    tiny weights (zero-initialised) make the ratio large.
    Try: scale the lr so that ratios sit near 1e-3; per-layer lr groups.
    Source: seed 004 "track ratio of weight update / weight magnitude";
    DeepDiagnosis (ICSE'22) band [1e-5, 1e-1].
    """
    frame = layer_values(run, "update_ratio")
    if frame.empty:
        return []
    layers_by_side: dict[str, list[str]] = {"below": [], "above": []}
    stretches: dict[str, list[tuple[int, int]]] = {"below": [], "above": []}
    levels: dict[str, float] = {}
    records: dict[str, int] = {}
    longest_stretch: dict[str, int] = {}
    # Weight matrices only: the rule of thumb is about weights; a bias's
    # norm is tiny (often zero-initialised) and its ratio means little.
    for layer in sorted((c for c in frame.columns if not is_norm_or_bias(c)), key=natural_key):
        values = frame[layer].to_numpy(dtype="float64")
        known = np.isfinite(values)
        if known.sum() < OUT_OF_BAND_MIN_POINTS or np.all(values[known] <= 0):
            continue  # never updated: dead_layers' business
        for side, mask in (("below", known & (values < UPDATE_RATIO_LOW)), ("above", known & (values > UPDATE_RATIO_HIGH))):
            longest = true_runs(mask, OUT_OF_BAND_MIN_POINTS)
            stretch = max((last - first + 1 for first, last in longest), default=0)
            sustained = side == "above" and stretch >= LIVE_BAND_RECORDS
            if (mask.sum() >= OUT_OF_BAND_FRACTION * known.sum() and longest) or sustained:
                layers_by_side[side].append(layer)
                levels[layer] = float(np.median(values[known]))
                records[layer] = int(known.sum())
                longest_stretch[layer] = stretch
                first, last = longest[0][0], longest[-1][1]
                stretches[side].append((int(frame.index[first]), int(frame.index[last])))
    findings = []
    for side, layers in layers_by_side.items():
        if not layers:
            continue
        bound = UPDATE_RATIO_LOW if side == "below" else UPDATE_RATIO_HIGH
        shown = ", ".join(f"{name} ({levels[name]:.1e})" for name in layers[:6])
        more = f" and {len(layers) - 6} more" if len(layers) > 6 else ""
        steps = stretches[side]
        findings.append(finding(
            "update_ratio_out_of_band", "warning", f"Update/weight ratio {side} the healthy band",
            f"{len(layers)} layer(s) have ||Δw||/||w|| {side} {bound:g} for most of the run or for at least "
            f"{min(longest_stretch[name] for name in layers)} records in a row: {shown}{more}. About 1e-3 is healthy.",
            "Lower the lr (ratios too high) or raise it (too low) until ratios sit near 1e-3; "
            "give outlier layers their own param group.",
            "seed 004 (update/weight ratio); DeepDiagnosis (ICSE'22) band [1e-5, 1e-1]",
            min(s for s, _ in steps), max(e for _, e in steps),
            {"side": side, "layers": layers, "median_ratio": {name: levels[name] for name in layers},
             "records": min(records[name] for name in layers),
             "longest_stretch": min(longest_stretch[name] for name in layers)}))
    return findings


def lr_by_step(run: RunData) -> Curve:
    """The lowest param group's lr at each recorded step (per-group ``lr`` rows, else the global ``lr``); empty when none.

    Returns:
        A float64 Curve by optimizer step, ascending, without NaN (±Inf kept).
    """
    groups = layer_values(run, "lr")
    if not groups.empty:
        lowest = np.fmin.reduce(groups.values, axis=1)  # NaN-skipping: NaN only where every group is NaN
        keep = ~np.isnan(lowest)
        return Curve(lowest[keep], groups.index[keep])
    series = run.series("lr")
    return series.dropna() if not series.empty else series


@per_run
def still_layers(run: RunData) -> dict | None:
    """Layers whose weights never moved although their gradients were non-zero and the lr was not 0.

    A layer is still when every finite update/weight ratio it has is
    <= STILL_UPDATE_RATIO; a record counts when its gradient norm is
    > ZERO_GRAD and, where the run records an lr, that lr (the lowest
    group's, carried forward to the record's step) is > 0 and
    lr * ||g|| / ||w|| >= STILL_EXPECTED_RATIO.

    Returns:
        None when the run has no per-layer update ratios; else a dict:
        ``still`` (layer -> counted records), ``moving`` (layers with a
        ratio above STILL_UPDATE_RATIO), ``steps`` (first and last counted
        step), ``grad`` (layer -> median gradient norm at those records),
        ``lr`` (median lr there, None when the run records none),
        ``no_gradient`` (layers still at >= STILL_MIN_RECORDS records that
        have no gradient row at all, in a run with no gradient norm at all).
    """
    ratios = layer_values(run, "update_ratio")
    if ratios.empty:
        return None
    grads = layer_values(run, "grad_norm")
    weights = layer_values(run, "weight_norm")
    lrs = lr_by_step(run)
    steps = ratios.index
    lr_at = (lrs.sort_index().reindex(steps, method="ffill") if not lrs.empty
             else Curve(np.full(len(steps), np.nan), steps))
    still: dict[str, int] = {}
    moving: list[str] = []
    no_gradient: list[str] = []
    any_gradient = not grads.empty or not run.series("grad_norm").dropna().empty
    grad_level: dict[str, float] = {}
    counted_steps: list[int] = []
    counted_lrs: list[float] = []
    for layer in sorted(ratios.columns, key=natural_key):
        values = ratios[layer].to_numpy(dtype="float64")
        known = np.isfinite(values)
        if not known.any():
            continue
        if np.any(values[known] > STILL_UPDATE_RATIO):
            moving.append(layer)
            continue
        if layer not in grads.columns:
            if not any_gradient and known.sum() >= STILL_MIN_RECORDS:
                no_gradient.append(layer)
            continue
        grad = grads[layer].reindex(steps).to_numpy(dtype="float64")
        weight = (weights[layer].reindex(steps).to_numpy(dtype="float64") if layer in weights.columns
                  else np.full(len(steps), np.nan))
        lr = lr_at.to_numpy(dtype="float64")
        counted = known & np.isfinite(grad) & (grad > ZERO_GRAD)
        if not lrs.empty:
            expected = np.divide(lr * grad, weight, out=np.full(len(steps), np.inf), where=np.isfinite(weight) & (weight > 0))
            counted &= np.isfinite(lr) & (lr > 0) & (expected >= STILL_EXPECTED_RATIO)
        if counted.sum() >= STILL_MIN_RECORDS:
            still[layer] = int(counted.sum())
            grad_level[layer] = float(np.median(grad[counted]))
            counted_steps += [int(steps[counted][0]), int(steps[counted][-1])]
            counted_lrs += list(lr[counted])
    return {"still": still, "moving": moving, "no_gradient": no_gradient, "steps": (min(counted_steps), max(counted_steps)) if counted_steps else None,
            "grad": grad_level, "lr": float(np.nanmedian(counted_lrs)) if counted_lrs and np.isfinite(counted_lrs).any() else None}


def weights_never_moved(run: RunData) -> list[Finding]:
    """dead_layers' findings for weights that never move although their gradients are non-zero (see dead_layers)."""
    found = still_layers(run)
    if found and not found["still"] and not found["moving"] and found["no_gradient"]:
        # Torch optimizers skip a parameter whose .grad is None: the ones this optimizer holds never got one.
        names = found["no_gradient"]
        steps = layer_values(run, "update_ratio").index
        return [finding(
            "dead_layers", "critical", "The weights never moved",
            f"Every parameter the optimizer holds ({len(names)}: {', '.join(names[:8])}" + (" …" if len(names) > 8 else "")
            + ") has an update/weight ratio of 0 at every record, and no gradient norm was recorded at all: "
            "no gradient reached the optimizer's parameters, so the model cannot learn.",
            "Build the optimizer over this model's parameters (model.parameters() of the model you train, not of "
            "a copy, and after anything that replaces them); check that backward() runs on this model's loss.",
            "seed 001 (training manually: zero_grad, backward, step), seed 004 (update/weight ratio)",
            int(steps[0]), int(steps[-1]), {"layers": names, "still": True, "gradient_recorded": False})]
    if not found or not found["still"]:
        return []
    still, moving = found["still"], found["moving"]
    names = list(still)
    shown = ", ".join(f"{name} (gradient norm {found['grad'][name]:.2g})" for name in names[:8])
    shown += " …" if len(names) > 8 else ""
    lr_text = f" at lr {found['lr']:.3g}" if found["lr"] is not None else ""
    first, last = found["steps"]
    evidence = {"layers": names, "still": True, "records": min(still.values()), "grad_norm": found["grad"],
                "lr": found["lr"], "moving_layers": len(moving)}
    if not moving:
        return [finding(
            "dead_layers", "critical", "The weights never moved",
            f"Every tracked layer's update/weight ratio is 0 at each of its records ({min(still.values())} or more, "
            f"steps {first}–{last}) while its gradients were non-zero{lr_text}: {shown}. The optimizer steps "
            "changed nothing, so the model cannot learn.",
            "Call optimizer.zero_grad() before loss.backward() or after optimizer.step(), never between them; "
            "build the optimizer over this model's parameters (not a copy's, and after anything that replaces "
            "them); check that no hook or custom optimizer skips the update.",
            "seed 001 (training manually: zero_grad, backward, step), seed 004 (update/weight ratio)",
            first, last, evidence)]
    if min(still.values()) < STILL_SOME_MIN_RECORDS:
        return []
    return [finding(
        "dead_layers", "warning", f"{len(names)} parameter(s) never updated",
        f"{len(names)} parameter(s) kept an update/weight ratio of 0 at each of their records "
        f"({min(still.values())} or more, steps {first}–{last}) while their gradients were non-zero{lr_text} "
        f"and {len(moving)} other(s) moved: {shown}.",
        "Check that these parameters are in the optimizer's param groups, and that no hook or custom optimizer "
        "skips them.",
        "seed 001 (freezing), seed 004 (update/weight ratio)", first, last, evidence)]


def _loss_kept_falling(loss: Curve, first: int, last: int) -> bool:
    """Whether the training loss fell through steps ``first``..``last`` (FALLING_LOSS_RECORDS either side).

    True when no loss record in the span is above the median of the
    FALLING_LOSS_RECORDS records before it and the median of as many records
    after it is below that median; False when either side has fewer records.
    """
    before = loss[loss.index < first].to_numpy()[-FALLING_LOSS_RECORDS:]
    after = loss[loss.index > last].to_numpy()[:FALLING_LOSS_RECORDS]
    during = loss[(loss.index >= first) & (loss.index <= last)].to_numpy()
    if len(before) < FALLING_LOSS_RECORDS or len(after) < FALLING_LOSS_RECORDS:
        return False
    level = float(np.median(before))
    return bool((during <= level).all() and np.median(after) < level)


def _discarded_outputs(run: RunData, never: list[str]) -> list[str]:
    """Those of ``never`` (parameters with no gradient at any record) the probe saw as discarded outputs.

    Returns them sorted when every one of ``never`` that the probe named in
    ``env.model.discarded_outputs`` together holds at most DISCARDED_MAX_SHARE
    of the trained parameter elements (the optimizer's param groups'
    ``num_params``, else all of ``env.model.shapes``, less ``env.model.frozen``);
    else (or when the run records neither) an empty list.
    """
    model = run.env.get("model") or {}
    named = set(model.get("discarded_outputs") or ())
    chosen = sorted((n for n in never if n in named), key=natural_key)
    if not chosen:
        return []
    sizes = {}
    for entry in model.get("shapes") or ():
        try:
            name, shape = entry
            sizes[str(name)] = float(np.prod([int(d) for d in shape])) if shape else 1.0
        except (TypeError, ValueError):
            return []
    frozen = set(model.get("frozen") or ())
    # What the optimizer trains: its param groups' elements (a LoRA optimizer holds only the adapters),
    # else every parameter; less those frozen at watch().
    groups = ((run.env.get("optimizer") or {}).get("param_groups") or ()) if isinstance(run.env, dict) else ()
    held = sum(float(group.get("num_params") or 0) for group in groups if isinstance(group, dict))
    total = (held if held > 0 else sum(sizes.values())) - sum(size for name, size in sizes.items() if name in frozen)
    if total <= 0 or any(n not in sizes for n in chosen):
        return []
    return chosen if sum(sizes[n] for n in chosen) <= DISCARDED_MAX_SHARE * total else []


@rule(severities=("info", "warning", "critical"), inputs=("grad_norm", "weight_norm", "update_ratio", "lr"),
      metadata=("env.model",), evidence=Evidence.heatmap("grad_norm"), heatmaps=("grad_norm", "update_ratio"),
      thresholds=("ZERO_GRAD", "DEAD_MIN_RECORDS", "STILL_UPDATE_RATIO", "STILL_MIN_RECORDS",
                  "STILL_SOME_MIN_RECORDS", "STILL_EXPECTED_RATIO", "DISCARDED_MAX_SHARE"),
      # Layers that stopped learning (or weights that never move) leave accuracy at the zero-rule baseline,
      # the training loss flat and high, and their update ratios below the band.
      explains=("no_better_than_baseline", "update_ratio_out_of_band", "underfitting", "lr_too_low"))
def dead_layers(run: RunData) -> list[Finding]:
    """Parameters whose gradient is always zero or missing, or whose weights never move.

    Symptom: a layer's recorded gradient norm is zero at every record (or it
    has weights but no gradient at all), or it becomes zero and stays zero;
    or its update/weight ratio is 0 (≤ 1e-12) at every record (≥ 2, ≥ 3 when
    other layers move) while its gradient norm is non-zero and the lr > 0
    (critical when no layer moved at all). Parameters the probe saw with
    requires_grad=False at watch() (env.model.frozen) are frozen on purpose:
    one info finding names them, no warning. So are parameters with no
    gradient whose module ran with a grad-requiring output at the first step
    (env.model.discarded_outputs: an output the loss never uses), while they
    hold at most DISCARDED_MAX_SHARE of the model's parameter elements.
    Likely cause: frozen by mistake (requires_grad=False), unused in
    forward(), detached graph, dead ReLUs (large negative bias); weights
    that never move: optimizer.zero_grad() between loss.backward() and
    optimizer.step(), an optimizer built over other parameters (a copy's),
    a parameter left out of the optimizer's param groups.
    Try: check requires_grad and that forward() uses the module; list
    optimizer params; use LeakyReLU/lower lr for dying ReLUs; zero the
    gradients before backward() or after step().
    Source: seed 001 (freezing the base model; training manually), seed 000,
    seed 004 (update/weight ratio).
    """
    still = weights_never_moved(run)
    grads = layer_values(run, "grad_norm")
    known_layers = set(run.layers("weight_norm")) | set(run.layers("update_ratio"))
    # Parameters the probe saw with requires_grad=False at watch(): a backbone frozen on purpose
    # and handed to the optimizer with the rest (as fine-tuning scripts do) is no mistake.
    frozen = set((run.env.get("model") or {}).get("frozen") or ())
    frozen_found: list[str] = []
    dead: dict[str, int | None] = {}
    span: list[int] = []
    if not grads.empty:
        for layer in grads.columns:
            values = grads[layer].to_numpy(dtype="float64")
            known = np.isfinite(values)
            if known.sum() < DEAD_MIN_RECORDS:
                continue
            zero = known & (np.abs(values) <= ZERO_GRAD)
            if zero[known].all() and layer in frozen:
                frozen_found.append(layer)
                continue
            if zero[known].all():
                dead[layer] = None
                span += [int(grads.index[known][0]), int(grads.index[known][-1])]
                continue
            # Died during the run: zero from some record to the end, for at least half the records.
            nonzero_positions = np.flatnonzero(known & ~zero)
            tail = known[nonzero_positions[-1] + 1:].sum() if len(nonzero_positions) else 0
            if tail >= max(DEAD_MIN_RECORDS, 0.5 * known.sum()):
                died = int(grads.index[nonzero_positions[-1] + 1])
                dead[layer] = died
                span += [died, int(grads.index[known][-1])]
    missing = sorted(known_layers - set(grads.columns), key=natural_key) if not grads.empty else []
    frozen_found = sorted(frozen_found + [name for name in missing if name in frozen], key=natural_key)
    missing = [name for name in missing if name not in frozen]
    if frozen_found:
        still = [finding(
            "dead_layers", "info", f"{len(frozen_found)} frozen parameter(s) never learn",
            f"requires_grad was False at watch() for {', '.join(frozen_found[:8])}" + (" …" if len(frozen_found) > 8 else "")
            + ": frozen on purpose, they get no gradient and the optimizer leaves them as they are.",
            "Nothing to do for a frozen backbone; to train them, set requires_grad=True before the optimizer's first step.",
            "seed 001 (freezing)", None, None, {"layers": frozen_found, "frozen": True})] + still
    discarded = _discarded_outputs(run, [n for n in dead if dead[n] is None] + missing)
    if discarded:
        dead = {n: v for n, v in dead.items() if n not in discarded}
        missing = [n for n in missing if n not in discarded]
        still = [finding(
            "dead_layers", "info", f"{len(discarded)} parameter(s) whose output the loss never uses",
            f"{', '.join(discarded[:8])}" + (" …" if len(discarded) > 8 else "")
            + " got no gradient at any record although their module ran with gradients on at the first step: "
            "its output was computed in forward() but never reached the loss (a dead end such as the last "
            "block's backcast or an unused pooler), or was cut off by .detach().",
            "Nothing to do for a dead end by design (remove the module to save its compute); if it should "
            "train (an auxiliary head whose loss was forgotten), add its output to the loss and drop any .detach().",
            "seed 001 (freezing), seed 000", None, None, {"layers": discarded, "discarded_output": True})] + still
    if not dead and not missing:
        return still
    names = sorted(dead, key=natural_key)
    parts = []
    if names:
        always = [n for n in names if dead[n] is None]
        later = [n for n in names if dead[n] is not None]
        if always:
            parts.append(f"zero gradient at every record: {', '.join(always[:8])}" + (" …" if len(always) > 8 else ""))
        if later:
            parts.append("zero gradient from some step on: " + ", ".join(f"{n} (from step {dead[n]})" for n in later[:8]))
    if missing:
        parts.append(f"no gradient recorded at all: {', '.join(missing[:8])}")
    return [finding(
        "dead_layers", "warning", f"{len(names) + len(missing)} parameter(s) never learn",
        "; ".join(parts) + ".",
        "Check requires_grad (frozen by mistake?), that forward() uses every module, that nothing is detached, "
        "and for dying ReLUs (large negative biases, too high an lr).",
        "seed 001 (freezing), seed 000", min(span) if span else None, max(span) if span else None,
        {"layers": names + missing, "died_at": {n: dead[n] for n in names if dead[n] is not None}})] + still
