"""A two-head multi-task MLP predicting a record's 4-way category (cross-entropy) and a continuous value (MSE) from one shared trunk, the two losses summed, Prodigy / AdamW / SGD Nesterov / RMSprop, 10-step window means (eleventh hold-out, healthy only).

Records made here: 6,000 records of 16 standard-normal features. The
category is the largest of 4 scores, each a random linear function of the
first 10 features plus tanh of one feature pair's product, with Gaussian
noise (σ 0.5); the value is 1.5 sin x₀ + x₁ x₂ + 0.8 x₃ + 0.5 x₆² + 0.3 ×
(category − 1.5) plus Gaussian noise (σ 0.4), standardised. 70 % train
(4,200), 30 % validation (1,800), features standardised on the training
split. The target is (category, value) per record.

The model: a shared trunk 16 → 128 → 64 (GELU), a linear category head
(64 → 4) and a linear value head (64 → 1); the forward returns the 4
logits and the value side by side. The loss: cross-entropy of the category
plus the mean squared error of the value (equal weights; both start near
their natural scale, ln 4 and 1).

The loop: batches of 64 (66 steps per epoch), 12 to 20 epochs. Logged as
the mean over each 10-step window (one run from step 50), per-layer
statistics every 30 steps; val loss (the same sum) after every epoch.
Prodigy (written here, Mishchenko & Defazio 2024: Adam whose step size d is
estimated on the fly; lr 1 is its documented setting, the schedule
multiplies it) with cosine to 0.

Why these settings (quick check by final val loss, 2026-11-30, each base
run at its lr × 1/3, × 1, × 3; "best @" is the step of the lowest val loss):
- Prodigy, cosine to 0: at lr 1 for 15 epochs the model overfits (final
  0.4499, best 0.4289 @ 462), so the runs are 8 epochs; at 8 epochs lr 0.1
  0.3942, 0.3 0.3916 (best at the last epoch), 0.9 0.4162; with weight
  decay 0.01 (seed 1): 0.1 0.3960, 0.3 0.3851, 0.9 0.4014. Prodigy's d
  overshoots on this small model; lr 0.3 (d_coef-like damping) is the best.
- AdamW, warm-up then linear decay, 15 epochs: 6.7e-4 0.4415, 2e-3 0.3755,
  6e-3 0.3840: 2e-3.
- SGD Nesterov, cosine to 0, 20 epochs: 0.01 0.4007, 0.03 0.3671 (best at
  the last epoch), 0.09 0.3860: 0.03.
- RMSprop, lr × 0.85 per epoch, 12 epochs: 1e-3 0.4339, 3e-3 0.3902 (best
  0.3888 @ 726 of 792), 9e-3 0.4057: 3e-3.

No task kind recorded (``task_kind="unknown"``: a classification and a
regression at once). Eleventh hold-out (issue #12); see
``softmax_lbfgs_tabular.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.corpus import common
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "multitask_two_heads"
LOGGING = Logging(every=10, mean=True, layer_every=30)
CATEGORIES = 4


@functools.lru_cache(maxsize=None)
def records(seed: int = 117) -> Split:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(12000, 16))
    weights = rng.normal(size=(10, CATEGORIES))
    scores = x[:, :10] @ weights + np.tanh(x[:, 10:14] * x[:, 11:15]) + rng.normal(scale=0.5, size=(len(x), 4))
    category = scores.argmax(1)
    value = (1.5 * np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.8 * x[:, 3] + 0.5 * x[:, 6] ** 2
             + 0.3 * (category - 1.5) + rng.normal(scale=0.4, size=len(x)))
    order = rng.permutation(len(x))
    train, val = order[:8400], order[8400:]
    mean, std = x[train].mean(0), x[train].std(0)
    value = (value - value[train].mean()) / value[train].std()
    target = np.stack([category, value], 1).astype(np.float32)
    as_tensor = lambda array: torch.tensor(array, dtype=torch.float32)  # noqa: E731
    return Split(as_tensor((x[train] - mean) / std), as_tensor(target[train]), as_tensor((x[val] - mean) / std),
                 as_tensor(target[val]), CATEGORIES)


class TwoHeads(nn.Module):
    def __init__(self, inputs: int = 16, width: int = 128):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(inputs, width), nn.GELU(), nn.Linear(width, 64), nn.GELU())
        self.category = nn.Linear(64, CATEGORIES)
        self.value = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.trunk(x)
        return torch.cat([self.category(shared), self.value(shared)], 1)


def two_heads(width: int = 128):
    return lambda data: TwoHeads(data.x_train.shape[1], width)


def summed_loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (F.cross_entropy(outputs[:, :CATEGORIES], target[:, 0].long())
            + F.mse_loss(outputs[:, CATEGORIES], target[:, 1]))


class Prodigy(torch.optim.Optimizer):
    """Prodigy (Mishchenko & Defazio 2024), Adam form, no bias correction, decoupled weight decay.

    The step size is d × lr, with d grown from d0 = 1e-6 towards the distance to the solution estimated from
    the gradients' correlation with the displacement from the start (d never decreases)."""

    def __init__(self, params, lr: float = 1.0, betas=(0.9, 0.999), beta3: float | None = None,
                 weight_decay: float = 0.0, eps: float = 1e-8, d0: float = 1e-6):
        beta3 = math.sqrt(betas[1]) if beta3 is None else beta3
        super().__init__(params, {"lr": lr, "betas": betas, "beta3": beta3, "weight_decay": weight_decay,
                                  "eps": eps, "d": d0, "d0": d0, "d_max": d0, "d_numerator": 0.0})

    @torch.no_grad()
    def step(self, closure=None):
        first = self.param_groups[0]
        beta1, beta2 = first["betas"]
        beta3, d, d0 = first["beta3"], first["d"], first["d0"]
        lr = max(group["lr"] for group in self.param_groups)
        dlr = d * lr
        numerator, denominator = first["d_numerator"] * beta3, 0.0
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad, state = param.grad, self.state[param]
                if not state:
                    state["s"] = torch.zeros_like(param)
                    state["p0"] = param.detach().clone()
                    state["m"] = torch.zeros_like(param)
                    state["v"] = torch.zeros_like(param)
                numerator += float((d / d0) * dlr * torch.dot(grad.flatten(), (state["p0"] - param).flatten()))
                state["m"].mul_(beta1).add_(grad, alpha=d * (1 - beta1))
                state["v"].mul_(beta2).addcmul_(grad, grad, value=d * d * (1 - beta2))
                state["s"].mul_(beta3).add_(grad, alpha=(d / d0) * dlr)
                denominator += float(state["s"].abs().sum())
        if denominator > 0 and lr > 0:
            d_max = max(first["d_max"], numerator / denominator)
            d = max(d, d_max)
        else:
            d_max = first["d_max"]
        for group in self.param_groups:
            group.update(d=d, d_max=d_max, d_numerator=numerator)
            step_size = d * group["lr"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if group["weight_decay"]:
                    param.mul_(1 - group["weight_decay"] * step_size)
                param.addcdiv_(state["m"], state["v"].sqrt().add_(d * group["eps"]), value=-step_size)


def prodigy(lr: float = 1.0, weight_decay: float = 0.0):
    return common.make(Prodigy, lr, weight_decay=weight_decay)


def exponential(gamma: float):
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma), "epoch")


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", logging=LOGGING, batch_size=128,
                    probe_layout=True, loss=summed_loss, healthy=True)
    settings.update(kwargs)
    return Spec(name, description, records, settings.pop("model", two_heads()), optimizer, epochs, **settings)


