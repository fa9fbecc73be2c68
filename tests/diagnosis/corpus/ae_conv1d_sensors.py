"""A 1-D ConvNet autoencoder of 3-channel sensor traces (MSE regression), AggMo, warm-up then quadratic polynomial decay, 5-step window means (ninth hold-out).

Traces made here: 3 channels of 64 samples; each channel is a sinusoid
(random frequency 1-4 cycles per trace, random phase, amplitude 0.5-1), all channels share one exponentially decaying event (random onset,
per-channel gain) and carry Gaussian noise (σ 0.1). 2,000 training and 500
validation traces, batches of 40 (50 steps per epoch). The model: two
strided 1-D convolutions (3→16→32 channels, kernel 5, stride 2, ReLU), a
linear bottleneck of 12, and a linear decoder back to 3×64 samples; the
loss is the mean squared reconstruction error. AggMo (written here, Lucas
et al. 2019: aggregated momentum with β = (0, 0.9, 0.99)) and Adam. The
schedule (per step): linear warm-up over 3 % of the steps, then
(1 - progress)² down to 0. Logged as the mean over each 5-step window: the
loss, and the lr and gradient norm of the window's last step, per-layer
statistics every 25 steps; val loss after every epoch. Task: regression.

Ninth hold-out (issue #12); see ``gru_next_event.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "ae_conv1d_sensors"
LOGGING = Logging(every=5, mean=True, layer_every=25)
CHANNELS, SAMPLES = 3, 64


@functools.lru_cache(maxsize=None)
def traces(train: int = 2000, val: int = 500, seed: int = 71) -> Split:
    rng = np.random.default_rng(seed)
    n = train + val
    t = np.linspace(0, 1, SAMPLES)
    freq = rng.uniform(1, 4, (n, CHANNELS, 1, 1))
    phase = rng.uniform(0, 2 * math.pi, (n, CHANNELS, 1, 1))
    amp = rng.uniform(0.5, 1.0, (n, CHANNELS, 1, 1))
    x = (amp * np.sin(2 * math.pi * freq * t + phase)).sum(2)
    onset = rng.uniform(0.1, 0.8, (n, 1, 1))
    event = np.where(t >= onset, np.exp(-(t - onset) * 12), 0.0)
    x = x + rng.uniform(-1.5, 1.5, (n, CHANNELS, 1)) * event + rng.normal(0, 0.1, (n, CHANNELS, SAMPLES))
    x = torch.tensor(x / x.std(), dtype=torch.float32)
    return Split(x[:train], x[:train].clone(), x[train:], x[train:].clone(), 1)


class ConvAutoencoder(nn.Module):
    def __init__(self, latent: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv1d(CHANNELS, 16, 5, stride=2, padding=2), nn.ReLU(),
                                     nn.Conv1d(16, 32, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(32 * SAMPLES // 4, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, 256), nn.ReLU(), nn.Linear(256, CHANNELS * SAMPLES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)).reshape(x.shape)


def autoencoder(**kwargs):
    return lambda data: ConvAutoencoder(**kwargs)


class AggMo(torch.optim.Optimizer):
    """AggMo (Lucas, Sun, Zemel & Grosse 2019, "Aggregated momentum"): v_i ← β_i v_i - g for each β_i;
    w ← w + lr / K · Σ_i v_i."""

    def __init__(self, params, lr: float = 0.1, betas: tuple[float, ...] = (0.0, 0.9, 0.99)):
        super().__init__(params, {"lr": lr, "betas": betas})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            betas = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["v"] = [torch.zeros_like(param) for _ in betas]
                for beta, velocity in zip(betas, state["v"]):
                    velocity.mul_(beta).sub_(param.grad)
                    param.add_(velocity, alpha=group["lr"] / len(betas))


def aggmo(lr: float):
    return lambda model: AggMo(model.parameters(), lr=lr)


def adam(lr: float):
    return lambda model: torch.optim.Adam(model.parameters(), lr=lr)


def warm_poly(warmup: float = 0.03, power: float = 2.0, planned_steps: int | None = None):
    """(step, total) → multiplier: linear warm-up, then (1 - progress)^power to 0 at ``planned_steps`` (the run's
    total unless said; 0 after it)."""
    def schedule(step: int, total: int) -> float:
        planned = planned_steps or total
        warm = max(1, int(planned * warmup))
        if step <= warm:
            return step / warm
        return max(0.0, 1 - (step - warm) / max(1, planned - warm)) ** power
    return schedule


def glitch(at: int, scale: float):
    """At step ``at`` one batch comes from a sensor whose gain register was mis-set (traces × ``scale``)."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x * scale, y * scale) if step == at else (x, y)
    return hook


