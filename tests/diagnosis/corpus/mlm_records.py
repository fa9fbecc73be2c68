"""A BERT-style masked-token encoder (post-LN transformer) on synthetic key-value records, AdEMAMix, warm-up-stable-decay, 12-step window means (sixth hold-out).

Text made here: records of 10 key-value pairs (20 tokens), the 10 keys in
a random order; a record has a hidden type (one of 6) and the value after
key k is the type's value for k (a fixed table over 24 value tokens) with
probability 0.85, else any value. A masked value is predicted from its
key (left) and the record's type read off the other values (both sides);
a masked key from the keys that are missing (the keys form a permutation).
Vocabulary 35: [MASK], 10 keys, 24 values. 2,400 training and 400
validation records, batches of 40 (60 steps per epoch). Dynamic masking as
BERT: every training batch masks 15 % of the positions afresh (80 %
[MASK], 10 % a random token, 10 % unchanged) and the loss is the
cross-entropy over the masked positions only; the validation records are
masked once, with a fixed seed. The model: token and position embeddings
with an embedding LayerNorm, two post-LN transformer encoder layers (width
48, 4 heads, GELU feed-forward 192, no dropout), an MLM head (dense, GELU,
LayerNorm, decoder to the vocabulary), every weight drawn with std 0.02
(BERT's initializer_range). AdEMAMix (written here, Pagliardini et al.
2024: Adam plus a second, slow gradient EMA (β3) mixed in with weight α,
decoupled weight decay off biases and norms) and AdamW (β2 0.98); a
warm-up-stable-decay schedule whose cool-down is 1 - √progress (Hägele et
al. 2024). The loss, lr and gradient norm are logged every 12 steps as
the mean since the previous record (HF Trainer's logging_steps), per-layer
statistics every 12 steps, val loss every 60 steps (each epoch). Task:
language modelling with V = 35.

Sixth hold-out (issue #12); see ``conv2d_textures.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "mlm_records"
LOGGING = Logging(every=12, mean=True, layer_every=12)
EVAL_EVERY = 60
KEYS, VALUES, TYPES, AGREEMENT = 10, 24, 6, 0.85
MASK, LENGTH = 0, 2 * KEYS
VOCAB = 1 + KEYS + VALUES
IGNORE = -100  # targets at positions that were not masked (F.cross_entropy's ignore_index)


def mask_tokens(tokens: torch.Tensor, generator: torch.Generator,
                share: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of (B, T) tokens: ``share`` of the positions (at least one per record) become targets; of
    those 80 % are replaced by [MASK], 10 % by a random token, 10 % kept. Returns (inputs, targets), targets
    IGNORE elsewhere."""
    chosen = torch.rand(tokens.shape, generator=generator) < share
    chosen[torch.arange(len(tokens)), torch.randint(0, tokens.shape[1], (len(tokens),), generator=generator)] = True
    targets = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE))
    roll = torch.rand(tokens.shape, generator=generator)
    inputs = torch.where(chosen & (roll < 0.8), torch.full_like(tokens, MASK), tokens)
    random_tokens = torch.randint(1, VOCAB, tokens.shape, generator=generator)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_tokens, inputs)
    return inputs, targets


@functools.lru_cache(maxsize=None)
def records(train: int = 2400, val: int = 400, seed: int = 67) -> Split:
    """Clean training records (N, LENGTH) int64 (their targets a copy: the batch hook masks them) and masked
    validation records with their targets; ``num_classes`` = VOCAB.

    Tokens: 0 [MASK], 1-10 keys, 11-34 values.
    """
    rng = np.random.default_rng(seed)
    table = rng.integers(0, VALUES, size=(TYPES, KEYS))
    count = train + val
    kinds = rng.integers(0, TYPES, count)
    order = np.argsort(rng.random((count, KEYS)), axis=1)  # each record's keys, a random permutation
    values = np.where(rng.random((count, KEYS)) < AGREEMENT, table[kinds[:, None], order],
                      rng.integers(0, VALUES, (count, KEYS)))
    tokens = np.empty((count, LENGTH), dtype=np.int64)
    tokens[:, 0::2], tokens[:, 1::2] = 1 + order, 1 + KEYS + values
    tokens = torch.tensor(tokens)
    x_val, y_val = mask_tokens(tokens[train:], torch.Generator().manual_seed(seed))
    return Split(tokens[:train], tokens[:train].clone(), x_val, y_val, VOCAB)


