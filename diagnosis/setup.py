"""Setup and mixed-precision rules, from what the probe saw (events, env, amp scalars)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from traindoctor.diagnosis.common import events_of, finding, is_eval_split, is_norm_or_bias, layer_values, lint_events
from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.records import Evidence, Live, rule
from traindoctor.diagnosis.robust import finite
from traindoctor.store.frames import Curve, Table, is_missing, to_float
from traindoctor.store.run_data import RunData

# GradScaler starts at 2**16 and halves on every overflow until gradients
# fit: a stretch of skipped steps at the very start is calibration, not a
# problem. We ignore skips before the first step that was not skipped.
# After that, a healthy fp16 run skips about one step per growth_interval
# (2,000 steps by default, torch.amp.GradScaler), i.e. 0.05 %.
SKIPPED_FRACTION_WARNING = 0.01  # 20× the healthy rate
SKIPPED_MIN_STEPS = 5
SKIPPED_FRACTION_CRITICAL = 0.10
# "The loss scale keeps collapsing": after calibration, the scale falls 16×
# (four halvings, each one a skipped step) within 20 steps. BigScience
# tr8b-104B fell 32× in 6 steps (1,048,576 → 32,768); a healthy scaler
# halves about once per growth_interval (2,000 steps).
SCALE_COLLAPSE_FACTOR = 16.0
SCALE_COLLAPSE_WINDOW_STEPS = 20
# Bound the work on pathological runs (a falling scale at every step).
MAX_COLLAPSE_CANDIDATES = 10_000
# Below 1 the scaler is shrinking gradients: overflow is not a scaling issue.
SCALE_FLOOR = 1.0

# Adam hints for transformers trained from scratch: beta2 = 0.98 (seed 001,
# "Attention is all you need" setup) instead of torch's default 0.999.
TRANSFORMER_BETA2 = 0.98
# fp16 with Adam: eps 1e-8 underflows; the seed suggests 1e-7..1e-4 (002).
FP16_MIN_EPS = 1e-7

AMP_SOURCE = "seed 001 (AMP with GradScaler), seed 002 (fp16 training)"


def _skipped_steps(run: RunData) -> Curve:
    """1.0/0.0 per step from the ``amp_skipped`` scalar, else from ``amp_step_skipped`` events.

    Returns:
        A float64 Curve by optimizer step: the ``amp_skipped`` records, else one value per training-loss
        step (steps 1 to the last event's without a loss) that is 1.0 where an event was seen; empty when
        the run has neither.
    """
    skipped = finite(run.series("amp_skipped"))
    if len(skipped):
        return (skipped >= 0.5).astype("float64")
    steps = _event_steps(run, "amp_step_skipped")
    if len(steps) == 0:
        return Curve(np.empty(0, dtype="float64"), np.empty(0, dtype="int64"))
    loss = run.series("loss")
    total = loss.index.to_numpy() if len(loss) else np.arange(1, int(steps.max()) + 1)
    return Curve(np.isin(total, steps).astype("float64"), total)


@rule(severities=("warning", "critical"), inputs=("amp_skipped", "amp_scale", "loss", "events"),
      metadata=("env.amp",), evidence=Evidence.series("amp_scale"), live=Live(),
      thresholds=("SKIPPED_FRACTION_WARNING", "SKIPPED_MIN_STEPS", "SKIPPED_FRACTION_CRITICAL", "SCALE_COLLAPSE_FACTOR",
                  "SCALE_COLLAPSE_WINDOW_STEPS", "MAX_COLLAPSE_CANDIDATES", "SCALE_FLOOR"))
def amp_skipped_steps(run: RunData) -> list[Finding]:
    """GradScaler skipped many optimizer steps, or the loss scale keeps collapsing; fp16 without a scaler.

    Symptom: after the initial calibration, ≥ 1 % of steps skipped (≥ 5
    steps), or the scale falls ≥ 16× within 20 steps, or below 1; or
    fp16 autocast with no GradScaler at all.
    Likely cause: activations/gradients overflowing fp16 (too high an lr,
    unnormalised inputs, attention logits), or an inf/NaN from the model.
    Try: bf16 if the hardware has it, lower lr, gradient clipping on
    unscaled gradients, Adam eps 1e-6..1e-4, check for inf in the data.
    Source: seed 001 (GradScaler), seed 002 (fp16 training).
    """
    findings: list[Finding] = []
    amp = run.env.get("amp") or {}
    if amp.get("dtype") in ("float16", "torch.float16") and amp.get("scaler") is False:
        findings.append(finding(
            "amp_skipped_steps", "warning", "fp16 autocast without a GradScaler",
            "The run uses float16 autocast but no GradScaler: small gradients underflow to zero and "
            "overflows are not skipped.",
            "Use torch.amp.GradScaler with fp16 (scaler.scale(loss).backward(); scaler.step(opt); scaler.update()), "
            "or bf16 autocast, which needs no scaler.", AMP_SOURCE))
    skipped = _skipped_steps(run)
    if len(skipped):
        values = skipped.to_numpy()
        calibrated = np.flatnonzero(values < 0.5)
        after = values[calibrated[0]:] if len(calibrated) else values[:0]
        count = int(after.sum())
        fraction = count / max(len(after), 1)
        if count >= SKIPPED_MIN_STEPS and fraction >= SKIPPED_FRACTION_WARNING:
            steps = skipped.index[calibrated[0]:][after >= 0.5]
            severity = "critical" if fraction >= SKIPPED_FRACTION_CRITICAL else "warning"
            findings.append(finding(
                "amp_skipped_steps", severity, "GradScaler skipped many optimizer steps",
                f"{count} of {len(after)} steps after calibration ({fraction:.1%}) were skipped for inf/NaN "
                f"gradients, first at step {steps[0]}, last at step {steps[-1]}.",
                "Find what overflows (lr too high, unnormalised inputs, attention logits); try bf16, a lower lr, "
                "clipping of unscaled gradients, Adam eps 1e-6..1e-4.",
                AMP_SOURCE, steps[0], steps[-1], {"skipped": count, "steps": len(after), "fraction": fraction}))
    scale = finite(run.series("amp_scale"))
    scale = scale[scale > 0]
    if len(scale) >= 2:
        findings += _scale_collapse(scale)
    return findings


def _scale_collapse(scale: Curve) -> list[Finding]:
    """Collapses: the scale falls ≥ 16× within 20 steps, after the calibration stretch; or below 1."""
    values = scale.to_numpy()
    steps = scale.index.to_numpy()
    falling = np.flatnonzero(values[1:] < values[:-1])
    settled = np.flatnonzero(values[1:] >= values[:-1])
    # Calibration: the halvings before the scale first holds or grows.
    calibration_end = settled[0] if len(settled) else len(values)
    collapses: list[tuple[int, int]] = []
    for position in falling[falling >= calibration_end][:MAX_COLLAPSE_CANDIDATES]:
        if collapses and position <= collapses[-1][1]:
            continue
        last = int(np.searchsorted(steps, steps[position] + SCALE_COLLAPSE_WINDOW_STEPS, side="right")) - 1
        lowest = position + int(np.argmin(values[position:last + 1]))
        if values[lowest] <= values[position] / SCALE_COLLAPSE_FACTOR:
            collapses.append((int(position), lowest))
    findings = []
    if collapses:
        start, end = collapses[0]
        findings.append(finding(
            "amp_skipped_steps", "warning", "Loss scale keeps collapsing",
            f"The GradScaler scale fell {values[start] / values[end]:.0f}× ({values[start]:.0f} → {values[end]:.0f}) "
            f"between steps {steps[start]} and {steps[end]}; {len(collapses)} such collapse(s) after calibration.",
            "Every halving is a skipped step: look for what overflows (lr, data, attention logits); try bf16, "
            "a lower lr, clipping, Adam eps 1e-6..1e-4.",
            AMP_SOURCE, steps[start], steps[collapses[-1][1]],
            {"collapses": len(collapses), "from_scale": values[start], "to_scale": values[end]}))
    if float(values.min()) < SCALE_FLOOR:
        where = int(np.argmin(values))
        findings.append(finding(
            "amp_skipped_steps", "critical", "Loss scale below 1",
            f"The GradScaler scale reached {values[where]:.3g} at step {steps[where]}: gradients overflow even unscaled.",
            "The model produces inf/NaN on its own: check data and lr; fp16 cannot fix this.",
            AMP_SOURCE, steps[where], steps[where], {"lowest_scale": float(values[where])}))
    return findings


# Step ranges a mode-mistake finding spells out; the rest are counted.
LISTED_RANGES = 8
MODE_SOURCE = "seed 001 (model.train()/model.eval()), seed 002"


def _event_steps(run: RunData, kind: str) -> np.ndarray:
    """The distinct steps (int64, ascending) of the run's events of one ``kind`` (steps that are no number left out)."""
    return _numeric_steps(events_of(run, kind))


def _numeric_steps(rows: Table) -> np.ndarray:
    """The distinct values of the ``step`` column, int64, ascending; missing or non-numeric ones dropped."""
    steps = to_float(rows["step"])
    return np.unique(steps[~np.isnan(steps)].astype("int64"))


def _ranges(steps: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive integers as ``[(first, last), …]``: ``[3, 4, 5, 9]`` → ``[(3, 5), (9, 9)]``."""
    if len(steps) == 0:
        return []
    breaks = np.flatnonzero(np.diff(steps) > 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(steps) - 1]])
    return [(int(steps[a]), int(steps[b])) for a, b in zip(starts, ends)]


def _spelled(ranges: list[tuple[int, int]]) -> str:
    """``steps 44–430, 500–512`` (at most LISTED_RANGES, then how many more)."""
    parts = [f"{a}" if a == b else f"{a}–{b}" for a, b in ranges[:LISTED_RANGES]]
    more = f" and {len(ranges) - LISTED_RANGES} more ranges" if len(ranges) > LISTED_RANGES else ""
    return ("step " if len(ranges) == 1 and ranges[0][0] == ranges[0][1] else "steps ") + ", ".join(parts) + more


def eval_mode_ranges(run: RunData) -> list[tuple[int, int]]:
    """The optimizer-step ranges ``[(first, last), …]`` (inclusive) trained in eval mode.

    The probe writes ``eval_mode_during_training`` at the first step of a
    stretch and ``train_mode_restored`` at the first step back in train mode;
    a stretch that never ended lasts to the last training step recorded.
    A run of older events (one per step, or no end recorded) reads the same
    way: a stretch ends where the next one starts, if sooner.
    """
    starts = _event_steps(run, "eval_mode_during_training")
    if len(starts) == 0:
        return []
    restored = _event_steps(run, "train_mode_restored")
    loss = run.series("loss")
    last_step = max(int(starts.max()), int(loss.index.max()) if len(loss) else 0)
    ends = []
    for index, start in enumerate(starts):
        after = restored[restored > start]
        end = int(after[0]) - 1 if len(after) else last_step
        if index + 1 < len(starts) and not len(after):
            end = min(end, int(starts[index + 1]) - 1)
        ends.append(max(end, int(start)))
    merged: list[tuple[int, int]] = []
    for start, end in zip(starts.tolist(), ends):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


@rule(severities=("warning",), inputs=("events", "loss"), evidence=Evidence.events(), live=Live(),
      thresholds=("LISTED_RANGES",))
def eval_mode_during_training(run: RunData) -> list[Finding]:
    """``model.training`` was False during training steps.

    Symptom: the probe saw optimizer steps taken while the model was in eval
    mode; every stretch is reported with its first and last step. Likely cause: ``model.eval()`` for
    validation without ``model.train()`` after it. Dropout and batch-norm
    then behave as at inference; batch-norm statistics stop updating.
    Try: call ``model.train()`` at the start of every training epoch.
    Source: seed 001 ("my hunch that I will forget model.train()/eval()").
    """
    ranges = eval_mode_ranges(run)
    if not ranges:
        return []
    steps = sum(end - start + 1 for start, end in ranges)
    stretches = f" in {len(ranges)} stretches" if len(ranges) > 1 else ""
    return [finding("eval_mode_during_training", "warning", "Training steps ran in eval mode",
                    f"{steps} training step{'' if steps == 1 else 's'} ran in eval mode{stretches}: "
                    f"{_spelled(ranges)}.",
                    "Call model.train() at the start of each training epoch (after every evaluation).",
                    MODE_SOURCE, ranges[0][0], ranges[-1][1],
                    {"steps": steps, "ranges": [list(r) for r in ranges], "count": len(ranges)})]


@rule(severities=("warning",), inputs=("events",), evidence=Evidence.events(), live=Live(),
      thresholds=("LISTED_RANGES",))
def train_mode_during_eval(run: RunData) -> list[Finding]:
    """``model.training`` was True during an evaluation pass.

    Symptom: the probe saw evaluation batches run in train mode (one event
    per pass); consecutive evaluation passes in train mode are reported as
    one step range. Likely cause: no ``model.eval()`` before validation:
    dropout stays on and batch-norm uses (and updates) batch statistics, so
    val metrics are noisy and pessimistic.
    Try: ``model.eval()`` and ``torch.no_grad()`` around evaluation.
    Source: seed 001, seed 002 ("don't forget to call model.eval()").
    """
    affected = _event_steps(run, "train_mode_during_eval")
    if len(affected) == 0:
        return []
    evaluated = np.unique(np.concatenate([affected, _evaluation_steps(run)]))
    # Positions among all evaluation passes: passes in a row make one range.
    positions = np.searchsorted(evaluated, affected)
    ranges = [(int(evaluated[a]), int(evaluated[b])) for a, b in _ranges(positions)]
    passes = len(affected)
    if passes < len(evaluated):
        which = f"{passes} of {len(evaluated)} evaluation passes"
    else:
        which = f"All {passes} evaluation passes" if passes > 1 else "The evaluation pass"
    return [finding("train_mode_during_eval", "warning", "Evaluation ran in train mode",
                    f"{which} ran in train mode: {_spelled(ranges)}.",
                    "Call model.eval() (and use torch.no_grad()) before evaluating; model.train() afterwards.",
                    MODE_SOURCE, ranges[0][0], ranges[-1][1],
                    {"passes": passes, "evaluations": len(evaluated), "ranges": [list(r) for r in ranges],
                     "count": passes})]


def _evaluation_steps(run: RunData) -> np.ndarray:
    """The steps of the run's evaluation records (loss or accuracy of any eval split)."""
    scalars = run.scalars
    if scalars is None or scalars.empty or "split" not in scalars:
        return np.array([], dtype="int64")
    split_column, name_column = scalars["split"], scalars["name"]
    splits = [split for split in dict.fromkeys(split_column.tolist())
              if not is_missing(split) and is_eval_split(str(split))]
    # One comparison per value sought: np.isin would sort an object column, None and strings mixed.
    evaluated = np.zeros(len(scalars), dtype=bool)
    for split in splits:
        evaluated |= np.asarray(split_column == split, dtype=bool)
    named = np.asarray(name_column == "loss", dtype=bool) | np.asarray(name_column == "accuracy", dtype=bool)
    return _numeric_steps(scalars[evaluated & named])


_PARAM_GROUP = re.compile(r"^param group (\d+): (.*)$", re.DOTALL)


def _merged_lint_messages(lints: list[dict[str, Any]]) -> str:
    """The lints' messages, each hint once with the param groups it concerns:
    ``param groups 0, 1: Adam beta2=0.999 on an attention model; param group 1: …``."""
    groups: dict[str, list[str]] = {}
    for lint in lints:
        message = str(lint.get("message") or "")
        match = _PARAM_GROUP.match(message)
        hint, group = (match.group(2), match.group(1)) if match else (message, None)
        groups.setdefault(hint, [])
        if group is not None and group not in groups[hint]:
            groups[hint].append(group)
    parts = [hint if not numbers else f"param group{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}: {hint}"
             for hint, numbers in groups.items()]
    return "; ".join(parts)


def _param_groups(run: RunData) -> list[dict[str, Any]]:
    optimizer = run.env.get("optimizer") or {}
    groups = optimizer.get("param_groups") or []
    return [g for g in groups if isinstance(g, dict)]


# Decayed normalisation weights whose recorded norm ended at or below half of
# its first value: the decay visibly pulls them towards 0 (LayerNorm and
# BatchNorm gains start at 1), and the hint becomes a warning. Without such
# evidence it stays a hint (info): AdamW(model.parameters()) with its
# default weight_decay=0.01 decays every bias and gain, in countless healthy
# runs, and warning on each of them cost trust (5 of 12 healthy programs of
# new kinds, and healthy held-out runs, were warned for it alone).
DECAY_SHRINK_RATIO = 0.5


def _norm_weight_shrink(run: RunData, params: list[str]) -> tuple[float, dict[str, float]] | None:
    """The median over the decayed normalisation weights among ``params`` (not biases, which start near 0)
    of last / first recorded weight norm, and each one's; None when the probe recorded none of them."""
    frame = layer_values(run, "weight_norm")
    ratios: dict[str, float] = {}
    for name in params:
        if name not in frame.columns or name.lower().endswith("bias"):
            continue
        values = frame[name].to_numpy(dtype="float64")
        values = values[np.isfinite(values)]
        if len(values) >= 3 and values[0] > 0:
            ratios[name] = float(values[-1] / values[0])
    return (float(np.median(list(ratios.values()))), ratios) if ratios else None


def _decay_finding(run: RunData, params: list[str], message: str, evidence: dict[str, Any]) -> Finding:
    shrink = _norm_weight_shrink(run, params)
    if shrink is None:
        severity, seen = "info", " The probe recorded no weight norms of the normalisation weights: a hint."
    else:
        ratio, ratios = shrink
        severity = "warning" if ratio <= DECAY_SHRINK_RATIO else "info"
        seen = (f" Their norm weights ended at {ratio:.0%} of their first norm (median of {len(ratios)})"
                + (": the decay is pulling them towards 0." if severity == "warning" else ": no sign of harm yet, a hint."))
        evidence = {**evidence, "norm_weight_ratio": ratio}
    return finding("weight_decay_on_norm_and_bias", severity, "Weight decay on biases and norm weights",
                   message + seen, "Put biases and normalisation weights in a param group with weight_decay=0.",
                   "seed 001 (HF Trainer excludes them)", evidence=evidence)


@rule(severities=("info", "warning"), inputs=("events", "grad_norm", "weight_norm", "update_ratio"),
      metadata=("env.optimizer",), evidence=Evidence.events(), thresholds=("DECAY_SHRINK_RATIO",))
def weight_decay_on_norm_and_bias(run: RunData) -> list[Finding]:
    """Weight decay applied to biases and normalisation weights.

    Symptom: the probe's lint names decayed bias/norm parameters, or every
    param group has weight_decay > 0 while the model has bias/norm
    parameters (so they must be in a decayed group). A warning when the
    decayed normalisation weights' recorded norm ended at ≤ 50 % of its
    first value (median over them); otherwise a hint (info).
    Likely cause: ``AdamW(model.parameters(), weight_decay=…)`` with one group.
    Try: two param groups, weight_decay=0 for biases and norm weights (what
    the HF Trainer does).
    Source: seed 001 (HF Trainer: decay for all weights except biases and LayerNorm weights).
    """
    lints = lint_events(run, "weight_decay_on_norm_and_bias")
    if lints:
        params = sorted({p for lint in lints for p in (lint.get("params") or [])})
        message = lints[0].get("message") or "Weight decay is applied to bias/normalisation parameters."
        return [_decay_finding(
            run, params, f"{message} ({len(params)} parameter(s): {', '.join(params[:8])}{' …' if len(params) > 8 else ''}).",
            {"params": params})]
    groups = _param_groups(run)
    if not groups or not all(float(g.get("weight_decay") or 0.0) > 0 for g in groups):
        return []
    layers = set(run.layers("grad_norm")) | set(run.layers("weight_norm")) | set(run.layers("update_ratio"))
    exempt = sorted(name for name in layers if is_norm_or_bias(name))
    if not exempt:
        return []
    decay = sorted({float(g.get("weight_decay")) for g in groups})
    return [_decay_finding(
        run, exempt, f"Every param group has weight_decay > 0 ({', '.join(f'{d:g}' for d in decay)}), so the "
        f"{len(exempt)} bias/norm parameters ({', '.join(exempt[:6])}{' …' if len(exempt) > 6 else ''}) are decayed too.",
        {"params": exempt, "weight_decay": decay})]


def _is_number(value) -> bool:
    """A real number (not a bool, not None, not a string): what a param group's betas and eps must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@rule(severities=("info", "warning"), inputs=("events",), metadata=("env.optimizer", "env.model", "env.amp"),
      evidence=Evidence.events(), thresholds=("TRANSFORMER_BETA2", "FP16_MIN_EPS"))
def adam_hyperparameters(run: RunData) -> list[Finding]:
    """Adam settings that clearly contradict the seeds' hints for transformers and fp16.

    Symptom: a transformer (attention layers) trained with Adam beta2 > 0.98
    (torch default 0.999), or Adam eps < 1e-7 under fp16; or the probe's
    lint says so.
    Likely cause: library defaults made for other models.
    Try: beta2 = 0.98 for transformers from scratch; eps 1e-6..1e-4 with fp16.
    Source: seed 001 (Adam with beta2 = 0.98), seed 002 (fp16: set eps higher).
    """
    lints = lint_events(run, "adam_hyperparameters")
    if lints:  # the probe lints each param group: one finding for the run
        return [finding("adam_hyperparameters", "info", "Adam hyperparameters", _merged_lint_messages(lints),
                        "Follow the seed hints: beta2 0.98 for transformers, eps ≥ 1e-7 under fp16.",
                        "seed 001, seed 002",
                        evidence={"params": sorted({p for lint in lints for p in (lint.get("params") or [])})})]
    findings: list[Finding] = []
    optimizer = run.env.get("optimizer") or {}
    if "adam" not in str(optimizer.get("type", "")).lower():
        return []
    groups = _param_groups(run)
    # A config that leaves a value out (an HF training_args.json without adam_beta2) gives None: not a number.
    betas = [g.get("betas") for g in groups if isinstance(g.get("betas"), (list, tuple)) and len(g.get("betas")) == 2
             and all(_is_number(b) for b in g.get("betas"))]
    eps = [float(g["eps"]) for g in groups if _is_number(g.get("eps"))]
    model = run.env.get("model") or {}
    amp = run.env.get("amp") or {}
    if model.get("has_attention") and betas and max(float(b[1]) for b in betas) > TRANSFORMER_BETA2 + 1e-9:
        beta2 = max(float(b[1]) for b in betas)
        findings.append(finding(
            "adam_hyperparameters", "info", "Adam beta2 higher than the transformer recipe",
            f"A transformer is trained with Adam beta2 = {beta2:g}; the recipe for training from scratch uses 0.98.",
            "Try beta2 = 0.98 (with warmup), which reacts faster to gradient-scale changes.",
            "seed 001 (Adam with beta2 = 0.98)", evidence={"beta2": beta2}))
    if amp.get("dtype") in ("float16", "torch.float16") and eps and min(eps) < FP16_MIN_EPS:
        findings.append(finding(
            "adam_hyperparameters", "warning", "Adam eps too small for fp16",
            f"fp16 training with Adam eps = {min(eps):g}: the denominator underflows and updates blow up.",
            "Set eps to 1e-6..1e-4 under fp16 (or lower the lr about 10×).",
            "seed 002 (fp16: set eps to a higher value)", evidence={"eps": min(eps)}))
    return findings
