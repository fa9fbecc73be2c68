"""A BatchNorm MLP on imbalanced mixed-type tabular data, SGD with Nesterov, logged as per-epoch means (second hold-out).

Synthetic records of a 5-class problem made here (30,000 rows; class shares
35/25/20/12/8 %): 8 Gaussian numeric features around a class centre, 4
products of them (interactions), 2 skewed log-normal ones, and 3
categorical features of 4 levels each whose level frequencies depend on
the class, one-hot encoded: 28 inputs, the numeric ones standardised on
the training set (70 % of rows). Two hidden layers Linear → BatchNorm1d →
ReLU → Dropout(0.2), a linear head; batches of 128 (165 steps per epoch).
Logged as Lightning's ``self.log(..., on_epoch=True)`` would: the training
loss and accuracy once per epoch as the epoch's mean, with the lr and
gradient norm of the epoch's last step, per-layer statistics every 25
steps, val loss, accuracy and confusion counts once per epoch. Task:
classification with C = 5 (one run says nothing).

Added with ``vit_digits`` and ``conv_tagger_tokens`` as a second held-out
test (issue #12): written after the rules of e5debb8, labelled from how
each run was built, each fault checked against its healthy twin
(``tests/diagnosis/heldout_twins.py``) and committed before any of these
runs was diagnosed. Nothing was tuned on them.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import DIVERGED_CLASSIFIER_ALLOW
from tests.diagnosis.corpus.common import cosine_to_zero, make, one_cycle, plateau
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "bn_mlp_tabular"
LOGGING = Logging(per_epoch=True, layer_every=25)
CLASSES = 5
SHARES = (0.35, 0.25, 0.20, 0.12, 0.08)


@functools.lru_cache(maxsize=None)
def records(n: int = 30000, shares: tuple[float, ...] = SHARES, train_limit: int | None = None,
            shuffle_labels: bool = False, seed: int = 51) -> Split:
    """Rows (N, 28) float32 and their class (N,) in 0..4; ``shuffle_labels``: training labels permuted (a bug)."""
    rng = np.random.default_rng(seed)
    structure = np.random.default_rng(7)  # the same classes whatever the sample
    centres = structure.normal(scale=0.8, size=(CLASSES, 8))
    level_odds = structure.dirichlet(np.full(4, 1.5), size=(3, CLASSES))  # (variable, class, level)
    y = rng.choice(CLASSES, size=n, p=np.asarray(shares) / np.sum(shares))
    z = centres[y] + rng.normal(size=(n, 8))
    interactions = z[:, :4] * z[:, 4:8]
    skewed = np.exp(0.6 * z[:, :2] + 0.3 * rng.normal(size=(n, 2)))
    onehots = []
    for variable in range(3):
        cumulative = level_odds[variable, y].cumsum(1)
        level = (rng.random((n, 1)) > cumulative).sum(1).clip(0, 3)
        onehots.append(np.eye(4)[level])
    numeric = np.concatenate([z, interactions, np.log1p(skewed)], axis=1)
    order = rng.permutation(n)
    cut = int(0.7 * n)
    train, val = order[:cut], order[cut:]
    if train_limit is not None:
        train = train[:train_limit]
    mean, std = numeric[train].mean(0), numeric[train].std(0) + 1e-6
    x = np.concatenate([(numeric - mean) / std] + onehots, axis=1).astype(np.float32)
    y_train = y[train]
    if shuffle_labels:
        y_train = np.random.default_rng(3).permutation(y_train)
    return Split(torch.tensor(x[train]), torch.tensor(y_train), torch.tensor(x[val]), torch.tensor(y[val]), CLASSES)


class BNMLP(nn.Module):
    """(B, F) → (B, C): [Linear → BatchNorm1d → ReLU → Dropout] × len(widths), then a linear head."""

    def __init__(self, inputs: int, widths: tuple[int, ...], classes: int, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Linear(inputs, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout)]
            inputs = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(inputs, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def bn_mlp(widths: tuple[int, ...] = (128, 64), dropout: float = 0.2):
    return lambda data: BNMLP(data.x_train.shape[1], widths, data.num_classes, dropout)


def sgd(lr: float, momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 5e-4, **kwargs):
    return make(torch.optim.SGD, lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, **kwargs)


def polynomial(power: float = 2.0, total_iters: int | None = None, unit: str = "step"):
    """PolynomialLR to 0 over ``total_iters`` scheduler steps (the whole run when None), stepped per ``unit``."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.PolynomialLR(
        optimizer, total_iters=total_iters or total, power=power), unit)


def multistep(milestones: tuple[int, ...], gamma: float = 0.1):
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma), "epoch")


def scale_head(factor: float):
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.head.weight.mul_(factor)
    return prepare


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, batch_size=128)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", records), settings.pop("model", bn_mlp()), optimizer, epochs,
                **settings)


