"""A small 2-D U-Net segmenting synthetic 16×16 images into 4 region kinds (per-pixel cross-entropy), MADGRAD, exponential warm-up then halving every 4 epochs, 7-step window means (eighth hold-out).

Images made here: 16×16 pixels, one channel, cut into regions by a Voronoi
partition of 3 to 5 random sites; each region draws a kind (classes 0-3:
0.4, 0.3, 0.15, 0.15 unless said) that decides its texture: 0 flat dark
(0.2), 1 flat bright (0.8), 2 horizontal stripes one pixel wide (0.2 and
0.8 alternating), 3 a one-pixel checkerboard (0.2 and 0.8); white noise
(σ 0.15) on top, then standardised with the training pixels' mean and
standard deviation. Every pixel's class is its region's kind, so a pixel
alone says dark or bright and only its 3×3 neighbourhood tells stripes
from checkerboard from flat. 960 training and 240 validation images,
batches of 32 (30 steps per epoch). The model: a two-level U-Net (3×3
convolutions, 12 then 24 channels, ReLU, 2×2 max-pooling down, nearest
upsampling, the encoder's features concatenated back in, a 1×1 head to 4
class logits per pixel); the loss is cross-entropy over every pixel.
MADGRAD (written here, Defazio & Jelassi 2021: dual averaging of
λ_k-weighted gradients with a cube-root denominator and momentum by
averaging) and SGD with Nesterov momentum. The schedule: the "untuned
exponential warm-up" (1 - exp(-t/τ), τ 20 steps) times a halving every 4
epochs (120 steps). Logged as window means of 7 steps (loss, pixel
accuracy; lr and gradient norm of the 7th step), per-layer statistics
every 14 steps; val loss, pixel accuracy and confusion counts over every
validation pixel after each epoch. Task: classification with C = 4 (per
pixel).

Eighth hold-out (issue #12): written by an engineer who changes no rule,
labelled from how each run was built, each fault checked against its
healthy twin (``tests/diagnosis/heldout_twins.py``) before any run was
diagnosed; stored in ``tests/data/heldout8`` (not the tuning corpus), not in
``FAMILY_MODULES``: ``python tests/diagnosis/make_heldout.py heldout8`` trains them.
"""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "seg_convnet_regions"
LOGGING = Logging(every=7, mean=True, layer_every=14)
SIZE, CLASSES, BATCH, TRAIN, VAL = 16, 4, 32, 960, 240
STEPS_PER_EPOCH = math.ceil(TRAIN / BATCH)
KINDS = (0.4, 0.3, 0.15, 0.15)


