"""A small GPT with rotary position embeddings modelling the characters of synthetic grammar text, Sophia (written here) and AdamW, linear warm-up then cosine to zero, HF-Trainer-style logging (the mean since the previous record every 10 steps, from step 10) (thirteenth hold-out).

Text made here: sentences of a small English-like grammar (a determiner, an
optional adjective, a noun, a verb, an optional second noun phrase and an
optional prepositional phrase, agreement of "is/are" with the subject's
number, a full stop), 28 characters in all (a-z, space, full stop); a
corpus of about 160,000 characters, its first 85 % cut into training chunks
of 33 characters (32 inputs, each predicting the next one: about 4,100
chunks) and the rest into 500 validation chunks; batches of 32 (129 steps
an epoch). The model: a decoder-only transformer (token embedding of width
64, 2 pre-LN blocks of causal self-attention with 4 heads whose queries and
keys are rotated by their position (RoPE, base 10,000) and a GELU MLP of
width 256, a final LayerNorm and an untied linear head over the 28
characters), GPT-2's init (normal σ 0.02, residual projections σ
0.02/√(2·layers)). The loss: next-character cross-entropy. Sophia (Liu et
al. 2023, written here: the Gauss-Newton-Bartlett estimate of the diagonal
Hessian every 10 steps from labels sampled from the model's own logits, an
EMA of it, and a per-coordinate clipped update of the momentum over that
curvature) and AdamW (no weight decay on biases and LayerNorm weights). The
lr (per step, as a multiplier): linear warm-up over the first 5 % of the
steps, then cosine to zero. Logged every 10 steps from step 10 on: the mean
loss since the previous record (HF Trainer's logged loss), with the lr and
gradient norm of that step; per-layer statistics every 20 steps; val loss
after every epoch. Task: language_modelling, vocabulary 28.

Thirteenth hold-out (issue #12); see ``ecg_resnet1d_rhythms.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "gpt_rope_sophia_chars"
LOGGING = Logging(every=10, mean=True, start=10, layer_every=20)
ALPHABET = "abcdefghijklmnopqrstuvwxyz ."
CONTEXT = 32

DETERMINERS = ("the", "a", "every", "some", "my", "this")
ADJECTIVES = ("small", "green", "quiet", "heavy", "bright", "old", "quick", "lazy")
NOUNS = ("cat", "dog", "river", "lamp", "garden", "teacher", "window", "bird", "stone", "farmer")
VERBS = ("sees", "likes", "moves", "finds", "keeps", "follows", "hears", "paints")
PREPOSITIONS = ("near", "under", "behind", "over", "beside")


def _sentence(rng: np.random.Generator) -> str:
    def phrase() -> str:
        words = [DETERMINERS[rng.integers(len(DETERMINERS))]]
        if rng.random() < 0.5:
            words.append(ADJECTIVES[rng.integers(len(ADJECTIVES))])
        words.append(NOUNS[rng.integers(len(NOUNS))])
        return " ".join(words)

    subject = phrase()
    if rng.random() < 0.25:
        words = [subject, "is" if rng.random() < 0.5 else "was", ADJECTIVES[rng.integers(len(ADJECTIVES))]]
    else:
        words = [subject, VERBS[rng.integers(len(VERBS))], phrase()]
    if rng.random() < 0.4:
        words += [PREPOSITIONS[rng.integers(len(PREPOSITIONS))], phrase()]
    return " ".join(words) + ". "


@functools.lru_cache(maxsize=None)
def text_chunks(characters: int = 160_000, train_chunks: int | None = None, seed: int = 131) -> Split:
    """Training and validation chunks of CONTEXT + 1 characters; ``train_chunks`` keeps only the first ones."""
    rng = np.random.default_rng(seed)
    pieces, total = [], 0
    while total < characters:
        pieces.append(_sentence(rng))
        total += len(pieces[-1])
    codes = np.array([ALPHABET.index(c) for c in "".join(pieces)[:characters]], dtype=np.int64)
    cut = int(0.85 * len(codes))
    span = CONTEXT + 1

    def chunks(array: np.ndarray, limit: int | None) -> np.ndarray:
        n = len(array) // span
        out = array[:n * span].reshape(n, span)
        return out[:limit] if limit is not None else out

    train, val = chunks(codes[:cut], train_chunks), chunks(codes[cut:], 500)
    return Split(torch.tensor(train[:, :-1]), torch.tensor(train[:, 1:]), torch.tensor(val[:, :-1]),
                 torch.tensor(val[:, 1:]), len(ALPHABET))


def rotate(x: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """RoPE: each pair of channels of (B, H, T, D) rotated by an angle proportional to its position."""
    half = x.shape[-1] // 2
    frequencies = base ** (-torch.arange(half, dtype=x.dtype) / half)
    angles = torch.arange(x.shape[-2], dtype=x.dtype)[:, None] * frequencies[None, :]
    cos, sin = angles.cos(), angles.sin()
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(rotate(q), rotate(k), v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, pre_norm: bool = True):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = Attention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attention(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attention(x))  # the original transformer's post-LN layout
        return self.norm2(x + self.mlp(x))


class GPT(nn.Module):
    def __init__(self, width: int = 64, heads: int = 4, layers: int = 2, pre_norm: bool = True,
                 head_std: float = 0.02):
        super().__init__()
        self.embed = nn.Embedding(len(ALPHABET), width)
        self.blocks = nn.ModuleList(Block(width, heads, pre_norm) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, len(ALPHABET))
        for name, parameter in self.named_parameters():
            if name.endswith("weight") and parameter.ndim == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(parameter, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(parameter)
        nn.init.normal_(self.head.weight, std=head_std)
        self.last_input: torch.Tensor | None = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.last_input = tokens  # Sophia's Hessian estimate re-reads the batch
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def gpt(**kwargs):
    return lambda data: GPT(**kwargs)


class Sophia(torch.optim.Optimizer):
    """Sophia-G (Liu et al. 2023): every ``k`` steps the Gauss-Newton-Bartlett estimate ĥ = B·ĝ² from the
    gradient of the loss on labels sampled from the model's logits (B: tokens in the batch), h ← β₂h + (1-β₂)ĥ;
    every step m ← β₁m + (1-β₁)g, w ← w(1 - lr·λ), w ← w - lr·sign(m)·min(|m| / (ρ·h), 1)."""

    def __init__(self, model: nn.Module, params, lr: float = 1e-3, betas: tuple[float, float] = (0.965, 0.99),
                 rho: float = 0.04, weight_decay: float = 0.1, k: int = 10):
        super().__init__(params, {"lr": lr, "betas": betas, "rho": rho, "weight_decay": weight_decay})
        self.model, self.k, self.count = model, k, 0

    def _estimate_hessian(self) -> None:
        tokens = self.model.last_input
        params = [p for group in self.param_groups for p in group["params"]]
        with torch.enable_grad():
            logits = self.model(tokens)
            sampled = torch.distributions.Categorical(logits=logits.detach()).sample()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), sampled.reshape(-1))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        tokens_in_batch = sampled.numel()
        grads = iter(grads)
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for param in group["params"]:
                grad = next(grads)
                if grad is None:
                    continue
                hessian = self.state[param].setdefault("hessian", torch.zeros_like(param))
                hessian.mul_(beta2).addcmul_(grad, grad, value=(1 - beta2) * tokens_in_batch)

    @torch.no_grad()
    def step(self, closure=None):
        self.count += 1
        if self.count % self.k == 1 or self.k == 1:
            self._estimate_hessian()
        for group in self.param_groups:
            beta1 = group["betas"][0]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                momentum = state.setdefault("momentum", torch.zeros_like(param))
                hessian = state.setdefault("hessian", torch.zeros_like(param))
                momentum.mul_(beta1).add_(param.grad, alpha=1 - beta1)
                if group["weight_decay"]:
                    param.mul_(1 - group["lr"] * group["weight_decay"])
                ratio = (momentum.abs() / (group["rho"] * hessian + 1e-15)).clamp(max=1.0)
                param.addcmul_(momentum.sign(), ratio, value=-group["lr"])


def _groups(model: nn.Module, weight_decay: float) -> list[dict]:
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if p.ndim >= 2 and "norm" not in n]
    exempt = [p for n, p in trainable if not (p.ndim >= 2 and "norm" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def sophia(lr: float, weight_decay: float = 0.1, **kwargs):
    return lambda model: Sophia(model, _groups(model, weight_decay), lr=lr, **kwargs)


def adamw(lr: float, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.99)):
    return lambda model: torch.optim.AdamW(_groups(model, weight_decay), lr=lr, betas=betas)


def warmup_cosine(warmup: float = 0.05, horizon: float = 1.0, bump_at: int | None = None, bump_length: int = 0,
                  bump: float = 1.0):
    """Linear warm-up over ``warmup`` of the steps, then cosine to zero at ``horizon`` of them (zero after).
    ``bump``: the lr multiplied by it for ``bump_length`` steps from ``bump_at``."""
    def schedule(step: int, total: int) -> float:
        if bump_at is not None and bump_at <= step < bump_at + bump_length:
            extra = bump
        else:
            extra = 1.0
        warm = int(total * warmup)
        if warm and step <= warm:
            return extra * step / warm
        end = max(warm + 1, int(total * horizon))
        progress = min(1.0, (step - warm) / max(1, end - warm))
        return extra * 0.5 * (1 + math.cos(math.pi * progress))
    return schedule


def freeze_attention(model: nn.Module) -> None:
    """requires_grad off for every block's attention (a recipe's freeze list meant for adapter tuning, run from
    scratch: the attention weights stay at their init)."""
    for block in model.blocks:
        for parameter in block.attention.parameters():
            parameter.requires_grad_(False)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling", logging=LOGGING,
                    batch_size=32, probe_layout=True, attention=True, lr_at=warmup_cosine())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", text_chunks), settings.pop("model", gpt()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    return [
        run("gpt_healthy_sophia", "RoPE GPT (2 blocks, width 64) on grammar text characters, Sophia 2e-3 rho 0.04 "
            "wd 0.1, 5 % warm-up then cosine to zero, 4 epochs (516 steps)", sophia(2e-3), 4, healthy=True),
        run("gpt_healthy_sophia_seed1", "RoPE GPT, Sophia 2e-3, warm-up + cosine, 4 epochs, seed 1", sophia(2e-3), 4,
            seed=1, healthy=True),
        run("gpt_healthy_adamw", "RoPE GPT, AdamW 3e-3 betas (0.9, 0.99) wd 0.1, warm-up + cosine, 4 epochs",
            adamw(3e-3), 4, healthy=True),
        run("gpt_healthy_adamw_wide", "RoPE GPT of width 96 (6 heads), AdamW 2e-3, warm-up + cosine, 4 epochs, seed 2",
            adamw(2e-3), 4, model=gpt(width=96, heads=6), seed=2, healthy=True),
        run("gpt_healthy_sophia_deeper", "RoPE GPT with 3 blocks, Sophia 1.5e-3, 10 % warm-up + cosine, 4 epochs, "
            "seed 3", sophia(1.5e-3), 4, model=gpt(layers=3), lr_at=warmup_cosine(0.1), seed=3, healthy=True),
        run("gpt_healthy_adamw_postln_warmup", "RoPE GPT in the post-LN layout, AdamW 2e-3, 10 % warm-up + cosine, "
            "4 epochs, seed 4", adamw(2e-3), 4, model=gpt(pre_norm=False), lr_at=warmup_cosine(0.1), seed=4,
            healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    'gpt_missing_warmup_adamw': (
        "the loss sits near the unigram level (2.9 to 2.3) for the first 100 steps where the twin with 10 % "
        "warm-up reaches 0.9; val 2.04 vs 0.754 at step 129, final val 0.714 vs 0.543, 1.3x"),
    'gpt_lr_too_high_sophia': (
        "the logged loss climbs from 3.06 to 7.7 at step 140 and ends at 2.89, the unigram level; final val 2.888 "
        "vs twin 0.549, 5.3x"),
    'gpt_divergence_sophia': (
        "the logged loss climbs from 4.7 to 54 at step 40 and 280 at step 220 and is still 5.8, above its start, "
        "at the end; final val 5.80 vs twin 0.549, 10.6x"),
    'gpt_lr_too_low_adamw': (
        "final val 2.606 vs twin 0.552, 4.7x; the loss falls from 3.32 to 2.61 almost linearly; median "
        "update/weight ratio 1.3e-4 vs the twin's 2.0e-3"),
    'gpt_decayed_too_early_horizon': (
        "the logged loss flat at 1.67 from step 90 on; final val 1.669 vs twin 0.549, 3.0x"),
    'gpt_loss_spike_lr_bump': (
        "the logged loss jumps from 0.62 to 2.27 at step 260 and is back to 0.78 at step 300; val 1.81 at step "
        "258 against 0.72 before; final val 0.598 vs twin 0.552"),
    'gpt_overfitting_small_corpus': (
        "val falls to 1.551 at step 40 then rises to 2.029 at the end while the train loss goes from 0.87 to "
        "0.087; final val 3.0x the 0.675 of the twin on the full text after 1 epoch"),
    'gpt_train_longer_stopped': (
        "val 2.84, 2.46, 2.04, 1.65, 1.37, 1.14 at its 6 evaluations, best at the last; final val 2.1x the twin's "
        "0.552"),
    'gpt_bad_initial_loss_head_init': (
        "first logged loss (the mean of steps 1-10) 11.7 against ln 28 = 3.33 (twin 2.89); gradient norm peak "
        "145x its median; final val 0.815 vs twin 0.549, 1.5x"),
    'gpt_dead_layers_frozen_attention': (
        "final val 1.298 vs twin 0.552, 2.4x"),
    'gpt_underfitting_tiny': (
        "final val 1.625 vs twin 0.552, 2.9x; final train 1.637, as high"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("gpt_missing_warmup_adamw", "RoPE GPT with 4 blocks, AdamW 3e-2 betas (0.9, 0.999) with the warm-up "
            "left out (warm-up 0 in the config: cosine from step 1), 4 epochs", adamw(3e-2, betas=(0.9, 0.999)), 4,
            model=gpt(layers=4), lr_at=warmup_cosine(0.0), expect={"missing_warmup": [1, 150]},
            allow=["lr_too_high", "loss_spike", "adam_hyperparameters", "underfitting", "exploding_gradients",
                   "best_epoch_not_last"]),
        run("gpt_lr_too_high_sophia", "RoPE GPT, Sophia 6e-2 (30x the working lr), warm-up + cosine, 4 epochs",
            sophia(6e-2), 4, expect={"lr_too_high": [20, 300]}, forbid=["lr_too_low"],
            allow=["loss_spike", "underfitting", "update_ratio_out_of_band", "exploding_gradients", "divergence",
                   "best_epoch_not_last"]),
        run("gpt_divergence_sophia", "RoPE GPT, Sophia 0.2 without weight decay (100x the working lr: a config "
            "written for a model whose lr is scaled down by its width), warm-up + cosine, 4 epochs",
            sophia(0.2, weight_decay=0.0), 4, expect={"divergence": [20, 516]},
            allow=["lr_too_high", "loss_spike", "exploding_gradients", "update_ratio_out_of_band", "underfitting",
                   "best_epoch_not_last"]),
        run("gpt_lr_too_low_adamw", "RoPE GPT, AdamW 3e-5 (100x below the working lr), warm-up + cosine, 4 epochs",
            adamw(3e-5), 4, expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("gpt_decayed_too_early_horizon", "RoPE GPT, Sophia 2e-3, the cosine's horizon given in the wrong unit: "
            "the lr reaches zero at 12 % of the steps (step 62) and stays there, 4 epochs", sophia(2e-3), 4,
            lr_at=warmup_cosine(0.02, horizon=0.12), expect={"decayed_too_early": [30, 120]},
            forbid=["lr_too_high"], allow=["underfitting", "lr_too_low", "update_ratio_out_of_band", "train_longer"]),
        run("gpt_loss_spike_lr_bump", "RoPE GPT, AdamW 3e-3, a resumed run whose restored scheduler gave lr x10 "
            "for 3 steps (251-253), warm-up + cosine, 4 epochs", adamw(3e-3), 4,
            lr_at=warmup_cosine(bump_at=251, bump_length=3, bump=10.0), expect={"loss_spike": [250, 300]},
            forbid=["divergence"], allow=["exploding_gradients", "update_ratio_out_of_band"]),
        run("gpt_overfitting_small_corpus", "RoPE GPT of width 128 with 3 blocks on the first 48 training chunks "
            "(1,500 characters), AdamW 3e-3 without weight decay, warm-up + cosine, 60 epochs (120 steps), val every "
            "8 steps",
            adamw(3e-3, weight_decay=0.0), 60, data=lambda: text_chunks(train_chunks=48),
            model=gpt(width=128, layers=3), eval_every=8,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
        run("gpt_train_longer_stopped", "RoPE GPT, AdamW 1e-3, its warm-up + cosine planned for 8 epochs, stopped "
            "after 1 (129 steps), val every 20 steps", adamw(1e-3), 1,
            lr_at=lambda step, total: warmup_cosine()(step, 8 * total), eval_every=20,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underfitting"]),
        run("gpt_bad_initial_loss_head_init", "RoPE GPT whose head was initialised with σ 3 (a muP sweep's output "
            "multiplier 150 applied to the σ 0.02 of the init), Sophia 2e-3, warm-up + cosine, 4 epochs",
            sophia(2e-3), 4, model=gpt(head_std=3.0), expect={"bad_initial_loss": [1, 10]},
            allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band"]),
        run("gpt_dead_layers_frozen_attention", "RoPE GPT whose attention weights were left with requires_grad off "
            "(a freeze list meant for adapter tuning, run from scratch), AdamW 3e-3, warm-up + cosine, 4 epochs",
            adamw(3e-3), 4, prepare=freeze_attention, expect={"dead_layers": everywhere},
            allow=["underfitting"]),
        run("gpt_underfitting_tiny", "RoPE GPT of width 8 with 1 block of 2 heads (a smoke-test config left in the "
            "sweep), AdamW 3e-3, warm-up + cosine, 4 epochs", adamw(3e-3), 4, model=gpt(width=8, heads=2, layers=1),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["gpt_healthy_sophia"] for spec in faults()}
    for name in ("gpt_lr_too_low_adamw", "gpt_loss_spike_lr_bump", "gpt_dead_layers_frozen_attention",
                 "gpt_underfitting_tiny", "gpt_train_longer_stopped"):
        twins[name] = healthy["gpt_healthy_adamw"]
    twins["gpt_missing_warmup_adamw"] = run(
        "gpt_twin_warmup_4_blocks", "RoPE GPT with 4 blocks, AdamW 3e-2 betas (0.9, 0.999), 10 % warm-up + cosine, "
        "4 epochs", adamw(3e-2, betas=(0.9, 0.999)), 4, model=gpt(layers=4), lr_at=warmup_cosine(0.1))
    twins["gpt_overfitting_small_corpus"] = run(
        "gpt_twin_full_corpus_wide", "RoPE GPT of width 128 with 3 blocks on the full training text, AdamW 3e-3 "
        "without weight decay, warm-up + cosine, 1 epoch", adamw(3e-3, weight_decay=0.0), 1,
        model=gpt(width=128, layers=3), eval_every=20)
    return twins
