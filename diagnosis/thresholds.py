"""Rule thresholds set for a block of code, for the accuracy benchmark's held-out tuning.

Each rule's thresholds are module constants named in its record
(``RuleRecord.thresholds``); the defaults are what users get. ``TUNABLE``
declares the few thresholds, one per rule, that the benchmark
(``benchmarks/diagnosis_accuracy.py``) may choose on some program families
before scoring another, with the values it may choose from (the default
among them). :func:`overridden` sets such values while a block runs and
restores them after. It changes module globals, so it is for benchmarks and
tests in one thread, never for serving.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Iterator, Mapping

# Rule id → the threshold the benchmark may tune → the values it chooses from (today's default included,
# and chosen on ties). One threshold per rule, each defined and read in its rule's module only.
TUNABLE: dict[str, dict[str, tuple[float, ...]]] = {
    "lr_too_high": {"HIGH_PLATEAU_LEVEL": (0.2, 0.3, 0.4)},
    "lr_too_low": {"SLOW_TOTAL_DROP": (0.35, 0.5, 0.65)},
    "decayed_too_early": {"DECAY_FLAT_AFTER": (0.03, 0.05, 0.08)},
    "missing_warmup": {"EARLY_LOSS_RISE": (0.3, 0.5, 0.8)},
    "divergence": {"DIVERGED_MARGIN": (0.05, 0.1, 0.2)},
    "loss_spike": {"SPIKE_PEAK_SIGMAS": (7.0, 10.0, 14.0)},
    "bad_initial_loss": {"INITIAL_LOSS_TOLERANCE": (0.3, 0.5, 0.8)},
    "overfitting": {"OVERFIT_RISE": (0.05, 0.1, 0.2)},
    "best_epoch_not_last": {"BEST_EPOCH_POSITION": (0.7, 0.8, 0.9)},
    "underfitting": {"UNDERFIT_HIGH_LOSS": (0.2, 0.3, 0.4)},
    "train_longer": {"TRAIN_LONGER_VAL_IMPROVEMENT": (0.01, 0.02, 0.04)},
    "no_better_than_baseline": {"BASELINE_SE": (1.5, 2.0, 3.0)},
    "exploding_gradients": {"EXPLODE_PEAK_FACTOR": (30.0, 100.0, 300.0)},
    "vanishing_gradients": {"FIRST_LAST_VANISHING_RATIO": (0.003, 0.01, 0.03)},
    "update_ratio_out_of_band": {"OUT_OF_BAND_FRACTION": (0.3, 0.5, 0.7)},
    "underperforming_classes": {"UNDERPERFORMING_F1_GAP": (0.1, 0.15, 0.25)},
    "class_imbalance": {"IMBALANCE_RATIO": (4.0, 6.0, 8.0)},
}


def default_value(rule: str, name: str) -> float:
    """The value rule ``rule``'s threshold ``name`` has for users (its module constant).

    Raises:
        ValueError: no such rule, or the rule's record does not declare ``name`` among its thresholds.
    """
    from traindoctor.diagnosis.engine import RECORDS

    record = RECORDS.get(rule)
    if record is None:
        raise ValueError(f"no rule called {rule!r}")
    if name not in record.thresholds:
        raise ValueError(f"rule {rule!r} declares no threshold {name!r} (it has {', '.join(record.thresholds)})")
    return getattr(importlib.import_module(record.function.__module__), name)


@contextmanager
def overridden(values: Mapping[str, Mapping[str, float]]) -> Iterator[None]:
    """Set thresholds (rule id → constant name → value) while the block runs; the defaults come back after.

    Raises:
        ValueError: an unknown rule or a threshold its record does not declare (nothing is changed then).

    Example:
        >>> from traindoctor.diagnosis import loss
        >>> with overridden({"loss_spike": {"SPIKE_PEAK_SIGMAS": 7.0}}):
        ...     loss.SPIKE_PEAK_SIGMAS
        7.0
        >>> loss.SPIKE_PEAK_SIGMAS
        10.0
    """
    from traindoctor.diagnosis.engine import RECORDS

    changes = []
    for rule, settings in values.items():
        for name, value in settings.items():
            default_value(rule, name)
            changes.append((importlib.import_module(RECORDS[rule].function.__module__), name, value))
    saved = [(module, name, getattr(module, name)) for module, name, _ in changes]
    try:
        for module, name, value in changes:
            setattr(module, name, value)
        yield
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)
