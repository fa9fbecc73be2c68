"""An LSTM-attention forecaster of synthetic seasonal series trained with a Gaussian negative log-likelihood, RMSprop with ReduceLROnPlateau, per-epoch means from epoch 6 (sixth hold-out).

Series made here: each is a level, a linear trend, two seasonal cycles
(periods 12 and 5, random amplitudes and phases) and AR(1) noise
(coefficient 0.6) whose scale differs from series to series (0.1 to 0.6
of the seasonal amplitude), cut into windows of 36 past and 8 future
values, every window standardised by its past's mean and standard
deviation. 2,000 training and 500 validation windows (from other series),
batches of 64 (32 steps per epoch). The model: a one-layer LSTM (32 units)
over the past, dot-product attention from its last state over all its
states, and an MLP head giving every future step a mean and a variance
(softplus); the loss is the Gaussian negative log-likelihood with its
constant (``F.gaussian_nll_loss(full=True)``), mean over the window's 8
steps and the batch: heteroscedastic regression, whose floor is set by
the noise and which could go below zero for a very quiet series.
RMSprop (centred) and Adam with AMSGrad; ReduceLROnPlateau on the val loss
after every epoch, or constant. The loss, lr and gradient norm are logged
as one mean per epoch from epoch 6 on (step 161: a logger attached after a
warm start), per-layer statistics every 8 steps, val loss after every
epoch. Task: regression.

Sixth hold-out (issue #12); see ``conv2d_textures.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "forecast_gnll"
PAST, HORIZON = 36, 8
STEPS_PER_EPOCH = 32  # 2,000 training windows in batches of 64
LOGGING = Logging(per_epoch=True, start=5 * STEPS_PER_EPOCH + 1, layer_every=8)


@functools.lru_cache(maxsize=None)
def seasonal_windows(train: int = 2000, val: int = 500, seed: int = 71) -> Split:
    """Pasts (N, PAST, 1) float32 and futures (N, HORIZON) float32, each window standardised by its past;
    ``num_classes`` 1 (unused)."""
    rng = np.random.default_rng(seed)
    length = PAST + HORIZON

    def windows(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = np.arange(length)[None, :] + rng.integers(0, 500, (count, 1))
        amplitude12, amplitude5 = rng.uniform(0.5, 2.0, (2, count, 1))
        phase12, phase5 = rng.uniform(0, 2 * np.pi, (2, count, 1))
        trend = rng.normal(0, 0.03, (count, 1))
        scale = rng.uniform(0.1, 0.6, (count, 1)) * amplitude12
        shocks = rng.normal(size=(count, length)) * scale
        noise = np.zeros((count, length))
        for position in range(length):
            noise[:, position] = shocks[:, position] + (0.6 * noise[:, position - 1] if position else 0.0)
        series = (rng.normal(0, 3, (count, 1)) + trend * t + amplitude12 * np.sin(2 * np.pi * t / 12 + phase12)
                  + amplitude5 * np.sin(2 * np.pi * t / 5 + phase5) + noise)
        past, future = series[:, :PAST], series[:, PAST:]
        mean, std = past.mean(1, keepdims=True), past.std(1, keepdims=True)
        return (torch.tensor((past - mean) / std, dtype=torch.float32)[..., None],
                torch.tensor((future - mean) / std, dtype=torch.float32))

    x_train, y_train = windows(train)
    x_val, y_val = windows(val)
    return Split(x_train, y_train, x_val, y_val, 1)


class Forecaster(nn.Module):
    """(B, PAST, 1) pasts → (B, HORIZON, 2): each future step's mean and raw variance (softplus in the loss)."""

    def __init__(self, hidden: int = 32, head: int = 64):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.query = nn.Linear(hidden, hidden, bias=False)
        self.head = nn.Sequential(nn.Linear(2 * hidden, head), nn.GELU(), nn.Linear(head, 2 * HORIZON))

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(past)  # (B, PAST, H)
        last = states[:, -1]  # (B, H)
        scores = torch.einsum("bh,bth->bt", self.query(last), states) / states.shape[-1] ** 0.5
        context = torch.einsum("bt,bth->bh", scores.softmax(-1), states)
        return self.head(torch.cat([last, context], -1)).reshape(-1, HORIZON, 2)


def forecaster(**kwargs):
    return lambda data: Forecaster(**kwargs)


def gaussian_nll(outputs: torch.Tensor, futures: torch.Tensor) -> torch.Tensor:
    """Gaussian NLL of (B, HORIZON) futures under (B, HORIZON, 2) means and raw variances, with the ½ln 2π constant."""
    variance = F.softplus(outputs[..., 1]) + 1e-4
    return F.gaussian_nll_loss(outputs[..., 0], futures, variance, full=True)


def rmsprop(lr: float, **kwargs):
    return lambda model: torch.optim.RMSprop(model.parameters(), lr=lr, alpha=0.99, centered=True, **kwargs)


def adam_amsgrad(lr: float, **kwargs):
    return lambda model: torch.optim.Adam(model.parameters(), lr=lr, amsgrad=True, **kwargs)


