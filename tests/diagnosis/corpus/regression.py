"""Regression (MSE) with an MLP on Friedman #1 (sklearn's synthetic benchmark), logged every step like the probe.

10 standardised features, a standardised target with noise; batches of 32,
val loss once per epoch. Task: regression (two runs say nothing).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import (adamw, cosine_to_zero, decay_at, freeze, make, one_cycle, plateau, radam,
                                           step_lr)
from tests.diagnosis.make_corpus import Spec, Split, glitch_batch, mlp

FAMILY = "regression_mlp"


@functools.lru_cache(maxsize=None)
def friedman(n: int = 2000, noise: float = 1.0, train_limit: int | None = None, seed: int = 0) -> Split:
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=n, n_features=10, noise=noise, random_state=seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    cut = int(0.7 * n)
    train, val = order[:cut], order[cut:]
    if train_limit is not None:
        train = train[:train_limit]
    x = (x - x[train].mean(0)) / x[train].std(0)
    y = (y - y[train].mean()) / y[train].std()
    tensor = lambda values: torch.tensor(values, dtype=torch.float32)  # noqa: E731
    return Split(tensor(x[train]), tensor(y[train]), tensor(x[val]), tensor(y[val]), 1)


def net(hidden: list[int], activation: type[nn.Module] = nn.ReLU):
    return lambda data: mlp([data.x_train.shape[1], *hidden, 1], activation)


def regression(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="regression")
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", friedman), settings.pop("model", net([64, 64])), optimizer,
                epochs, **settings)


DIVERGED_ALLOW = ["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                  "best_epoch_not_last", "underfitting", "overfitting"]


def specs() -> list[Spec]:
    everywhere = None
    adam = lambda lr, **kwargs: make(torch.optim.Adam, lr, **kwargs)  # noqa: E731
    sgd = lambda lr, **kwargs: make(torch.optim.SGD, lr, **kwargs)  # noqa: E731
    return [
        regression("reg_healthy_adam_constant", "MLP 10-64-64-1, Adam 1e-3 constant, 30 epochs", adam(1e-3), 30,
                   healthy=True),
        regression("reg_healthy_sgd_step", "MLP, SGD momentum 0.9 lr 0.01, StepLR x0.1 at epoch 20 of 30",
                   sgd(0.01, momentum=0.9), 30, scheduler=step_lr(20, 0.1), healthy=True),
        regression("reg_healthy_adamw_cosine", "MLP, AdamW 3e-3 cosine to 0", adamw(3e-3), 30,
                   scheduler=cosine_to_zero(), healthy=True),
        regression("reg_healthy_radam_onecycle", "MLP, RAdam 3e-3 one-cycle", radam(3e-3), 30, scheduler=one_cycle(),
                   healthy=True),
        regression("reg_healthy_adam_plateau_unknown_task", "MLP, Adam 2e-3 with ReduceLROnPlateau, no task kind",
                   adam(2e-3), 30, scheduler=plateau(0.5, 2), task_kind="unknown", healthy=True),
        regression("reg_lr_too_high_adam", "MLP, Adam 0.2 constant (200× the default)", adam(0.2), 30,
                   expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
                   allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting",
                          "underfitting", "exploding_gradients", "dead_layers"]),
        regression("reg_lr_too_low_sgd", "MLP, plain SGD lr 2e-4", sgd(2e-4), 30,
                   expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
                   allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        regression("reg_divergence_sgd", "MLP, SGD momentum 0.9 lr 0.5: the loss blows up", sgd(0.5, momentum=0.9), 10,
                   expect={"divergence": everywhere}, allow=DIVERGED_ALLOW),
        regression("reg_overfitting_small", "MLP 10-256-256-1 on 60 noisy samples, Adam 3e-3, 150 epochs",
                   adam(3e-3), 150, data=lambda: friedman(noise=3.0, train_limit=60), model=net([256, 256]),
                   expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
                   forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
        regression("reg_loss_spike_glitch", "MLP, Adam 1e-3, one batch with inputs x50 at step 600", adam(1e-3), 30,
                   batch_hook=glitch_batch(600, 50.0),
                   expect={"loss_spike": [598, 620], "exploding_gradients": [598, 605]}, forbid=["divergence"],
                   allow=["best_epoch_not_last"]),
        regression("reg_vanishing_deep_sigmoid", "10-layer sigmoid MLP, SGD 0.05", sgd(0.05), 15,
                   model=net([32] * 9, nn.Sigmoid),
                   expect={"vanishing_gradients": everywhere},
                   allow=["underfitting", "update_ratio_out_of_band", "lr_too_low", "best_epoch_not_last"]),
        regression("reg_dead_layers_frozen_first", "MLP whose first layer was frozen by mistake", adam(1e-3), 20,
                   prepare=freeze("0."),
                   expect={"dead_layers": everywhere}, allow=["underfitting", "vanishing_gradients"]),
        regression("reg_decayed_too_early", "MLP, Adam 1e-3, lr x0.001 after 8% of training", adam(1e-3), 30,
                   scheduler=decay_at(0.08, 1e-3),
                   expect={"decayed_too_early": [80, 140]}, forbid=["lr_too_high"],
                   allow=["update_ratio_out_of_band", "underfitting", "lr_too_low"]),
        regression("reg_train_longer", "MLP, Adam 3e-4, stopped after 4 epochs, 4 evals per epoch", adam(3e-4), 4,
                   evals_per_epoch=4,
                   expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
                   allow=["lr_too_low"]),
        regression("reg_update_ratio_low", "MLP, Adam 1e-6 (updates ~1e-5 of the weights)", adam(1e-6), 20,
                   expect={"update_ratio_out_of_band": everywhere},
                   allow=["lr_too_low", "underfitting", "train_longer"]),
    ]
