"""A GRU classifying noisy waveforms, logged every 25 steps as window means (held out: added after the rules).

Synthetic time series of 48 steps, one channel: a sine, square, sawtooth or
triangle wave with a random frequency, phase and amplitude, plus Gaussian
noise (4 classes; 4,000 series, 70 % for training). A one-layer GRU reads
the series and a linear head classifies its last hidden state; batches of
32 (88 steps per epoch). The loss, accuracy, lr and gradient norm are
logged every 25 steps as the mean since the previous record (a metrics
logger's running mean), per-layer statistics every 25 steps, val once per
epoch. Task: classification with C = 4 (one run says nothing).

This family, the convolutional denoiser and the word-level language model
were added after the rules were written and tuned, as a held-out test: no
rule or threshold was changed looking at them, and their labels were set
from how each run was built (with a healthy twin trained to check the fault
really does harm: ``tests/diagnosis/heldout_twins.py``) before any of them
was diagnosed.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import (bump_at, cosine_to_zero, decay_at, make, nadam, one_cycle, plateau, radam,
                                           step_lr)
from tests.diagnosis.corpus.common import adamw as common_adamw
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "gru_waveforms"
LOGGING = Logging(every=25, mean=True, layer_every=25)
LENGTH, CLASSES = 32, 4


@functools.lru_cache(maxsize=None)
def waveforms(n: int = 4000, noise: float = 0.3, train_limit: int | None = None, seed: int = 21) -> Split:
    """Series (N, LENGTH, 1) float32 and their wave shape (N,) in 0..3: sine, square, sawtooth, triangle."""
    rng = np.random.default_rng(seed)
    shape = rng.integers(0, CLASSES, size=n)
    cycles = rng.uniform(1.5, 4.0, size=(n, 1))  # periods per series
    phase = rng.uniform(0, 1, size=(n, 1))
    amplitude = rng.uniform(0.6, 1.4, size=(n, 1))
    t = np.linspace(0, 1, LENGTH)[None, :] * cycles + phase  # (N, LENGTH), in periods
    fraction = t % 1.0
    waves = np.stack([np.sin(2 * np.pi * t), np.where(fraction < 0.5, 1.0, -1.0), 2 * fraction - 1,
                      1 - 4 * np.abs(fraction - 0.5)])  # (4, N, LENGTH)
    x = amplitude * waves[shape, np.arange(n)] + noise * rng.normal(size=(n, LENGTH))
    order = rng.permutation(n)
    cut = int(0.7 * n)
    train, val = order[:cut], order[cut:]
    if train_limit is not None:
        train = train[:train_limit]
    tensor = lambda values: torch.tensor(values[..., None], dtype=torch.float32)  # noqa: E731  (N, LENGTH, 1)
    return Split(tensor(x[train]), torch.tensor(shape[train]), tensor(x[val]), torch.tensor(shape[val]), CLASSES)


class GRUClassifier(nn.Module):
    """(B, T, 1) series → (B, C) logits from the GRU's last hidden state."""

    def __init__(self, hidden: int = 32, classes: int = CLASSES):
        super().__init__()
        self.gru = nn.GRU(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(x)  # (1, B, H)
        return self.head(last[0])


def gru(hidden: int = 32):
    return lambda data: GRUClassifier(hidden, data.num_classes)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, batch_size=64)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", waveforms), settings.pop("model", gru()), optimizer, epochs,
                **settings)


def adam(lr: float, **kwargs):
    return make(torch.optim.Adam, lr, **kwargs)


def sgd(lr: float, **kwargs):
    return make(torch.optim.SGD, lr, **kwargs)


def adamw(lr: float, **kwargs):
    return common_adamw(lr, weight_decay=0.01, **kwargs)


