"""A small RWKV-style recurrent language model (per-channel decaying state, gated) on synthetic bracket text, Adan, 20-step window means (fifth hold-out).

Text made here: a stream of 60,000 tokens over 24 symbols, written by a
stack machine: with probability 0.25 (while fewer than 6 are open) an
opening bracket of one of 3 kinds, with probability 0.3 (while one is
open) the closing bracket matching the most recently opened one, else one
of 18 filler words drawn from a sparse one-token Markov table (Dirichlet
0.1). Predicting a closing bracket needs the stack, so the loss keeps
falling after the Markov part is learnt. Windows of 32 tokens, the last
20 % for validation (1,499 training windows, batches of 50: 30 steps per
epoch). The model: an embedding (width 48), two blocks each of a
time-mixing layer (pre-LayerNorm; keys k_t = W_k x_t, a state
s_t = a ⊙ s_{t-1} + (1 - a) ⊙ k_t with a learnt per-channel decay
a = σ(θ), computed in parallel as a causal exponential kernel; output
W_o(σ(W_r x_t) ⊙ s_t)) and a channel-mixing MLP (pre-LayerNorm, 48-96-48
with squared ReLU), residual sums, a final LayerNorm and a linear head;
next-token cross-entropy. Adan (written here, Xie et al. 2022: Nesterov
momentum estimated from gradient differences, bias-corrected, decoupled
weight decay off biases and norms) and AdamW; warm-up + cosine, constant,
and warm-up + inverse-square-root schedules. The loss, lr and gradient norm
are logged every 20 steps as the mean since the previous record (HF
Trainer's logged loss), per-layer statistics every 20 steps, val loss
every 60 steps. Task: language modelling over 24 symbols (one run: unknown).

Fifth hold-out (issue #12); see ``tcn_tones.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import markov_table, token_windows, warmup_cosine
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "ssm_lm_brackets"
LOGGING = Logging(every=20, mean=True, layer_every=20)
EVAL_EVERY = 60
FILLERS, KINDS, MAX_OPEN, CONTEXT = 18, 3, 6, 32
VOCAB = FILLERS + 2 * KINDS


@functools.lru_cache(maxsize=None)
def bracket_text(length: int = 60_000, train_limit: int | None = None, seed: int = 95) -> Split:
    """Windows (N, CONTEXT) int64 and next-token targets (N, CONTEXT); ``num_classes`` = VOCAB.

    Tokens 0-17 are fillers, 18-20 opening and 21-23 the matching closing brackets.
    """
    rng = np.random.default_rng(seed)
    table = markov_table(FILLERS, seed, concentration=0.1)
    cumulative = table.cumsum(-1)
    tokens = np.empty(length, dtype=np.int64)
    stack: list[int] = []
    previous = 0
    draws = rng.random((length, 3))
    for position in range(length):
        if len(stack) < MAX_OPEN and draws[position, 0] < 0.25:
            kind = int(draws[position, 1] * KINDS)
            stack.append(kind)
            tokens[position] = FILLERS + kind
        elif stack and draws[position, 0] < 0.55:
            tokens[position] = FILLERS + KINDS + stack.pop()
        else:
            previous = min(int(np.searchsorted(cumulative[previous], draws[position, 2])), FILLERS - 1)
            tokens[position] = previous
    return token_windows(tokens, CONTEXT, 0.2, VOCAB, train_limit=train_limit)


class TimeMix(nn.Module):
    """(B, T, W) → (B, T, W): a gated per-channel exponentially decaying state over the past (causal)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.key = nn.Linear(width, width, bias=False)
        self.receptance = nn.Linear(width, width, bias=False)
        self.output = nn.Linear(width, width, bias=False)
        self.decay = nn.Parameter(torch.linspace(-1.0, 3.0, width))  # a = σ(θ): from 0.27 to 0.95

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.norm(x)
        keys = self.key(hidden)
        length = x.shape[1]
        a = torch.sigmoid(self.decay)  # (W,)
        lag = torch.arange(length)[:, None] - torch.arange(length)[None, :]  # (T, T): t - s
        causal = lag >= 0
        kernel = torch.where(causal, a[:, None, None] ** lag.clamp(min=0), torch.zeros(()))  # (W, T, T)
        state = torch.einsum("wts,bsw->btw", kernel, keys) * (1 - a)
        return self.output(torch.sigmoid(self.receptance(hidden)) * state)


class ChannelMix(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(self.norm(x))) ** 2)


