"""DeepSurv (Katzman et al. 2018): an MLP risk score trained with the Cox proportional-hazards negative partial log-likelihood on synthetic right-censored survival data, Adam or SGD with Nesterov momentum, exponential lr decay per epoch, every 2 steps (fourteenth hold-out, healthy only).

Patients made here: 10 covariates (6 standard normal, 2 binary, 2
uniform); the true log-risk is non-linear (a linear part, a quadratic
bump, an interaction of a binary and a continuous covariate, a sine);
event times are exponential with rate exp(log-risk) / 10, censoring times
exponential with rate 1/25 and an administrative end at 30, which
censors about 35 % of the patients. 6,144 training and 1,536 validation
patients (whole batches of 256); each target row is (time, event).

The model: an MLP 10 → 64 → 64 → 1 (128 wide in one run; SELU,
AlphaDropout 0.1), the output
the log-risk (no bias needed: the partial likelihood ignores a constant).
The loss is the negative Breslow partial log-likelihood, over the events,
divided by the number of events, computed within each batch of 256 (the
risk set of an event is the batch's patients still at risk at its time);
the validation loss is the same over blocks of 256 (a validation loader
of the batch size), so the two are on one scale. The first loss is about
the mean log-size of the risk sets (≈ 4.7); a perfect ranking reaches
far lower, a useless one stays there.

The loop: batches of 256 (24 steps per epoch), 40 epochs (960 steps);
Adam (or SGD with Nesterov momentum 0.9 in one run) with weight decay
1e-4, the lr × 0.95 after every epoch (ExponentialLR, as DeepSurv's
decaying lr; × 0.93 over 30 epochs in one run). Logged every 2 steps (the
step's values; every 6 in one run), per-layer statistics every 10 steps;
val loss after every epoch.

Why these settings (quick check by final val loss, 2026-12-01, each base
run at its lr × 1/3, × 1, × 3): Adam 6.7e-4 4.461, 2e-3 4.403, 6e-3
4.393 (bumpy: 4.39 → 4.42 → 4.39); Nesterov SGD 1e-2 4.505 (flat from
epoch 6), 3e-2 4.430, 9e-2 4.413 (best 4.386 at epoch 20, then worse).
The partial likelihood of 256-patient blocks is noisy (±0.02 between
epochs). Dropped after a try: AlphaDropout 0.3 (its val loss rose from
the first epoch on, 4.56 → 4.76) and a 32-wide MLP at lr × 0.9 per
epoch (4.53 → 4.50 only: the lr gone before it learned).

Task kind not recorded (``unknown``: survival analysis is neither a
classification nor an MSE regression). Fourteenth hold-out (issue #12,
healthy only); see ``tests/diagnosis/make_heldout.py heldout14``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "deepsurv_cox"
COVARIATES, BLOCK = 10, 256


@functools.lru_cache(maxsize=None)
def patients(train: int = 6144, val: int = 1536, seed: int = 147) -> Split:
    rng = np.random.default_rng(seed)
    count = train + val
    x = np.concatenate([rng.normal(0, 1, size=(count, 6)), rng.integers(0, 2, size=(count, 2)),
                        rng.uniform(-1, 1, size=(count, 2))], 1)
    log_risk = (0.8 * x[:, 0] - 0.5 * x[:, 1] + 0.6 * x[:, 2] * x[:, 6] + 1.2 * np.exp(-x[:, 3] ** 2)
                + 0.7 * np.sin(2.5 * x[:, 8]) + 0.4 * x[:, 7] - 0.3 * x[:, 4] ** 2)
    event_time = rng.exponential(10.0 / np.exp(log_risk))
    censor_time = np.minimum(rng.exponential(25.0, size=count), 30.0)
    time = np.minimum(event_time, censor_time)
    event = (event_time <= censor_time).astype(np.float64)
    x[:, :6] = (x[:, :6] - x[:train, :6].mean(0)) / x[:train, :6].std(0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(np.stack([time, event], 1), dtype=torch.float32)
    return Split(x[:train], y[:train], x[train:], y[train:], 1)


def deepsurv(width: int = 64, dropout: float = 0.1):
    return lambda data: nn.Sequential(nn.Linear(COVARIATES, width), nn.SELU(), nn.AlphaDropout(dropout),
                                      nn.Linear(width, width), nn.SELU(), nn.AlphaDropout(dropout),
                                      nn.Linear(width, 1, bias=False))


def _partial_likelihood(log_risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The negative Breslow partial log-likelihood summed over the events, and the number of events."""
    order = torch.argsort(time, descending=True)
    log_risk, event = log_risk[order], event[order]
    at_risk = torch.logcumsumexp(log_risk, 0)  # everyone with a time ≥ this one (ties: Breslow's approximation)
    return -((log_risk - at_risk) * event).sum(), float(event.sum())


def cox_loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per block of BLOCK rows (one block for a batch): the negative partial log-likelihood per event."""
    log_risk = outputs.reshape(-1)
    total, events = log_risk.new_zeros(()), 0.0
    for start in range(0, len(log_risk), BLOCK):
        block = slice(start, start + BLOCK)
        loss, count = _partial_likelihood(log_risk[block], target[block, 0], target[block, 1])
        total, events = total + loss, events + count
    return total / max(events, 1.0)


def adam(lr: float, weight_decay: float = 1e-4):
    return lambda model: torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def nesterov(lr: float, weight_decay: float = 1e-4):
    return lambda model: torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                         weight_decay=weight_decay)


def exponential(gamma: float = 0.95):
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma), "epoch")


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", batch_size=BLOCK,
                    logging=Logging(every=2, layer_every=10), scheduler=exponential(), loss=cox_loss, healthy=True)
    settings.update(kwargs)
    return Spec(name, description, patients, settings.pop("model", deepsurv()), optimizer, epochs, **settings)


LR, LR_SGD = 2e-3, 3e-2


def specs() -> list[Spec]:
    return [
        run("deepsurv_adam_exponential", f"DeepSurv MLP (64-64, SELU, AlphaDropout 0.1), Cox partial likelihood per "
            f"batch, Adam {LR:g} (wd 1e-4), lr × 0.95 per epoch, 40 epochs (960 steps), every 2 steps",
            adam(LR), 40),
        run("deepsurv_adam_exponential_seed1", f"DeepSurv MLP, Cox partial likelihood, Adam {LR:g}, lr × 0.95 per "
            "epoch, 40 epochs, every 2 steps, seed 1", adam(LR), 40, seed=1),
        run("deepsurv_nesterov_seed2", f"DeepSurv MLP, Cox partial likelihood, SGD {LR_SGD:g} Nesterov 0.9 (wd 1e-4), "
            "lr × 0.95 per epoch, 40 epochs, every 2 steps, seed 2", nesterov(LR_SGD), 40, seed=2),
        run("deepsurv_wide_seed3", f"DeepSurv MLP (128-128), Cox partial likelihood, Adam {LR:g}, lr × 0.95 per "
            "epoch, 40 epochs, every 2 steps, seed 3", adam(LR), 40, seed=3, model=deepsurv(128)),
        run("deepsurv_gamma093_every6_seed4", f"DeepSurv MLP, Cox partial likelihood, Adam {LR:g}, lr × 0.93 per "
            "epoch, 30 epochs (720 steps), every 6 steps, seed 4", adam(LR), 30, seed=4, scheduler=exponential(0.93),
            logging=Logging(every=6, layer_every=30)),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
