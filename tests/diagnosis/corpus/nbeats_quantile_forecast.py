"""An N-BEATS-style stack of fully connected blocks (backcast/forecast residual links) forecasting 3 quantiles of synthetic seasonal series with the pinball loss, Lion, cosine with warm restarts, 10-step window means (twelfth hold-out).

Series made here: each sample is 32 steps of a seasonal series (period 6,
8 or 12, amplitude 0.5-2, a second harmonic, a level and a slow trend, all
drawn per sample) with heteroscedastic noise (σ grows with the seasonal
swing) and a multiplicative regime switch at a random step; the model reads
the first 24 steps and forecasts the 10th, 50th and 90th percentiles of the
last 8. 4,000 training and 1,000 validation samples, batches of 64 (63 steps
per epoch). The model: 3 blocks, each an MLP 24→64→64 (ReLU) giving a
backcast of 24 (subtracted from the block's input) and a forecast of 8×3
(summed over the blocks). The loss is the pinball (quantile) loss averaged
over the 3 quantiles and the 8 steps. Lion (written here, Chen et al. 2023:
the sign of an interpolated momentum, decoupled weight decay), RAdam and SGD
with Nesterov momentum. The schedule (per step, as a multiplier): cosine
with warm restarts (SGDR, T₀ = 1/7 of the run, T_mult 2: cycles of 1/7, 2/7
and 4/7 ending at 0). Logged as the mean over each 10-step window: the loss,
and the lr and gradient norm of the window's last step; per-layer
statistics every 20 steps; val loss after every epoch. No task kind
recorded (a quantile forecast, not a C-class problem).

Twelfth hold-out (issue #12): written by an engineer who changes no rule and
never reads them; labels come from how each run was built, each fault run
checked against its healthy twin (``tests/diagnosis/heldout_twins.py
--family nbeats_quantile_forecast``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "nbeats_quantile_forecast"
LOGGING = Logging(every=10, mean=True, layer_every=20)
BACK, HORIZON = 24, 8
QUANTILES = torch.tensor([0.1, 0.5, 0.9])


@functools.lru_cache(maxsize=None)
def series(train: int = 4000, val: int = 1000, seed: int = 121) -> Split:
    rng = np.random.default_rng(seed)
    n = train + val
    t = np.arange(BACK + HORIZON)[None, :]
    period = rng.choice([6.0, 8.0, 12.0], size=(n, 1))
    amplitude = rng.uniform(0.5, 2.0, size=(n, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    season = np.sin(2 * np.pi * t / period + phase)
    clean = (rng.normal(size=(n, 1)) + rng.normal(0, 0.03, size=(n, 1)) * t + amplitude * season
             + 0.4 * amplitude * np.sin(4 * np.pi * t / period + 2 * phase))
    switch = rng.integers(4, BACK + HORIZON, size=(n, 1))
    clean = np.where(t >= switch, clean * rng.choice([0.6, 1.0, 1.5], size=(n, 1)), clean)
    noise = (0.1 + 0.25 * amplitude * np.abs(season)) * rng.normal(size=clean.shape)
    values = (clean + noise).astype(np.float32)
    x, y = torch.tensor(values[:, :BACK]), torch.tensor(values[:, BACK:])
    return Split(x[:train], y[:train], x[train:], y[train:], 1)


def pinball(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of (B, 8, 3) quantile forecasts against (B, 8) values."""
    error = targets.unsqueeze(-1) - outputs.reshape(targets.shape[0], HORIZON, len(QUANTILES))
    return torch.maximum(QUANTILES * error, (QUANTILES - 1) * error).mean()