class RecurrentLM(nn.Module):
    """(B, T) tokens → (B, T, V) next-token logits."""

    def __init__(self, vocab: int = VOCAB, width: int = 48, depth: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(nn.ModuleList([TimeMix(width), ChannelMix(width)]) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(tokens)
        for time_mix, channel_mix in self.blocks:
            hidden = hidden + time_mix(hidden)
            hidden = hidden + channel_mix(hidden)
        return self.head(self.norm(hidden))


def lm(**kwargs):
    return lambda data: RecurrentLM(data.num_classes, **kwargs)


class Adan(torch.optim.Optimizer):
    """Adan (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm"), with bias correction:
    m ← (1-β1)m + β1 g, v ← (1-β2)v + β2 (g - g_prev), n ← (1-β3)n + β3 (g + (1-β2)(g - g_prev))²,
    w ← (w - lr (m̂ + (1-β2) v̂) / (√n̂ + ε)) / (1 + lr λ). (β1, β2, β3) = (0.02, 0.08, 0.01) as the paper."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float, float] = (0.02, 0.08, 0.01),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2, beta3 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    for key in ("m", "v", "n"):
                        state[key] = torch.zeros_like(param)
                    state["previous"] = grad.clone()
                state["step"] += 1
                k = state["step"]
                difference = grad - state["previous"]
                state["m"].mul_(1 - beta1).add_(grad, alpha=beta1)
                state["v"].mul_(1 - beta2).add_(difference, alpha=beta2)
                state["n"].mul_(1 - beta3).add_((grad + (1 - beta2) * difference) ** 2, alpha=beta3)
                m_hat = state["m"] / (1 - (1 - beta1) ** k)
                v_hat = state["v"] / (1 - (1 - beta2) ** k)
                n_hat = state["n"] / (1 - (1 - beta3) ** k)
                param.addcdiv_(m_hat + (1 - beta2) * v_hat, n_hat.sqrt() + group["eps"], value=-group["lr"])
                param.div_(1 + group["lr"] * group["weight_decay"])
                state["previous"].copy_(grad)


def _groups(model: nn.Module, weight_decay: float) -> list[dict]:
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decay = [p for name, p in named if p.ndim >= 2 and "norm" not in name]
    exempt = [p for name, p in named if not (p.ndim >= 2 and "norm" not in name)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def adan(lr: float, weight_decay: float = 0.02):
    return lambda model: Adan(_groups(model, weight_decay), lr=lr)


def adamw(lr: float, weight_decay: float = 0.01):
    return lambda model: torch.optim.AdamW(_groups(model, weight_decay), lr=lr)


def warmup_inverse_sqrt(warmup: int = 60):
    """Linear warm-up over ``warmup`` steps, then lr · √(warmup / step)."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda taken: (taken + 1) / warmup if taken + 1 < warmup else math.sqrt(warmup / (taken + 1))),
        "step")


def lambda_schedule(multiplier):
    """A LambdaLR from ``multiplier(steps taken, total)``."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda taken: multiplier(taken, total)), "step")


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling", logging=LOGGING,
                    batch_size=50, probe_layout=True, eval_every=EVAL_EVERY)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", bracket_text), settings.pop("model", lm()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("ssm_healthy_adan_warmup_cosine", "RWKV-style LM, Adan 5e-3 wd 0.02, 5% warm-up + cosine to 0, 15 epochs",
            adan(5e-3), 15, scheduler=warmup_cosine(0.05), healthy=True),
        run("ssm_healthy_adamw_inverse_sqrt", "RWKV-style LM, AdamW 3e-3 wd 0.01, 60-step warm-up then inverse "
            "square root, 15 epochs", adamw(3e-3), 15, scheduler=warmup_inverse_sqrt(60), healthy=True),
        run("ssm_healthy_adan_constant_unknown_task", "RWKV-style LM, Adan 2e-3 wd 0.02 constant, 15 epochs, seed 1, "
            "no task kind", adan(2e-3), 15, seed=1, task_kind="unknown", healthy=True),
        run("ssm_healthy_adan_long", "RWKV-style LM, Adan 5e-3 wd 0.02, 5% warm-up + cosine to 0, 40 epochs (1,200 "
            "steps), val every 120 steps", adan(5e-3), 40, scheduler=warmup_cosine(0.05), eval_every=120,
            healthy=True),
        run("ssm_lr_too_high_adan", "RWKV-style LM, Adan 1.0 wd 0.02 constant (200x the working lr; at 0.15 or 1.0 "
            "under warm-up + cosine it did no harm), 15 epochs", adan(1.0), 15,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "missing_warmup"]),
        run("ssm_lr_too_low_adan", "RWKV-style LM, Adan 5e-5 wd 0.02 (1/100 of the working lr), 5% warm-up + cosine "
            "to 0, 15 epochs", adan(5e-5), 15, scheduler=warmup_cosine(0.05),
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("ssm_decayed_too_early_adan", "RWKV-style LM, Adan 5e-3 wd 0.02 constant, lr x0.01 from 8% of training "
            "(step 36; a milestone set for a run 10x longer), 15 epochs", adan(5e-3), 15,
            scheduler=lambda_schedule(lambda taken, total: 0.01 if taken + 1 >= 0.08 * total else 1.0),
            expect={"decayed_too_early": [20, 120]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer"]),
        run("ssm_update_ratio_low_adan", "RWKV-style LM, Adan 5e-7 wd 0.02 (1/10,000 of the working lr: updates "
            "about 1e-6 of the weights), 5% warm-up + cosine to 0, 15 epochs", adan(5e-7), 15,
            scheduler=warmup_cosine(0.05),
            expect={"update_ratio_out_of_band": everywhere},
            allow=["lr_too_low", "underfitting", "train_longer"]),
        run("ssm_divergence_lr_growth", "RWKV-style LM, AdamW 3e-3 wd 0.01 growing x1.015 per step (an lr range test "
            "left running: 0.06 by step 200, 1.1 by step 400), 15 epochs", adamw(3e-3), 15,
            scheduler=lambda_schedule(lambda taken, total: 1.015 ** taken),
            expect={"divergence": everywhere},
            allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                   "best_epoch_not_last", "underfitting", "overfitting", "no_better_than_baseline"]),
        run("ssm_loss_spike_lr_bump", "RWKV-style LM, Adan 2e-3 wd 0.02 constant, lr x100 for 6 steps from step 241 "
            "(a schedule bug), 15 epochs", adan(2e-3), 15,
            scheduler=lambda_schedule(lambda taken, total: 100.0 if 241 <= taken + 1 < 247 else 1.0),
            expect={"loss_spike": [240, 320]}, forbid=["divergence"],
            allow=["exploding_gradients", "best_epoch_not_last", "update_ratio_out_of_band", "train_longer",
                   "lr_too_high"]),
        run("ssm_overfitting_few_windows", "RWKV-style LM of width 96 on 40 training windows (1 step per epoch), Adan "
            "5e-3 wd 0.02 constant, 500 epochs, val every 20 steps", adan(5e-3), 500,
            data=lambda: bracket_text(train_limit=40), model=lm(width=96), eval_every=20, batch_size=40,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
        run("ssm_train_longer", "RWKV-style LM, Adan 2e-3 wd 0.02 constant, stopped after 4 of 15 epochs (120 steps), "
            "val every 20 steps", adan(2e-3), 4, eval_every=20,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low"]),
        run("ssm_underfitting_width_2", "RWKV-style LM of width 2, Adan 5e-3 wd 0.02, 5% warm-up + cosine to 0, "
            "15 epochs", adan(5e-3), 15, scheduler=warmup_cosine(0.05), model=lm(width=2),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    warm = healthy["ssm_healthy_adan_warmup_cosine"]
    five_constant = run("ssm_twin_adan_5e-3_constant", "RWKV-style LM, Adan 5e-3 wd 0.02 constant, 15 epochs",
                        adan(5e-3), 15)
    constant = run("ssm_twin_adan_constant", "RWKV-style LM, Adan 2e-3 wd 0.02 constant, 15 epochs", adan(2e-3), 15)
    return {
        "ssm_lr_too_high_adan": five_constant,
        "ssm_lr_too_low_adan": warm,
        "ssm_decayed_too_early_adan": five_constant,
        "ssm_update_ratio_low_adan": warm,
        "ssm_divergence_lr_growth": healthy["ssm_healthy_adamw_inverse_sqrt"],
        "ssm_loss_spike_lr_bump": constant,
        "ssm_overfitting_few_windows": run("ssm_twin_wide_all_windows", "RWKV-style LM of width 96 on all the "
                                           "windows, Adan 5e-3 wd 0.02 constant, 15 epochs, val every 20 steps",
                                           adan(5e-3), 15, model=lm(width=96), eval_every=20),
        "ssm_train_longer": constant,
        "ssm_underfitting_width_2": warm,
    }
