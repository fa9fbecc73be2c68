"""A mixture density network (an MLP giving a 5-component Gaussian mixture) fitting Bishop's multi-valued inverse-sine problem by negative log-likelihood (a loss that goes below 0), Adam / AdamW / NAdam / RMSprop, every step, every 4 steps or per-epoch means (eleventh hold-out, healthy only).

Data made here (Bishop 1994): t uniform on [0, 1], x = t + 0.3 sin 2πt plus
uniform noise on ±0.1; the task is to predict t from x, which has up to
three solutions for one x, so a single Gaussian (MSE) cannot fit it. 6,000
training and 2,000 validation pairs; x standardised on the training split.

The model: an MLP 1 → 64 → 64 (tanh) → 15 outputs: 5 mixture logits, 5
means and 5 log standard deviations (clamped to [−7, 3]); the loss is the
negative log-likelihood of t under the mixture, averaged over the batch.
It starts near 1.1 and ends near −1.05 (sharp conditional densities): the
loss is negative for a good fit.

The loop: batches of 128 (47 steps per epoch), 28 to 40 epochs. Logged
every step, every 4 steps or as one mean per epoch, per-layer statistics
every 20 steps; val NLL after every epoch.

Why these settings (quick check by final val NLL, 2026-11-30, each base run
at its lr × 1/3, × 1, × 3; "best @" is the step of the lowest val NLL).
A mixture density network can settle in a poorer arrangement of its
components when the lr is high, so the working lrs are moderate; the
same setting varies by a few hundredths between seeds:
- Adam, cosine to 0, 40 epochs: 1e-3 −1.0583, 3e-3 −1.0925 (best −1.0929
  @ 1,833; seed 1 −1.0993), 9e-3 −0.6260: 3e-3.
- AdamW, one-cycle, 30 epochs: 6.7e-4 −1.0185, 1.7e-3 −1.0455, 2e-3
  −1.0630 (best at the last epoch), 5e-3 −1.0195, 1.5e-2 −0.5968: 2e-3.
- NAdam, ReduceLROnPlateau (× 0.3, patience 2), 40 epochs: 3.3e-4
  −1.0075, 1e-3 −1.0222 to −1.0470 (two runs), 3e-3 −0.9299, 9e-3
  −1.1007. 1e-3, the conservative side; its val NLL stops improving
  after ~1,130 steps (the plateau schedule has cut the lr by then), so
  the run is 28 epochs.
- RMSprop (hidden 96), lr × 0.3 every 12 epochs, 36 epochs: 3.3e-4
  −1.0286, 1e-3 −1.0873 (best −1.0920 @ 1,645), 3e-3 −1.0031: 1e-3.

Task: regression (recorded). Eleventh hold-out (issue #12); see
``softmax_lbfgs_tabular.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus import common
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "mdn_inverse_sine"
COMPONENTS = 5


@functools.lru_cache(maxsize=None)
def inverse_sine(train: int = 6000, val: int = 2000, seed: int = 119) -> Split:
    rng = np.random.default_rng(seed)
    t = rng.random(train + val)
    x = t + 0.3 * np.sin(2 * np.pi * t) + rng.uniform(-0.1, 0.1, len(t))
    x = (x - x[:train].mean()) / x[:train].std()
    x = torch.tensor(x[:, None], dtype=torch.float32)
    t = torch.tensor(t, dtype=torch.float32)
    return Split(x[:train], t[:train], x[train:], t[train:], 1)


class MixtureDensity(nn.Module):
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                  nn.Linear(hidden, 3 * COMPONENTS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, 3K): logits, means, log standard deviations


def mixture_density(hidden: int = 64):
    return lambda data: MixtureDensity(hidden)


def mixture_nll(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logits, means, log_std = outputs.split(COMPONENTS, dim=1)
    log_std = log_std.clamp(-7.0, 3.0)
    z = (target.unsqueeze(1) - means) / log_std.exp()
    log_density = -0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return -torch.logsumexp(logits.log_softmax(1) + log_density, dim=1).mean()


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="regression", batch_size=128,
                    logging=Logging(every=1, layer_every=20), probe_layout=True, loss=mixture_nll, healthy=True)
    settings.update(kwargs)
    return Spec(name, description, inverse_sine, settings.pop("model", mixture_density()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    epoch_means = Logging(per_epoch=True, layer_every=20)
    return [
        run("mdn_adam_cosine", "mixture density network on the inverse sine, Adam 3e-3, cosine to 0, 40 epochs "
            "(1,880 steps), every step", common.make(torch.optim.Adam, 3e-3), 40, scheduler=common.cosine_to_zero()),
        run("mdn_adam_cosine_seed1", "mixture density network, Adam 3e-3, cosine to 0, 40 epochs, every step, "
            "seed 1", common.make(torch.optim.Adam, 3e-3), 40, scheduler=common.cosine_to_zero(), seed=1),
        run("mdn_adamw_one_cycle_every4_seed2", "mixture density network, AdamW 2e-3 (wd 0.01, not on biases), "
            "one-cycle, 30 epochs (1,410 steps), every 4 steps, seed 2", common.adamw(2e-3), 30,
            scheduler=common.one_cycle(), seed=2, logging=Logging(every=4, layer_every=20)),
        run("mdn_nadam_plateau_epoch_means", "mixture density network, NAdam 1e-3, ReduceLROnPlateau (x0.3, "
            "patience 2), 28 epochs (1,316 steps), per-epoch means", common.nadam(1e-3), 28, scheduler=common.plateau(0.3, 2),
            logging=epoch_means),
        run("mdn_rmsprop_step_epoch_means_seed3", "mixture density network (hidden 96), RMSprop 1e-3, lr x0.3 every "
            "12 epochs, 36 epochs, per-epoch means, seed 3", common.make(torch.optim.RMSprop, 1e-3), 36,
            model=mixture_density(96), scheduler=common.step_lr(12, 0.3), seed=3, logging=epoch_means),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
