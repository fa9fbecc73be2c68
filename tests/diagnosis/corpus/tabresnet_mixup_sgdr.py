"""A tabular ResNet (Gorishniy et al. 2021: BatchNorm residual blocks) classifying synthetic records into 20 classes with mixup and label smoothing 0.1, LAMB (written here) or Nesterov SGD, cosine annealing with warm restarts (SGDR), every 4 steps (fourteenth hold-out, healthy only).

Records made here: 20 classes, each a mixture of two Gaussian blobs in an
8-D latent space, seen through a fixed random non-linear map (tanh of a
linear map, then products of pairs) as 24 numeric features, plus 6 noise
features; standardised. 6,000 training and 1,500 validation records
(classes balanced).

The model: Linear(30, d) then 2 residual blocks (BatchNorm → Linear(d, 2d)
→ ReLU → Dropout 0.1 → Linear(2d, d) → Dropout 0.1, added back), a final
BatchNorm → ReLU → Linear(d, 20); d = 64 (96 in one run). The loss is the
label-smoothed (0.1) cross-entropy, of mixup batches in training (mixup
α = 0.2: every batch mixed with a permutation of itself, λ ~ Beta(0.2, 0.2)
folded to ≥ 0.5, the loss λ-weighted over both labels; the logged batch
accuracy is against the first label, as most loops log it) and of the
plain records at validation. The first loss is about ln 20 = 3.0; label
smoothing and mixup keep the training loss well above 0 (a step's loss
≈ 1.3-2.0 at the end, by its λ), the val loss ends lower (≈ 1.23).

The loop: batches of 128 (47 steps per epoch), 15 epochs (705 steps);
CosineAnnealingWarmRestarts stepped every step with a first cycle of 5
epochs doubling (T_mult 2: cycles of 5 and 10 epochs, so the run ends at
the bottom of its second cycle) or three cycles of 5 epochs (T_mult 1).
Logged every 4 steps (the step's values), per-layer statistics every 20
steps; val loss, accuracy and confusion counts after every epoch.

Why these settings (quick check by final val loss, 2026-12-01, each base
run at its lr × 1/3, × 1, × 3): LAMB 3.3e-3 1.281, 1e-2 1.240, 3e-2
1.249 (its val loss jumps at the first restart, 1.30 → 1.48); Nesterov
SGD 0.1 1.243, 0.3 1.230, 0.9 1.227 (0.3 chosen: as good, and the usual
order of lr for BatchNorm nets at batch 128). 15 epochs end at the bottom
of the second SGDR cycle, the best val loss within 0.002 of the last.

Task kind recorded: classification, 20 classes. Fourteenth hold-out
(issue #12, healthy only); see ``tests/diagnosis/make_heldout.py heldout14``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "tabresnet_mixup_sgdr"
CLASSES, LATENT, FEATURES, NOISE = 20, 8, 24, 6
SMOOTHING, ALPHA = 0.1, 0.2


@functools.lru_cache(maxsize=None)
def records(train: int = 6000, val: int = 1500, seed: int = 140) -> Split:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.6, size=(CLASSES, 2, LATENT))
    count = train + val
    y = np.arange(count) % CLASSES
    rng.shuffle(y)
    blob = rng.integers(0, 2, size=count)
    z = centres[y, blob] + rng.normal(0.0, 1.0, size=(count, LATENT))
    first = rng.normal(0.0, 1.0 / math.sqrt(LATENT), size=(LATENT, FEATURES // 2))
    h = np.tanh(z @ first)
    pairs = rng.integers(0, FEATURES // 2, size=(FEATURES // 2, 2))
    x = np.concatenate([h, h[:, pairs[:, 0]] * h[:, pairs[:, 1]] * 2.0, rng.normal(0.0, 1.0, size=(count, NOISE))], 1)
    x = x + rng.normal(0.0, 0.1, size=x.shape)
    mean, std = x[:train].mean(0), x[:train].std(0)
    x = ((x - mean) / std).astype(np.float32)
    x, y = torch.tensor(x), torch.tensor(y)
    return Split(x[:train], y[:train], x[train:], y[train:], CLASSES)


class Block(nn.Module):
    def __init__(self, width: int, dropout: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm1d(width), nn.Linear(width, 2 * width), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(2 * width, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TabResNet(nn.Module):
    def __init__(self, width: int = 64, depth: int = 2):
        super().__init__()
        self.stem = nn.Linear(FEATURES + NOISE, width)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])
        self.head = nn.Sequential(nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def tabresnet(width: int = 64):
    return lambda data: TabResNet(width)


class Mixup:
    """Mixes each training batch with a permutation of itself and remembers the partner labels for the loss.

    The loop calls the batch hook, then the loss once on that batch; a loss call with nothing pending is a
    validation call (plain label-smoothed cross-entropy).
    """

    def __init__(self, alpha: float = ALPHA, seed: int = 0):
        self.alpha, self.seed = alpha, seed
        self.rng = np.random.default_rng(seed)
        self.pending: tuple[torch.Tensor, float] | None = None

    def hook(self, step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if step == 1:
            self.rng = np.random.default_rng(self.seed)  # the same draws whenever the run is trained
        lam = float(self.rng.beta(self.alpha, self.alpha))
        lam = max(lam, 1.0 - lam)
        partner = torch.from_numpy(self.rng.permutation(len(y)))
        self.pending = (y[partner], lam)
        return lam * x + (1.0 - lam) * x[partner], y

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.pending is None:
            return F.cross_entropy(logits, y, label_smoothing=SMOOTHING)
        partner, lam = self.pending
        self.pending = None
        return (lam * F.cross_entropy(logits, y, label_smoothing=SMOOTHING)
                + (1.0 - lam) * F.cross_entropy(logits, partner, label_smoothing=SMOOTHING))


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020): Adam's bias-corrected update plus decoupled weight decay, rescaled per tensor by
    the trust ratio ‖w‖ / ‖update‖ (1 where either is 0)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                m, v, t = state["m"], state["v"], state["step"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update = update + group["weight_decay"] * p
                w_norm, u_norm = float(p.norm()), float(update.norm())
                trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
                p.add_(update, alpha=-group["lr"] * trust)
        return None


def _groups(model: nn.Module, weight_decay: float) -> list[dict]:
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decay = [p for _, p in named if p.ndim >= 2]
    exempt = [p for _, p in named if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def lamb(lr: float, weight_decay: float = 0.01):
    return lambda model: Lamb(_groups(model, weight_decay), lr=lr)


def nesterov(lr: float, weight_decay: float = 5e-4):
    return lambda model: torch.optim.SGD(_groups(model, weight_decay), lr=lr, momentum=0.9, nesterov=True)


def sgdr(first_epochs: int = 5, mult: int = 2):
    """CosineAnnealingWarmRestarts stepped every step: a first cycle of ``first_epochs`` epochs, each next × mult."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=first_epochs * per_epoch, T_mult=mult, eta_min=0.0), "step")


