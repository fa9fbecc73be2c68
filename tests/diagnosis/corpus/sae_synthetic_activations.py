"""A sparse autoencoder (an overcomplete dictionary with ReLU codes and unit-norm decoder rows) on synthetic "activations" made of sparse ground-truth features, MSE + L1 penalty, AdamW, warm-up-stable-decay, logged every 5 steps (thirteenth hold-out).

Activations made here: 256 ground-truth feature directions in 48 dimensions
(random unit vectors); each sample switches each feature on with
probability 1.5 % (about 4 at a time) with a magnitude of 0.5 + an
exponential of mean 1, adds them up and adds Gaussian noise (σ 0.05 a
dimension). 6,000 training and 1,000 validation samples, batches of 64 (94
steps an epoch). The model: an SAE with 512 latents: codes = ReLU(W_enc (x
- b_dec) + b_enc), reconstruction = W_dec codes + b_dec with every decoder
row divided by its norm in the forward pass, W_enc initialised as 0.1 × the
decoder's transpose; it returns the reconstruction and the codes. The loss:
the squared reconstruction error summed over the 48 dimensions plus 0.03 ×
the codes' L1 norm, both averaged over the batch (so it never reaches 0).
AdamW (betas 0.9, 0.999, no weight decay on biases) and Adam. The lr (per
step, as a multiplier): warm-up-stable-decay, linear warm-up over the first
5 % of the steps, constant, then linear decay to 0 over the last 20 %.
Logged every 5 steps: that step's loss, lr and gradient norm; per-layer
statistics every 25 steps; val loss twice an epoch. Task: regression.

Thirteenth hold-out (issue #12); see ``ecg_resnet1d_rhythms.py``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "sae_synthetic_activations"
LOGGING = Logging(every=5, layer_every=25)
DIMENSION, FEATURES = 48, 256
L1 = 0.03


@functools.lru_cache(maxsize=None)
def activations(train: int = 6000, val: int = 1000, probability: float = 0.015, seed: int = 132) -> Split:
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(FEATURES, DIMENSION))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)

    def draw(n: int) -> torch.Tensor:
        on = rng.random((n, FEATURES)) < probability
        magnitude = 0.5 + rng.exponential(1.0, (n, FEATURES))
        x = (on * magnitude) @ directions + rng.normal(0, 0.05, (n, DIMENSION))
        return torch.tensor(x, dtype=torch.float32)

    x_train, x_val = draw(train), draw(val)
    return Split(x_train, x_train, x_val, x_val, 1)


class SparseAutoencoder(nn.Module):
    def __init__(self, latents: int = 512, encoder_bias: float = 0.0):
        super().__init__()
        decoder = torch.randn(latents, DIMENSION)
        decoder /= decoder.norm(dim=1, keepdim=True)
        self.encoder = nn.Linear(DIMENSION, latents)
        self.decoder = nn.Parameter(decoder)
        self.decoder_bias = nn.Parameter(torch.zeros(DIMENSION))
        with torch.no_grad():
            self.encoder.weight.copy_(0.1 * decoder)
            self.encoder.bias.fill_(encoder_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = F.relu(self.encoder(x - self.decoder_bias))
        rows = self.decoder / self.decoder.norm(dim=1, keepdim=True)
        return torch.cat([codes @ rows + self.decoder_bias, codes], dim=1)


def sae_loss(outputs: torch.Tensor, targets: torch.Tensor, l1: float = L1) -> torch.Tensor:
    reconstruction, codes = outputs[:, :DIMENSION], outputs[:, DIMENSION:]
    return ((reconstruction - targets) ** 2).sum(1).mean() + l1 * codes.abs().sum(1).mean()


def sae(**kwargs):
    return lambda data: SparseAutoencoder(**kwargs)


def adamw(lr: float, weight_decay: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999)):
    def make(model: nn.Module) -> torch.optim.Optimizer:
        decay = [p for p in model.parameters() if p.ndim >= 2]
        exempt = [p for p in model.parameters() if p.ndim < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                  {"params": exempt, "weight_decay": 0.0}], lr=lr, betas=betas)
    return make


def adam(lr: float):
    return lambda model: torch.optim.Adam(model.parameters(), lr=lr)


def wsd(warmup: float = 0.05, decay_start: float = 0.8, decay_end: float = 1.0, floor: float = 0.0):
    """Warm-up-stable-decay: linear warm-up over ``warmup`` of the steps, constant, then linear decay from
    ``decay_start`` to ``decay_end`` of them down to ``floor`` (held after)."""
    def schedule(step: int, total: int) -> float:
        warm = max(1, int(total * warmup))
        if step <= warm:
            return step / warm
        start, end = total * decay_start, max(total * decay_end, total * decay_start + 1)
        if step <= start:
            return 1.0
        progress = min(1.0, (step - start) / (end - start))
        return 1.0 - (1.0 - floor) * progress
    return schedule


def corrupt_batch(at: int, scale: float):
    """One batch read from a shard saved before normalisation (inputs ``scale`` times too large)."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x * scale, y * scale) if step == at else (x, y)
    return hook


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="regression", logging=LOGGING, batch_size=64,
                    probe_layout=True, loss=sae_loss, lr_at=wsd(), evals_per_epoch=2)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", activations), settings.pop("model", sae()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    return [
        run("sae_healthy_adamw", "SAE with 512 latents on synthetic sparse activations, L1 0.03, AdamW 3e-3 wd 1e-4, "
            "warm-up-stable-decay (5 % warm-up, decay over the last 20 %), 6 epochs (564 steps)", adamw(3e-3), 6,
            healthy=True),
        run("sae_healthy_adamw_seed1", "SAE, AdamW 3e-3, WSD, 6 epochs, seed 1", adamw(3e-3), 6, seed=1,
            healthy=True),
        run("sae_healthy_adam", "SAE, Adam 3e-3 (no weight decay), WSD, 6 epochs, seed 2", adam(3e-3), 6, seed=2,
            healthy=True),
        run("sae_healthy_wide", "SAE with 1,024 latents, AdamW 2e-3, WSD, 6 epochs, seed 3", adamw(2e-3), 6,
            model=sae(latents=1024), seed=3, healthy=True),
        run("sae_healthy_long_decay", "SAE, AdamW 3e-3 betas (0.9, 0.99), WSD with the decay over the last 30 %, "
            "8 epochs (752 steps), seed 4", adamw(3e-3, betas=(0.9, 0.99)), 8, lr_at=wsd(decay_start=0.7), seed=4,
            healthy=True),
        run("sae_healthy_batch128", "SAE, batches of 128, AdamW 4e-3, WSD, 8 epochs (376 steps), seed 5",
            adamw(4e-3), 8, batch_size=128, seed=5, healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    'sae_lr_too_high_adamw': (
        "final val 1.704 vs twin 0.598, 2.8x; val 7.6, 4.2, 4.0, 2.2, 3.2, 5.2, 4.9 over the first 7 evaluations; "
        "train loss peaks of 42 at step 465"),
    'sae_lr_too_low_adamw': (
        "final val 1.355 vs twin 0.598, 2.3x, still falling at every evaluation; median update/weight ratio "
        "6.5e-4 vs the twin's 6.1e-3"),
    'sae_decayed_too_early_wsd': (
        "val 0.871 at every evaluation from step 94 on; final val 0.871 vs twin 0.598, 1.5x"),
    'sae_loss_spike_raw_shard': (
        "the loss of step 300 is 154 against 0.67 before, 5-13 for the next 30 steps; gradient norm 1,001 at step "
        "300 against about 1.2, 462x its median; final val 1.64 vs twin 0.598, 2.7x"),
    'sae_divergence_sgd': (
        "the loss reaches 6.9e9 at step 15 and is NaN from step 20 on; val NaN from the first evaluation"),
    'sae_overfitting_small_split': (
        "val falls to 4.35 at step 60 then rises to 4.87 at the end while the train loss goes to 0.018; final val "
        "43x the 0.114 of the twin on the 6,000 samples"),
    'sae_underfitting_8_latents': (
        "final val 9.67 vs twin 0.598, 16x; final train 7.9, as high"),
    'sae_train_longer_stopped': (
        "val 2.29, 1.29, 1.18, 1.06, 0.98, 0.92, 0.88, 0.85, 0.83 at its 9 evaluations, best at the last; final "
        "val 1.4x the twin's 0.598 after 6 epochs"),
    'sae_dead_layers_dead_latents': (
        "val 12.77 (the data's variance) at every evaluation; final val 21x the twin's 0.598"),
    'sae_update_ratio_low_adamw': (
        "median update/weight ratio 1.1e-5 vs the twin's 6.1e-3; final val 3.76 vs twin 0.598, 6.3x"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("sae_lr_too_high_adamw", "SAE, AdamW 5e-2 (17x the working lr: a 64-latent sweep's best lr kept "
            "for 512 latents), WSD, 6 epochs", adamw(5e-2), 6,
            expect={"lr_too_high": [1, 450]}, forbid=["lr_too_low"],
            allow=["loss_spike", "underfitting", "update_ratio_out_of_band", "best_epoch_not_last"]),
        run("sae_lr_too_low_adamw", "SAE, AdamW 3e-5 (100x below the working lr), WSD, 6 epochs", adamw(3e-5), 6,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("sae_decayed_too_early_wsd", "SAE, AdamW 3e-3, WSD whose decay phase was set to start at 8 % of the "
            "steps and end at 12 % (the fractions of another run length), lr 0 from step 68, 6 epochs", adamw(3e-3),
            6, lr_at=wsd(decay_start=0.08, decay_end=0.12), expect={"decayed_too_early": [40, 120]},
            forbid=["lr_too_high"], allow=["underfitting", "lr_too_low", "update_ratio_out_of_band", "train_longer"]),
        run("sae_loss_spike_raw_shard", "SAE, AdamW 3e-3, WSD, one batch (step 300) read from a shard saved before "
            "normalisation (inputs x30), 6 epochs", adamw(3e-3), 6, batch_hook=corrupt_batch(300, 30.0),
            expect={"loss_spike": [299, 320], "exploding_gradients": [299, 305]}, forbid=["divergence"],
            allow=["update_ratio_out_of_band"]),
        run("sae_divergence_sgd", "SAE trained by SGD with momentum 0.9 at lr 0.5 (an optimizer swap that kept "
            "a config's lr), WSD, 6 epochs", lambda model: torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9),
            6, expect={"divergence": everywhere},
            allow=["lr_too_high", "loss_spike", "exploding_gradients", "update_ratio_out_of_band",
                   "best_epoch_not_last", "underfitting"]),
        run("sae_overfitting_small_split", "SAE with 2,048 latents and L1 0.001 on 150 training samples (one "
            "shard reused for every epoch), AdamW 1e-2 without weight decay, WSD, 150 epochs (450 steps), val every "
            "10 steps", adamw(1e-2, weight_decay=0.0), 150, data=lambda: activations(train=150),
            model=sae(latents=2048), loss=functools.partial(sae_loss, l1=0.001), eval_every=10,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
        run("sae_underfitting_8_latents", "SAE with 8 latents for 256 ground-truth features (a dictionary-size "
            "sweep's smallest point), AdamW 3e-3, WSD, 6 epochs", adamw(3e-3), 6, model=sae(latents=8),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        run("sae_train_longer_stopped", "SAE, AdamW 3e-3, WSD planned for 6 epochs, stopped after 1 (94 steps, "
            "still in the stable phase), val every 10 steps", adamw(3e-3), 1,
            lr_at=lambda step, total: wsd()(step, 6 * total), eval_every=10, expect={"train_longer": everywhere},
            forbid=["overfitting", "best_epoch_not_last"], allow=["lr_too_low", "underfitting"]),
        run("sae_dead_layers_dead_latents", "SAE whose encoder bias was initialised to -6 (a JumpReLU recipe's "
            "threshold init kept with plain ReLU): every latent is dead from step 1, AdamW 3e-3, WSD, 6 epochs",
            adamw(3e-3), 6, model=sae(encoder_bias=-6.0), expect={"dead_layers": everywhere},
            allow=["underfitting", "no_better_than_baseline", "vanishing_gradients"]),
        run("sae_update_ratio_low_adamw", "SAE, AdamW 3e-7 (a per-token lr of a large-model recipe), WSD, 6 epochs",
            adamw(3e-7), 6, expect={"update_ratio_out_of_band": everywhere},
            allow=["lr_too_low", "underfitting", "train_longer"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["sae_healthy_adamw"] for spec in faults()}
    twins["sae_overfitting_small_split"] = run(
        "sae_twin_full_split_2048", "SAE with 2,048 latents and L1 0.001 on the 6,000 training samples, AdamW 1e-2 "
        "without weight decay, WSD, 5 epochs", adamw(1e-2, weight_decay=0.0), 5, model=sae(latents=2048),
        loss=functools.partial(sae_loss, l1=0.001))
    return twins
