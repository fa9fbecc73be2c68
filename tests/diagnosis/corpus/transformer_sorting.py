"""A pre-LN transformer encoder sorting sequences of 10 small integers (each output position classifies the sorted sequence's token there, cross-entropy over positions), AdamW / Adam with warm-up (cosine, linear or warm-up-stable-decay), every 10 steps or 20-step window means (eleventh hold-out, healthy only).

Sequences made here: 10 integers drawn uniformly from 0-15 (repeats
allowed); the target is the same sequence sorted ascending. 20,000
training and 2,000 validation sequences (the space holds 16¹⁰, so the
validation sequences are new ones).

The model: a token embedding of 64 plus learned positions, 2 (or 3)
pre-LN transformer encoder layers (4 heads, feed-forward 128, no dropout),
a final LayerNorm and a linear layer to 16 logits at every position; the
loss is the cross-entropy of every position's token (the first loss is
about ln 16 = 2.77). It is non-autoregressive: a position must count how
many tokens are smaller than each candidate, which attention does.

The loop: batches of 128 (157 steps per epoch), 5 epochs (785 steps). Every run
warms up its lr (5 % of the steps), as a transformer trained from scratch
should, with β₂ = 0.98. Logged every 10 steps (the
step's loss, lr and gradient norm) or as 20-step window means, per-layer
statistics every 50 steps; val loss after every epoch.

Why these settings (quick check by final val loss, 2026-11-30, each base
run at its lr × 1/3, × 1, × 3):
- AdamW, warm-up then cosine, 5 epochs: 5e-4 0.0455, 1.5e-3 0.0019, 4.5e-3
  0.0011, both of the last with the best val loss at the end; 1.5e-3 is
  chosen because its training loss falls smoothly, while at 4.5e-3 it
  jumps tenfold for a few steps twice (0.002 → 0.025 at step 450). At
  1e-3 over 8 epochs the val loss went 0.044 → 0.197 → 0.007 around the
  peak, hence the shorter run. Adam with warm-up + linear decay at 1.5e-3:
  0.0016.
- Adafactor was tried and dropped: at 1e-2 with warm-up-stable-decay the
  run is still far from done when the cool-down starts (val 0.29 → 0.05
  in the cool-down), at 9e-2 its loss spikes (0.025 → 0.56).

Task kind not recorded (run.json has only num_classes = 16, as the original
corpus). Eleventh hold-out (issue #12); see ``softmax_lbfgs_tabular.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.corpus import common
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "transformer_sorting"
VALUES, LENGTH = 16, 10


@functools.lru_cache(maxsize=None)
def sequences(train: int = 20000, val: int = 2000, seed: int = 120) -> Split:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VALUES, size=(train + val, LENGTH))
    x, y = torch.tensor(x), torch.tensor(np.sort(x, axis=1))
    return Split(x[:train], y[:train], x[train:], y[train:], VALUES)


class Sorter(nn.Module):
    def __init__(self, width: int = 64, depth: int = 2):
        super().__init__()
        self.embed = nn.Embedding(VALUES, width)
        self.position = nn.Parameter(torch.randn(LENGTH, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, dim_feedforward=2 * width, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VALUES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encoder(self.embed(tokens) + self.position)))  # (B, T, V)


def sorter(depth: int = 2):
    return lambda data: Sorter(depth=depth)


def token_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, VALUES), target.reshape(-1))


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind=None, batch_size=128, attention=True,
                    logging=Logging(every=10, layer_every=50), probe_layout=True, loss=token_cross_entropy,
                    scheduler=common.warmup_cosine(), healthy=True)
    settings.update(kwargs)
    return Spec(name, description, sequences, settings.pop("model", sorter()), optimizer, epochs, **settings)


def specs() -> list[Spec]:
    window = Logging(every=20, mean=True, layer_every=50)
    return [
        run("sort_adamw_warmup_cosine", "pre-LN transformer sorting 10 integers, AdamW 1.5e-3 (betas 0.9/0.98, wd "
            "0.01 not on biases and norms), 5 % warm-up then cosine to 0, 5 epochs (785 steps)",
            common.adamw(1.5e-3, betas=(0.9, 0.98)), 5),
        run("sort_adamw_warmup_cosine_seed1", "pre-LN transformer sorting 10 integers, AdamW 1.5e-3, warm-up then "
            "cosine, 5 epochs, seed 1", common.adamw(1.5e-3, betas=(0.9, 0.98)), 5, seed=1),
        run("sort_adam_warmup_linear_window", "pre-LN transformer sorting 10 integers, Adam 1.5e-3 (betas 0.9/0.98), "
            "6 % warm-up then linear decay to 0, 5 epochs, 20-step window means",
            common.make(torch.optim.Adam, 1.5e-3, betas=(0.9, 0.98)), 5, scheduler=common.warmup_linear(),
            logging=window),
        run("sort_adamw_wsd_late_logging_seed2", "pre-LN transformer sorting 10 integers, AdamW 1.5e-3, "
            "warm-up-stable-decay, 5 epochs, every 10 steps from step 100, seed 2",
            common.adamw(1.5e-3, betas=(0.9, 0.98)), 5,
            scheduler=common.warmup_stable_decay(), seed=2, logging=Logging(every=10, start=100, layer_every=50)),
        run("sort_adamw_depth3_seed3", "3-layer pre-LN transformer sorting 10 integers, AdamW 1.5e-3, warm-up then "
            "cosine, 5 epochs, 20-step window means, seed 3",
            common.adamw(1.5e-3, betas=(0.9, 0.98)), 5, model=sorter(3), seed=3, logging=window),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
