"""Neural collaborative filtering (NeuMF, He et al. 2017: a generalised matrix factorisation branch and an MLP branch over user and item embeddings, fused into one logit) on implicit feedback, binary cross-entropy against sampled negatives, Adagrad at a constant lr, every 10 steps from step 200 (fourteenth hold-out, healthy only).

Interactions made here: 800 users and 500 items with hidden 8-D tastes
and traits (plus an item popularity term); each user has 12-40 positive
items drawn without replacement with probabilities ∝ exp(3 × affinity).
Every user's last 2 positives go to validation, the rest to training;
each positive is paired with 4 negatives drawn once, uniformly from the
items the user never touched (the NCF paper's fixed sampling ratio), for
training and validation alike. About 95,000 training and 8,000
validation (user, item, label) rows.

The model: NeuMF with GMF embeddings of 16 and MLP embeddings of 32
(concatenated → 64 → 32 → 16, ReLU), the GMF product and the MLP output
concatenated into Linear(32, 1); embeddings initialised N(0, 0.1²). The
loss is the binary cross-entropy of that logit (the first loss is
ln 2 = 0.69; a model that knows only the 1:4 ratio scores 0.50).

The loop: batches of 256 (373 steps per epoch), 4 epochs (1,492
steps; batches of 512 for 8 epochs in one run); Adagrad at a constant lr (initial accumulator 0.1, so the
first steps are not huge). Logged every 10 steps from step 200 (the
logger attached after the first epoch had started: a recommendation job
that only starts reporting late), per-layer statistics every 50 steps;
val loss after every half epoch.

Why these settings (quick check by final val loss, 2026-12-01, each base
run at its lr × 1/3, × 1, × 3): Adagrad 0.067 0.494 (barely off the
ratio's 0.50), 0.2 0.4515 (the best at the end), 0.6 0.457 (best 0.449 a
half epoch earlier). The val loss sits at 0.50 for the first half epoch
or more at every lr (the embeddings start small; what a user likes is
found only once they have grown), then falls. With tastes weighted
exp(2 × affinity) and embeddings started at N(0, 0.01²), every lr up
to 0.15 stayed at 0.50 for the whole run, hence the data and init
above.

Task kind not recorded (``unknown``: a single-logit recommender, nothing
said about the task). Fourteenth hold-out (issue #12, healthy only); see
``tests/diagnosis/make_heldout.py heldout14``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "ncf_implicit_bce"
USERS, ITEMS, TASTE, NEGATIVES = 800, 500, 8, 4


@functools.lru_cache(maxsize=None)
def interactions(seed: int = 145) -> Split:
    """Inputs (N, 2): user and item ids; targets (N,): 1.0 for a positive, 0.0 for a sampled negative."""
    rng = np.random.default_rng(seed)
    users, items = rng.normal(0, 1, size=(USERS, TASTE)), rng.normal(0, 1, size=(ITEMS, TASTE))
    popularity = rng.normal(0, 1, size=ITEMS)
    affinity = users @ items.T / np.sqrt(TASTE) + 0.5 * popularity
    train_rows, val_rows = [], []
    for user in range(USERS):
        weights = np.exp(3.0 * affinity[user])
        chosen = rng.choice(ITEMS, size=int(rng.integers(12, 41)), replace=False, p=weights / weights.sum())
        untouched = np.setdiff1d(np.arange(ITEMS), chosen)
        for position, item in enumerate(chosen):
            rows = val_rows if position >= len(chosen) - 2 else train_rows
            rows.append((user, item, 1.0))
            rows.extend((user, int(negative), 0.0) for negative in rng.choice(untouched, NEGATIVES, replace=False))
    train, val = np.array(train_rows), np.array(val_rows)
    rng.shuffle(train)
    return Split(torch.tensor(train[:, :2], dtype=torch.long), torch.tensor(train[:, 2], dtype=torch.float32),
                 torch.tensor(val[:, :2], dtype=torch.long), torch.tensor(val[:, 2], dtype=torch.float32), 1)


class NeuMF(nn.Module):
    def __init__(self, gmf: int = 16, mlp: int = 32):
        super().__init__()
        self.gmf_user, self.gmf_item = nn.Embedding(USERS, gmf), nn.Embedding(ITEMS, gmf)
        self.mlp_user, self.mlp_item = nn.Embedding(USERS, mlp), nn.Embedding(ITEMS, mlp)
        for table in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(table.weight, 0.0, 0.1)
        self.tower = nn.Sequential(nn.Linear(2 * mlp, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                                   nn.Linear(32, 16), nn.ReLU())
        self.predict = nn.Linear(gmf + 16, 1)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        user, item = pairs[:, 0], pairs[:, 1]
        product = self.gmf_user(user) * self.gmf_item(item)
        tower = self.tower(torch.cat([self.mlp_user(user), self.mlp_item(item)], -1))
        return self.predict(torch.cat([product, tower], -1)).squeeze(-1)  # (B,) logits


def neumf(gmf: int = 16, mlp: int = 32):
    return lambda data: NeuMF(gmf, mlp)


def bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, labels)


def adagrad(lr: float, **kwargs):
    return lambda model: torch.optim.Adagrad(model.parameters(), lr=lr, initial_accumulator_value=0.1, **kwargs)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", batch_size=256,
                    logging=Logging(every=10, start=200, layer_every=50), loss=bce, evals_per_epoch=2,
                    healthy=True)
    settings.update(kwargs)
    return Spec(name, description, interactions, settings.pop("model", neumf()), optimizer, epochs, **settings)


LR = 0.2


def specs() -> list[Spec]:
    return [
        run("ncf_adagrad_constant", f"NeuMF (GMF 16 + MLP 32) on implicit feedback, BCE with 4 sampled negatives, "
            f"Adagrad {LR:g} constant, 4 epochs, every 10 steps from step 200", adagrad(LR), 4),
        run("ncf_adagrad_constant_seed1", f"NeuMF on implicit feedback, BCE, Adagrad {LR:g} constant, 4 epochs, every "
            "10 steps from step 200, seed 1", adagrad(LR), 4, seed=1),
        run("ncf_adagrad_small_seed2", f"NeuMF (GMF 8 + MLP 16) on implicit feedback, BCE, Adagrad {LR:g} constant, "
            "4 epochs, every 10 steps from step 200, seed 2", adagrad(LR), 4, seed=2, model=neumf(8, 16)),
        run("ncf_adagrad_batch512_seed3", f"NeuMF on implicit feedback, BCE, batches of 512, Adagrad {LR:g} constant, "
            "8 epochs, every 10 steps from step 200, seed 3", adagrad(LR), 8, seed=3, batch_size=512),
        run("ncf_adagrad_wd_window_seed4", f"NeuMF on implicit feedback, BCE, Adagrad {LR:g} constant with weight "
            "decay 1e-6, 4 epochs, 10-step window means from step 200, seed 4", adagrad(LR, weight_decay=1e-6), 4,
            seed=4, logging=Logging(every=10, mean=True, start=200, layer_every=50)),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