DIVERGED_ALLOW = ["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                  "best_epoch_not_last", "underfitting", "no_better_than_baseline", "underperforming_classes"]


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("gru_healthy_adam_constant", "GRU 32, Adam 3e-3 constant, 30 epochs", adam(3e-3), 30, healthy=True),
        run("gru_healthy_sgd_step", "GRU 32, SGD momentum 0.9 lr 0.1, StepLR x0.1 at epoch 20 of 25",
            sgd(0.1, momentum=0.9), 25, scheduler=step_lr(20, 0.1), healthy=True),
        run("gru_healthy_nadam_cosine", "GRU 32, NAdam 3e-3, cosine to 0, 25 epochs", nadam(3e-3), 25,
            scheduler=cosine_to_zero(), healthy=True),
        run("gru_healthy_adamw_plateau_late_logging",
            "GRU 32, AdamW 3e-3, ReduceLROnPlateau, 25 epochs, logged from step 200 (logger attached late)",
            adamw(3e-3), 25, scheduler=plateau(0.5, 2), logging=Logging(every=25, mean=True, layer_every=25, start=200),
            healthy=True),
        run("gru_healthy_radam_onecycle_unknown_task", "GRU 32, RAdam one-cycle peaking at 1e-2, 25 epochs, no task "
                                                       "kind",
            radam(1e-2), 25, scheduler=one_cycle(), task_kind="unknown", healthy=True),
        run("gru_lr_too_high_adam", "GRU 32, Adam 0.1 constant (30x the working lr), 30 epochs. Twin (Adam 3e-3): final"
                                    " val loss 1.00 vs 0.325 (3.1x); best 0.47 at step 88, then worse", adam(0.1), 30,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "underperforming_classes"]),
        run("gru_lr_too_low_sgd", "GRU 32, SGD momentum 0.9 lr 0.01 constant (the working lr is 0.1), 25 epochs. Twin "
                                  "(lr 0.1): final val loss 1.06 vs 0.32 (3.3x), still falling",
            sgd(0.01, momentum=0.9), 25,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes",
                   "no_better_than_baseline"]),
        run("gru_train_longer", "GRU 32, Adam 3e-3 constant, stopped after 5 of 30 epochs, 4 evals per epoch. Twin (30 "
                                "epochs): final val loss 0.61 vs 0.325 (1.9x)",
            adam(3e-3), 5, evals_per_epoch=4,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underperforming_classes"]),
        run("gru_decayed_too_early", "GRU 32, AdamW 3e-3, lr x0.001 after 8% of 30 epochs. Twin (no decay): final val "
                                     "loss 1.05, flat from step ~130, vs 0.32 (3.2x)", adamw(3e-3), 30,
            scheduler=decay_at(0.08, 1e-3),
            expect={"decayed_too_early": [90, 260]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "underperforming_classes"]),
        run("gru_divergence_sgd", "GRU 32, SGD momentum 0.9 lr 20: the loss blows up (first record 189, last 291; ln 4 "
                                  "= 1.39; twin with lr 0.1 ends at 0.32)", sgd(20.0, momentum=0.9), 10,
            expect={"divergence": everywhere}, allow=DIVERGED_ALLOW),
        run("gru_loss_spike_lr_bump", "GRU 32, Adam 3e-3, lr x50 for 5 steps at step 500. Logged loss 0.44 -> 2.23 at "
                                      "step 525 (5x), back to 0.40 by step ~1000; final val loss 0.41 vs the twin's "
                                      "0.325 (1.25x)", adam(3e-3), 30,
            scheduler=bump_at(500, 5, 50.0),
            expect={"loss_spike": [495, 600]}, forbid=["divergence"],
            allow=["exploding_gradients", "best_epoch_not_last", "update_ratio_out_of_band", "lr_too_high",
                   "train_longer"]),
        run("gru_overfitting_small", "GRU 128 on 120 series, Adam 3e-3, 200 epochs (2 steps each), val every 8 steps. "
                                     "Val loss best 0.95 at step 88, final 2.41 (2.5x) while train loss falls to 0.006;"
                                     " twin on all series: 0.36",
            adam(3e-3), 200, data=lambda: waveforms(train_limit=120), model=gru(128), eval_every=8,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
        run("gru_underfitting_one_unit", "GRU with 1 hidden unit, Adam 1e-2, 30 epochs. Train loss plateaus at 1.05, "
                                         "val 1.06; twin (32 units): train 0.25, val 0.34 (3.1x)", adam(1e-2), 30,
            model=gru(1),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
            allow=["underperforming_classes", "no_better_than_baseline"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    constant = specs()[0]
    return {
        "gru_lr_too_high_adam": constant,
        "gru_lr_too_low_sgd": run("gru_twin_sgd_momentum", "GRU 32, SGD momentum 0.9 lr 0.1 constant, 25 epochs",
                                  sgd(0.1, momentum=0.9), 25),
        "gru_train_longer": run("gru_twin_adam_4_evals", "GRU 32, Adam 3e-3 constant, 30 epochs, 4 evals per epoch",
                                adam(3e-3), 30, evals_per_epoch=4),
        "gru_decayed_too_early": run("gru_twin_adamw", "GRU 32, AdamW 3e-3 constant, 30 epochs", adamw(3e-3), 30),
        "gru_divergence_sgd": specs()[1],
        "gru_loss_spike_lr_bump": constant,
        "gru_overfitting_small": run("gru_twin_full_data_128", "GRU 128 on all series, Adam 3e-3, 10 epochs",
                                     adam(3e-3), 10, model=gru(128)),
        "gru_underfitting_one_unit": run("gru_twin_adam_1e-2", "GRU 32, Adam 1e-2, 30 epochs", adam(1e-2), 30),
    }
