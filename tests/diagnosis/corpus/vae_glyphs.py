"""A variational autoencoder on synthetic stroke glyphs (reconstruction + KL), logged every 8 steps from step 120 (fourth hold-out).

Glyphs made here: 12×12 images, each the union of 3 of 20 fixed strokes
(line segments between random points, drawn with a Gaussian profile of
σ = 0.5 pixels and clipped to [0, 1]), so the images have a small discrete
structure for the latent code to find. 2,000 training and 500 validation
images, batches of 50 (40 steps per epoch). An MLP VAE as PyTorch's VAE
example, scaled down: encoder 144-128 (ReLU) to a mean and a log-variance
of 8 latent dimensions, a sample by the reparameterisation trick (also at
evaluation, as the example), decoder 8-128 (ReLU)-144 pixel logits. The
loss is the negative ELBO per image: the pixels' binary cross-entropy
summed over the image plus the KL divergence to N(0, I) (about 100 at the
start, not a cross-entropy over classes nor a mean squared error). Adam,
RMSprop and NAdam with decoupled weight decay (NAdamW); constant,
exponential, inverse-square-root with warm-up, cosine, multi-step and
growing schedules. The loss,
lr and gradient norm are logged every 8 steps as that step's value from
step 120 on (a logger set up after the first three epochs), per-layer
statistics every 24 steps, val loss after every epoch. Task: unknown (one
run says nothing).

Fourth hold-out (issue #12); see ``gin_graph_motifs.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.corpus.common import cosine_to_zero, make
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "vae_glyphs"
LOGGING = Logging(every=8, start=120, layer_every=24)
SIDE, STROKES, PER_IMAGE = 12, 20, 3


@functools.lru_cache(maxsize=None)
def glyphs(train: int = 2000, val: int = 500, seed: int = 81) -> Split:
    """Images (N, SIDE * SIDE) float32 in [0, 1], as inputs and as targets; ``num_classes`` 1."""
    rng = np.random.default_rng(seed)
    ends = rng.uniform(0.5, SIDE - 1.5, size=(STROKES, 2, 2))
    grid = np.stack(np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij"), -1).reshape(-1, 2).astype(float)
    strokes = np.empty((STROKES, SIDE * SIDE))
    for index, (start, end) in enumerate(ends):
        direction = end - start
        along = np.clip(((grid - start) @ direction) / max(direction @ direction, 1e-9), 0, 1)
        distance = np.linalg.norm(grid - (start + along[:, None] * direction), axis=1)
        strokes[index] = np.exp(-0.5 * (distance / 0.5) ** 2)
    chosen = np.argsort(rng.random((train + val, STROKES)), 1)[:, :PER_IMAGE]
    images = np.clip(strokes[chosen].sum(1), 0, 1)
    tensor = torch.tensor(images, dtype=torch.float32)
    return Split(tensor[:train], tensor[:train].clone(), tensor[train:], tensor[train:].clone(), 1)


def negative_elbo(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Per image: the pixels' BCE summed over the image plus KL(q(z|x) ‖ N(0, I)); mean over the batch."""
    logits, mean, log_variance = outputs
    reconstruction = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    divergence = -0.5 * torch.sum(1 + log_variance - mean.pow(2) - log_variance.exp())
    return (reconstruction + divergence) / len(targets)


class VAE(nn.Module):
    """(B, 144) images → (pixel logits (B, 144), mean (B, L), log-variance (B, L))."""

    def __init__(self, hidden: int = 128, latent: int = 8):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(SIDE * SIDE, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, latent)
        self.log_variance = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, SIDE * SIDE))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.encoder(images)
        mean, log_variance = self.mean(hidden), self.log_variance(hidden)
        latent = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean)
        return self.decoder(latent), mean, log_variance


def vae(hidden: int = 128, latent: int = 8):
    return lambda data: VAE(hidden, latent)


def adam(lr: float):
    return make(torch.optim.Adam, lr)


def rmsprop(lr: float):
    return make(torch.optim.RMSprop, lr, alpha=0.99)


def nadamw(lr: float, weight_decay: float = 1e-2):
    return make(torch.optim.NAdam, lr, weight_decay=weight_decay, decoupled_weight_decay=True)


def exponential(gamma: float):
    """ExponentialLR: lr × ``gamma`` after every epoch."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma), "epoch")


def inverse_sqrt(warmup: int):
    """Linear warm-up over ``warmup`` steps, then lr × sqrt(warmup / step) (fairseq's inverse_sqrt)."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda taken: (taken + 1) / warmup if taken + 1 < warmup else math.sqrt(warmup / (taken + 1))),
        "step")


def multistep_epochs(milestones: list[int], gamma: float = 0.1):
    """MultiStepLR stepped after every epoch: lr × ``gamma`` after each epoch in ``milestones``."""
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma), "epoch")


def growing(factor: float):
    """LambdaLR: the lr × ``factor`` every step."""
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda taken: factor ** taken), "step")


