"""A PointNet (Qi et al. 2017: a shared per-point MLP, a symmetric max-pool, an MLP head) classifying synthetic 3-D point clouds of 10 shape kinds, SGD with Nesterov momentum, step decay, every step or every 3 steps, val with confusion counts after every epoch (fourteenth hold-out, healthy only).

Clouds made here: 64 points sampled on the surface (or along the curve) of
one of 10 shapes — sphere, cube, cylinder, cone, torus, disc, helix,
dumbbell (two spheres), square pyramid, flat ellipsoid — each with random
proportions (±20 %), scaled to unit radius, rotated by a random angle
about the vertical axis and tilted up to 0.3 rad, with Gaussian jitter
(σ 0.02). 300 training and 100 validation clouds per class (3,000 and
1,000).

The model: per point Linear 3 → 32 → 64 → 128 (each with BatchNorm and
ReLU; a 1×1 convolution in the paper), max over the points, then 128 → 64
(BatchNorm, ReLU, Dropout 0.3) → 10 logits; cross-entropy (the first loss
is about ln 10 = 2.3).

The loop: batches of 32 (94 steps per epoch), 12 epochs (1,128 steps);
SGD with Nesterov momentum 0.9 and weight decay 1e-4, the lr × 0.1 after
epochs 6 and 9 (MultiStepLR), or × 0.5 every 2 epochs (StepLR) in one
run. Logged every step as the probe does (per-layer statistics every 5
steps) or every 3 steps; val loss, accuracy and confusion counts after
every epoch.

Why these settings (quick check by final val loss, 2026-12-01, each base
run at its lr × 1/3, × 1, × 3): SGD Nesterov 0.017 0.0227, 0.05 0.0179,
0.15 0.0228; the best val loss is at the last or next-to-last epoch at
all three, after the second decay.

Task kind recorded: classification, 10 classes. Fourteenth hold-out
(issue #12, healthy only); see ``tests/diagnosis/make_heldout.py heldout14``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "pointnet_shapes3d"
CLASSES, POINTS = 10, 64


def _unit(rng: np.random.Generator, count: int) -> np.ndarray:
    v = rng.normal(size=(count, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def shape(kind: int, rng: np.random.Generator) -> np.ndarray:
    """POINTS points on shape ``kind`` with random proportions, before rotation, (POINTS, 3)."""
    a, b, c = rng.uniform(0.8, 1.2, size=3)
    u, v = rng.random(POINTS), rng.random(POINTS)
    if kind == 0:  # sphere
        return _unit(rng, POINTS) * a
    if kind == 1:  # cube surface
        points = rng.uniform(-1, 1, size=(POINTS, 3))
        face = rng.integers(0, 3, size=POINTS)
        points[np.arange(POINTS), face] = np.sign(rng.random(POINTS) - 0.5)
        return points * np.array([a, b, c])
    if kind == 2:  # cylinder
        angle = 2 * math.pi * u
        return np.stack([a * np.cos(angle), a * np.sin(angle), b * (2 * v - 1)], 1)
    if kind == 3:  # cone
        angle, height = 2 * math.pi * u, np.sqrt(v)
        return np.stack([a * height * np.cos(angle), a * height * np.sin(angle), b * (1 - 2 * height)], 1)
    if kind == 4:  # torus
        angle, tube = 2 * math.pi * u, 2 * math.pi * v
        return np.stack([(a + 0.35 * np.cos(tube)) * np.cos(angle), (a + 0.35 * np.cos(tube)) * np.sin(angle),
                         0.35 * np.sin(tube)], 1)
    if kind == 5:  # disc
        angle, radius = 2 * math.pi * u, np.sqrt(v)
        return np.stack([a * radius * np.cos(angle), b * radius * np.sin(angle), np.zeros(POINTS)], 1)
    if kind == 6:  # helix
        turns = 3 * a
        angle = 2 * math.pi * turns * u
        return np.stack([0.6 * np.cos(angle), 0.6 * np.sin(angle), b * (2 * u - 1)], 1)
    if kind == 7:  # dumbbell
        side = np.where(rng.random(POINTS) < 0.5, -1.0, 1.0)
        return _unit(rng, POINTS) * 0.45 * a + np.stack([np.zeros(POINTS), np.zeros(POINTS), side * b * 0.7], 1)
    if kind == 8:  # square pyramid (four triangular sides and the base)
        points = np.empty((POINTS, 3))
        base = rng.random(POINTS) < 0.2
        points[base] = np.stack([rng.uniform(-1, 1, base.sum()), rng.uniform(-1, 1, base.sum()),
                                 -np.ones(base.sum())], 1)
        sides = ~base
        height = 1 - np.sqrt(rng.random(sides.sum()))
        across = rng.uniform(-1, 1, sides.sum()) * (1 - height)
        face = rng.integers(0, 4, sides.sum())
        edge = 1 - height
        x = np.where(face < 2, across, np.where(face == 2, edge, -edge))
        y = np.where(face >= 2, across, np.where(face == 0, edge, -edge))
        points[sides] = np.stack([x, y, 2 * height - 1], 1)
        return points * np.array([a, a, b])
    # flat ellipsoid
    return _unit(rng, POINTS) * np.array([a, b * 0.8, 0.3 * c])


def rotated(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    yaw, tilt = rng.uniform(0, 2 * math.pi), rng.uniform(-0.3, 0.3)
    about_z = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]])
    return points @ (about_x @ about_z).T


@functools.lru_cache(maxsize=None)
def clouds(train_per_class: int = 300, val_per_class: int = 100, seed: int = 143) -> Split:
    rng = np.random.default_rng(seed)
    count = CLASSES * (train_per_class + val_per_class)
    y = np.tile(np.arange(CLASSES), train_per_class + val_per_class)
    x = np.empty((count, POINTS, 3), dtype=np.float32)
    for index, kind in enumerate(y):
        points = shape(int(kind), rng)
        points = points - points.mean(0)
        points = points / np.linalg.norm(points, axis=1).max()
        x[index] = rotated(points, rng) + rng.normal(0, 0.02, size=(POINTS, 3))
    x, y = torch.tensor(x), torch.tensor(y)
    cut = CLASSES * train_per_class
    return Split(x[:cut], y[:cut], x[cut:], y[cut:], CLASSES)


class PointwiseBN(nn.Module):
    """BatchNorm over every point of every cloud (a 1×1 convolution's BatchNorm1d): (B, P, C) → (B, P, C)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class PointNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers, previous = [], 3
        for width in widths:
            layers += [nn.Linear(previous, width), PointwiseBN(width), nn.ReLU()]
            previous = width
        self.point_mlp = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(previous, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Linear(64, CLASSES))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.point_mlp(points).max(dim=1).values)


