"""A 2-D ConvNet classifying synthetic 16×16 textures into 12 classes with label smoothing, Lookahead-SGD and polynomial decay, every 5 steps (sixth hold-out).

Images made here: 16×16 pixels, one channel. Classes 0-7 are sinusoidal
gratings at 4 orientations (0°, 45°, 90°, 135°) × 2 spatial frequencies
(2 and 4 cycles across the image), classes 8-9 checkerboards of squares 2
and 4 pixels wide, classes 10-11 fields of 3 and 9 Gaussian dots (σ 1.6 and
0.9 pixels) at random places; each image draws a random phase (offset),
a contrast in [0.5, 1.5] and white noise (σ 0.5). 60 training and 20
validation images per class, batches of 48 (15 steps per epoch). Every
training batch is augmented (random circular shifts of up to 3 pixels and,
for half the images, a 180° rotation: both keep every texture's class).
The model: three stages of 3×3 convolutions (16, 32, 32 channels;
GroupNorm of 4 groups, ReLU; 2×2 max-pooling after the first two), global
average pooling and a linear head; cross-entropy with label smoothing 0.1
(training and validation), so no run's loss falls below about 0.5.
Lookahead (written here, Zhang et al. 2019) around SGD with Nesterov
momentum 0.9 and weight decay 5e-4: every k fast steps the slow weights
move α of the way to the fast ones, which restart from them. Schedules:
PolynomialLR (power 2 or 1) over the run, constant. Logged as a
Keras-style callback every 5 steps: the loss, training accuracy (against
the augmented batch's labels), lr and gradient norm of that step (point
values), per-layer statistics every 15 steps; val loss, accuracy and
confusion counts after every epoch. Task: classification with C = 12.

Added with ``mlm_records`` and ``forecast_gnll`` as a sixth held-out test
(issue #12): written by an engineer who changes no rule, labelled from how
each run was built, each fault checked against its healthy twin
(``tests/diagnosis/heldout_twins.py``), and committed before any of these
runs was diagnosed. The runs are stored in ``tests/data/heldout6`` (not the
tuning corpus), run.json carrying the probe's parameter layout, and this
module is not in ``FAMILY_MODULES``: ``python tests/diagnosis/make_heldout.py heldout6``
trains them.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "conv2d_textures"
LOGGING = Logging(every=5, layer_every=15)
CLASSES, SIZE, NOISE, SMOOTHING = 12, 16, 0.5, 0.1


@functools.lru_cache(maxsize=None)
def textures(train_per_class: int = 60, val_per_class: int = 20, rare_half: bool = False,
             mislabelled: float = 0.0, blanked: bool = False, noisy: float = 0.0, seed: int = 61) -> Split:
    """Images (N, 1, SIZE, SIZE) float32 and classes (N,).

    ``rare_half``: classes 6-11 keep 1 image in 10 (train and val; 6 and 2 of them); ``mislabelled``: that share
    of class 5's training images labelled 6 (an annotator's systematic confusion; val intact); ``blanked``: every
    image (train and val) clamped to [0, 1] after subtracting 5 (a normalisation applied twice): all zeros;
    ``noisy``: that share of the training labels replaced by a class drawn at random (val intact).
    """
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] / SIZE

    def image(kind: int) -> np.ndarray:
        phase = rng.uniform(0, 2 * np.pi)
        if kind < 8:
            angle, cycles = (kind % 4) * np.pi / 4, (2, 4)[kind // 4]
            pattern = np.sin(2 * np.pi * cycles * (xs * np.cos(angle) + ys * np.sin(angle)) + phase)
        elif kind < 10:
            width = (2, 4)[kind - 8]
            shift = rng.integers(0, 2 * width, size=2)
            grid = np.mgrid[0:SIZE, 0:SIZE]
            pattern = 2.0 * ((((grid[0] + shift[0]) // width) + ((grid[1] + shift[1]) // width)) % 2) - 1.0
        else:
            count, sigma = ((3, 1.6), (9, 0.9))[kind - 10]
            centres = rng.uniform(0, SIZE, size=(count, 2))
            grid = np.mgrid[0:SIZE, 0:SIZE]
            pattern = sum(np.exp(-((grid[0] - cy) ** 2 + (grid[1] - cx) ** 2) / (2 * sigma ** 2)) for cy, cx in centres)
            pattern = 2.0 * pattern / max(pattern.max(), 1e-6) - 0.5
        return rng.uniform(0.5, 1.5) * pattern + NOISE * rng.normal(size=(SIZE, SIZE))

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        counts = np.full(CLASSES, per_class)
        if rare_half:
            counts[6:] = max(2, per_class // 10)
        labels = np.repeat(np.arange(CLASSES), counts)
        images = np.stack([image(int(label)) for label in labels])[:, None]
        if blanked:
            images = np.clip(images - 5.0, 0.0, 1.0)
        return torch.tensor(images, dtype=torch.float32), torch.tensor(labels)

    x_train, y_train = draw(train_per_class)
    x_val, y_val = draw(val_per_class)
    if mislabelled:
        fives = np.flatnonzero(y_train.numpy() == 5)
        flipped = rng.choice(fives, size=int(round(mislabelled * len(fives))), replace=False)
        y_train[torch.tensor(flipped)] = 6
    if noisy:
        relabelled = rng.random(len(y_train)) < noisy
        y_train[torch.tensor(relabelled)] = torch.tensor(rng.integers(0, CLASSES, int(relabelled.sum())))
    return Split(x_train, y_train, x_val, y_val, CLASSES)


def augment(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Random circular shifts of up to 3 pixels and, for half the images, a 180° rotation (seeded by the step)."""
    generator = torch.Generator().manual_seed(10_000 + step)
    dy, dx = (int(v) for v in torch.randint(-3, 4, (2,), generator=generator))
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    rotate = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(rotate[:, None, None, None], torch.flip(x, dims=(2, 3)), x), y


