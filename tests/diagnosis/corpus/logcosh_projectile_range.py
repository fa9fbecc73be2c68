"""A residual tanh MLP (no normalisation) regressing the range of a projectile with air drag from its launch conditions with the log-cosh loss (robust to the gross errors of the training measurements), AdamW with warm-up then cosine, NAdam with step decay or SGD with momentum and one-cycle, logged every step or every 5 steps from step 30 (eighteenth hold-out).

Data made here by simulating the flights: a launch speed of 10-40 m/s,
an angle of 10-70 degrees, a launch height of 0-10 m, a mass of 0.1-2 kg,
a quadratic drag constant of 0.001-0.02 kg/m and a horizontal wind of -5
to 5 m/s (uniform), integrated with explicit Euler steps of 0.01 s until
the projectile reaches the ground (gravity 9.81 m/s², drag force
-k |v - w| (v - w)); the target is the horizontal distance flown (0.5 to
140 m, median 36 m). The training ranges are "measured": 1 % Gaussian
noise, and 8 % of them gross errors (a range read off the wrong marker:
1 to 3 standard deviations too long or too short); the validation ranges
are exact (a calibrated rig). Inputs are the 6 launch conditions
standardised, the target the range standardised with the training mean
and deviation of the exact ranges; 4,000 training and 1,000 validation
launches, batches of 80 (50 steps an epoch). The model: a linear stem (6
→ 64), 4 residual blocks h + W₂ tanh(W₁ h) (64 → 128 → 64), a linear head
(64 → 1), no normalisation (about 67,000 parameters). The loss: the mean
of log(cosh(prediction - target)) (quadratic near 0, linear for the gross
errors). AdamW (3e-3, weight decay 1e-4) with 5 % warm-up then cosine to
zero, NAdam (2e-3) with the lr x0.1 after epoch 6, or SGD (momentum 0.9)
with one-cycle to 0.05; 8 epochs (400 steps). Logged every step (one
healthy run every 5 steps from step 30, that step's loss), per-layer
statistics every 10 steps, val after every epoch. Task: regression. (A
full-batch Rprop run was tried as a healthy run and dropped: it memorised
the gross errors, its val loss rising from 0.004 at step 60 to 0.072 at
step 300.)

Eighteenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout18``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family logcosh_projectile_range``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.corpus.common import make, one_cycle, step_lr, warmup_cosine
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "logcosh_projectile_range"
LOGGING = Logging(layer_every=10)
GRAVITY, DT = 9.81, 0.01


def flights(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` launches (n, 6) and the distance each flies (n,)."""
    speed, angle = rng.uniform(10, 40, n), np.radians(rng.uniform(10, 70, n))
    height, mass = rng.uniform(0, 10, n), rng.uniform(0.1, 2.0, n)
    drag, wind = rng.uniform(0.001, 0.02, n), rng.uniform(-5, 5, n)
    x, y = np.zeros(n), height.copy()
    vx, vy = speed * np.cos(angle), speed * np.sin(angle)
    landed = np.full(n, np.nan)
    for _ in range(int(20 / DT)):
        relative_x = vx - wind
        airspeed = np.sqrt(relative_x ** 2 + vy ** 2)
        ax = -drag / mass * airspeed * relative_x
        ay = -GRAVITY - drag / mass * airspeed * vy
        new_x, new_y = x + vx * DT, y + vy * DT
        down = np.isnan(landed) & (new_y < 0)
        # The point where the step crosses the ground, by linear interpolation.
        landed[down] = x[down] + (new_x[down] - x[down]) * y[down] / (y[down] - new_y[down])
        x, y, vx, vy = new_x, new_y, vx + ax * DT, vy + ay * DT
        if not np.isnan(landed).any():
            break
    conditions = np.stack([speed, np.degrees(angle), height, mass, drag, wind], axis=1)
    return conditions, landed


@functools.lru_cache(maxsize=None)
def launches(train: int = 4000, val: int = 1000, gross_errors: float = 0.08, seed: int = 182) -> Split:
    rng = np.random.default_rng(seed)
    x_train, y_train = flights(train, rng)
    x_val, y_val = flights(val, rng)
    mean, std = x_train.mean(0), x_train.std(0)
    y_mean, y_std = y_train.mean(), y_train.std()
    measured = y_train * (1 + rng.normal(0, 0.01, train))
    wrong = rng.random(train) < gross_errors
    measured = np.where(wrong, measured + y_std * rng.choice([-1.0, 1.0], train) * rng.uniform(1, 3, train), measured)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.tensor(array, dtype=torch.float32)

    return Split(tensor((x_train - mean) / std), tensor((measured - y_mean) / y_std), tensor((x_val - mean) / std),
                 tensor((y_val - y_mean) / y_std), 1)


