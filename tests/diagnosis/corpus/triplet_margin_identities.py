"""A siamese MLP embedding net trained with the triplet margin loss on (anchor, positive, negative) records of synthetic identities (metric learning), Adagrad / RMSprop, step decay or cosine, logged as per-epoch means (fifteenth hold-out).

Records made here: 48 hidden identities, each a prototype in R^8
(standard normal); a record of an identity is its prototype plus
N(0, 0.9²) noise, observed through a fixed random two-layer map (8 → 24
tanh → 32, weights N(0, 1/fan-in)) plus N(0, 0.1²) sensor noise, then
standardised. A triplet is an anchor record, a second record of the same
identity (the positive) and a record of another identity (the negative):
6,000 training triplets drawn once (batches of 50, 120 steps an epoch) and
1,000 validation triplets of fresh records. The model: one shared MLP
encoder (32 → 96 → 96 → 16, ReLU) applied to the three records, its
output L2-normalised; the loss is torch's triplet margin loss (margin 0.5,
Euclidean distance) averaged over the batch. Adagrad (lr 0.05, StepLR ×0.5
every 8 epochs) or RMSprop (lr 1e-3, cosine to zero over the run). Logged
as one mean per epoch (loss, lr and the gradient norm of the epoch's last
step), per-layer statistics every 20 steps, val loss after every epoch.
There is no class and no accuracy: task kind unknown (nothing said).

Fifteenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout15``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family triplet_margin_identities``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "triplet_margin_identities"
LOGGING = Logging(per_epoch=True, layer_every=20)
IDENTITIES, LATENT, OBSERVED, EMBEDDING = 48, 8, 32, 16
MARGIN = 0.5


@functools.lru_cache(maxsize=None)
def triplets(train: int = 6000, val: int = 1000, noise: float = 0.9, seed: int = 150) -> Split:
    """(N, 3, 32) records: anchor, positive (same identity), negative (another identity); targets unused (0)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(IDENTITIES, LATENT))
    w1 = rng.normal(0, 1 / math.sqrt(LATENT), (LATENT, 24))
    w2 = rng.normal(0, 1 / math.sqrt(24), (24, OBSERVED))

    def records(identity: np.ndarray) -> np.ndarray:
        latent = prototypes[identity] + rng.normal(0, noise, (len(identity), LATENT))
        return np.tanh(latent @ w1) @ w2 + rng.normal(0, 0.1, (len(identity), OBSERVED))

    def draw(n: int) -> np.ndarray:
        anchor = rng.integers(0, IDENTITIES, n)
        negative = (anchor + rng.integers(1, IDENTITIES, n)) % IDENTITIES
        return np.stack([records(anchor), records(anchor), records(negative)], axis=1)

    x_train, x_val = draw(train), draw(val)
    mean, std = x_train.reshape(-1, OBSERVED).mean(0), x_train.reshape(-1, OBSERVED).std(0)
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    return Split(torch.tensor(x_train, dtype=torch.float32), torch.zeros(train, dtype=torch.long),
                 torch.tensor(x_val, dtype=torch.float32), torch.zeros(val, dtype=torch.long), 1)


class Siamese(nn.Module):
    """One encoder shared by the three records of a triplet: (B, 3, 32) → (B, 3, D), unit-norm embeddings."""

    def __init__(self, hidden: int = 96, embedding: int = EMBEDDING, depth: int = 2):
        super().__init__()
        layers, inputs = [], OBSERVED
        for _ in range(depth):
            layers += [nn.Linear(inputs, hidden), nn.ReLU()]
            inputs = hidden
        self.encoder = nn.Sequential(*layers)
        self.project = nn.Linear(inputs, embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(self.encoder(x)), dim=-1)


def triplet_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.triplet_margin_loss(outputs[:, 0], outputs[:, 1], outputs[:, 2], margin=MARGIN)


def siamese(**kwargs):
    return lambda data: Siamese(**kwargs)


def adagrad(lr: float):
    return lambda model: torch.optim.Adagrad([p for p in model.parameters() if p.requires_grad], lr=lr)


def rmsprop(lr: float, momentum: float = 0.0):
    return lambda model: torch.optim.RMSprop([p for p in model.parameters() if p.requires_grad], lr=lr,
                                             alpha=0.99, momentum=momentum)


def step_lr(every_epochs: int = 8, gamma: float = 0.5):
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.StepLR(optimizer, every_epochs, gamma),
                                                "epoch")


def cosine(over: int | None = None):
    """CosineAnnealingLR to zero over ``over`` steps (the run's own length when None)."""
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=over or total, eta_min=0.0), "step")