class TextureNet(nn.Module):
    """(B, 1, 16, 16) images → (B, classes) logits: three conv stages, global average pooling, a linear head."""

    def __init__(self, classes: int = CLASSES, widths: tuple[int, int, int] = (16, 32, 32)):
        super().__init__()
        stages, channels = [], 1
        for index, width in enumerate(widths):
            layers = [nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(min(4, width), width), nn.ReLU()]
            if index < 2:
                layers.append(nn.MaxPool2d(2))
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(x).mean((2, 3)))


class PlainDeepNet(nn.Module):
    """(B, 1, 16, 16) → (B, classes): ``depth`` 3×3 convolutions of ``width`` channels with tanh, no normalisation and
    no skip connections, weights drawn with std ``gain``/√fan_in (a small init), global average pooling, a head."""

    def __init__(self, classes: int = CLASSES, depth: int = 12, width: int = 16, gain: float = 0.5):
        super().__init__()
        layers, channels = [], 1
        for _ in range(depth):
            conv = nn.Conv2d(channels, width, 3, padding=1)
            nn.init.normal_(conv.weight, std=gain / math.sqrt(channels * 9))
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.Tanh()]
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


def texture_net(**kwargs):
    return lambda data: TextureNet(data.num_classes, **kwargs)


def smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, C) logits against (B,) classes with label smoothing 0.1 (mean over the batch)."""
    return F.cross_entropy(logits, targets, label_smoothing=SMOOTHING)


class LookaheadSGD(torch.optim.Optimizer):
    """Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back") around SGD with Nesterov
    momentum and L2 weight decay: the fast weights take ``k`` SGD steps, then the slow weights move ``alpha`` of the
    way towards them and the fast weights restart from the slow ones (momentum buffers kept)."""

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4, k: int = 5,
                 alpha: float = 0.5):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "k": k,
                                  "alpha": alpha})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            group["fast_steps"] = group.get("fast_steps", 0) + 1
            synchronise = group["fast_steps"] % group["k"] == 0
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["momentum"] = torch.zeros_like(param)
                    state["slow"] = param.detach().clone()
                gradient = param.grad + group["weight_decay"] * param
                state["momentum"].mul_(group["momentum"]).add_(gradient)
                param.add_(gradient + group["momentum"] * state["momentum"], alpha=-group["lr"])
                if synchronise:
                    state["slow"].add_(param - state["slow"], alpha=group["alpha"])
                    param.copy_(state["slow"])


def lookahead_sgd(lr: float, **kwargs):
    """LookaheadSGD over every parameter (frozen ones included, as a model's ``.parameters()`` passes them)."""
    return lambda model: LookaheadSGD(model.parameters(), lr=lr, **kwargs)


def polynomial(power: float = 2.0, over: float = 1.0):
    """PolynomialLR per step: lr × (1 - t/T)^power with T = ``over`` × the run's steps (then 0 from T on)."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.PolynomialLR(
        optimizer, total_iters=max(1, int(over * total)), power=power), "step")


def freeze_first_stages(model: nn.Module) -> None:
    """requires_grad off for the first two conv stages (left over from a linear-probe experiment)."""
    for parameter in list(model.stages[0].parameters()) + list(model.stages[1].parameters()):
        parameter.requires_grad_(False)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, batch_size=48, probe_layout=True,
                    loss=smoothed_cross_entropy, batch_hook=augment, scheduler=polynomial(2.0))
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", textures), settings.pop("model", texture_net()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("tex_healthy_lookahead_poly2", "texture ConvNet, label smoothing 0.1, Lookahead(k 5, α 0.5)-SGD Nesterov "
            "lr 0.1 wd 5e-4, PolynomialLR power 2 to 0, 20 epochs", lookahead_sgd(0.1), 20, healthy=True),
        run("tex_healthy_lookahead_poly1_seed1", "texture ConvNet, label smoothing 0.1, Lookahead-SGD lr 0.1, "
            "PolynomialLR power 1 (linear) to 0, 20 epochs, seed 1", lookahead_sgd(0.1), 20,
            scheduler=polynomial(1.0), seed=1, healthy=True),
        run("tex_healthy_lookahead_k10_long", "texture ConvNet, label smoothing 0.1, Lookahead(k 10, α 0.8)-SGD lr "
            "0.05, PolynomialLR power 2 to 0, 40 epochs (600 steps)", lookahead_sgd(0.05, k=10, alpha=0.8), 40,
            healthy=True),
        run("tex_healthy_sgd_nesterov_poly2", "texture ConvNet, label smoothing 0.1, plain SGD Nesterov 0.9 lr 0.05 "
            "wd 5e-4 (no Lookahead), PolynomialLR power 2, 20 epochs",
            lambda model: torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                                          weight_decay=5e-4), 20, healthy=True),
        run("tex_lr_too_high_lookahead", "texture ConvNet, Lookahead-SGD lr 1.0 constant (10x the working lr), "
            "20 epochs", lookahead_sgd(1.0), 20, scheduler=None,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "underperforming_classes", "no_better_than_baseline", "dead_layers",
                   "divergence"]),
        run("tex_lr_too_low_lookahead", "texture ConvNet, Lookahead-SGD lr 1e-3 (1/100 of the working lr), "
            "PolynomialLR power 2, 20 epochs", lookahead_sgd(1e-3), 20,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "no_better_than_baseline",
                   "underperforming_classes"]),
        run("tex_decayed_too_early_poly", "texture ConvNet, Lookahead-SGD lr 0.1, PolynomialLR power 2 with "
            "total_iters 45 steps (3 of the 20 epochs: set for a batch 7x larger), so the lr is 0 from step 45",
            lookahead_sgd(0.1), 20, scheduler=polynomial(2.0, over=0.15),
            expect={"decayed_too_early": [15, 120]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer",
                   "underperforming_classes"]),
        run("tex_underfitting_eight_channels", "texture ConvNet of 8 channels in every stage (16-32-32 in the healthy "
            "runs), Lookahead-SGD lr 0.1, PolynomialLR power 2, 20 epochs", lookahead_sgd(0.1), 20,
            model=texture_net(widths=(8, 8, 8)),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
            allow=["underperforming_classes"]),
        run("tex_overfitting_few_noisy_images", "texture ConvNet of 32-64-64 channels on 10 images per class (120, "
            "3 steps per epoch) of which 40 % carry a random label, no augmentation, Lookahead-SGD lr 0.05 constant, "
            "200 epochs", lookahead_sgd(0.05), 200, scheduler=None, batch_hook=None,
            data=lambda: textures(train_per_class=10, noisy=0.4), model=texture_net(widths=(32, 64, 64)),
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
        run("tex_class_imbalance_rare_half", "texture ConvNet, Lookahead-SGD lr 0.1, PolynomialLR power 2, 20 epochs, "
            "classes 6-11 keep 6 training and 2 validation images (60 and 20 for classes 0-5)", lookahead_sgd(0.1), 20,
            data=lambda: textures(rare_half=True),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere},
            allow=["overfitting", "best_epoch_not_last", "no_better_than_baseline"]),
        run("tex_underperforming_classes_mislabelled", "texture ConvNet, Lookahead-SGD lr 0.1, PolynomialLR power 2, "
            "20 epochs, 60 % of class 5's training images labelled 6 (an annotator's confusion; val intact)",
            lookahead_sgd(0.1), 20, data=lambda: textures(mislabelled=0.6),
            expect={"underperforming_classes": everywhere},
            allow=["overfitting", "best_epoch_not_last", "class_imbalance"]),
        run("tex_no_better_than_baseline_blanked", "texture ConvNet, Lookahead-SGD lr 0.1, PolynomialLR power 2, "
            "20 epochs, every image clamped to [0, 1] after subtracting 5 (normalised twice): all zeros",
            lookahead_sgd(0.1), 20, data=lambda: textures(blanked=True),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "lr_too_low", "train_longer", "dead_layers",
                   "vanishing_gradients", "update_ratio_out_of_band"]),
        run("tex_dead_layers_frozen_stages", "texture ConvNet whose first two conv stages have requires_grad off "
            "(left from a linear-probe experiment; still passed to the optimizer), Lookahead-SGD lr 0.1, "
            "PolynomialLR power 2, 20 epochs", lookahead_sgd(0.1), 20, prepare=freeze_first_stages,
            expect={"dead_layers": everywhere},
            allow=["underfitting", "underperforming_classes", "update_ratio_out_of_band", "vanishing_gradients"]),
        run("tex_vanishing_gradients_small_init", "plain ConvNet of 12 tanh 3x3 convolutions (16 channels, no "
            "normalisation, no skips) drawn with std 0.5/sqrt(fan_in), Lookahead-SGD lr 0.1, PolynomialLR power 2, "
            "20 epochs", lookahead_sgd(0.1), 20, model=lambda data: PlainDeepNet(data.num_classes, gain=0.5),
            expect={"vanishing_gradients": everywhere},
            allow=["underfitting", "update_ratio_out_of_band", "lr_too_low", "train_longer", "dead_layers",
                   "no_better_than_baseline", "underperforming_classes"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    poly = healthy["tex_healthy_lookahead_poly2"]
    constant = run("tex_twin_lookahead_0.1_constant", "texture ConvNet, Lookahead-SGD lr 0.1 constant, 20 epochs",
                   lookahead_sgd(0.1), 20, scheduler=None)
    return {
        "tex_lr_too_high_lookahead": constant,
        "tex_lr_too_low_lookahead": poly,
        "tex_decayed_too_early_poly": poly,
        "tex_underfitting_eight_channels": poly,
        "tex_overfitting_few_noisy_images": run("tex_twin_wide_all_noisy_images", "texture ConvNet of 32-64-64 "
                                                "channels on all 60 images per class, 40 % of them with a random "
                                                "label, no augmentation, Lookahead-SGD lr 0.05 constant, 20 epochs",
                                                lookahead_sgd(0.05), 20, scheduler=None, batch_hook=None,
                                                data=lambda: textures(noisy=0.4),
                                                model=texture_net(widths=(32, 64, 64))),
        "tex_class_imbalance_rare_half": poly,
        "tex_underperforming_classes_mislabelled": poly,
        "tex_no_better_than_baseline_blanked": poly,
        "tex_dead_layers_frozen_stages": poly,
        "tex_vanishing_gradients_small_init": run("tex_twin_plain_deep_tanh_gain", "plain ConvNet of 12 tanh 3x3 "
                                                  "convolutions drawn with std (5/3)/sqrt(fan_in) (PyTorch's tanh "
                                                  "gain), Lookahead-SGD lr 0.1, PolynomialLR power 2, 20 epochs",
                                                  lookahead_sgd(0.1), 20,
                                                  model=lambda data: PlainDeepNet(data.num_classes, gain=5 / 3)),
    }