DIVERGED_ALLOW = DIVERGED_CLASSIFIER_ALLOW + ["overfitting", "class_imbalance"]


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("bn_healthy_sgd_onecycle", "BN MLP 128-64, SGD Nesterov one-cycle peaking at 0.2, 20 epochs", sgd(0.2), 20,
            scheduler=one_cycle(), healthy=True),
        run("bn_healthy_sgd_poly", "BN MLP 128-64, SGD Nesterov lr 0.1, polynomial (power 2) decay to 0 over the run, "
            "20 epochs", sgd(0.1), 20, scheduler=polynomial(2.0), healthy=True),
        run("bn_healthy_sgd_multistep_wide", "BN MLP 256-128, SGD Nesterov lr 0.05, x0.1 at epochs 12 and 17 of 20",
            sgd(0.05), 20, model=bn_mlp((256, 128)), scheduler=multistep((12, 17)), healthy=True),
        run("bn_healthy_sgd_cosine_seed2_unknown_task", "BN MLP 128-64, SGD Nesterov lr 0.1, cosine to 0, 20 epochs, "
            "seed 2, no task kind", sgd(0.1), 20, scheduler=cosine_to_zero(), seed=2, task_kind="unknown",
            healthy=True),
        run("bn_healthy_adamw_plateau", "BN MLP 128-64, AdamW 2e-3, ReduceLROnPlateau, 20 epochs",
            make(torch.optim.AdamW, 2e-3, weight_decay=1e-2), 20, scheduler=plateau(0.5, 3), healthy=True),
        run("bn_lr_too_high_sgd", "BN MLP 128-64, SGD Nesterov lr 8 constant (80x the working lr), 20 epochs",
            sgd(8.0), 20,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "underperforming_classes", "class_imbalance"]),
        run("bn_lr_too_low_sgd", "BN MLP 128-64, SGD Nesterov polynomial decay from lr 1e-4 (0.1 % of the working "
            "lr), 20 epochs", sgd(1e-4), 20, scheduler=polynomial(2.0),
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes",
                   "no_better_than_baseline", "class_imbalance"]),
        run("bn_decayed_too_early_poly_per_step", "BN MLP 128-64, SGD Nesterov lr 0.1, PolynomialLR(total_iters=20) "
            "meant as 20 epochs but stepped every batch: the lr is 0 from step 20 of 3,300", sgd(0.1), 20,
            scheduler=polynomial(2.0, total_iters=20),
            expect={"decayed_too_early": [20, 300]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "underperforming_classes",
                   "class_imbalance", "dead_layers", "train_longer"]),
        run("bn_divergence_sgd", "BN MLP 128-64, SGD Nesterov lr 200 without weight decay, 3 epochs",
            sgd(200.0, weight_decay=0.0), 3,
            expect={"divergence": everywhere}, allow=DIVERGED_ALLOW),
        run("bn_overfitting_small", "BN MLP 512-512 without dropout on 150 rows, SGD Nesterov lr 0.1 constant, "
            "150 epochs (2 steps each)", sgd(0.1, weight_decay=0.0), 150, data=lambda: records(train_limit=150),
            model=bn_mlp((512, 512), 0.0), batch_size=128,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"],
            allow=["update_ratio_out_of_band", "underperforming_classes", "class_imbalance"]),
        run("bn_underfitting_bottleneck", "BN MLP with a 2-unit first layer (2-16), SGD Nesterov one-cycle 0.2, "
            "20 epochs", sgd(0.2), 20, model=bn_mlp((2, 16)), scheduler=one_cycle(),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
            allow=["underperforming_classes", "no_better_than_baseline", "class_imbalance"]),
        run("bn_train_longer", "BN MLP 128-64, SGD Nesterov lr 0.002 constant, stopped after 2 of 20 epochs, "
            "4 evals per epoch", sgd(0.002), 2, evals_per_epoch=4,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underperforming_classes", "class_imbalance"]),
        run("bn_class_imbalance_heavy", "BN MLP 128-64, SGD Nesterov one-cycle 0.2, 20 epochs, on records whose "
            "class shares are 90/5/3/1.5/0.5 % (train and val)", sgd(0.2), 20,
            data=lambda: records(shares=(0.90, 0.05, 0.03, 0.015, 0.005)), scheduler=one_cycle(),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere},
            allow=["no_better_than_baseline", "overfitting", "best_epoch_not_last"]),
        run("bn_no_better_than_baseline_shuffled", "BN MLP 128-64, SGD Nesterov one-cycle 0.2, 20 epochs, training "
            "labels permuted (joined on the wrong key): nothing to learn but the class prior", sgd(0.2), 20,
            data=lambda: records(shuffle_labels=True), scheduler=one_cycle(),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "class_imbalance", "overfitting",
                   "best_epoch_not_last"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    return {
        "bn_lr_too_high_sgd": run("bn_twin_sgd_constant", "BN MLP 128-64, SGD Nesterov lr 0.1 constant, 20 epochs",
                                  sgd(0.1), 20),
        "bn_lr_too_low_sgd": healthy["bn_healthy_sgd_poly"],
        "bn_decayed_too_early_poly_per_step": healthy["bn_healthy_sgd_poly"],
        "bn_divergence_sgd": run("bn_twin_sgd_3_epochs", "BN MLP 128-64, SGD Nesterov lr 0.1, no weight decay, "
                                 "3 epochs", sgd(0.1, weight_decay=0.0), 3),
        "bn_overfitting_small": run("bn_twin_wide_all_rows", "BN MLP 512-512 without dropout on every row, SGD "
                                    "Nesterov lr 0.1, 5 epochs", sgd(0.1, weight_decay=0.0), 5,
                                    model=bn_mlp((512, 512), 0.0)),
        "bn_underfitting_bottleneck": healthy["bn_healthy_sgd_onecycle"],
        "bn_train_longer": run("bn_twin_sgd_0.002_4_evals", "BN MLP 128-64, SGD Nesterov lr 0.002 constant, 20 "
                               "epochs, 4 evals per epoch", sgd(0.002), 20, evals_per_epoch=4),
        "bn_class_imbalance_heavy": healthy["bn_healthy_sgd_onecycle"],
        "bn_no_better_than_baseline_shuffled": healthy["bn_healthy_sgd_onecycle"],
    }
