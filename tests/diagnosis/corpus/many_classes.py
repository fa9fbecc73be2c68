"""A synthetic 1,000-class problem: Gaussian clusters in 32 dimensions, an MLP, logged every step like the probe.

16 training and 4 validation samples per class; batches of 128, one
evaluation per epoch (loss, accuracy, confusion counts). Task:
classification with C = 1,000 (one run says nothing).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from tests.diagnosis.corpus.common import bump_at, cosine_to_zero, decay_at, make, nadam, one_cycle, scale_head
from tests.diagnosis.make_corpus import Spec, Split, width_mlp

FAMILY = "many_classes_mlp"
CLASSES, FEATURES = 1000, 32


@functools.lru_cache(maxsize=None)
def clusters(spread: float = 1.8, train_per_class: int = 16, val_per_class: int = 4, seed: int = 5) -> Split:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLASSES, FEATURES))
    centres *= 2.0 / np.linalg.norm(centres, axis=1, keepdims=True) * np.sqrt(FEATURES) / 4

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = np.repeat(np.arange(CLASSES), per_class)
        points = centres[labels] + spread * rng.normal(size=(len(labels), FEATURES)) / np.sqrt(FEATURES) * 2
        return torch.tensor(points, dtype=torch.float32), torch.tensor(labels)

    x_train, y_train = draw(train_per_class)
    x_val, y_val = draw(val_per_class)
    return Split(x_train, y_train, x_val, y_val, CLASSES)


def many(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", batch_size=128)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", clusters), settings.pop("model", width_mlp([128])), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    adam = lambda lr, **kwargs: make(torch.optim.Adam, lr, **kwargs)  # noqa: E731
    return [
        many("mc_healthy_adam", "MLP 32-128-1000, Adam 3e-3, 4 epochs", adam(3e-3), 4, healthy=True),
        many("mc_healthy_nadam_cosine", "MLP 32-128-1000, NAdam 3e-3, cosine to 0", nadam(3e-3), 10,
             scheduler=cosine_to_zero(), healthy=True),
        many("mc_healthy_sgd_onecycle_unknown_task",
             "MLP 32-128-1000, SGD Nesterov 0.9 lr 0.5, one-cycle, no task kind",
             make(torch.optim.SGD, 0.5, momentum=0.9, nesterov=True), 10, scheduler=one_cycle(), task_kind="unknown",
             healthy=True),
        many("mc_bad_initial_loss", "MLP whose output layer is x20 at init, Adam 3e-3", adam(3e-3), 10,
             prepare=scale_head(20.0), expect={"bad_initial_loss": [1, 1]},
             allow=["loss_spike", "exploding_gradients", "best_epoch_not_last", "overfitting"]),
        many("mc_underfitting_bottleneck", "MLP 32-8-1000 (an 8-unit bottleneck for 1,000 classes), Adam 3e-3",
             adam(3e-3), 10, model=width_mlp([8]),
             expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
             allow=["underperforming_classes", "train_longer", "no_better_than_baseline"]),
        many("mc_lr_too_low", "MLP 32-128-1000, plain SGD lr 0.05", make(torch.optim.SGD, 0.05), 10,
             expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
             allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes",
                    "no_better_than_baseline"]),
        many("mc_train_longer", "MLP 32-128-1000, Adam 1e-3, stopped after 2 epochs, 5 evals per epoch", adam(1e-3), 2,
             evals_per_epoch=5, expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
             allow=["lr_too_low", "underfitting", "underperforming_classes"]),
        many("mc_decayed_too_early", "MLP 32-128-1000, Adam 3e-3, lr x0.001 after 8% of training", adam(3e-3), 10,
             scheduler=decay_at(0.08, 1e-3), expect={"decayed_too_early": [80, 140]}, forbid=["lr_too_high"],
             allow=["update_ratio_out_of_band", "underfitting", "underperforming_classes", "lr_too_low"]),
        many("mc_loss_spike_lr_bump", "MLP 32-128-1000, Adam 2e-3, lr x100 for 3 steps at step 700", adam(2e-3), 10,
             scheduler=bump_at(700, 3, 100.0), expect={"loss_spike": [698, 740]}, forbid=["divergence"],
             allow=["exploding_gradients", "best_epoch_not_last", "update_ratio_out_of_band"]),
        many("mc_overfitting_wide", "MLP 32-1024-1000 on 4 samples per class, Adam 3e-3, 60 epochs", adam(3e-3), 60,
             data=lambda: clusters(train_per_class=4), model=width_mlp([1024]), batch_size=64,
             expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
             forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
    ]
