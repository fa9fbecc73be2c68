"""Ordinal regression of 6-level ratings with a cumulative-link (proportional-odds logistic) loss on an MLP score and learned ordered cut-points, AdamW cosine with warm restarts / SGD momentum multi-step / NAdam warm-up-stable-decay, every 5 steps (eleventh hold-out, healthy only).

Records made here: 5,000 records of 10 standard-normal features; a latent
rating x₀ + 0.8 x₁ − 0.6 x₂ + 0.5 sin 2x₃ + 0.4 x₄x₅ plus logistic noise
(scale 0.35) is cut at its sextiles into 6 ordered levels of
equal size (0 worst, 5 best). 70 % train (3,500), 30 % validation (1,500),
standardised on the training split.

The model: an MLP 10 → 64 → 64 → 1 (ReLU) gives a score f; 5 cut-points
c₁ < … < c₅ (c₁ and softplus increments, learned) give P(level ≤ k) =
σ(c_k − f). The cut-points start at the logits of 1/6, …, 5/6, so that a
score of 0 means every level equally likely (the first loss is about
ln 6). The forward returns the 6 levels' log-probabilities; the loss is
their negative log-likelihood (``F.nll_loss``), so accuracy and confusion
counts are read from the most likely level.

The loop: batches of 64 (55 steps per epoch), 15 to 20 epochs. Logged every
5 steps (the step's loss, training accuracy, lr and gradient norm),
per-layer statistics every 25 steps; val loss, accuracy and confusion counts
after every epoch.

Why these settings (quick check by final val loss, 2026-11-30, each base
run at its lr × 1/3, × 1, × 3; "best @" is the step of the lowest val loss):
- AdamW, cosine with warm restarts, 15 epochs: 1e-3 1.2384, 3.3e-3 1.0756,
  1e-2 1.0171 (best at the last epoch), 3e-2 1.0228 (best 1.0138 @ 385,
  then overfits): 1e-2.
- SGD momentum 0.9, multi-step, 20 epochs: 0.017 1.0693, 0.05 1.0092
  (best 1.0091 @ 715), 0.15 1.0252: 0.05.
- NAdam, warm-up-stable-decay, 16 epochs: 2e-3 1.0560, 6e-3 1.0255 (best
  at the last epoch), 1.8e-2 1.0331: 6e-3.

Task: classification, C = 6 (recorded).
Eleventh hold-out (issue #12); see ``softmax_lbfgs_tabular.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.corpus import common
from tests.diagnosis.make_corpus import Logging, Spec, Split, _split

FAMILY = "ordinal_cumulative_link"
LOGGING = Logging(every=5, layer_every=25)
LEVELS = 6


@functools.lru_cache(maxsize=None)
def ratings(seed: int = 116) -> Split:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5000, 10))
    latent = (x[:, 0] + 0.8 * x[:, 1] - 0.6 * x[:, 2] + 0.5 * np.sin(2 * x[:, 3]) + 0.4 * x[:, 4] * x[:, 5]
              + rng.logistic(scale=0.35, size=len(x)))
    cuts = np.quantile(latent, np.arange(1, LEVELS) / LEVELS)
    return _split(x, np.searchsorted(cuts, latent), seed)


class CumulativeLink(nn.Module):
    def __init__(self, inputs: int = 10, hidden: int = 64):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                   nn.Linear(hidden, 1))
        start = torch.logit(torch.arange(1, LEVELS) / LEVELS)
        self.first_cut = nn.Parameter(start[:1].clone())
        gaps = start.diff()
        self.gaps = nn.Parameter(gaps + torch.log(-torch.expm1(-gaps)))  # softplus⁻¹ of the starting gaps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cuts = torch.cat([self.first_cut, self.first_cut + F.softplus(self.gaps).cumsum(0)])
        below = torch.sigmoid(cuts - self.score(x))  # (B, K-1): P(level ≤ k)
        zeros, ones = torch.zeros_like(below[:, :1]), torch.ones_like(below[:, :1])
        probabilities = torch.cat([below, ones], 1) - torch.cat([zeros, below], 1)
        return probabilities.clamp_min(1e-9).log()


def cumulative_link(hidden: int = 64):
    return lambda data: CumulativeLink(data.x_train.shape[1], hidden)


def warm_restarts(first_epochs: int = 1, multiplier: int = 2):
    """CosineAnnealingWarmRestarts stepped per epoch (cycles of 1, 2, 4, 8 epochs: a 15-epoch run ends a cycle)."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=first_epochs * per_epoch, T_mult=multiplier), "step")


def multistep(fractions=(0.5, 0.8), gamma: float = 0.1):
    def build(optimizer, total, per_epoch):
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(f * total) for f in fractions], gamma), "step"
    return build


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="classification", task_kind="classification", logging=LOGGING,
                    batch_size=64, probe_layout=True, loss=F.nll_loss, healthy=True)
    settings.update(kwargs)
    return Spec(name, description, ratings, settings.pop("model", cumulative_link()), optimizer, epochs, **settings)


def specs() -> list[Spec]:
    return [
        run("ordinal_adamw_warm_restarts", "cumulative-link ordinal MLP on 6-level ratings, AdamW 1e-2 (wd 0.01, "
            "not on biases), cosine with warm restarts (1, 2, 4, 8 epochs), 15 epochs (825 steps)",
            common.adamw(1e-2), 15, scheduler=warm_restarts()),
        run("ordinal_adamw_warm_restarts_seed1", "cumulative-link ordinal MLP, AdamW 1e-2, cosine with warm "
            "restarts, 15 epochs, seed 1", common.adamw(1e-2), 15, scheduler=warm_restarts(), seed=1),
        run("ordinal_sgd_momentum_multistep", "cumulative-link ordinal MLP, SGD momentum 0.9 lr 0.05, lr x0.1 at "
            "50 % and 80 %, 20 epochs (1,100 steps)", common.make(torch.optim.SGD, 0.05, momentum=0.9), 20,
            scheduler=multistep()),
        run("ordinal_nadam_wsd_seed2", "cumulative-link ordinal MLP, NAdam 6e-3, warm-up 5 % / stable / linear "
            "cool-down over the last 20 %, 16 epochs (880 steps), seed 2", common.nadam(6e-3), 16,
            scheduler=common.warmup_stable_decay()),
        run("ordinal_nadam_wsd_late_logging_seed3", "cumulative-link ordinal MLP (128 wide), NAdam 6e-3, "
            "warm-up-stable-decay, 16 epochs, logged every 5 steps from step 60, seed 3", common.nadam(6e-3), 16,
            model=cumulative_link(128), scheduler=common.warmup_stable_decay(), seed=3,
            logging=Logging(every=5, start=60, layer_every=25)),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
