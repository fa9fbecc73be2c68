"""A siamese MLP encoder trained with InfoNCE on paired views of synthetic records, no task kind, epoch means from epoch 3 (fifth hold-out).

Records made here: 60 latent prototypes in R^6; a record is a prototype
plus N(0, 0.35²) latent noise, observed through a fixed random 2-layer map
to 40 features (tanh, then linear). Each record comes as two views, each
with its own N(0, 0.3²) feature noise and 20 % of its features zeroed
(fixed at data creation, so a small training set can be memorised).
4,000 training and 500 validation pairs, batches of 100 (40 steps per
epoch). The model: one shared encoder 40-128-128-32 (GELU) and a projection
head 32-32 applied to both views, embeddings L2-normalised; the loss is
the symmetric InfoNCE (NT-Xent) over the batch with temperature 0.2: each
view must pick its partner among the other view's embeddings (about ln 100
= 4.6 at the start in training, ln 500 = 6.2 on the whole validation set,
which is evaluated as one batch; neither a class count nor a regression).
SGD with Nesterov momentum under a chained linear warm-up and exponential
decay (ChainedScheduler), AdamW under a per-epoch multiplicative decay
(MultiplicativeLR) and constant. The loss, lr and gradient norm are logged
as one mean per epoch from epoch 3 on (step 101; a callback attached
late), per-layer statistics every 20 steps, val loss after every epoch.
Task: unknown.

Fifth hold-out (issue #12); see ``tcn_tones.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "contrastive_views"
LOGGING = Logging(per_epoch=True, start=101, layer_every=20)
PROTOTYPES, LATENT, FEATURES, TEMPERATURE = 60, 6, 40, 0.2


@functools.lru_cache(maxsize=None)
def views(train: int = 4000, val: int = 500, seed: int = 97) -> Split:
    """Pairs (N, 2, FEATURES) float32 (two views of one record) and dummy targets (N,) zeros; ``num_classes`` 1."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(PROTOTYPES, LATENT))
    first, second = rng.normal(size=(LATENT, 64)) / np.sqrt(LATENT), rng.normal(size=(64, FEATURES)) / 8.0
    count = train + val
    latent = prototypes[rng.integers(0, PROTOTYPES, count)] + 0.35 * rng.normal(size=(count, LATENT))
    clean = np.tanh(latent @ first) @ second
    clean = (clean - clean.mean(0)) / clean.std(0)
    pair = np.stack([(clean + 0.3 * rng.normal(size=clean.shape)) * (rng.random(clean.shape) > 0.2)
                     for _ in range(2)], 1)
    tensor = torch.tensor(pair, dtype=torch.float32)
    zeros = torch.zeros(count, dtype=torch.long)
    return Split(tensor[:train], zeros[:train], tensor[train:], zeros[train:], 1)


class Siamese(nn.Module):
    """(B, 2, F) pairs → (B, 2, D) L2-normalised embeddings, one encoder and projection for both views."""

    def __init__(self, width: int = 128, embedding: int = 32, depth: int = 2,
                 activation: type[nn.Module] = nn.GELU):
        super().__init__()
        sizes = [FEATURES] + [width] * depth
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), activation()]
        self.encoder = nn.Sequential(*layers, nn.Linear(sizes[-1], embedding))
        self.projection = nn.Sequential(nn.GELU(), nn.Linear(embedding, embedding))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.encoder(pairs)), dim=-1)


def siamese(**kwargs):
    return lambda data: Siamese(**kwargs)


def info_nce(embeddings: torch.Tensor, _targets: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of (B, 2, D) unit embeddings: cross-entropy of each view against the other view's batch."""
    logits = embeddings[:, 0] @ embeddings[:, 1].T / TEMPERATURE  # (B, B)
    partners = torch.arange(len(logits))
    return 0.5 * (F.cross_entropy(logits, partners) + F.cross_entropy(logits.T, partners))


def sgd_nesterov(lr: float, weight_decay: float = 5e-4):
    return lambda model: torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9,
                                         nesterov=True, weight_decay=weight_decay)


def adamw(lr: float, weight_decay: float = 0.05):
    def build(model: nn.Module) -> torch.optim.Optimizer:
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        return torch.optim.AdamW([{"params": [p for _, p in named if p.ndim >= 2], "weight_decay": weight_decay},
                                  {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0}], lr=lr)
    return build


def warmup_exponential(warmup: int = 60, gamma: float = 0.998):
    """ChainedScheduler of LinearLR (from 5 % of the lr over ``warmup`` steps) and ExponentialLR(``gamma``), per step."""
    def build(optimizer, total, per_epoch):
        return torch.optim.lr_scheduler.ChainedScheduler([
            torch.optim.lr_scheduler.LinearLR(optimizer, 0.05, 1.0, total_iters=warmup),
            torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)]), "step"
    return build


def multiplicative(factor: float = 0.93):
    """MultiplicativeLR: the lr × ``factor`` after every epoch."""
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.MultiplicativeLR(optimizer, lambda epoch: factor), "epoch")


def lambda_schedule(multiplier):
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda taken: multiplier(taken, total)), "step")


