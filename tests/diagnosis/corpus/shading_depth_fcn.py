"""A dilated fully convolutional network (a context module of dilated 3×3 convolutions, Yu & Koltun 2016) regressing a per-pixel depth map from a synthetic shaded 16×16 image (shape from shading), per-pixel MSE, SGD with momentum and step decay, NAdam with cosine to zero or AdamW with warm-up-stable-decay, logged every 3 steps from step 21 (seventeenth hold-out).

Images made here: a 16×16 height map, the sum of 2 to 4 Gaussian bumps
(heights 0.5-1.5, widths σ 1.5-3.5 pixels, centres uniform in the image),
rendered with Lambertian shading under one fixed light direction (0.5, 0.3,
0.81): the shading is the dot product of the light with the surface normal
(−∂z/∂x, −∂z/∂y, 1) normalised, plus Gaussian noise (σ 0.02). The input is
the shading image (one channel, standardised with the training mean and
deviation); the target is the height map, standardised the same way (one
value a pixel, (B, 1, 16, 16)). 900 training and 300 validation images,
batches of 30 (30 steps an epoch). The model: a 3×3 convolution 1 → 16,
four 3×3 convolutions 16 → 16 with dilations 1, 2, 4 and 8 (ReLU after
each; receptive field 33 pixels), a 1×1 convolution to one output; no
normalisation. MSE over every pixel. SGD (lr 0.05, momentum 0.9) with the
lr ×0.1 after 7 of 10 epochs, NAdam (2e-3) with cosine to zero, or AdamW
(2e-3) with 5 % warm-up, constant, then linear decay to zero over the last
20 %; 10 epochs (300 steps). Logged every 3 steps from step 21 (that
step's loss; one healthy run every step from the first), per-layer
statistics every 6 steps, val after every epoch. Task: regression.

Seventeenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout17``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family shading_depth_fcn``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import adamw, cosine_to_zero, make, step_lr, warmup_stable_decay
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "shading_depth_fcn"
LOGGING = Logging(every=3, start=21, layer_every=6)
SIDE = 16
LIGHT = np.array([0.5, 0.3, 0.81]) / np.linalg.norm([0.5, 0.3, 0.81])


@functools.lru_cache(maxsize=None)
def shaded(train: int = 900, val: int = 300, seed: int = 172) -> Split:
    rng = np.random.default_rng(seed)
    grid = np.arange(SIDE, dtype=float)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        bumps = rng.integers(2, 5, n)
        depth = np.zeros((n, SIDE, SIDE))
        for k in range(4):
            present = (bumps > k)[:, None, None]
            cx, cy = rng.uniform(0, SIDE - 1, (2, n, 1, 1))
            sigma, height = rng.uniform(1.5, 3.5, (n, 1, 1)), rng.uniform(0.5, 1.5, (n, 1, 1))
            bump = height * np.exp(-((grid[None, None, :] - cx) ** 2 + (grid[None, :, None] - cy) ** 2)
                                   / (2 * sigma ** 2))
            depth += np.where(present, bump, 0.0)
        dy, dx = np.gradient(depth, axis=(1, 2))
        shading = (-LIGHT[0] * dx - LIGHT[1] * dy + LIGHT[2]) / np.sqrt(1 + dx ** 2 + dy ** 2)
        return shading + rng.normal(0, 0.02, shading.shape), depth

    (x_train, y_train), (x_val, y_val) = draw(train), draw(val)
    x_mean, x_std, y_mean, y_std = x_train.mean(), x_train.std(), y_train.mean(), y_train.std()

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.tensor(array, dtype=torch.float32)[:, None]

    return Split(tensor((x_train - x_mean) / x_std), tensor((y_train - y_mean) / y_std),
                 tensor((x_val - x_mean) / x_std), tensor((y_val - y_mean) / y_std), 1)


class DilatedFCN(nn.Module):
    def __init__(self, width: int = 16, dilations: tuple[int, ...] = (1, 2, 4, 8),
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.context = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d) for d in dilations)
        self.activation = activation()
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.activation(self.stem(x))
        for conv in self.context:
            hidden = self.activation(conv(hidden))
        return self.out(hidden)


def fcn(**kwargs):
    return lambda data: DilatedFCN(**kwargs)


def sgd(lr: float, momentum: float = 0.9):
    return make(torch.optim.SGD, lr, momentum=momentum)


def nadam(lr: float):
    return make(torch.optim.NAdam, lr)


def rmsprop(lr: float):
    return make(torch.optim.RMSprop, lr)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="regression", logging=LOGGING, batch_size=30,
                    probe_layout=True, scheduler=step_lr(7, 0.1))
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", shaded), settings.pop("model", fcn()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    return [
        run("depth_healthy_sgd_step", "dilated FCN (3x3 convs, 16 channels, dilations 1-2-4-8, no norm) "
            "regressing per-pixel depth from 16x16 shaded images, MSE, SGD momentum 0.9 lr 0.05, lr x0.1 after "
            "epoch 7, 10 epochs (300 steps)", sgd(0.05), 10, healthy=True),
        run("depth_healthy_sgd_step_seed1", "shading-to-depth FCN, SGD momentum 0.9 lr 0.05, step decay at "
            "epoch 7, 10 epochs, seed 1", sgd(0.05), 10, seed=1, healthy=True),
        run("depth_healthy_nadam_cosine", "shading-to-depth FCN, NAdam 2e-3, cosine to zero, 10 epochs, seed 2",
            nadam(2e-3), 10, scheduler=cosine_to_zero(), seed=2, healthy=True),
        run("depth_healthy_adamw_wsd_every_step", "shading-to-depth FCN, AdamW 2e-3 wd 1e-2, 5 % warm-up, "
            "stable, linear decay to zero over the last 20 %, 10 epochs, seed 3, logged every step from the first",
            adamw(2e-3), 10, scheduler=warmup_stable_decay(0.05, 0.2), seed=3, logging=Logging(layer_every=6),
            healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    "depth_divergence_sgd": (
        "the train loss is 381 at step 3, 9.9e7 at step 6 and NaN from step 9 on, val NaN at every "
        "evaluation; the twin (SGD 0.05) ends at val 0.080"),
    "depth_lr_too_high_rmsprop": (
        "train loss 1.61 at step 21, peak 1.83 at step 24, 0.69 at the end; final val 0.608 vs twin 0.080, "
        "7.6x; gradient norm peak 10.4x its median (twin 5.4x); SGD at the working lr x3 down (0.017) "
        "ends at val 0.109, x1.8 and x3 up (0.09, 0.15) at 0.083 and 1.05"),
    "depth_underfitting_single_conv": (
        "train loss 0.29-0.50 from step 21 on and 0.33 at the end, val 0.279 (train and val close) vs twin "
        "0.080, 3.5x"),
    "depth_vanishing_gradients_sigmoid": (
        "median gradient norm of the stem's weights 3.3e-6 against 0.082 for the output layer's (twin 0.17 "
        "and 0.13); final val 1.011 vs twin 0.080, 12.7x: no better than the mean depth (val variance 0.95)"),
    "depth_update_ratio_low_nadam": (
        "median update/weight ratio of the weight tensors 6.5e-7 to 2.6e-6 vs the twin's 2.4e-3 to 8.0e-3; "
        "final val 1.064 vs twin 0.108, 9.9x"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("depth_divergence_sgd", "shading-to-depth FCN, SGD momentum 0.9 at lr 5 (the lr of a normalised "
            "network with a x100 warm-up multiplier, copied to one without normalisation), step decay at epoch 7, "
            "10 epochs, logged every 3 steps from the first", sgd(5.0), 10, logging=Logging(every=3, layer_every=6),
            expect={"divergence": everywhere},
            allow=["lr_too_high", "loss_spike", "exploding_gradients", "update_ratio_out_of_band",
                   "best_epoch_not_last", "underfitting", "dead_layers"]),
        run("depth_lr_too_high_rmsprop", "shading-to-depth FCN, RMSprop at a constant 3e-2 (15x a working "
            "adaptive lr: RMSprop's lr taken from an SGD recipe), 10 epochs", rmsprop(3e-2), 10, scheduler=None,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low"],
            allow=["loss_spike", "underfitting", "best_epoch_not_last", "update_ratio_out_of_band",
                   "exploding_gradients", "dead_layers"]),
        run("depth_underfitting_single_conv", "shading-to-depth 'FCN' reduced to its stem and output (the "
            "dilated context layers' list left empty in the config: receptive field 3 pixels), SGD momentum 0.9 "
            "lr 0.05, step decay at epoch 7, 10 epochs", sgd(0.05), 10, model=fcn(dilations=()),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
            allow=["train_longer"]),
        run("depth_vanishing_gradients_sigmoid", "shading-to-depth FCN with sigmoid activations and 6 context "
            "layers (dilations 1, 2, 4, 8, 2, 1: a deeper variant with the activation switched), no "
            "normalisation, SGD momentum 0.9 lr 0.05, step decay at epoch 7, 10 epochs", sgd(0.05), 10,
            model=fcn(dilations=(1, 2, 4, 8, 2, 1), activation=nn.Sigmoid),
            expect={"vanishing_gradients": everywhere},
            allow=["underfitting", "lr_too_low", "update_ratio_out_of_band", "no_better_than_baseline",
                   "train_longer"]),
        run("depth_update_ratio_low_nadam", "shading-to-depth FCN, NAdam 3e-7 (a per-pixel lr: 2e-3 divided by "
            "the 16x16 pixels and rounded up: a per-pixel lr from a config comment), cosine to zero, 10 "
            "epochs", nadam(3e-7), 10, scheduler=cosine_to_zero(), seed=2,
            expect={"update_ratio_out_of_band": everywhere},
            allow=["lr_too_low", "underfitting", "train_longer", "no_better_than_baseline"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["depth_healthy_sgd_step"] for spec in faults()}
    twins["depth_update_ratio_low_nadam"] = healthy["depth_healthy_nadam_cosine"]
    return twins
