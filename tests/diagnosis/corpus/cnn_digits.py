"""A small CNN on the 8×8 digit images, logged like Keras: one mean per epoch, val after each epoch.

Digits as (1, 8, 8) images; two 3×3 convolutions, global pooling and a
linear head; batches of 32. The training loss, accuracy, lr and gradient
norm are recorded once per epoch (the epoch's mean loss and accuracy), no
per-layer statistics. Task: classification with C = 10.
"""

from __future__ import annotations

import torch
from torch import nn

from tests.diagnosis.corpus.common import adamw, cosine_to_zero, freeze, make, one_cycle, plateau, step_lr
from tests.diagnosis.make_corpus import Logging, Spec, Split, digits, imbalanced_digits

FAMILY = "cnn_digits_epoch_means"
LOGGING = Logging(per_epoch=True, layer_every=None)


def images(split: Split) -> Split:
    split.x_train = split.x_train.reshape(-1, 1, 8, 8)
    split.x_val = split.x_val.reshape(-1, 1, 8, 8)
    return split


def shuffled_labels(split: Split) -> Split:
    """The training labels permuted (a join on the wrong key): nothing to learn but the class prior."""
    split.y_train = split.y_train[torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(3))]
    return split


def cnn(channels: int = 16, hidden: int = 32):
    def build(data: Split) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * hidden, data.num_classes))
    return build


def conv(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", lambda: images(digits())), settings.pop("model", cnn()),
                optimizer, epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    adam = lambda lr, **kwargs: make(torch.optim.Adam, lr, **kwargs)  # noqa: E731
    sgd = lambda lr, **kwargs: make(torch.optim.SGD, lr, **kwargs)  # noqa: E731
    return [
        conv("cnn_healthy_sgd_plateau", "CNN, SGD momentum 0.9 lr 0.05, ReduceLROnPlateau, 30 epochs",
             sgd(0.05, momentum=0.9), 30, scheduler=plateau(0.5, 2), healthy=True),
        conv("cnn_healthy_adam_onecycle", "CNN, Adam 5e-3 one-cycle, 30 epochs", adam(5e-3), 30, scheduler=one_cycle(),
             healthy=True),
        conv("cnn_healthy_adamw_step", "CNN, AdamW 2e-3, StepLR x0.1 at epoch 20 of 30",
             adamw(2e-3, weight_decay=0.05), 30, scheduler=step_lr(20, 0.1), healthy=True),
        conv("cnn_healthy_nadam_cosine", "CNN, NAdam 3e-3, cosine to 0, 30 epochs", make(torch.optim.NAdam, 3e-3), 30,
             scheduler=cosine_to_zero(), healthy=True),
        conv("cnn_overfitting_small", "wide CNN on 120 digits, Adam 3e-3, 150 epochs", adam(3e-3), 150,
             data=lambda: images(digits(train_limit=120)), model=cnn(64, 128),
             expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
             forbid=["underfitting", "train_longer"]),
        conv("cnn_lr_too_high_sgd", "CNN, plain SGD lr 2.5 (noisy, stuck high)", sgd(2.5), 30,
             expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
             allow=["best_epoch_not_last", "overfitting", "underfitting", "underperforming_classes", "loss_spike",
                    "no_better_than_baseline"]),
        conv("cnn_underfitting_one_channel", "CNN with 1 channel and a 1-unit feature (pooled to 1×1), Adam 3e-2",
             adam(3e-2), 60,
             model=lambda data: nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                              nn.Flatten(), nn.Linear(1, data.num_classes)),
             expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
             allow=["underperforming_classes", "no_better_than_baseline"]),
        conv("cnn_dead_layers_frozen_conv", "CNN whose second convolution was frozen by mistake, Adam 3e-3",
             adam(3e-3), 30, prepare=freeze("2."), logging=Logging(per_epoch=True, layer_every=10),
             expect={"dead_layers": everywhere},
             allow=["underfitting", "underperforming_classes", "vanishing_gradients"]),
        conv("cnn_class_imbalance", "CNN on digits where classes 5-9 keep 8% of their samples", adam(3e-3), 40,
             data=lambda: images(imbalanced_digits()),
             expect={"class_imbalance": everywhere}, allow=["underperforming_classes"]),
        conv("cnn_no_better_than_baseline_shuffled", "CNN on digits whose training labels were shuffled, Adam 1e-3",
             adam(1e-3), 30, data=lambda: images(shuffled_labels(digits())),
             expect={"no_better_than_baseline": everywhere},
             allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last"]),
        conv("cnn_lr_too_low_sgd", "CNN, plain SGD lr 2e-3 for 100 epochs on half the digits", sgd(2e-3), 100,
             data=lambda: images(digits(train_limit=600)),
             expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
             allow=["train_longer", "underfitting", "underperforming_classes"]),
    ]