class Block(nn.Module):
    def __init__(self, width: int, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        inputs = BACK
        for _ in range(depth):
            layers += [nn.Linear(inputs, width), nn.ReLU()]
            inputs = width
        self.body = nn.Sequential(*layers)
        self.backcast = nn.Linear(inputs, BACK)
        self.forecast = nn.Linear(inputs, HORIZON * len(QUANTILES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(x)
        return self.backcast(hidden), self.forecast(hidden)


class NBeats(nn.Module):
    def __init__(self, blocks: int = 3, width: int = 64, depth: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, depth) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual, forecast = x, 0.0
        for block in self.blocks:
            back, ahead = block(residual)
            residual = residual - back
            forecast = forecast + ahead
        return forecast


class LinearQuantiles(nn.Module):
    """One linear map from the 24 inputs to the 8×3 quantiles (no hidden layer)."""

    def __init__(self):
        super().__init__()
        self.forecast = nn.Linear(BACK, HORIZON * len(QUANTILES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forecast(x)


def nbeats(**kwargs):
    return lambda data: NBeats(**kwargs)


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): w ← w - lr·(sign(β₁ m + (1-β₁) g) + λ w), then m ← β₂ m + (1-β₂) g."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["m"] = torch.zeros_like(param)
                m = state["m"]
                update = (m * beta1 + param.grad * (1 - beta1)).sign_()
                if group["weight_decay"]:
                    param.mul_(1 - group["lr"] * group["weight_decay"])
                param.add_(update, alpha=-group["lr"])
                m.mul_(beta2).add_(param.grad, alpha=1 - beta2)


def lion(lr: float, **kwargs):
    return lambda model: Lion([p for p in model.parameters() if p.requires_grad], lr=lr, **kwargs)


def radam(lr: float):
    return lambda model: torch.optim.RAdam(model.parameters(), lr=lr)


def nesterov(lr: float):
    return lambda model: torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)


def sgdr(planned_epochs: int | None = None, epochs: int | None = None, cut_at: float | None = None, cut: float = 1.0,
         bump_at: int | None = None, bump_length: int = 0, bump: float = 1.0):
    """(step, total) → multiplier: cosine with warm restarts, cycles of 1/7, 2/7 and 4/7 of the run (or of
    ``planned_epochs`` when it stops after ``epochs``); × ``cut`` after ``cut_at`` of the run; × ``bump`` for
    ``bump_length`` steps from ``bump_at``."""
    def schedule(step: int, total: int) -> float:
        length = total * planned_epochs / epochs if planned_epochs else total
        position = min(step / length, 1.0) * 7
        start, cycle = (0.0, 1.0) if position < 1 else (1.0, 2.0) if position < 3 else (3.0, 4.0)
        value = 0.5 * (1 + math.cos(math.pi * (position - start) / cycle))
        if cut_at is not None and step > cut_at * total:
            value *= cut
        if bump_at is not None and bump_at <= step < bump_at + bump_length:
            value *= bump
        return value
    return schedule


def freeze_bodies(model: nn.Module) -> None:
    """requires_grad off for every block's hidden layers (the backcast and forecast heads still learn)."""
    for block in model.blocks:
        for parameter in block.body.parameters():
            parameter.requires_grad_(False)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", logging=LOGGING, batch_size=64,
                    probe_layout=True, loss=pinball, lr_at=sgdr())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", series), settings.pop("model", nbeats()), optimizer, epochs,
                **settings)


DIVERGED_ALLOW = ["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                  "best_epoch_not_last", "underfitting"]


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("nbeats_healthy_lion", "N-BEATS (3 blocks of width 64) forecasting 3 quantiles, Lion 3e-4 wd 0.1, SGDR "
            "(T0 1/7 of the run, T_mult 2), 14 epochs (882 steps)", lion(3e-4, weight_decay=0.1), 14, healthy=True),
        run("nbeats_healthy_lion_seed1", "N-BEATS, Lion 3e-4 wd 0.1, SGDR, 14 epochs, seed 1",
            lion(3e-4, weight_decay=0.1), 14, seed=1, healthy=True),
        run("nbeats_healthy_radam", "N-BEATS, RAdam 2e-3, SGDR, 14 epochs", radam(2e-3), 14, healthy=True),
        run("nbeats_healthy_lion_four_blocks", "N-BEATS with 4 blocks of width 96, Lion 2e-4 wd 0.1, SGDR, 16 epochs "
            "(1,008 steps), seed 2", lion(2e-4, weight_decay=0.1), 16, model=nbeats(blocks=4, width=96), seed=2,
            healthy=True),
        run("nbeats_healthy_nesterov", "N-BEATS, SGD Nesterov momentum 0.9 lr 0.3, SGDR, 14 epochs", nesterov(0.3), 14,
            healthy=True),
        run("nbeats_lr_too_high_lion", "N-BEATS, Lion 1e-2 (33x the working lr: Adam's usual 1e-2 given to Lion, whose "
            "sign updates need 3-10x less), SGDR, 14 epochs (checked: final val 0.367 vs twin 0.132, 2.8x; the window "
            "mean rises from 0.133 to 0.26 in the last cycle; grad norm peak/median 41.6 vs 2.1)", lion(1e-2, weight_decay=0.1), 14,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["update_ratio_out_of_band", "best_epoch_not_last", "underfitting", "loss_spike", "overfitting",
                   "divergence", "dead_layers"]),
        run("nbeats_lr_too_low_lion", "N-BEATS, Lion 3e-6 (100x below the working lr), SGDR, 14 epochs (checked: final val 0.669 vs "
            "twin 0.132, 5.1x; the loss only falls from 0.69 to 0.66; median update/weight ratio 1.4e-5 vs the "
            "twin's 1.3e-3)",
            lion(3e-6, weight_decay=0.1), 14,
            expect={"lr_too_low": everywhere, "update_ratio_out_of_band": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting"]),
        run("nbeats_decayed_too_early_cut", "N-BEATS, Lion 3e-4, SGDR times 0.003 from 8 % of the run on (a "
            "cool-down milestone in epochs read as a fraction), 14 epochs (checked: final val 0.343 vs twin 0.132, "
            "2.6x; the loss flat near 0.34 from step 100 on)", lion(3e-4, weight_decay=0.1), 14,
            lr_at=sgdr(cut_at=0.08, cut=0.003),
            expect={"decayed_too_early": [50, 200]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer"]),
        run("nbeats_train_longer_stopped", "N-BEATS, Lion 3e-4, an SGDR planned for 14 epochs, stopped after 2 (126 "
            "steps, inside its first cycle; checked: final val 0.325 vs the twin's 0.132 after 14 epochs, 2.5x; "
            "best val at the last step, the window mean still falling)", lion(3e-4, weight_decay=0.1), 2,
            lr_at=sgdr(planned_epochs=14, epochs=2),
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underfitting"]),
        run("nbeats_divergence_nesterov", "N-BEATS, SGD Nesterov momentum 0.9 at lr 3 (10x the working 0.3), "
            "SGDR, no clipping, 14 epochs: after the restart at step 378 the gradient norm grows from about 0.09 "
            "to 1.13 at step 380 and 1.98 at step 400 (22x), then overflows, and the loss is NaN from step 410 on "
            "(checked: first non-finite loss and gradient norm at 410, val NaN at the end; the twin at lr 0.3 "
            "stays finite, final val 0.126, its gradient norm peak/median 2.0)",
            nesterov(3.0), 14,
            expect={"divergence": [380, 500], "exploding_gradients": [370, 420]}, allow=DIVERGED_ALLOW),
        run("nbeats_loss_spike_lr_bump", "N-BEATS, Lion 3e-4, SGDR with the lr x200 for 5 steps from step 450 (a "
            "restart that reloaded a wrong lr), 14 epochs (checked: the window mean jumps from about 0.15 to 1.03 "
            "at step 460 and is back near 0.33 by step 520, the twin's stays under 0.17 there; final val 0.229 vs "
            "0.132, best val 0.153 at step 441)", lion(3e-4, weight_decay=0.1), 14,
            lr_at=sgdr(bump_at=450, bump_length=5, bump=200.0),
            expect={"loss_spike": [445, 560]}, forbid=["divergence"],
            allow=["exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "best_epoch_not_last"]),
        run("nbeats_underfitting_linear", "a single linear map 24→8x3 instead of N-BEATS (no hidden layer: "
            "the regime switch and the season-dependent spread are out of its reach), Lion 3e-4, SGDR, 14 epochs "
            "(checked: final val 0.308 vs twin 0.132, 2.3x; final train 0.305, as high)",
            lion(3e-4, weight_decay=0.1), 14, model=lambda data: LinearQuantiles(),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        run("nbeats_dead_layers_frozen_bodies", "N-BEATS whose blocks' hidden layers (body) were left with "
            "requires_grad off (a head-only fine-tuning recipe run without its checkpoint: they stay at their random "
            "init; only the backcast and forecast heads learn), Lion 3e-4, SGDR, 14 epochs (checked: final val "
            "0.226 vs twin 0.132, 1.7x)", lion(3e-4, weight_decay=0.1), 14, prepare=freeze_bodies,
            expect={"dead_layers": everywhere}, allow=["underfitting"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base = healthy["nbeats_healthy_lion"]
    twins = {spec.name: base for spec in specs() if not spec.healthy}
    twins["nbeats_divergence_nesterov"] = healthy["nbeats_healthy_nesterov"]
    return twins