def log_cosh(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean log(cosh(d)), written stably as |d| + softplus(-2|d|) - log 2."""
    d = (outputs.reshape(targets.shape) - targets).abs()
    return (d + F.softplus(-2 * d) - math.log(2.0)).mean()


class ResidualTanhMLP(nn.Module):
    def __init__(self, width: int = 64, depth: int = 4, residual: bool = True,
                 activation: type[nn.Module] = nn.Tanh):
        super().__init__()
        self.residual = residual
        self.stem = nn.Linear(6, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, 2 * width), activation(), nn.Linear(2 * width, width)) for _ in range(depth))
        self.activation = activation()
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.stem(x)
        for block in self.blocks:
            # Without the skip connections each block's output goes through the activation (a plain deep MLP).
            hidden = hidden + block(hidden) if self.residual else self.activation(block(hidden))
        return self.head(hidden)


def resmlp(**kwargs):
    return lambda data: ResidualTanhMLP(**kwargs)


def adamw(lr: float):
    return make(torch.optim.AdamW, lr, weight_decay=1e-4)


def nadam(lr: float):
    return make(torch.optim.NAdam, lr)


def sgd(lr: float):
    return make(torch.optim.SGD, lr, momentum=0.9)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="regression", logging=LOGGING, batch_size=80,
                    probe_layout=True, scheduler=warmup_cosine(0.05), loss=log_cosh)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", launches), settings.pop("model", resmlp()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    return [
        run("range_healthy_adamw_warmup_cosine", "residual tanh MLP (stem 6->64, 4 blocks h + W2 tanh(W1 h), no "
            "norm) regressing the range of a projectile with drag from its launch conditions, log-cosh loss "
            "against measured ranges with 8 % gross errors, AdamW 3e-3 wd 1e-4, 5 % warm-up then cosine to zero, "
            "8 epochs (400 steps)", adamw(3e-3), 8, healthy=True),
        run("range_healthy_adamw_every_5_from_30", "projectile-range residual MLP, log-cosh, AdamW 3e-3, warm-up "
            "+ cosine, 8 epochs, seed 1, logged every 5 steps from step 30", adamw(3e-3), 8, seed=1,
            logging=Logging(every=5, start=30, layer_every=10), healthy=True),
        run("range_healthy_nadam_step", "projectile-range residual MLP, log-cosh, NAdam 2e-3, lr x0.1 after epoch "
            "6, 8 epochs, seed 2", nadam(2e-3), 8, scheduler=step_lr(6, 0.1), seed=2, healthy=True),
        run("range_healthy_sgd_onecycle", "projectile-range residual MLP, log-cosh, SGD momentum 0.9 one-cycle to "
            "a peak of 0.05, 8 epochs, seed 3", sgd(0.05), 8, scheduler=one_cycle(), seed=3, healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    "range_lr_too_high_adamw": (
        "train loss 0.39 at step 1, peak 2.68 at step 28; final val 0.0165 vs twin 0.0042, 3.9x; gradient norm "
        "peak 17.2x its median (twin 5.9x)"),
    "range_lr_too_low_adamw": (
        "final val 0.227 vs twin 0.0042, 54x (a constant prediction scores about 0.37); median update/weight "
        "ratio of the weight tensors 2e-6 to 8e-6 vs the twin's 8.7e-4 to 2.9e-3"),
    "range_train_longer_stopped": (
        "val from 0.101 at step 5 to 0.055 at step 50 (the last, its best), lower at 6 of 9 evaluations (noisy: "
        "the measurement errors), the train loss from 0.39 to 0.14; final val 0.055 vs 0.0042 for the twin that "
        "runs the 400 steps, 13x"),
    "range_divergence_sgd": (
        "gradient norm 1.1 at step 18, 8.0 at step 20, 128 at step 23, 4.0e6 at step 30, 1.0e16 at step 40 and "
        "2.6e19 at step 43 (twin peak 4.1x its median); the train loss 0.37 at step 18, 572 at step 24, inf at "
        "step 43 and NaN after; val NaN at every evaluation; the twin (peak 0.05) ends at val 0.0092"),
    "range_vanishing_gradients_no_skip": (
        "median gradient norm of the stem's weights 3.6e-5 against 0.018 for the head's (the twin with skip "
        "connections: 0.095 and 0.43); final val 0.367 vs twin 0.0070, 53x: no better than a constant prediction "
        "(val 0.366-0.372 at every evaluation)"),
    "range_missing_warmup_adamw": (
        "the train loss jumps from 0.39 at step 1 to 5.99 at step 2 and 4.36 at step 5 while the twin (the same "
        "lr after a 5 % warm-up) stays at 0.23-0.33; val 0.105 vs 0.054 at step 50; final val 0.0088 vs twin "
        "0.0036, 2.45x; gradient norm peak 31.6x its median (twin 5.3x)"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def planned_warmup_cosine(warmup_fraction: float, planned: int):
    """Warm-up then cosine to zero over ``planned`` steps, whatever the run's own length (a run cut short)."""
    def make_scheduler(optimizer, total, per_epoch):
        return warmup_cosine(warmup_fraction)(optimizer, planned, per_epoch)
    return make_scheduler


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("range_lr_too_high_adamw", "projectile-range residual MLP, log-cosh, AdamW 6e-2 (20x the working lr), "
            "warm-up + cosine, 8 epochs", adamw(6e-2), 8,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low"],
            allow=["loss_spike", "underfitting", "best_epoch_not_last", "update_ratio_out_of_band",
                   "exploding_gradients", "divergence", "missing_warmup"]),
        run("range_lr_too_low_adamw", "projectile-range residual MLP, log-cosh, AdamW 1e-6 (3000x below the "
            "working lr: the lr of a fine-tuning config), warm-up + cosine, 8 epochs", adamw(1e-6), 8,
            expect={"lr_too_low": everywhere, "update_ratio_out_of_band": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "no_better_than_baseline"]),
        run("range_train_longer_stopped", "projectile-range residual MLP, log-cosh, AdamW 3e-3, warm-up + cosine "
            "planned for 8 epochs (400 steps), the job stopped after 1 epoch (50 steps: a preempted job), val "
            "every 5 steps", adamw(3e-3), 1, scheduler=planned_warmup_cosine(0.05, 400), evals_per_epoch=10,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underfitting"]),
        run("range_divergence_sgd", "projectile-range residual MLP, log-cosh, SGD momentum 0.9 one-cycle to a "
            "peak of 5.0, 8 epochs, seed 3", sgd(5.0), 8, scheduler=one_cycle(), seed=3,
            expect={"divergence": [20, 60], "exploding_gradients": [18, 45]},
            allow=["lr_too_high", "loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "underfitting",
                   "dead_layers"]),
        run("range_vanishing_gradients_no_skip", "projectile-range MLP deepened to 8 blocks with its residual "
            "connections switched off (h = tanh(W2 tanh(W1 h)): 17 linear layers in a plain tanh stack), SGD "
            "momentum 0.9 one-cycle to 0.05, 8 epochs, seed 3", sgd(0.05), 8, scheduler=one_cycle(), seed=3,
            model=resmlp(depth=8, residual=False),
            expect={"vanishing_gradients": everywhere},
            allow=["underfitting", "lr_too_low", "update_ratio_out_of_band", "no_better_than_baseline",
                   "train_longer", "dead_layers"]),
        run("range_missing_warmup_adamw", "projectile-range residual MLP, log-cosh, AdamW 2e-2 from the first "
            "step (warm-up fraction 0), cosine, 8 epochs", adamw(2e-2), 8, scheduler=warmup_cosine(0.0),
            expect={"missing_warmup": [1, 100]},
            allow=["lr_too_high", "loss_spike", "adam_hyperparameters", "exploding_gradients",
                   "update_ratio_out_of_band", "best_epoch_not_last", "underfitting"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["range_healthy_adamw_warmup_cosine"] for spec in faults()}
    twins["range_divergence_sgd"] = healthy["range_healthy_sgd_onecycle"]
    twins["range_vanishing_gradients_no_skip"] = run(
        "range_twin_sgd_depth8_residual", "projectile-range residual MLP deepened to 8 blocks (skip connections on), "
        "SGD momentum 0.9 one-cycle to 0.05, 8 epochs, seed 3", sgd(0.05), 8, scheduler=one_cycle(), seed=3,
        model=resmlp(depth=8))
    twins["range_missing_warmup_adamw"] = run(
        "range_twin_adamw_2e2_warmup", "projectile-range residual MLP, log-cosh, AdamW 2e-2 with 5 % warm-up then "
        "cosine, 8 epochs", adamw(2e-2), 8)
    return twins