def dynamic_masking(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch's masking, drawn afresh at every step (seeded by the step)."""
    return mask_tokens(x, torch.Generator().manual_seed(20_000 + step))


class MaskedEncoder(nn.Module):
    """(B, T) tokens → (B, T, V) logits for every position: BERT's embeddings, post-LN encoder layers, MLM head."""

    def __init__(self, vocab: int = VOCAB, width: int = 48, heads: int = 4, depth: int = 2,
                 initializer_range: float = 0.02):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(LENGTH, width)
        self.embed_norm = nn.LayerNorm(width)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.transform = nn.Linear(width, width)
        self.head_norm = nn.LayerNorm(width)
        self.decoder = nn.Linear(width, vocab)
        for module in self.modules():  # BERT's _init_weights
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, parameter in self.encoder.named_parameters():
            if name.endswith("in_proj_weight"):
                nn.init.normal_(parameter, std=initializer_range)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1])
        hidden = self.encoder(self.embed_norm(self.embed(tokens) + self.position(positions)))  # (B, T, W)
        return self.decoder(self.head_norm(F.gelu(self.transform(hidden))))  # (B, T, V)


def encoder(**kwargs):
    return lambda data: MaskedEncoder(data.num_classes, **kwargs)


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of (B, T, V) logits over the masked positions of (B, T) targets (IGNORE elsewhere)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)


class AdEMAMix(torch.optim.Optimizer):
    """AdEMAMix (Pagliardini, Ablin and Grangier 2024, "The AdEMAMix Optimizer: Better, Faster, Older"): Adam's
    bias-corrected fast EMA m1 (β1) plus a slow EMA m2 (β3, not bias-corrected) weighted by α,
    w ← w - lr · ((m̂1 + α m2)/(√v̂ + ε) + λ w); α rises linearly from 0 over the first ``alpha_warmup`` steps (the
    paper's α scheduler, which keeps the early steps Adam's)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float, float] = (0.9, 0.999, 0.999),
                 alpha: float = 5.0, alpha_warmup: int = 600, eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "alpha": alpha, "alpha_warmup": alpha_warmup,
                                  "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2, beta3 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["m1"], state["m2"], state["v"] = (torch.zeros_like(param) for _ in range(3))
                state["step"] += 1
                step, grad = state["step"], param.grad
                state["m1"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["m2"].mul_(beta3).add_(grad, alpha=1 - beta3)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                alpha = group["alpha"] * min(1.0, step / max(1, group["alpha_warmup"]))
                m_hat = state["m1"] / (1 - beta1 ** step)
                v_hat = state["v"] / (1 - beta2 ** step)
                update = (m_hat + alpha * state["m2"]) / (v_hat.sqrt() + group["eps"])
                param.mul_(1 - group["lr"] * group["weight_decay"]).add_(update, alpha=-group["lr"])


def _groups(model: nn.Module, weight_decay: float) -> list[dict]:
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decay = [p for name, p in named if p.ndim >= 2 and "norm" not in name]
    exempt = [p for name, p in named if not (p.ndim >= 2 and "norm" not in name)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def ademamix(lr: float, weight_decay: float = 0.01, **kwargs):
    return lambda model: AdEMAMix(_groups(model, weight_decay), lr=lr, **kwargs)


def adamw(lr: float, weight_decay: float = 0.01):
    return lambda model: torch.optim.AdamW(_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)


def wsd_multiplier(taken: int, total: int, warmup: float = 0.05, stable_until: float = 0.8,
                   cooldown_end: float = 1.0) -> float:
    """Warm-up over ``warmup`` of the run, constant to ``stable_until``, then 1 - √progress down to 0 at
    ``cooldown_end`` (0 after it); ``taken``: steps taken so far, ``total``: the run's steps."""
    warmup_steps = max(1, int(warmup * total))
    if taken < warmup_steps:
        return (taken + 1) / warmup_steps
    start, end = int(stable_until * total), int(cooldown_end * total)
    if taken < start:
        return 1.0
    return max(0.0, 1.0 - math.sqrt(min(1.0, (taken - start) / max(1, end - start))))


