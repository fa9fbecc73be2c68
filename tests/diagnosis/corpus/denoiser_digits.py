"""A convolutional denoising autoencoder on the 8×8 digits, logged every 4 steps (held out: added after the rules).

The digits as (1, 8, 8) images scaled to [0, 1]; each training batch gets
fresh Gaussian noise (σ = 0.35) and the model reconstructs the clean image
(MSE per pixel); the validation images carry one fixed draw of the same
noise. A convolution, a strided convolution to a 4×4 code, a transposed
convolution back to 8×8 and an output convolution; batches of 32 (40 steps
per epoch). The loss, lr and gradient norm are logged every 4 steps (that
step's value, a tracker sampling the loop), per-layer statistics every 20
steps, val once per epoch. Task: regression (two runs say nothing).

Added after the rules were written, as a held-out test; see
``gru_waveforms.py`` and ``tests/diagnosis/heldout_twins.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import (adamw, cosine_to_zero, decay_at, make, nadam, one_cycle, plateau,
                                           warmup_stable_decay)
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "denoiser_digits"
LOGGING = Logging(every=4, layer_every=20)
NOISE = 0.35


@functools.lru_cache(maxsize=None)
def images(train_limit: int | None = None, seed: int = 31) -> Split:
    """Clean digit images as inputs and targets (N, 1, 8, 8) in [0, 1]; val inputs carry fixed noise."""
    from sklearn.datasets import load_digits

    pixels = load_digits().data.reshape(-1, 1, 8, 8) / 16.0
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pixels))
    cut = int(0.7 * len(pixels))
    train, val = order[:cut], order[cut:]
    if train_limit is not None:
        train = train[:train_limit]
    clean_train = torch.tensor(pixels[train], dtype=torch.float32)
    clean_val = torch.tensor(pixels[val], dtype=torch.float32)
    noisy_val = clean_val + NOISE * torch.tensor(rng.normal(size=clean_val.shape), dtype=torch.float32)
    return Split(clean_train, clean_train, noisy_val, clean_val, 1)


def fixed_noise(train_limit: int) -> Split:
    """``train_limit`` training images with one fixed noise draw each (the noise is part of the data set)."""
    data = images(train_limit)
    generator = torch.Generator().manual_seed(5)
    noisy = data.x_train + NOISE * torch.randn(data.x_train.shape, generator=generator)
    return Split(noisy, data.y_train, data.x_val, data.y_val, 1)


def add_noise(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh noise for each training batch, seeded by the step (no hidden state)."""
    generator = torch.Generator().manual_seed(1000 + step)
    return x + NOISE * torch.randn(x.shape, generator=generator), y


def noise_then_glitch(at: int, scale: float):
    """Fresh noise, and at step ``at`` one batch whose inputs are × ``scale`` (a data-pipeline glitch)."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = add_noise(step, x, y)
        return (x * scale, y) if step == at else (x, y)
    return hook


class Denoiser(nn.Module):
    """(B, 1, 8, 8) noisy image → (B, 1, 8, 8) reconstruction through a (B, code, 4, 4) code."""

    def __init__(self, channels: int = 16, code: int = 8):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(channels, code, 3, stride=2, padding=1), nn.ReLU())  # (B, code, 4, 4)
        self.decoder = nn.Sequential(nn.ConvTranspose2d(code, channels, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(channels, 1, 3, padding=1))  # (B, 1, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class OneNumberCode(nn.Module):
    """The encoder pooled to one number per image, decoded by a linear map: (B, 1, 8, 8) → (B, 1, 8, 8)."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(channels, 1, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten())  # (B, 1)
        self.decoder = nn.Linear(1, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)).reshape(-1, 1, 8, 8)


def denoiser(channels: int = 16, code: int = 8):
    return lambda data: Denoiser(channels, code)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="regression", logging=LOGGING,
                    batch_hook=add_noise)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", images), settings.pop("model", denoiser()), optimizer, epochs,
                **settings)


def adam(lr: float, **kwargs):
    return make(torch.optim.Adam, lr, **kwargs)


def sgd(lr: float, **kwargs):
    return make(torch.optim.SGD, lr, **kwargs)


