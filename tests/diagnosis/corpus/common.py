"""What several families share: lr schedules as torch schedulers, the newer optimizers, token data, small models."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Split

Scheduler = Callable[[torch.optim.Optimizer, int, int], tuple[Any, str]]


# ------------------------------------------------------------------ schedules (torch.optim.lr_scheduler)


# What a diverged classifier's run may also show (a blow-up leaves the loss spiking, the gradients and
# updates large, the model no better than the prior): allowed, not expected, beside its divergence label.
DIVERGED_CLASSIFIER_ALLOW = ["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high",
                             "dead_layers", "best_epoch_not_last", "underfitting", "no_better_than_baseline",
                             "underperforming_classes"]


def step_lr(every_epochs: int, gamma: float = 0.1) -> Scheduler:
    """StepLR: lr × ``gamma`` every ``every_epochs`` epochs."""
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.StepLR(optimizer, every_epochs, gamma), "epoch")


def cosine_to_zero() -> Scheduler:
    """CosineAnnealingLR over the whole run, down to 0."""
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=0.0), "step")


def _lambda(multiplier: Callable[[int, int], float]) -> Scheduler:
    # LambdaLR calls the multiplier with the number of steps taken so far (0 for the first step).
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda taken: multiplier(taken, total)), "step")


def warmup_linear(warmup_fraction: float = 0.06) -> Scheduler:
    """Linear warm-up then linear decay to 0 (transformers' get_linear_schedule_with_warmup)."""
    def multiplier(taken: int, total: int) -> float:
        warmup = max(1, int(warmup_fraction * total))
        if taken < warmup:
            return (taken + 1) / warmup
        return max(0.0, (total - taken) / max(1, total - warmup))
    return _lambda(multiplier)


def warmup_cosine(warmup_fraction: float = 0.05) -> Scheduler:
    """Linear warm-up then cosine decay to 0."""
    def multiplier(taken: int, total: int) -> float:
        warmup = max(1, int(warmup_fraction * total))
        if taken < warmup:
            return (taken + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (taken - warmup) / max(1, total - warmup)))
    return _lambda(multiplier)


def warmup_stable_decay(warmup_fraction: float = 0.05, decay_fraction: float = 0.2) -> Scheduler:
    """Warm-up, a constant lr, then a linear cool-down to 0 over the last ``decay_fraction`` (WSD)."""
    def multiplier(taken: int, total: int) -> float:
        warmup, decay_from = max(1, int(warmup_fraction * total)), int((1 - decay_fraction) * total)
        if taken < warmup:
            return (taken + 1) / warmup
        if taken < decay_from:
            return 1.0
        return max(0.0, (total - taken) / max(1, total - decay_from))
    return _lambda(multiplier)