def wsd(planned_total: int | None = None, **kwargs):
    """LambdaLR of ``wsd_multiplier`` per step over the run (or over ``planned_total`` steps: a run stopped before
    its schedule ended)."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda taken: wsd_multiplier(taken, planned_total or total, **kwargs)), "step")


def lambda_schedule(multiplier):
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda taken: multiplier(taken, total)), "step")


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling", logging=LOGGING,
                    batch_size=40, probe_layout=True, eval_every=EVAL_EVERY, attention=True,
                    loss=masked_cross_entropy, batch_hook=dynamic_masking, scheduler=wsd())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", records), settings.pop("model", encoder()), optimizer,
                epochs, **settings)


def cooldown_sign_slip(taken: int, total: int) -> float:
    """Warm-up-stable as ``wsd_multiplier``, but the cool-down multiplies the lr by 1000^progress (a sign slip in
    the exponent: the lr grows to 1000x over the last 20 %)."""
    start = int(0.8 * total)
    if taken < start:
        return wsd_multiplier(taken, total)
    return 1000.0 ** ((taken - start) / max(1, total - start))


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("mlm_healthy_ademamix_wsd", "masked encoder, AdEMAMix 3e-3 (α 5 reached at step 600, β3 0.999) wd 0.01, "
            "warm-up 5 % / stable / 1-sqrt cool-down over the last 20 %, 20 epochs (1,200 steps)", ademamix(3e-3), 20,
            healthy=True),
        run("mlm_healthy_adamw_wsd_seed1", "masked encoder, AdamW 3e-3 (β2 0.98, eps 1e-6) wd 0.01, warm-up-stable-"
            "decay, 20 epochs, seed 1", adamw(3e-3), 20, seed=1, healthy=True),
        run("mlm_healthy_ademamix_short_cooldown_seed2", "masked encoder, AdEMAMix 2e-3 wd 0.01, warm-up 10 % / "
            "stable / cool-down over the last 10 %, 20 epochs, seed 2", ademamix(2e-3), 20,
            scheduler=wsd(warmup=0.1, stable_until=0.9), seed=2, healthy=True),
        run("mlm_healthy_ademamix_long", "masked encoder, AdEMAMix 3e-3 (α reached at step 1,200) wd 0.01, "
            "warm-up-stable-decay, 40 epochs (2,400 steps)", ademamix(3e-3, alpha_warmup=1200), 40, healthy=True),
        run("mlm_lr_too_high_ademamix", "masked encoder, AdEMAMix 3e-2 (10x the working lr) wd 0.01, warm-up-stable-"
            "decay, 20 epochs", ademamix(3e-2), 20,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "underfitting", "exploding_gradients", "divergence",
                   "missing_warmup", "dead_layers"]),
        run("mlm_lr_too_low_ademamix", "masked encoder, AdEMAMix 3e-5 (1/100 of the working lr) wd 0.01, "
            "warm-up-stable-decay, 20 epochs", ademamix(3e-5), 20,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("mlm_missing_warmup_ademamix", "masked post-LN encoder, AdEMAMix 1e-2 wd 0.01 from step 1 (no warm-up), "
            "stable then 1-sqrt cool-down over the last 20 %, 20 epochs", ademamix(1e-2), 20,
            scheduler=wsd(warmup=0.0),
            expect={"missing_warmup": [1, 360]},
            allow=["lr_too_high", "loss_spike", "underfitting", "update_ratio_out_of_band", "exploding_gradients",
                   "adam_hyperparameters", "divergence", "dead_layers"]),
        run("mlm_bad_initial_loss_init_range", "masked encoder with every weight drawn with std 1.0 (initializer_range "
            "1.0 for 0.02: a config typo), AdEMAMix 3e-3 wd 0.01, warm-up-stable-decay, 20 epochs", ademamix(3e-3), 20,
            model=encoder(initializer_range=1.0),
            expect={"bad_initial_loss": [1, 60]},
            allow=["loss_spike", "exploding_gradients", "underfitting", "update_ratio_out_of_band"]),
        run("mlm_divergence_cooldown_sign", "masked encoder, AdEMAMix 3e-3 wd 0.01, warm-up-stable, but the cool-down "
            "over the last 20 % multiplies the lr by 1000^progress (a sign slip: 3.0 at the end), 20 epochs",
            ademamix(3e-3), 20, scheduler=lambda_schedule(cooldown_sign_slip),
            expect={"divergence": [960, 1200]},
            allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                   "underfitting"]),
        run("mlm_train_longer_preempted", "masked encoder, AdEMAMix 3e-3 wd 0.01, a warm-up-stable-decay schedule "
            "planned for 1,200 steps, stopped at step 240 (4 of 20 epochs: the job's time limit), before the "
            "cool-down", ademamix(3e-3), 4, scheduler=wsd(planned_total=1200),
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low"]),
        run("mlm_underfitting_width8", "masked encoder of width 8 (2 heads, one layer, feed-forward 32), AdEMAMix "
            "3e-3 wd 0.01, warm-up-stable-decay, 20 epochs", ademamix(3e-3), 20,
            model=encoder(width=8, heads=2, depth=1),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        run("mlm_decayed_too_early_wsd", "masked encoder, AdEMAMix 3e-3 wd 0.01, warm-up 5 %, stable only to 10 % and "
            "the 1-sqrt cool-down over 10-20 % (stable_until 0.1 for 0.8), then lr 0, 20 epochs", ademamix(3e-3), 20,
            scheduler=wsd(stable_until=0.1, cooldown_end=0.2),
            expect={"decayed_too_early": [100, 400]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    wsd_run = healthy["mlm_healthy_ademamix_wsd"]
    return {
        "mlm_lr_too_high_ademamix": wsd_run,
        "mlm_lr_too_low_ademamix": wsd_run,
        "mlm_missing_warmup_ademamix": run("mlm_twin_ademamix_1e-2_warmup", "masked encoder, AdEMAMix 1e-2 wd 0.01, "
                                           "warm-up 5 % / stable / cool-down, 20 epochs", ademamix(1e-2), 20),
        "mlm_bad_initial_loss_init_range": wsd_run,
        "mlm_divergence_cooldown_sign": wsd_run,
        "mlm_train_longer_preempted": wsd_run,
        "mlm_underfitting_width8": wsd_run,
        "mlm_decayed_too_early_wsd": wsd_run,
    }