def dead_encoder(model: nn.Module) -> None:
    """The encoder's second linear layer's bias set to -50 at init: its GELUs output 0 with zero slope, so the
    embedding no longer depends on the input and the layers below it get no gradient."""
    with torch.no_grad():
        model.encoder[2].bias.fill_(-50.0)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", logging=LOGGING, batch_size=100,
                    loss=info_nce, probe_layout=True)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", views), settings.pop("model", siamese()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("cv_healthy_sgd_warmup_exponential", "siamese MLP, InfoNCE, SGD Nesterov 0.9 lr 0.3 wd 5e-4, LinearLR "
            "warm-up 60 steps chained with ExponentialLR 0.998 per step, 15 epochs", sgd_nesterov(0.3), 15,
            scheduler=warmup_exponential(), healthy=True),
        run("cv_healthy_adamw_multiplicative", "siamese MLP, InfoNCE, AdamW 2e-3 wd 0.05, lr x0.93 per epoch, "
            "15 epochs", adamw(2e-3), 15, scheduler=multiplicative(0.93), healthy=True),
        run("cv_healthy_adamw_constant_seed1", "siamese MLP, InfoNCE, AdamW 1e-3 wd 0.05 constant, 15 epochs, seed 1",
            adamw(1e-3), 15, seed=1, healthy=True),
        run("cv_healthy_adamw_long", "siamese MLP, InfoNCE, AdamW 2e-3 wd 0.05, lr x0.9 per epoch, 40 epochs (1,600 "
            "steps)", adamw(2e-3), 40, scheduler=multiplicative(0.9), healthy=True),
        run("cv_lr_too_high_adamw", "siamese MLP, InfoNCE, AdamW 0.3 wd 0.05 constant (150x the working lr; at 30x "
            "it did almost no harm), 15 epochs", adamw(0.3), 15,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "dead_layers"]),
        run("cv_lr_too_low_sgd", "siamese MLP, InfoNCE, SGD Nesterov 0.9 lr 3e-3 wd 5e-4 (1/100 of the working lr), "
            "LinearLR warm-up chained with ExponentialLR 0.998, 15 epochs", sgd_nesterov(3e-3), 15,
            scheduler=warmup_exponential(),
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("cv_decayed_too_early_adamw", "siamese MLP, InfoNCE, AdamW 2e-3 wd 0.05, lr x0.003 from step 161 (epoch 5 "
            "of 15; MultiplicativeLR's factor meant per epoch applied once as a step drop), 15 epochs", adamw(2e-3), 15,
            scheduler=lambda_schedule(lambda taken, total: 0.003 if taken + 1 >= 161 else 1.0),
            expect={"decayed_too_early": [140, 320]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer"]),
        run("cv_update_ratio_low_adamw", "siamese MLP, InfoNCE, AdamW 2e-7 wd 0.05 (1/10,000 of the working lr), "
            "15 epochs", adamw(2e-7), 15,
            expect={"update_ratio_out_of_band": everywhere}, allow=["lr_too_low", "underfitting", "train_longer"]),
        run("cv_divergence_sgd", "siamese MLP, InfoNCE, SGD Nesterov 0.9 lr 0.3 wd 5e-4 growing x1.02 per step after "
            "the warm-up (an lr range test left running), 15 epochs", sgd_nesterov(0.3), 15,
            scheduler=lambda_schedule(lambda taken, total: min(1.0, 0.05 + taken / 60) * 1.02 ** max(0, taken - 60)),
            expect={"divergence": everywhere},
            allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                   "best_epoch_not_last", "underfitting", "overfitting"]),
        run("cv_overfitting_few_pairs", "siamese MLP of width 512 on 100 training pairs (1 step per epoch), AdamW "
            "2e-3 wd 0.05 constant, 400 epochs", adamw(2e-3), 400, data=lambda: views(train=100),
            model=siamese(width=512),
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
        run("cv_dead_layers_dead_gelu", "siamese MLP whose encoder's second layer has bias -50 at init (its GELUs "
            "dead), AdamW 2e-3 wd 0.05, lr x0.93 per epoch, 15 epochs", adamw(2e-3), 15,
            scheduler=multiplicative(0.93), prepare=dead_encoder,
            expect={"dead_layers": everywhere},
            allow=["underfitting", "vanishing_gradients", "update_ratio_out_of_band", "lr_too_low"]),
        run("cv_train_longer", "siamese MLP, InfoNCE, AdamW 5e-4 wd 0.05 constant, stopped after 6 of 15 epochs "
            "(240 steps)", adamw(5e-4), 6,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low"]),
        run("cv_underfitting_linear_2d", "siamese encoder a single linear map to 2 dimensions (no hidden layer), "
            "AdamW 2e-3 wd 0.05, lr x0.93 per epoch, 15 epochs", adamw(2e-3), 15, scheduler=multiplicative(0.93),
            model=siamese(depth=0, embedding=2),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    sgd_run, adamw_run = healthy["cv_healthy_sgd_warmup_exponential"], healthy["cv_healthy_adamw_multiplicative"]
    constant = run("cv_twin_adamw_2e-3_constant", "siamese MLP, InfoNCE, AdamW 2e-3 wd 0.05 constant, 15 epochs",
                   adamw(2e-3), 15)
    return {
        "cv_lr_too_high_adamw": constant,
        "cv_lr_too_low_sgd": sgd_run,
        "cv_decayed_too_early_adamw": constant,
        "cv_update_ratio_low_adamw": constant,
        "cv_divergence_sgd": sgd_run,
        "cv_overfitting_few_pairs": run("cv_twin_wide_all_pairs", "siamese MLP of width 512 on all the pairs, AdamW "
                                        "2e-3 wd 0.05 constant, 15 epochs", adamw(2e-3), 15, model=siamese(width=512)),
        "cv_dead_layers_dead_gelu": adamw_run,
        "cv_train_longer": run("cv_twin_adamw_5e-4", "siamese MLP, InfoNCE, AdamW 5e-4 wd 0.05 constant, 15 epochs",
                               adamw(5e-4), 15),
        "cv_underfitting_linear_2d": adamw_run,
    }