def one_cycle() -> Scheduler:
    """OneCycleLR peaking at the optimizer's lr (cycles Adam's beta1 or SGD's momentum too)."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total + 1), "step")


def plateau(factor: float = 0.5, patience: int = 2) -> Scheduler:
    """ReduceLROnPlateau on the val loss, checked at every evaluation."""
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=factor, patience=patience), "plateau")


def decay_at(fraction: float, factor: float) -> Scheduler:
    """One lr drop by ``factor`` after ``fraction`` of the run (a step schedule set for a run 10× longer)."""
    return _lambda(lambda taken, total: factor if taken >= fraction * total else 1.0)


def bump_at(step: int, length: int, factor: float) -> Scheduler:
    """The lr × ``factor`` for ``length`` steps from ``step`` (a schedule bug), else constant."""
    return _lambda(lambda taken, total: factor if step <= taken + 1 < step + length else 1.0)


# ------------------------------------------------------------------ optimizers


def make(optimizer: type[torch.optim.Optimizer], lr: float, **kwargs) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda model: optimizer([p for p in model.parameters() if p.requires_grad], lr=lr, **kwargs)


def adamw(lr: float, weight_decay: float = 1e-2, **kwargs) -> Callable[[nn.Module], torch.optim.Optimizer]:
    """AdamW with the usual two groups: no weight decay on biases and normalisation weights (seed 001)."""
    def build(model: nn.Module) -> torch.optim.Optimizer:
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        decay = [p for name, p in named if p.ndim >= 2 and "norm" not in name]
        exempt = [p for name, p in named if not (p.ndim >= 2 and "norm" not in name)]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, **kwargs)
    return build


def adafactor(lr: float = 1e-2, **kwargs) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return make(torch.optim.Adafactor, lr, **kwargs)


def nadam(lr: float, **kwargs) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return make(torch.optim.NAdam, lr, **kwargs)


def radam(lr: float, **kwargs) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return make(torch.optim.RAdam, lr, **kwargs)


# ------------------------------------------------------------------ token data


def markov_table(vocab: int, seed: int, concentration: float = 0.1) -> np.ndarray:
    """A character model with a one-token memory: P(next | previous) for every token, (V, V), sparse rows."""
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(vocab, concentration), size=vocab)


def markov_text(table: np.ndarray, length: int, seed: int) -> np.ndarray:
    """``length`` tokens sampled from the table, (length,) int64."""
    rng = np.random.default_rng(seed)
    vocab = table.shape[0]
    cumulative = table.cumsum(-1)
    tokens = np.empty(length, dtype=np.int64)
    tokens[0] = rng.integers(0, vocab)
    draws = rng.random(length)
    for position in range(1, length):
        tokens[position] = min(int(np.searchsorted(cumulative[tokens[position - 1]], draws[position])), vocab - 1)
    return tokens


def token_windows(tokens: np.ndarray, context: int, val_fraction: float, vocab: int,
                  train_limit: int | None = None) -> Split:
    """Non-overlapping windows: inputs (N, context), next-token targets (N, context); ``num_classes`` = vocab."""
    count = (len(tokens) - 1) // context
    x = tokens[:count * context].reshape(count, context)
    y = tokens[1:count * context + 1].reshape(count, context)
    cut = int(count * (1 - val_fraction))
    train = slice(0, cut if train_limit is None else min(cut, train_limit))
    return Split(torch.tensor(x[train]), torch.tensor(y[train]), torch.tensor(x[cut:]), torch.tensor(y[cut:]), vocab)


class CausalLM(nn.Module):
    """A tiny decoder-only transformer: (B, T) tokens → (B, T, V) next-token logits."""

    def __init__(self, vocab: int, context: int, width: int = 48, heads: int = 4, depth: int = 2,
                 norm_first: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(context, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0, batch_first=True,
                                           norm_first=norm_first)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        hidden = self.blocks(self.embed(tokens) + self.position[:length], mask=self.mask[:length, :length],
                             is_causal=True)
        return self.head(self.norm(hidden))  # (B, T, V)


class ResidualMLP(nn.Module):
    """Pre-norm residual MLP blocks (LayerNorm → Linear → GELU → Linear): (B, F) → (B, C)."""

    def __init__(self, inputs: int, width: int, depth: int, outputs: int):
        super().__init__()
        self.stem = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                                                  nn.Linear(2 * width, width)) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.stem(x)
        for block in self.blocks:
            hidden = hidden + block(hidden)
        return self.head(self.norm(hidden))


def last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def scale_head(factor: float) -> Callable[[nn.Module], None]:
    """The last Linear layer's weights × ``factor`` at init (an init far too large)."""
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            last_linear(model).weight.mul_(factor)
    return prepare


def freeze(prefix: str) -> Callable[[nn.Module], None]:
    """requires_grad off for every parameter whose name starts with ``prefix`` (a freeze by mistake)."""
    def prepare(model: nn.Module) -> None:
        for name, parameter in model.named_parameters():
            if name.startswith(prefix):
                parameter.requires_grad_(False)
    return prepare