def specs() -> list[Spec]:
    return [
        run("multitask_prodigy_cosine", "two-head multi-task MLP (category + value), Prodigy lr 0.3 (d adapted), "
            "cosine to 0, 8 epochs (528 steps)", prodigy(0.3), 8, scheduler=common.cosine_to_zero()),
        run("multitask_prodigy_cosine_seed1", "two-head multi-task MLP, Prodigy lr 0.3, weight decay 0.01, cosine "
            "to 0, 8 epochs, seed 1", prodigy(0.3, weight_decay=0.01), 8, scheduler=common.cosine_to_zero(), seed=1),
        run("multitask_adamw_warmup_linear", "two-head multi-task MLP, AdamW 2e-3 (wd 0.01, not on biases), "
            "6 % warm-up then linear decay to 0, 15 epochs", common.adamw(2e-3), 15,
            scheduler=common.warmup_linear()),
        run("multitask_nesterov_cosine_seed2", "two-head multi-task MLP, SGD Nesterov momentum 0.9 lr 0.03, "
            "cosine to 0, 20 epochs (1,320 steps), seed 2",
            common.make(torch.optim.SGD, 0.03, momentum=0.9, nesterov=True), 20,
            scheduler=common.cosine_to_zero(), seed=2),
        run("multitask_rmsprop_exponential_late_seed3", "two-head multi-task MLP, RMSprop 3e-3, lr x0.85 per "
            "epoch, 12 epochs (792 steps), logged from step 50, seed 3",
            common.make(torch.optim.RMSprop, 3e-3), 12, scheduler=exponential(0.85), seed=3,
            logging=Logging(every=10, mean=True, start=50, layer_every=30)),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