def plateau(factor: float = 0.5, patience: int = 2, **kwargs):
    """ReduceLROnPlateau on the val loss, after every epoch's evaluation."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=factor, patience=patience, **kwargs), "plateau")


def glitch(at: int, factor: float):
    """At step ``at`` the batch's futures × ``factor`` (pasts kept): one batch read in the sensor's raw units."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x, y * factor) if step == at else (x, y)
    return hook


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="regression", logging=LOGGING, batch_size=64,
                    probe_layout=True, loss=gaussian_nll, scheduler=plateau())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", seasonal_windows), settings.pop("model", forecaster()),
                optimizer, epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("fc_healthy_rmsprop_plateau", "LSTM-attention forecaster, Gaussian NLL, centred RMSprop 2e-3, "
            "ReduceLROnPlateau x0.5 patience 2, 25 epochs", rmsprop(2e-3), 25, healthy=True),
        run("fc_healthy_amsgrad_plateau_seed1", "LSTM-attention forecaster, Gaussian NLL, Adam AMSGrad 2e-3, "
            "ReduceLROnPlateau x0.5 patience 2, 25 epochs, seed 1", adam_amsgrad(2e-3), 25, seed=1, healthy=True),
        run("fc_healthy_rmsprop_plateau_fast_seed2", "LSTM-attention forecaster, Gaussian NLL, centred RMSprop 1e-3, "
            "ReduceLROnPlateau x0.3 patience 1, 25 epochs, seed 2", rmsprop(1e-3), 25,
            scheduler=plateau(factor=0.3, patience=1), seed=2, healthy=True),
        run("fc_healthy_rmsprop_long", "LSTM-attention forecaster, Gaussian NLL, centred RMSprop 2e-3, "
            "ReduceLROnPlateau x0.5 patience 3, 50 epochs (1,600 steps)", rmsprop(2e-3), 50,
            scheduler=plateau(patience=3), healthy=True),
        run("fc_lr_too_high_rmsprop", "LSTM-attention forecaster, centred RMSprop 5e-2 constant (25x the working "
            "lr), 25 epochs", rmsprop(5e-2), 25, scheduler=None,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "divergence", "dead_layers"]),
        run("fc_lr_too_low_rmsprop", "LSTM-attention forecaster, centred RMSprop 2e-5 (1/100 of the working lr), "
            "ReduceLROnPlateau x0.5 patience 2, 25 epochs", rmsprop(2e-5), 25,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("fc_decayed_too_early_plateau_threshold", "LSTM-attention forecaster, centred RMSprop 2e-3, "
            "ReduceLROnPlateau x0.1 patience 0 with threshold 0.1 (relative: each epoch must gain 10 %; meant as "
            "absolute), so the lr falls 10x at almost every epoch from the third on, 25 epochs", rmsprop(2e-3), 25,
            scheduler=plateau(factor=0.1, patience=0, threshold=0.1),
            expect={"decayed_too_early": [64, 320]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer"]),
        run("fc_underfitting_two_units", "forecaster of 2 LSTM units and a head of 4 (32 and 64 in the healthy runs), "
            "centred RMSprop 2e-3, ReduceLROnPlateau x0.5 patience 2, 60 epochs (1,920 steps)", rmsprop(2e-3), 60,
            model=forecaster(hidden=2, head=4),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        run("fc_overfitting_few_windows", "forecaster of 96 LSTM units and a head of 192 on 128 training windows "
            "(2 steps per epoch), centred RMSprop 1e-3 constant, 300 epochs", rmsprop(1e-3), 300, scheduler=None,
            data=lambda: seasonal_windows(train=128), model=forecaster(hidden=96, head=192),
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "loss_spike"]),
        run("fc_train_longer", "LSTM-attention forecaster, Adam AMSGrad 3e-4, ReduceLROnPlateau x0.5 patience 2, "
            "stopped after 9 of 25 epochs (288 steps)", adam_amsgrad(3e-4), 9,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low"]),
        run("fc_loss_spike_sensor_glitch", "LSTM-attention forecaster, centred RMSprop 2e-3, ReduceLROnPlateau, "
            "25 epochs, at step 400 one batch's futures multiplied by 60 (a sensor glitch read in raw units)",
            rmsprop(2e-3), 25, batch_hook=glitch(400, 60.0),
            expect={"loss_spike": [390, 450], "exploding_gradients": [395, 410]}, forbid=["divergence"],
            allow=["best_epoch_not_last", "update_ratio_out_of_band", "train_longer"]),
        run("fc_update_ratio_low_adam_eps", "LSTM-attention forecaster, Adam AMSGrad 2e-3 with eps 1.0 (for 1e-8: "
            "every update about lr x gradient, 1e-5 of the weights), ReduceLROnPlateau, 25 epochs",
            adam_amsgrad(2e-3, eps=1.0), 25,
            expect={"update_ratio_out_of_band": everywhere},
            allow=["lr_too_low", "underfitting", "train_longer"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    rms = healthy["fc_healthy_rmsprop_plateau"]
    return {
        "fc_lr_too_high_rmsprop": run("fc_twin_rmsprop_2e-3_constant", "LSTM-attention forecaster, centred RMSprop "
                                      "2e-3 constant, 25 epochs", rmsprop(2e-3), 25, scheduler=None),
        "fc_lr_too_low_rmsprop": rms,
        "fc_decayed_too_early_plateau_threshold": rms,
        "fc_underfitting_two_units": rms,
        "fc_overfitting_few_windows": run("fc_twin_wide_all_windows", "forecaster of 96 LSTM units and a head of "
                                          "192 on all the windows, centred RMSprop 1e-3 constant, 25 epochs",
                                          rmsprop(1e-3), 25, scheduler=None, model=forecaster(hidden=96, head=192)),
        "fc_train_longer": run("fc_twin_amsgrad_3e-4", "LSTM-attention forecaster, Adam AMSGrad 3e-4, "
                               "ReduceLROnPlateau x0.5 patience 2, 25 epochs", adam_amsgrad(3e-4), 25),
        "fc_loss_spike_sensor_glitch": rms,
        "fc_update_ratio_low_adam_eps": run("fc_twin_amsgrad_2e-3_seed0", "LSTM-attention forecaster, Adam AMSGrad "
                                            "2e-3, ReduceLROnPlateau, 25 epochs", adam_amsgrad(2e-3), 25),
    }