def pointnet(widths: tuple[int, ...] = (32, 64, 128)):
    return lambda data: PointNet(widths)


def nesterov(lr: float, weight_decay: float = 1e-4):
    return lambda model: torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                         weight_decay=weight_decay)


def multistep(milestones: tuple[int, ...] = (6, 9), gamma: float = 0.1):
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma), "epoch")


def steplr(every: int = 2, gamma: float = 0.5):
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.StepLR(optimizer, every, gamma), "epoch")


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="classification", task_kind="classification", batch_size=32,
                    logging=Logging(), scheduler=multistep(), healthy=True)
    settings.update(kwargs)
    return Spec(name, description, clouds, settings.pop("model", pointnet()), optimizer, epochs, **settings)


LR = 0.05


def specs() -> list[Spec]:
    every3 = Logging(every=3, layer_every=15)
    return [
        run("pointnet_nesterov_multistep", f"PointNet (32-64-128, max-pool) on 3-D shape clouds, SGD {LR:g} Nesterov "
            "0.9 (wd 1e-4), lr × 0.1 after epochs 6 and 9, 12 epochs (1,128 steps), every step",
            nesterov(LR), 12),
        run("pointnet_nesterov_multistep_seed1", f"PointNet on 3-D shape clouds, SGD {LR:g} Nesterov, lr × 0.1 after "
            "epochs 6 and 9, 12 epochs, every step, seed 1", nesterov(LR), 12, seed=1),
        run("pointnet_nesterov_every3_seed2", f"PointNet on 3-D shape clouds, SGD {LR:g} Nesterov, lr × 0.1 after "
            "epochs 6 and 9, 12 epochs, every 3 steps, seed 2", nesterov(LR), 12, seed=2, logging=every3),
        run("pointnet_wide_steplr_seed3", f"PointNet (64-128-256) on 3-D shape clouds, SGD {LR:g} Nesterov, lr × 0.5 "
            "every 2 epochs, 12 epochs, every 3 steps, seed 3", nesterov(LR), 12, seed=3,
            model=pointnet((64, 128, 256)), scheduler=steplr(), logging=every3),
        run("pointnet_batch64_seed4", f"PointNet on 3-D shape clouds, batches of 64, SGD {2 * LR:g} Nesterov, lr × "
            "0.1 after epochs 10 and 14, 16 epochs (752 steps), every step, seed 4", nesterov(2 * LR), 16, seed=4,
            batch_size=64, scheduler=multistep((10, 14))),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
