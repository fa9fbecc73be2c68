"""A small 2-D ResNet with GroupNorm classifying synthetic 12×12 shape images into 10 classes from training labels with 10 % noise, SGD with momentum, one-cycle or cosine to zero, logged every step (fifteenth hold-out).

Images made here: 12×12 pixels, one channel, a shape drawn at a random
centre (4-8 on each axis) and size (2.5-4 pixels): a filled square, a disc,
a ring, a plus, an X, a horizontal bar, a vertical bar, a triangle, a
hollow square or a diamond (classes 0-9), with an intensity of 0.7-1.3 and
Gaussian pixel noise (σ 0.2). 3,000 training images (300 a class) whose
labels are replaced by a uniformly drawn class 10 % of the time (an
annotation pipeline's noise), 1,000 validation images (100 a class, clean
labels); batches of 64 (47 steps an epoch). The model: a stem convolution
1→16 (3×3), GroupNorm (4 groups), ReLU; two residual basic blocks (16→16,
16→32 stride 2; 3×3 convolutions, GroupNorm, a 1×1 projection when the
shape changes), global average pooling and a linear head to 10 logits;
cross-entropy. SGD with momentum 0.9, weight decay 5e-4, OneCycleLR to a
peak of 0.1 (or CosineAnnealingLR from 0.05 to zero), stepped per step.
Logged every step (loss, batch accuracy, lr, gradient norm), per-layer
statistics every 10 steps, val loss, accuracy and confusion counts after
every epoch. Task: classification, C = 10.

Fifteenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout15``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family gn_resnet_noisy_shapes``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "gn_resnet_noisy_shapes"
LOGGING = Logging(layer_every=10)
SIDE, CLASSES = 12, 10


def _shapes(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    grid = np.arange(SIDE, dtype=float)
    cx, cy = rng.uniform(4, 8, n)[:, None, None], rng.uniform(4, 8, n)[:, None, None]
    s = rng.uniform(2.5, 4.0, n)[:, None, None]
    dx, dy = grid[None, None, :] - cx, grid[None, :, None] - cy
    r, box, w = np.hypot(dx, dy), np.maximum(abs(dx), abs(dy)), 0.8
    masks = [
        box <= s,
        r <= s,
        abs(r - s) <= w,
        ((abs(dx) <= w) & (abs(dy) <= s)) | ((abs(dy) <= w) & (abs(dx) <= s)),
        (abs(abs(dx) - abs(dy)) <= w) & (box <= s),
        (abs(dy) <= w) & (abs(dx) <= s + 1),
        (abs(dx) <= w) & (abs(dy) <= s + 1),
        (dy <= s) & (abs(dx) <= (dy + s) / 2),
        (box <= s) & (box >= s - w),
        abs(dx) + abs(dy) <= s,
    ]
    x = np.zeros((n, SIDE, SIDE))
    for k, mask in enumerate(masks):
        x += np.where((labels == k)[:, None, None] & mask, 1.0, 0.0)
    x *= rng.uniform(0.7, 1.3, (n, 1, 1))
    x += rng.normal(0, 0.2, x.shape)
    return x.astype(np.float32)


@functools.lru_cache(maxsize=None)
def shapes(per_class: tuple[int, ...] = (300,) * CLASSES, val_per_class: tuple[int, ...] = (100,) * CLASSES,
           label_noise: float = 0.1, seed: int = 151) -> Split:
    """Training images ``per_class[k]`` of class k (labels flipped to a random class ``label_noise`` of the time);
    validation images ``val_per_class[k]`` of class k with clean labels."""
    rng = np.random.default_rng(seed)
    y_train = rng.permutation(np.repeat(np.arange(CLASSES), per_class))
    y_val = np.repeat(np.arange(CLASSES), val_per_class)
    x_train, x_val = _shapes(y_train, rng), _shapes(y_val, rng)
    flip = rng.random(len(y_train)) < label_noise
    y_train = np.where(flip, rng.integers(0, CLASSES, len(y_train)), y_train)
    mean, std = x_train.mean(), x_train.std()
    return Split(torch.tensor((x_train - mean) / std)[:, None], torch.tensor(y_train, dtype=torch.long),
                 torch.tensor((x_val - mean) / std)[:, None], torch.tensor(y_val, dtype=torch.long), CLASSES)


class Block(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(4, outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(4, outputs)
        self.project = (nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False),
                                      nn.GroupNorm(4, outputs))
                        if stride != 1 or inputs != outputs else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x)))))
        return torch.relu(out + (x if self.project is None else self.project(x)))


class ShapesResNet(nn.Module):
    def __init__(self, width: int = 16, auxiliary_head: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.stem_norm = nn.GroupNorm(4, width)
        self.blocks = nn.Sequential(Block(width, width), Block(width, 2 * width, 2))
        self.head = nn.Linear(2 * width, CLASSES)
        # A deep-supervision head on the first block's features that forward() was meant to add to the loss.
        self.auxiliary = nn.Linear(width, CLASSES) if auxiliary_head else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.blocks(torch.relu(self.stem_norm(self.stem(x))))
        return self.head(hidden.mean((2, 3)))


def resnet(**kwargs):
    return lambda data: ShapesResNet(**kwargs)


def sgd(lr: float, momentum: float = 0.9, weight_decay: float = 5e-4):
    return lambda model: torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                                         momentum=momentum, weight_decay=weight_decay)


def one_cycle():
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total + 1), "step")


def cosine():
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=0.0), "step")


def cosine_with_bump(at: int, length: int, factor: float):
    """Cosine to zero as a multiplier per step, times ``factor`` for ``length`` steps from ``at`` (a warm restart
    callback that fired at the wrong step with the wrong scale)."""
    def schedule(step: int, total: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * (step - 1) / total)) * (factor if at <= step < at + length else 1.0)
    return schedule


def scale_head(factor: float):
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.head.weight.mul_(factor)
            model.head.bias.uniform_(-factor / 8, factor / 8)
    return prepare


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, batch_size=64, probe_layout=True,
                    scheduler=one_cycle())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", shapes), settings.pop("model", resnet()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    return [
        run("shapes_healthy_onecycle", "GroupNorm ResNet on 12x12 synthetic shapes (10 classes, 10 % noisy train "
            "labels), SGD momentum 0.9 wd 5e-4, one-cycle to a peak lr of 0.1, 10 epochs (470 steps)", sgd(0.1), 10,
            healthy=True),
        run("shapes_healthy_onecycle_seed1", "GroupNorm ResNet, SGD one-cycle peak 0.1, 10 epochs, seed 1",
            sgd(0.1), 10, seed=1, healthy=True),
        run("shapes_healthy_cosine", "GroupNorm ResNet, SGD 0.05 momentum 0.9, cosine to zero, 10 epochs, seed 2",
            sgd(0.05), 10, scheduler=cosine(), seed=2, healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    'shapes_lr_too_high_sgd': (
        "the train loss climbs to 3.10 at step 109, above its first 2.28; final val 0.282 vs twin 0.208, 1.35x; "
        "val accuracy 0.958 vs 0.975; gradient norm peak 10.7x its median (twin 4.7x)"),
    'shapes_bad_initial_loss_scaled_head': (
        "first loss 7.67 against ln 10 = 2.30 (twin 2.28); gradient norm peak 51x its median; final val 0.341 vs "
        "twin 0.208, 1.6x"),
    'shapes_loss_spike_lr_bump': (
        "the train loss jumps from about 1.0 to 1.49 and 3.36 at steps 201-202, 1.4-2.4 for the next 10 steps; "
        "final val 0.366 vs twin 0.286, 1.28x"),
    'shapes_class_imbalance_long_tail': (
        "lowest per-class val recall 0.00 vs 0.88 for the twin trained on balanced classes; val accuracy 0.797 "
        "against a majority share of 0.275 (twin 0.962)"),
    'shapes_overfitting_small_noisy': (
        "val falls to 1.17 at step 48 then rises to 1.55 at the end while the train loss goes to 0.0013; final val "
        "7x the 0.222 of the twin on the 3,000 images"),
    'shapes_dead_layers_unused_aux_head': (
        "the auxiliary head has no gradient at any step; loss, val (0.208) and accuracy identical to the twin's"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("shapes_lr_too_high_sgd", "GroupNorm ResNet, SGD momentum 0.9 with a one-cycle peak of 1.5 (15x the "
            "working peak: a batch-1024 recipe's lr kept for batches of 64), 10 epochs", sgd(1.5), 10,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low"],
            allow=["loss_spike", "underfitting", "underperforming_classes", "no_better_than_baseline",
                   "best_epoch_not_last", "update_ratio_out_of_band", "exploding_gradients", "divergence"]),
        run("shapes_bad_initial_loss_scaled_head", "GroupNorm ResNet whose head weights were multiplied by 12 and "
            "biases drawn in +-1.5 at init (a custom init scaled for another fan-in), SGD one-cycle peak 0.1, 10 "
            "epochs", sgd(0.1), 10, prepare=scale_head(12.0), expect={"bad_initial_loss": [1, 1]},
            allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "underperforming_classes",
                   "underfitting", "train_longer"]),
        run("shapes_loss_spike_lr_bump", "GroupNorm ResNet, SGD 0.05 momentum 0.9 with cosine to zero, a warm-"
            "restart callback that fired at step 200 with the lr x5 for 3 steps (200-202), 10 epochs", sgd(0.05), 10,
            scheduler=None, lr_at=cosine_with_bump(200, 3, 5.0), seed=2, expect={"loss_spike": [199, 235]},
            forbid=["divergence"], allow=["exploding_gradients", "update_ratio_out_of_band", "best_epoch_not_last"]),
        run("shapes_class_imbalance_long_tail", "GroupNorm ResNet on a long-tailed collection (train 600/450/340/"
            "250/190/140/100/60/35/20 a class, val in the same shares), SGD one-cycle peak 0.1, 10 epochs",
            sgd(0.1), 10, data=lambda: shapes(per_class=(600, 450, 340, 250, 190, 140, 100, 60, 35, 20),
                                             val_per_class=(200, 150, 113, 83, 63, 47, 33, 20, 12, 7)),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere}),
        run("shapes_overfitting_small_noisy", "GroupNorm ResNet of width 32 on 100 training images (10 a class, "
            "10 % noisy labels: a pilot subset), SGD 0.05 momentum 0.9 without weight decay, constant lr, 200 "
            "epochs (400 steps), val every 16 steps", sgd(0.05, weight_decay=0.0), 200, model=resnet(width=32),
            scheduler=None, data=lambda: shapes(per_class=(10,) * CLASSES), eval_every=16,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
        run("shapes_dead_layers_unused_aux_head", "GroupNorm ResNet with a deep-supervision head on the first "
            "block that forward() never calls (its loss term was dropped in a refactor; the head stays in the "
            "optimizer), SGD one-cycle peak 0.1, 10 epochs", sgd(0.1), 10, model=resnet(auxiliary_head=True),
            expect={"dead_layers": everywhere}),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["shapes_healthy_onecycle"] for spec in faults()}
    twins["shapes_loss_spike_lr_bump"] = healthy["shapes_healthy_cosine"]
    twins["shapes_class_imbalance_long_tail"] = run(
        "shapes_twin_balanced_train_long_tail_val", "GroupNorm ResNet on balanced training classes (220 a class), "
        "val in the long tail's shares, SGD one-cycle peak 0.1, 10 epochs", sgd(0.1), 10,
        data=lambda: shapes(per_class=(219,) * CLASSES, val_per_class=(200, 150, 113, 83, 63, 47, 33, 20, 12, 7)))
    twins["shapes_overfitting_small_noisy"] = run(
        "shapes_twin_width32_full", "GroupNorm ResNet of width 32 on the 3,000 training images, SGD 0.05 without "
        "weight decay, constant lr, 10 epochs", sgd(0.05, weight_decay=0.0), 10, model=resnet(width=32),
        scheduler=None)
    return twins
