"""Run every rule on a run and collect the findings, sorted by severity then step."""

from __future__ import annotations

import logging
from typing import Callable

from traindoctor.diagnosis import classes, curves, gradients, setup
from traindoctor.diagnosis.finding import SEVERITY_RANK, Finding
from traindoctor.store.run_data import RunData

logger = logging.getLogger(__name__)

Rule = Callable[[RunData], list[Finding]]

# Rule id (RULES.md, spelled exactly) → function. Each rule returns [] when
# the run lacks its inputs, so a loss-only CSV still gets the loss rules.
RULES: dict[str, Rule] = {
    "lr_too_high": curves.lr_too_high,
    "lr_too_low": curves.lr_too_low,
    "decayed_too_early": curves.decayed_too_early,
    "divergence": curves.divergence,
    "loss_spike": curves.loss_spike,
    "overfitting": curves.overfitting,
    "best_epoch_not_last": curves.best_epoch_not_last,
    "underfitting": curves.underfitting,
    "train_longer": curves.train_longer,
    "bad_initial_loss": curves.bad_initial_loss,
    "no_better_than_baseline": curves.no_better_than_baseline,
    "missing_warmup": curves.missing_warmup,
    "exploding_gradients": gradients.exploding_gradients,
    "vanishing_gradients": gradients.vanishing_gradients,
    "update_ratio_out_of_band": gradients.update_ratio_out_of_band,
    "dead_layers": gradients.dead_layers,
    "amp_skipped_steps": setup.amp_skipped_steps,
    "eval_mode_during_training": setup.eval_mode_during_training,
    "train_mode_during_eval": setup.train_mode_during_eval,
    "weight_decay_on_norm_and_bias": setup.weight_decay_on_norm_and_bias,
    "adam_hyperparameters": setup.adam_hyperparameters,
    "underperforming_classes": classes.underperforming_classes,
    "class_imbalance": classes.class_imbalance,
}


# A finding that only restates the symptom of a more specific cause is
# dropped when that cause is found: "more capacity" is wrong advice when the
# gradients vanish, and a diverged run's accuracy need not be compared with
# the zero-rule baseline. Key: rule dropped; value: rules that explain it
# (warning or critical findings only).
EXPLAINED_BY: dict[str, tuple[str, ...]] = {
    "underfitting": ("divergence", "vanishing_gradients", "dead_layers", "no_better_than_baseline",
                     "decayed_too_early", "lr_too_high", "lr_too_low", "missing_warmup"),
    "no_better_than_baseline": ("divergence",),
    "best_epoch_not_last": ("divergence",),
    "underperforming_classes": ("no_better_than_baseline", "divergence"),
    # "Train longer" is wrong advice when the lr is too high or the model already overfits.
    "train_longer": ("lr_too_high", "divergence", "overfitting"),
}


def drop_explained(findings: list[Finding]) -> list[Finding]:
    """Remove findings whose rule is explained by a more specific warning/critical finding (EXPLAINED_BY)."""
    causes = {f.rule for f in findings if f.severity in ("warning", "critical")}
    return [f for f in findings if not set(EXPLAINED_BY.get(f.rule, ())) & causes]


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Critical first, then by first step (whole-run findings first), then rule id."""
    return sorted(findings, key=lambda f: (-SEVERITY_RANK[f.severity],
                                           f.step_start if f.step_start is not None else -1, f.rule))


def diagnose(run: RunData, *, strict: bool = False, rules: dict[str, Rule] | None = None) -> list[Finding]:
    """All findings for one run, sorted by severity (critical first) then step.

    Findings explained by a more specific cause are dropped (EXPLAINED_BY).

    A rule that raises on odd data is logged and skipped so the others still
    run; ``strict=True`` re-raises instead (the tests use it so such bugs show).

    Example:
        >>> from dashboard.diagnosis import RunData, diagnose
        >>> diagnose(RunData(run_id="empty", name="empty"))
        []
    """
    findings: list[Finding] = []
    for rule_id, rule in (rules or RULES).items():
        try:
            findings.extend(rule(run))
        except Exception:
            if strict:
                raise
            logger.warning("rule %s failed on run %s; skipped", rule_id, run.run_id, exc_info=True)
    return sort_findings(drop_explained(findings))