def dropout_nan(at: int):
    """At step ``at`` one batch holds a trace whose dropped samples were stored as NaN (no imputation)."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if step != at:
            return x, y
        x, y = x.clone(), y.clone()
        x[0, 1, 20:30] = math.nan
        y[0, 1, 20:30] = math.nan
        return x, y
    return hook


def raw_units_from(at: int, scale: float = 200.0):
    """From step ``at`` the batches come from a second site's loader that skipped the scaling (raw ADC units)."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x * scale, y * scale) if step >= at else (x, y)
    return hook


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="regression", logging=LOGGING,
                    batch_size=40, probe_layout=True, lr_at=warm_poly())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", traces), settings.pop("model", autoencoder()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("ae_healthy_aggmo", "1-D conv autoencoder, AggMo 0.05, 3 % warm-up then quadratic decay, 12 epochs "
            "(600 steps)", aggmo(0.05), 12, healthy=True),
        run("ae_healthy_aggmo_seed1", "1-D conv autoencoder, AggMo 0.05, warm-up then quadratic decay, 12 epochs, "
            "seed 1", aggmo(0.05), 12, seed=1, healthy=True),
        run("ae_healthy_adam", "1-D conv autoencoder, Adam 2e-3, warm-up then quadratic decay, 12 epochs",
            adam(2e-3), 12, healthy=True),
        run("ae_healthy_aggmo_long", "1-D conv autoencoder, AggMo 0.03, warm-up then quadratic decay, 20 epochs "
            "(1,000 steps)", aggmo(0.03), 20, healthy=True),
        run("ae_lr_too_low_adam", "1-D conv autoencoder, Adam 1e-4 (1/20 of the working lr), warm-up then "
            "quadratic decay, 12 epochs", adam(1e-4), 12,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "vanishing_gradients"]),
        run("ae_decayed_too_early_smoke_max_steps", "1-D conv autoencoder, Adam 2e-3, the polynomial decay's "
            "max_steps left at the smoke test's 60: the lr is 0 from step 60 of 600", adam(2e-3), 12,
            lr_at=warm_poly(planned_steps=60),
            expect={"decayed_too_early": [20, 150]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer"]),
        run("ae_underfitting_bottleneck_1", "1-D conv autoencoder with a bottleneck of 1 (latent_dim=1 in the "
            "config), AggMo 0.05, 12 epochs", aggmo(0.05), 12, model=autoencoder(latent=1),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        run("ae_train_longer_four_epochs", "1-D conv autoencoder, AggMo 0.05, warm-up then quadratic decay "
            "planned for 12 epochs, stopped after 4 (200 steps)", aggmo(0.05), 4, lr_at=warm_poly(planned_steps=600),
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underfitting"]),
        run("ae_divergence_nan_dropout", "1-D conv autoencoder, AggMo 0.05, 12 epochs; at step 350 a batch holds "
            "a trace whose dropped samples were stored as NaN: loss, gradients and then every weight are NaN",
            aggmo(0.05), 12, batch_hook=dropout_nan(350),
            expect={"divergence": [350, 600]}, allow=["exploding_gradients", "lr_too_high", "dead_layers",
                                                      "loss_spike", "update_ratio_out_of_band",
                                                      "best_epoch_not_last", "underfitting"]),
        run("ae_loss_spike_gain_glitch", "1-D conv autoencoder, Adam 2e-3, 12 epochs; at step 300 one batch comes "
            "from a sensor whose gain register was mis-set (traces x8)", adam(2e-3), 12, batch_hook=glitch(300, 8.0),
            expect={"loss_spike": [295, 310]}, forbid=["divergence"], allow=["exploding_gradients"]),
        run("ae_exploding_gradients_raw_units", "1-D conv autoencoder, AggMo 0.05, 12 epochs; from step 250 the "
            "batches come from a second site's loader that skipped the scaling (raw units, x200)", aggmo(0.05), 12,
            batch_hook=raw_units_from(250),
            expect={"exploding_gradients": [250, 600]},
            allow=["loss_spike", "divergence", "lr_too_high", "best_epoch_not_last", "update_ratio_out_of_band",
                   "overfitting", "underfitting", "dead_layers"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base = healthy["ae_healthy_aggmo"]
    return {
        "ae_lr_too_low_adam": healthy["ae_healthy_adam"],
        "ae_decayed_too_early_smoke_max_steps": healthy["ae_healthy_adam"],
        "ae_underfitting_bottleneck_1": base,
        "ae_train_longer_four_epochs": base,
        "ae_divergence_nan_dropout": base,
        "ae_loss_spike_gain_glitch": healthy["ae_healthy_adam"],
        "ae_exploding_gradients_raw_units": base,
    }
