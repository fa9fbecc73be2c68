"""Long runs of a tiny model: an MLP on make_classification for 5,000 to 20,000 steps, logged every 20 steps.

A 20-16-3 MLP (a few hundred parameters) on 14,000 samples in batches of
16, so 20,000 steps still take seconds. The loss, accuracy, lr and gradient norm are logged every
20 steps (that step's value, as a tracker sampling the loop), per-layer
statistics every 100 steps, val every 500 steps; one run attaches its logger
at step 2,000. Task: classification with C = 3 (one run says nothing).
"""

from __future__ import annotations

import torch

from tests.diagnosis.corpus.common import adamw, _lambda, bump_at, cosine_to_zero, decay_at, make, warmup_stable_decay
from tests.diagnosis.make_corpus import Logging, Spec, classification, width_mlp

FAMILY = "long_runs_tiny_mlp"
LOGGING = Logging(every=20, layer_every=100)


def data():
    return classification(n=20_000, features=20, classes=3, class_sep=0.8, flip_y=0.02)


def long(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, batch_size=16, eval_every=500)
    settings.update(kwargs)
    return Spec(name, description, data, settings.pop("model", width_mlp([16])), optimizer, epochs, **settings)


# 14,000 training samples in batches of 16: 875 steps per epoch; 23 epochs ≈ 20,000 steps.
EPOCHS_20K, EPOCHS_5K = 23, 6


def specs() -> list[Spec]:
    everywhere = None
    sgd = lambda lr, **kwargs: make(torch.optim.SGD, lr, **kwargs)  # noqa: E731
    return [
        long("long_healthy_sgd_constant_20k", "tiny MLP, SGD momentum 0.9 lr 0.01 constant, 20,000 steps",
             sgd(0.01, momentum=0.9), EPOCHS_20K, healthy=True),
        long("long_healthy_adam_cosine_20k", "tiny MLP, Adam 3e-3 cosine to 0, 20,000 steps",
             make(torch.optim.Adam, 3e-3), EPOCHS_20K, scheduler=cosine_to_zero(), healthy=True),
        long("long_healthy_wsd_late_logging", "tiny MLP, AdamW 3e-3 warm-up-stable-decay, logged from step 2,000",
             adamw(3e-3), EPOCHS_5K * 2, scheduler=warmup_stable_decay(0.02, 0.2),
             logging=Logging(every=20, start=2000, layer_every=100), healthy=True),
        long("long_healthy_adafactor_unknown_task", "tiny MLP, Adafactor lr 1e-2 constant, 5,250 steps, no task kind",
             make(torch.optim.Adafactor, 1e-2), EPOCHS_5K, task_kind="unknown", healthy=True),
        long("long_decayed_too_early", "tiny MLP, SGD momentum 0.9 lr 0.01, lr x0.001 after 3% of 20,000 steps",
             sgd(0.01, momentum=0.9), EPOCHS_20K, scheduler=decay_at(0.03, 1e-3),
             expect={"decayed_too_early": [500, 800]}, forbid=["lr_too_high"],
             allow=["update_ratio_out_of_band", "underfitting", "lr_too_low"]),
        long("long_loss_spike_lr_bump", "tiny MLP, Adam 3e-3, lr x100 for 60 steps at step 12,000",
             make(torch.optim.Adam, 3e-3), EPOCHS_20K, scheduler=bump_at(12_000, 60, 100.0),
             expect={"loss_spike": [11_990, 12_300]}, forbid=["divergence"],
             allow=["exploding_gradients", "best_epoch_not_last", "update_ratio_out_of_band", "lr_too_high"]),
        long("long_divergence_late",
             "tiny MLP, SGD momentum 0.9 lr 0.01, lr x1.005 per step from step 4,000 (5,250 steps)",
             sgd(0.01, momentum=0.9), EPOCHS_5K,
             scheduler=_lambda(lambda taken, total: 1.005 ** max(0, taken - 4000)),
             expect={"divergence": [4000, 5300]},
             allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high",
                    "best_epoch_not_last", "dead_layers", "no_better_than_baseline", "underperforming_classes"]),
        long("long_lr_too_low", "tiny MLP, plain SGD lr 5e-4, 5,250 steps", sgd(5e-4), EPOCHS_5K,
             expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
             allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes",
                    "no_better_than_baseline"]),
    ]