def glitch(at: int, scale: float):
    """One batch whose input images (not the targets) are × ``scale`` at step ``at`` (a loader's double scaling)."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x * scale, y) if step == at else (x, y)
    return hook


def dead_decoder(model: nn.Module) -> None:
    """The decoder's hidden ReLUs dead from the start: its first layer's bias set to -50 (a bad init copied over)."""
    with torch.no_grad():
        model.decoder[0].bias.fill_(-50.0)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", logging=LOGGING, batch_size=50,
                    loss=negative_elbo, probe_layout=True)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", glyphs), settings.pop("model", vae()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("vae_healthy_adam_constant", "VAE, Adam 1e-3 constant, 30 epochs", adam(1e-3), 30, healthy=True),
        run("vae_healthy_adam_exponential", "VAE, Adam 2e-3, ExponentialLR x0.93 per epoch, 30 epochs", adam(2e-3), 30,
            scheduler=exponential(0.93), healthy=True),
        run("vae_healthy_rmsprop_inverse_sqrt", "VAE, RMSprop 1e-3, 100-step warm-up then inverse square root, "
            "30 epochs", rmsprop(1e-3), 30, scheduler=inverse_sqrt(100), healthy=True),
        run("vae_healthy_nadamw_cosine", "VAE, NAdam 2e-3 with decoupled weight decay 0.01, cosine to 0, 30 epochs",
            nadamw(2e-3), 30, scheduler=cosine_to_zero(), healthy=True),
        run("vae_healthy_adam_long_cosine", "VAE, Adam 1e-3, cosine to 0, 100 epochs (4,000 steps)", adam(1e-3), 100,
            scheduler=cosine_to_zero(), healthy=True),
        run("vae_lr_too_high_adam", "VAE, Adam 0.1 constant (100x the working lr), 30 epochs", adam(0.1), 30,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "dead_layers"]),
        run("vae_lr_too_low_adam", "VAE, Adam 1e-5 constant (1/100 of the working lr), 30 epochs", adam(1e-5), 30,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("vae_decayed_too_early_milestones", "VAE, Adam 2e-3, MultiStepLR x0.1 after epochs 3 and 6 (milestones "
            "meant for 30 and 60 of a longer plan: lr 2e-4 from step 120, 2e-5 from step 240), 30 epochs",
            adam(2e-3), 30, scheduler=multistep_epochs([3, 6]),
            expect={"decayed_too_early": [100, 300]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer"]),
        run("vae_divergence_lr_growth", "VAE, Adam 1e-3 growing x1.006 per step (an lr range test left running: "
            "lr 0.04 by step 600, 1.3 by step 1,200), 30 epochs", adam(1e-3), 30, scheduler=growing(1.006),
            expect={"divergence": everywhere}, allow=DIVERGED_ALLOW),
        run("vae_underfitting_tiny", "VAE of width 3 with one latent dimension, Adam 1e-3 constant, 30 epochs",
            adam(1e-3), 30, model=vae(3, 1),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        run("vae_train_longer", "VAE, Adam 2e-4 constant, stopped after 8 of 30 epochs, val every 20 steps",
            adam(2e-4), 8, eval_every=20,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low"]),
        run("vae_dead_layers_dead_decoder", "VAE whose decoder's hidden ReLUs are dead from the start (first "
            "decoder layer's bias -50), Adam 1e-3 constant, 30 epochs", adam(1e-3), 30, prepare=dead_decoder,
            expect={"dead_layers": everywhere},
            allow=["underfitting", "vanishing_gradients", "update_ratio_out_of_band"]),
        run("vae_loss_spike_glitch", "VAE, Adam 1e-3 constant, one batch with input images x30 (targets intact) at "
            "step 600, 30 epochs", adam(1e-3), 30, batch_hook=glitch(600, 30.0),
            expect={"loss_spike": [595, 630], "exploding_gradients": [595, 610]}, forbid=["divergence"],
            allow=["exploding_gradients", "best_epoch_not_last", "update_ratio_out_of_band", "train_longer"]),
    ]


DIVERGED_ALLOW = ["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                  "best_epoch_not_last", "underfitting", "overfitting"]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    constant = healthy["vae_healthy_adam_constant"]
    return {
        "vae_lr_too_high_adam": constant,
        "vae_lr_too_low_adam": constant,
        "vae_decayed_too_early_milestones": run("vae_twin_adam_2e-3_constant", "VAE, Adam 2e-3 constant, 30 epochs",
                                                adam(2e-3), 30),
        "vae_divergence_lr_growth": constant,
        "vae_underfitting_tiny": constant,
        "vae_train_longer": run("vae_twin_adam_2e-4", "VAE, Adam 2e-4 constant, 30 epochs, val every 20 steps",
                                adam(2e-4), 30, eval_every=20),
        "vae_dead_layers_dead_decoder": constant,
        "vae_loss_spike_glitch": constant,
    }