def run(name: str, description: str, optimizer, epochs: int, seed: int = 0, **kwargs) -> Spec:
    mixup = Mixup(seed=seed)
    settings = dict(family=FAMILY, objective="classification", task_kind="classification", batch_size=128,
                    logging=Logging(every=4, layer_every=20), scheduler=sgdr(), healthy=True, batch_hook=mixup.hook,
                    loss=mixup.loss)
    settings.update(kwargs)
    return Spec(name, description, records, settings.pop("model", tabresnet()), optimizer, epochs, seed=seed,
                **settings)


LR_LAMB, LR_SGD = 1e-2, 0.3


def specs() -> list[Spec]:
    return [
        run("tabres_lamb_sgdr", f"tabular ResNet (d 64), mixup 0.2 + label smoothing 0.1, LAMB {LR_LAMB:g} (wd 0.01), "
            "SGDR 5 + 10 epochs, 15 epochs (705 steps), every 4 steps", lamb(LR_LAMB), 15),
        run("tabres_lamb_sgdr_seed1", f"tabular ResNet (d 64), mixup + label smoothing, LAMB {LR_LAMB:g}, SGDR 5 + 10 "
            "epochs, 15 epochs, seed 1", lamb(LR_LAMB), 15, seed=1),
        run("tabres_lamb_wide_seed2", f"tabular ResNet (d 96), mixup + label smoothing, LAMB {LR_LAMB:g}, SGDR 5 + 10 "
            "epochs, 15 epochs, seed 2", lamb(LR_LAMB), 15, seed=2, model=tabresnet(96)),
        run("tabres_nesterov_sgdr_seed3", f"tabular ResNet (d 64), mixup + label smoothing, SGD {LR_SGD:g} Nesterov "
            "momentum 0.9 (wd 5e-4), SGDR 5 + 10 epochs, 15 epochs, seed 3", nesterov(LR_SGD), 15, seed=3),
        run("tabres_lamb_three_cycles_seed4", f"tabular ResNet (d 64), mixup + label smoothing, LAMB {LR_LAMB:g}, "
            "SGDR three 5-epoch cycles (T_mult 1), 15 epochs, seed 4", lamb(LR_LAMB), 15, seed=4,
            scheduler=sgdr(5, 1)),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