DIVERGED_ALLOW = ["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                  "best_epoch_not_last", "underfitting", "overfitting"]


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("dn_healthy_adamw_wsd", "denoiser, AdamW 3e-3 warm-up-stable-decay, 40 epochs", adamw(3e-3), 40,
            scheduler=warmup_stable_decay(0.05, 0.2), healthy=True),
        run("dn_healthy_adamw_onecycle", "denoiser, AdamW 5e-3 one-cycle, 40 epochs", adamw(5e-3), 40,
            scheduler=one_cycle(), healthy=True),
        run("dn_healthy_sgd_cosine", "denoiser, SGD momentum 0.9 lr 0.1, cosine to 0, 40 epochs",
            sgd(0.1, momentum=0.9), 40, scheduler=cosine_to_zero(), healthy=True),
        run("dn_healthy_adam_constant_unknown_task", "denoiser, Adam 1e-3 constant, 40 epochs, no task kind",
            adam(1e-3), 40, task_kind="unknown", healthy=True),
        run("dn_healthy_nadam_plateau", "denoiser, NAdam 2e-3, ReduceLROnPlateau, 40 epochs", nadam(2e-3), 40,
            scheduler=plateau(0.5, 2), healthy=True),
        run("dn_lr_too_high_adam", "denoiser, Adam 0.05 constant (50x the working lr), 40 epochs. Twin (Adam 1e-3): "
                                   "final val loss 0.111, flat from epoch 2, vs 0.026 (4.2x)", adam(0.05), 40,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "dead_layers"]),
        run("dn_lr_too_low_adamw_wsd", "denoiser, AdamW 1e-5 warm-up-stable-decay, 40 epochs. Twin (AdamW 3e-3): final "
                                       "val loss 0.104 vs 0.025 (4.1x), still falling", adamw(1e-5), 40,
            scheduler=warmup_stable_decay(0.05, 0.2),
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("dn_decayed_too_early", "denoiser, AdamW 3e-3, lr x0.001 after 8% of 40 epochs. Twin (no decay): final val "
                                    "loss 0.0365 vs 0.0255 (1.43x)", adamw(3e-3), 40,
            scheduler=decay_at(0.08, 1e-3),
            expect={"decayed_too_early": [120, 330]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low"]),
        run("dn_divergence_sgd", "denoiser, SGD momentum 0.9 lr 3: the loss blows up (NaN from step 32; twin with lr "
                                 "0.1: 0.031)", sgd(3.0, momentum=0.9), 10,
            expect={"divergence": everywhere}, allow=DIVERGED_ALLOW),
        run("dn_loss_spike_glitch", "denoiser, Adam 1e-3, one batch with inputs x20 at step 600. Gradient norm 412 "
                                    "there (4,500x its median); logged loss 0.029 -> 0.19 (6.5x), under 0.04 again by "
                                    "step ~1200; final val loss 0.034 vs the twin's 0.026 (1.28x)", adam(1e-3), 40,
            batch_hook=noise_then_glitch(600, 20.0),
            expect={"loss_spike": [598, 640], "exploding_gradients": [598, 610]}, forbid=["divergence"],
            allow=["best_epoch_not_last", "update_ratio_out_of_band", "train_longer"]),
        run("dn_overfitting_fixed_noise", "wide denoiser (64 channels, code 32) on 80 images with one fixed noise draw,"
                                          " "
            "Adam 3e-3, 200 epochs (3 steps each), val every 12 steps. Val loss best 0.033 at step 108, final 0.053 "
            "(1.6x) "
            "while train loss falls to 0.0008; twin (every image, fresh noise): 0.025",
                adam(3e-3), 200, data=lambda: fixed_noise(80),
            model=denoiser(64, 32), batch_hook=None, eval_every=12,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
        run("dn_underfitting_one_number_code", "autoencoder whose code is one number per image, AdamW 3e-3 WSD, "
            "40 epochs. Train loss plateaus at 0.073, val 0.0725; twin (4x4x8 code): 0.025 (2.9x)",
                adamw(3e-3), 40, scheduler=warmup_stable_decay(0.05, 0.2),
            model=lambda data: OneNumberCode(),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        run("dn_train_longer", "denoiser, Adam 1e-3 constant, stopped after 3 of 40 epochs, 4 evals per epoch. Twin (40"
                               " epochs): final "
            "val loss 0.046 vs 0.026 (1.76x), still falling",
            adam(1e-3), 3, evals_per_epoch=4,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    adam_constant = run("dn_twin_adam_constant", "denoiser, Adam 1e-3 constant, 40 epochs", adam(1e-3), 40)
    return {
        "dn_lr_too_high_adam": adam_constant,
        "dn_lr_too_low_adamw_wsd": healthy["dn_healthy_adamw_wsd"],
        "dn_decayed_too_early": run("dn_twin_adamw_constant", "denoiser, AdamW 3e-3 constant, 40 epochs", adamw(3e-3),
                                    40),
        "dn_divergence_sgd": run("dn_twin_sgd_constant", "denoiser, SGD momentum 0.9 lr 0.1 constant, 10 epochs",
                                 sgd(0.1, momentum=0.9), 10),
        "dn_loss_spike_glitch": adam_constant,
        "dn_overfitting_fixed_noise": run("dn_twin_wide_fresh_noise_all_images",
                                          "wide denoiser on every image with fresh noise, Adam 3e-3, 25 epochs",
                                          adam(3e-3), 25, model=denoiser(64, 32)),
        "dn_underfitting_one_number_code": healthy["dn_healthy_adamw_wsd"],
        "dn_train_longer": run("dn_twin_adam_constant_4_evals", "denoiser, Adam 1e-3 constant, 40 epochs, 4 evals "
                               "per epoch", adam(1e-3), 40, evals_per_epoch=4),
    }