def freeze_first(model: nn.Module) -> None:
    """requires_grad off for the encoder's first layer (a 'pre-trained' layer that was never loaded)."""
    for parameter in model.encoder[0].parameters():
        parameter.requires_grad_(False)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", logging=LOGGING, batch_size=50,
                    probe_layout=True, loss=triplet_loss, scheduler=step_lr())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", triplets), settings.pop("model", siamese()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    return [
        run("triplet_healthy_adagrad", "siamese MLP (32-96-96-16, unit-norm) with the triplet margin loss (margin "
            "0.5) on synthetic identity records, Adagrad 0.05, lr x0.5 every 8 epochs, 24 epochs (2,880 steps)",
            adagrad(0.05), 24, healthy=True),
        run("triplet_healthy_adagrad_seed1", "siamese MLP, triplet margin loss, Adagrad 0.05, step decay, 24 "
            "epochs, seed 1", adagrad(0.05), 24, seed=1, healthy=True),
        run("triplet_healthy_rmsprop_cosine", "siamese MLP, triplet margin loss, RMSprop 1e-3, cosine to zero, 20 "
            "epochs, seed 2", rmsprop(1e-3), 20, scheduler=cosine(), seed=2, healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    'triplet_update_ratio_low_rmsprop': (
        "median update/weight ratio 4.9e-6 to 8.8e-6 across the layers vs the twin's 4.3e-3 to 7.2e-3; final val "
        "0.326 vs twin 0.178, 1.83x"),
    'triplet_lr_too_low_adagrad': (
        "final val 0.242 vs twin 0.177, 1.37x, val still falling at every evaluation (0.287 to 0.242); final "
        "train 0.234 vs the twin's 0.123"),
    'triplet_decayed_too_early_adagrad': (
        "val 0.202 at every evaluation from epoch 2 on while the twin goes on to 0.176; final val 1.14x the twin's; "
        "final train 0.184 vs 0.123"),
    'triplet_dead_layers_frozen_first': (
        "the first layer's weight and bias have no gradient at any step; final val 0.184 vs twin 0.177, 1.04x"),
    'triplet_train_longer_stopped': (
        "val falls at the end of every epoch (0.230, 0.215, 0.210), best at the last evaluation; final val 0.210 "
        "vs 0.196 for the twin that runs the 20 epochs, 1.07x"),
    'triplet_underfitting_linear_2d': (
        "final val 0.369 vs twin 0.177, 2.1x; final train 0.358 vs the twin's 0.123, train and val close"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("triplet_lr_too_low_adagrad", "siamese MLP, Adagrad 2e-4 (250x below the working lr: Adam's default "
            "divided by 5), step decay, 24 epochs", adagrad(2e-4), 24, expect={"lr_too_low": everywhere},
            forbid=["lr_too_high"], allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("triplet_decayed_too_early_adagrad", "siamese MLP, Adagrad 0.05, StepLR given step_size 1 and gamma "
            "0.1 (meant for a 'step per 100 epochs' job): lr x0.1 after every epoch, 5e-4 from step 241, 24 "
            "epochs", adagrad(0.05), 24,
            scheduler=step_lr(1, 0.1), expect={"decayed_too_early": [100, 400]}, forbid=["lr_too_high"],
            allow=["underfitting", "lr_too_low", "train_longer", "update_ratio_out_of_band"]),
        run("triplet_dead_layers_frozen_first", "siamese MLP whose first layer has requires_grad off (a layer "
            "meant to be loaded from a pre-trained checkpoint that never was), Adagrad 0.05, step decay, 24 epochs",
            adagrad(0.05), 24, prepare=freeze_first, expect={"dead_layers": everywhere},
            allow=["underfitting", "vanishing_gradients"]),
        run("triplet_train_longer_stopped", "siamese MLP, RMSprop 1e-4, cosine planned over 20 epochs, stopped "
            "after 3 (360 steps, lr still 94 % of its peak), val every 20 steps", rmsprop(1e-4), 3,
            scheduler=cosine(2400), eval_every=20, expect={"train_longer": everywhere},
            forbid=["overfitting", "best_epoch_not_last"], allow=["lr_too_low", "underfitting"]),
        run("triplet_underfitting_linear_2d", "a linear encoder to a 2-D embedding (depth 0: the projection "
            "alone, a debugging config left in), Adagrad 0.05, step decay, 24 epochs", adagrad(0.05), 24,
            model=siamese(depth=0, embedding=2), expect={"underfitting": everywhere},
            forbid=["overfitting", "lr_too_low"]),
        run("triplet_update_ratio_low_rmsprop", "siamese MLP, RMSprop 1e-6 (a fine-tuning config's lr, itself "
            "divided by 100 for a 'careful' run), cosine to zero, 20 epochs", rmsprop(1e-6), 20, scheduler=cosine(),
            seed=2, expect={"update_ratio_out_of_band": everywhere},
            allow=["lr_too_low", "underfitting", "train_longer"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["triplet_healthy_adagrad"] for spec in faults()}
    twins["triplet_update_ratio_low_rmsprop"] = healthy["triplet_healthy_rmsprop_cosine"]
    twins["triplet_train_longer_stopped"] = run(
        "triplet_twin_rmsprop_1e4_full", "siamese MLP, RMSprop 1e-4, cosine over the 20 planned epochs",
        rmsprop(1e-4), 20, scheduler=cosine())
    return twins