@functools.lru_cache(maxsize=None)
def regions(kinds: tuple[float, ...] = KINDS, pooled: bool = False, shuffled_masks: bool = False,
            seed: int = 83) -> Split:
    """Images (N, 1, SIZE, SIZE) float32 and per-pixel classes (N, SIZE, SIZE).

    ``pooled``: every image (train and val) averaged over 2×2 blocks and upsampled back (a loader written for an
    8×8 model): stripes and checkerboard both become mid-grey; ``shuffled_masks``: the training masks paired with
    the images of another order (two file lists sorted differently; val intact).
    """
    rng = np.random.default_rng(seed)
    count = TRAIN + VAL
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    textures = np.stack([np.full((SIZE, SIZE), 0.2), np.full((SIZE, SIZE), 0.8),
                         np.where(rows % 2 == 0, 0.2, 0.8), np.where((rows + cols) % 2 == 0, 0.2, 0.8)])
    images = np.empty((count, SIZE, SIZE))
    masks = np.empty((count, SIZE, SIZE), dtype=np.int64)
    for index in range(count):
        sites = rng.uniform(0, SIZE, (rng.integers(3, 6), 2))
        nearest = np.argmin((rows[..., None] - sites[:, 0]) ** 2 + (cols[..., None] - sites[:, 1]) ** 2, -1)
        kind = rng.choice(CLASSES, len(sites), p=np.asarray(kinds) / sum(kinds))[nearest]
        masks[index] = kind
        images[index] = textures[kind, rows, cols]
    images += rng.normal(0, 0.15, images.shape)
    if pooled:
        images = images.reshape(count, SIZE // 2, 2, SIZE // 2, 2).mean((2, 4)).repeat(2, 1).repeat(2, 2)
    mean, std = images[:TRAIN].mean(), images[:TRAIN].std()
    x = torch.tensor((images - mean) / std, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(masks)
    y_train = y[:TRAIN]
    if shuffled_masks:
        y_train = y_train[torch.randperm(TRAIN, generator=torch.Generator().manual_seed(seed))]
    return Split(x[:TRAIN], y_train, x[TRAIN:], y[TRAIN:], CLASSES)


def conv_pair(fan_in: int, fan_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(fan_in, fan_out, kernel, padding=kernel // 2), nn.ReLU(),
                         nn.Conv2d(fan_out, fan_out, kernel, padding=kernel // 2), nn.ReLU())


class UNet(nn.Module):
    """(B, 1, H, W) → (B, CLASSES, H, W). ``kernel`` 1: every convolution sees one pixel (a per-pixel MLP);
    ``frozen_encoder``: the encoder (both levels down) runs under ``torch.no_grad()`` (the guard of a
    frozen-backbone snippet, copied into a model whose encoder was never pre-trained), so its convolutions keep
    their random weights and never get a gradient."""

    def __init__(self, width: int = 12, kernel: int = 3, frozen_encoder: bool = False):
        super().__init__()
        self.down = conv_pair(1, width, kernel)
        self.bottom = conv_pair(width, 2 * width, kernel)
        self.up = conv_pair(3 * width, width, kernel)
        self.head = nn.Conv2d(width, CLASSES, 1)
        self.frozen_encoder = frozen_encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad() if self.frozen_encoder else contextlib.nullcontext():
            skip = self.down(images)
            bottom = self.bottom(F.max_pool2d(skip, 2))
        up = F.interpolate(bottom, scale_factor=2, mode="nearest")
        return self.head(self.up(torch.cat([skip, up], 1)))


def unet(background_bias: float | None = None, **kwargs):
    def build(data: Split) -> nn.Module:
        model = UNet(**kwargs)
        if background_bias is not None:
            with torch.no_grad():
                model.head.bias.zero_()
                model.head.bias[0] = background_bias
        return model
    return build


class MADGRAD(torch.optim.Optimizer):
    """MADGRAD (Defazio & Jelassi 2021, "Adaptivity without Compromise"), without weight decay: λ_k = lr √(k+1);
    s ← s + λ_k g, ν ← ν + λ_k g², z = x₀ - s / (∛ν + ε), x ← (1 - c) x + c z with c = 1 - momentum."""

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.9, eps: float = 1e-6):
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["k"], state["x0"] = 0, param.detach().clone()
                    state["s"], state["nu"] = torch.zeros_like(param), torch.zeros_like(param)
                weight = group["lr"] * math.sqrt(state["k"] + 1)
                state["k"] += 1
                grad = param.grad
                state["s"].add_(grad, alpha=weight)
                state["nu"].addcmul_(grad, grad, value=weight)
                z = state["x0"] - state["s"] / (state["nu"].pow(1 / 3) + group["eps"])
                param.mul_(group["momentum"]).add_(z, alpha=1 - group["momentum"])


def madgrad(lr: float, **kwargs):
    return lambda model: MADGRAD(model.parameters(), lr=lr, **kwargs)


def nesterov(lr: float):
    return lambda model: torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)


def warm_halving(halve_every: int = 4 * STEPS_PER_EPOCH, tau: float = 20.0):
    """(step, total) → multiplier: 1 - exp(-step/τ), halved every ``halve_every`` steps."""
    return lambda step, total: (1 - math.exp(-step / tau)) * 0.5 ** ((step - 1) // halve_every)


def raw_pixels_from(step_from: int, scale: float = 255.0 / 0.25):
    """From ``step_from`` on, the batches come from a loader that skipped the normalisation: pixels in 0-255
    units (the standardised values times 255 over their ~0.25 standard deviation)."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x * scale, y) if step >= step_from else (x, y)
    return hook


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="classification", task_kind="classification", logging=LOGGING,
                    batch_size=BATCH, probe_layout=True, lr_at=warm_halving())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", regions), settings.pop("model", unet()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("seg_healthy_madgrad", "U-Net segmenter, MADGRAD 1e-2, exponential warm-up (τ 20) then halving every 4 "
            "epochs, 12 epochs (360 steps)", madgrad(1e-2), 12, healthy=True),
        run("seg_healthy_madgrad_seed1", "U-Net segmenter, MADGRAD 1e-2, warm-up then halving every 4 epochs, 12 "
            "epochs, seed 1", madgrad(1e-2), 12, seed=1, healthy=True),
        run("seg_healthy_nesterov", "U-Net segmenter, SGD Nesterov momentum 0.9 lr 0.05, warm-up then halving every "
            "4 epochs, 12 epochs", nesterov(0.05), 12, healthy=True),
        run("seg_healthy_madgrad_long", "U-Net segmenter, MADGRAD 5e-3, warm-up then halving every 6 epochs, 20 "
            "epochs (600 steps)", madgrad(5e-3), 20, lr_at=warm_halving(6 * STEPS_PER_EPOCH), healthy=True),
        run("seg_lr_too_high_madgrad", "U-Net segmenter, MADGRAD 0.3 (30x the working lr: the SGD lr of the "
            "Nesterov runs scaled up as for SGD), warm-up then halving every 4 epochs, 12 epochs", madgrad(0.3), 12,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["update_ratio_out_of_band", "best_epoch_not_last", "underfitting", "loss_spike",
                   "underperforming_classes", "dead_layers", "no_better_than_baseline", "divergence"]),
        run("seg_lr_too_low_nesterov", "U-Net segmenter, SGD Nesterov lr 2e-4 (1/250 of the working lr), warm-up "
            "then halving every 4 epochs, 12 epochs", nesterov(2e-4), 12,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes",
                   "no_better_than_baseline", "vanishing_gradients"]),
        run("seg_decayed_too_early_halving_in_steps", "U-Net segmenter, MADGRAD 1e-2, halving every 4 'epochs' "
            "counted in the 8-step epochs of the 240-image debug split (every 32 steps): the lr is below 10 % of its "
            "peak from step 129 of 360 and ~1e-3 of it by the end", madgrad(1e-2),
            12, lr_at=warm_halving(32),
            expect={"decayed_too_early": [64, 200]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer",
                   "underperforming_classes"]),
        run("seg_train_longer_two_epochs", "U-Net segmenter, MADGRAD 1e-2, warm-up then halving every 4 epochs, "
            "stopped after 2 epochs (60 steps)", madgrad(1e-2), 2,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underperforming_classes", "underfitting"]),
        run("seg_underfitting_pointwise", "a U-Net whose convolutions are all 1x1 (kernel_size=1 in the config): "
            "each pixel is classified from its own value, which cannot tell stripes and checkerboard from flat "
            "regions, MADGRAD 1e-2, 12 epochs", madgrad(1e-2), 12, model=unet(kernel=1),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
            allow=["underperforming_classes"]),
        run("seg_bad_initial_loss_background_prior", "U-Net segmenter whose head's bias starts at +8 on class 0 "
            "(a detector's background-prior init copied over: the first predictions are all class 0 with "
            "probability ~1), MADGRAD 1e-2, 12 epochs", madgrad(1e-2), 12, model=unet(background_bias=8.0),
            expect={"bad_initial_loss": [1, 7]}, allow=["loss_spike"]),
        run("seg_dead_layers_no_grad_encoder", "U-Net segmenter whose encoder runs under torch.no_grad() (the "
            "guard of a frozen-backbone snippet, in a model whose encoder was never pre-trained): its 8 tensors "
            "never get a gradient and keep their random weights, MADGRAD 1e-2, 12 epochs", madgrad(1e-2), 12,
            model=unet(frozen_encoder=True),
            expect={"dead_layers": everywhere}, allow=["underfitting", "underperforming_classes"]),
        run("seg_exploding_gradients_raw_pixels", "U-Net segmenter, SGD Nesterov lr 0.05, 12 epochs; from step 150 "
            "the batches come from a loader that skipped the normalisation (pixels in 0-255 units, ~1,000x the "
            "standardised scale)", nesterov(0.05), 12, batch_hook=raw_pixels_from(150),
            expect={"exploding_gradients": [150, 360]},
            allow=["loss_spike", "divergence", "lr_too_high", "best_epoch_not_last", "update_ratio_out_of_band",
                   "overfitting", "underfitting", "dead_layers", "no_better_than_baseline",
                   "underperforming_classes"]),
        run("seg_class_imbalance_rare_textures", "U-Net segmenter on images whose regions are stripes and "
            "checkerboard 1.5 % and 0.5 % of the time (flat 0.6/0.38), MADGRAD 1e-2, 12 epochs", madgrad(1e-2), 12,
            data=lambda: regions(kinds=(0.6, 0.38, 0.015, 0.005)),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere}),
        run("seg_underperforming_classes_pooled_loader", "U-Net segmenter on images averaged over 2x2 blocks and "
            "upsampled back by a loader written for an 8x8 model: stripes and checkerboard both become mid-grey "
            "(classes balanced as in the healthy runs), MADGRAD 1e-2, 12 epochs", madgrad(1e-2), 12,
            data=lambda: regions(pooled=True),
            expect={"underperforming_classes": everywhere}, forbid=["class_imbalance"], allow=["underfitting"]),
        run("seg_no_better_than_baseline_shuffled_masks", "U-Net segmenter trained on masks paired with the wrong "
            "images (two file lists sorted differently; val pairs intact), MADGRAD 1e-2, 12 epochs", madgrad(1e-2),
            12, data=lambda: regions(shuffled_masks=True),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base, nesterov_base = healthy["seg_healthy_madgrad"], healthy["seg_healthy_nesterov"]
    return {
        "seg_lr_too_high_madgrad": base,
        "seg_lr_too_low_nesterov": nesterov_base,
        "seg_decayed_too_early_halving_in_steps": base,
        "seg_train_longer_two_epochs": base,
        "seg_underfitting_pointwise": base,
        "seg_bad_initial_loss_background_prior": base,
        "seg_dead_layers_no_grad_encoder": base,
        "seg_exploding_gradients_raw_pixels": nesterov_base,
        "seg_class_imbalance_rare_textures": base,
        "seg_underperforming_classes_pooled_loader": base,
        "seg_no_better_than_baseline_shuffled_masks": base,
    }
