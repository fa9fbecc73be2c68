"""Fine-tuning a classifier from a pre-trained state: an MLP pre-trained on digits 0-4, fine-tuned on digits 5-9.

The backbone (64-128-64, ReLU) is pre-trained here on digits 0-4 (400 Adam
steps, not recorded); each run loads it, puts a fresh 5-way head on it and
fine-tunes everything on digits 5-9, logged every step like the probe, val
twice per epoch. Task: classification with C = 5.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import adamw, cosine_to_zero, make, scale_head, warmup_linear
from tests.diagnosis.make_corpus import Spec, Split, _split

FAMILY = "finetune_classifier"


def _digits(low: bool, seed: int = 0, train_limit: int | None = None, rare: tuple[int, ...] = (),
            keep: int = 0) -> Split:
    from sklearn.datasets import load_digits

    loaded = load_digits()
    chosen = loaded.target < 5 if low else loaded.target >= 5
    data = _split(loaded.data[chosen], loaded.target[chosen] - (0 if low else 5), seed, train_limit=train_limit)
    if rare:
        labels = data.y_train.numpy()
        mask = np.ones(len(labels), dtype=bool)
        for cls in rare:
            mask[np.flatnonzero(labels == cls)[keep:]] = False
        data.x_train, data.y_train = data.x_train[mask], data.y_train[mask]
    return data


def backbone() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 5))


@functools.lru_cache(maxsize=1)
def pretrained_state() -> dict[str, torch.Tensor]:
    """The backbone trained on digits 0-4 (the 'pre-trained checkpoint'); its head is replaced by each run."""
    generator = torch.Generator().manual_seed(100)
    torch.manual_seed(100)
    data = _digits(low=True)
    model = backbone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(400):
        index = torch.randint(0, len(data.y_train), (32,), generator=generator)
        loss = nn.functional.cross_entropy(model(data.x_train[index]), data.y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {name: value.detach().clone() for name, value in model.state_dict().items() if not name.startswith("4.")}


def fine_tuned(data: Split) -> nn.Module:
    model = backbone()
    model.load_state_dict(pretrained_state(), strict=False)  # a fresh head ("4.")
    return model


def ft(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", evals_per_epoch=2)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", lambda: _digits(low=False)), fine_tuned, optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    everywhere = None
    adam = lambda lr, **kwargs: make(torch.optim.Adam, lr, **kwargs)  # noqa: E731
    sgd = lambda lr, **kwargs: make(torch.optim.SGD, lr, **kwargs)  # noqa: E731
    return [
        ft("ft_healthy_adam", "fine-tune, Adam 1e-3 constant, 12 epochs", adam(1e-3), 12, healthy=True),
        ft("ft_healthy_sgd_cosine", "fine-tune, SGD momentum 0.9 lr 0.02, cosine to 0", sgd(0.02, momentum=0.9), 12,
           scheduler=cosine_to_zero(), healthy=True),
        ft("ft_healthy_adamw_warmup_linear", "fine-tune, AdamW 2e-3, warm-up + linear decay",
           adamw(2e-3), 12, scheduler=warmup_linear(0.1), healthy=True),
        ft("ft_train_longer_50_steps", "fine-tune, Adam 1e-4, batches of 26, stopped after 50 steps, val every 5 steps",
           adam(1e-4), 2, eval_every=5, batch_size=26,
           expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
           allow=["lr_too_low", "underperforming_classes"]),
        ft("ft_lr_too_high_sgd", "fine-tune, plain SGD lr 1.5 (wrecks the pre-trained features)", sgd(1.5), 12,
           expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
           allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                  "exploding_gradients", "underperforming_classes", "no_better_than_baseline", "divergence",
                  "dead_layers"]),
        ft("ft_overfitting_few_samples", "fine-tune on 40 samples, Adam 3e-3, 150 epochs, val per epoch", adam(3e-3),
           150, data=lambda: _digits(low=False, train_limit=40), evals_per_epoch=1,
           expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
           forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
        ft("ft_bad_initial_loss", "fine-tune with the fresh head's weights x30", adam(1e-3), 12,
           prepare=scale_head(30.0), expect={"bad_initial_loss": [1, 1]},
           allow=["loss_spike", "exploding_gradients"]),
        ft("ft_underperforming_rare", "fine-tune where classes 6 and 8 (digits) keep 6 training samples each",
           adam(1e-3), 12, data=lambda: _digits(low=False, rare=(1, 3), keep=6),
           expect={"underperforming_classes": everywhere}, forbid=["class_imbalance"]),
        ft("ft_lr_too_low_sgd", "fine-tune, plain SGD lr 3e-4", sgd(3e-4), 12,
           expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
           allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes"]),
    ]
