"""A small decoder-only transformer (pre-LN blocks, causal self-attention, learned positions, tied symbol embeddings) modelling a stream of single-digit arithmetic facts ("7*8=56;3-9=-6;") symbol by symbol, next-symbol cross-entropy, AdamW with warm-up then cosine, Adamax with warm-up-stable-decay or RAdam with cosine to zero, logged every step, every 5 steps, every 10 steps from step 100 or as fastai's smoothed loss (nineteenth hold-out).

Text made here: facts "a+b=c;", "a-b=c;" or "a*b=c;" with a and b uniform
on 0-9 and the operator uniform, c the exact result (-9 to 81, a minus
sign where negative), written one after another in a single stream over 15
symbols (0-9 + - * = ;; V = 15). The operands and the operator carry
2 ln 10 + ln 3 = 5.70 nats a fact and the rest (=, the result, ;) none,
so with facts 6.49 symbols long on average a model that knows all 300
facts scores about 0.88 nats a symbol; a unigram model scores 2.59 on the
validation symbols. The stream is cut into windows of 33 symbols (32
inputs, each predicting the next), 4,000 for training and the next 500
for validation (the same 300 facts: this measures how well the facts and
the format are learnt, not generalisation to new facts); batches of 32
(125 steps an epoch). The model: symbol embeddings of width 48 (normal σ
0.02) plus learned position embeddings, 2 pre-LN blocks (causal
self-attention with 4 heads through scaled_dot_product_attention, a GELU
MLP of width 192), a final LayerNorm and logits from the transposed
symbol embeddings (about 59,000 parameters). AdamW (1e-2, weight decay
0.01, none on biases and LayerNorm weights) with 5 % linear warm-up then
cosine to zero, Adamax (2e-2) with warm-up-stable-decay (5 % warm-up, the
last 20 % a linear cool-down to zero), or RAdam (5e-3, no warm-up) with
cosine to zero; 11 epochs (1,375 steps). Logged every step, every 5
steps, every 10 steps from step 100 (that step's loss) or as fastai's
smoothed loss (the bias-corrected moving average of every step's loss,
beta 0.98); per-layer statistics every 10 steps, val after every epoch.
Task: language_modelling, V = 15. The healthy runs end at val 0.957-1.031
(the facts mostly learnt; the RAdam run, the slowest, flattening from
1.047 to 1.031 over its last 2 epochs); a 1,750-step AdamW run ends at
0.956. (Operators
/ and % and parenthesised forms were tried first and dropped: the model
was still learning them at 1,000 steps, a healthy run that looks stopped
early.)

Nineteenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout19``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family arith_decoder_lm``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.corpus.common import adamw, cosine_to_zero, make, radam, warmup_cosine, warmup_stable_decay
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "arith_decoder_lm"
LOGGING = Logging(layer_every=10)
SYMBOLS = "0123456789+-*=;"
VOCAB = len(SYMBOLS)
CONTEXT = 32


def expression(rng: np.random.Generator) -> str:
    a, b = rng.integers(0, 10, 2)
    kind = rng.integers(3)
    if kind == 0:
        return f"{a}+{b}={a + b};"
    if kind == 1:
        return f"{a}-{b}={a - b};"
    return f"{a}*{b}={a * b};"


@functools.lru_cache(maxsize=None)
def stream(characters: int, seed: int = 192) -> np.ndarray:
    rng = np.random.default_rng(seed)
    text, size = [], 0
    while size < characters:
        text.append(expression(rng))
        size += len(text[-1])
    return np.array([SYMBOLS.index(c) for c in "".join(text)[:characters]], dtype=np.int64)


@functools.lru_cache(maxsize=None)
def expressions(train: int = 4000, val: int = 500, seed: int = 192) -> Split:
    """Windows of ``CONTEXT`` + 1 symbols of the expression stream (inputs, next-symbol targets): the first
    ``train`` for training, the next ``val`` for validation."""
    tokens = stream((train + val) * (CONTEXT + 1), seed)
    windows = tokens.reshape(train + val, CONTEXT + 1)
    x, y = torch.tensor(windows[:, :-1]), torch.tensor(windows[:, 1:])
    return Split(x[:train], y[:train], x[train:], y[train:], VOCAB)


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, w)
        x = x + self.proj(attended)
        return x + self.mlp(self.norm2(x))


class ArithmeticGPT(nn.Module):
    """A decoder-only transformer: tied symbol embeddings, learned positions, pre-LN blocks, a final LayerNorm."""

    def __init__(self, width: int = 48, depth: int = 2, heads: int = 4):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Parameter(torch.randn(CONTEXT, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(tokens) + self.position[:tokens.shape[1]]
        for block in self.blocks:
            hidden = block(hidden)
        return self.norm(hidden) @ self.embed.weight.t()  # (B, T, V)


def gpt(**kwargs):
    return lambda data: ArithmeticGPT(**kwargs)


def adamax(lr: float):
    return make(torch.optim.Adamax, lr)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling",
                    logging=LOGGING, batch_size=32, probe_layout=True, attention=True,
                    scheduler=warmup_cosine(0.05), evals_per_epoch=1)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", expressions), settings.pop("model", gpt()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    return [
        run("arith_healthy_adamw_warmup_cosine", "decoder-only transformer (2 pre-LN blocks, width 48, 4 heads, "
            "learned positions, tied symbol embeddings) modelling a stream of single-digit arithmetic facts "
            "(a+b=c; a-b=c; a*b=c;) over 17 symbols, AdamW 1e-2 wd 0.01 (none on biases and LayerNorm), 5 % "
            "warm-up then cosine to zero, 11 epochs (1,375 steps), logged every step", adamw(1e-2), 11,
            healthy=True),
        run("arith_healthy_adamax_wsd_every_5", "arithmetic-stream transformer, Adamax 2e-2, warm-up-stable-decay "
            "(5 % warm-up, the last 20 % a linear cool-down to zero), 11 epochs, seed 1, logged every 5 steps",
            adamax(2e-2), 11, scheduler=warmup_stable_decay(0.05, 0.2), seed=1,
            logging=Logging(every=5, layer_every=10), healthy=True),
        run("arith_healthy_adamw_ema_logged", "arithmetic-stream transformer, AdamW 1e-2, warm-up + cosine, 11 "
            "epochs, seed 2, the logged loss fastai's smoothed loss (bias-corrected moving average, beta 0.98)",
            adamw(1e-2), 11, seed=2, logging=Logging(ema=0.98, layer_every=10), healthy=True),
        run("arith_healthy_radam_cosine_from_100", "arithmetic-stream transformer, RAdam 5e-3 (no warm-up: its "
            "rectification is one), cosine to zero, 11 epochs, seed 3, logged every 10 steps from step 100",
            radam(5e-3), 11, scheduler=cosine_to_zero(), seed=3, logging=Logging(every=10, start=100, layer_every=10),
            healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    "arith_lr_too_high_adamw": (
        "the train loss falls from 2.72 to 1.97 by step 92, then wanders between 1.9 and 2.1 (1.906 at step 367, "
        "2.071 at step 733) while the twin's falls to 1.0; val 2.049 at step 500 vs 1.130, no lower than 1.88 "
        "at any evaluation; final val 1.881 vs twin 0.964, 1.95x; gradient norm peak 90x its median (twin 13x)"),
    "arith_lr_too_low_adamax": (
        "val falls slowly from 2.651 at step 125 to 2.259 at step 1375 vs the twin's 0.957, 2.36x (a unigram "
        "model scores 2.59); median update/weight ratio of the weight tensors 4e-6 to 3.7e-4 (median 5.6e-5) vs "
        "the twin's 7.2e-4 to 8.5e-3"),
    "arith_train_longer_stopped": (
        "val falls or holds at every evaluation, 2.163 at step 25 to 1.328 at step 250 (the last, its best; "
        "1.362 at step 225), the train loss from 2.72 to 1.32; final val 1.328 vs 0.964 for the twin that runs "
        "the 1,375 steps, 1.38x"),
    "arith_underfitting_width8": (
        "final val 1.358 vs twin 0.964, 1.41x (1.365 at step 1000: flat); final train loss 1.357 vs 0.965: train "
        "and val close, the model too small to hold the 300 facts"),
    "arith_missing_warmup_adamw": (
        "the train loss rises from 2.72 at step 1 to 2.83 at step 3; gradient norm peak 309x its median (twin "
        "15x); val 2.107 vs 1.483 at step 125 and 2.03 vs 1.44 at step 375; final val 1.633 vs 1.099 for the "
        "twin (the same lr after a 5 % warm-up), 1.49x"),
    "arith_decayed_too_early_multistep": (
        "val 1.412 at step 125 (as the twin), 1.380 at step 250, then creeping to 1.341 at the end while the "
        "twin (milestones at epochs 7 and 9) goes on to 0.9955, 1.35x; final train 1.342 vs 0.991; median "
        "update/weight ratio of the weight tensors 2.2e-4 vs 7.2e-3"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def planned_warmup_cosine(warmup_fraction: float, planned: int):
    """Warm-up then cosine to zero over ``planned`` steps, whatever the run's own length (a run cut short)."""
    def make_scheduler(optimizer, total, per_epoch):
        return warmup_cosine(warmup_fraction)(optimizer, planned, per_epoch)
    return make_scheduler


def warmup_multistep(warmup_fraction: float, milestones: tuple[int, ...], gamma: float = 0.1):
    """Linear warm-up, then the lr x ``gamma`` at each of the ``milestones`` (epochs; MultiStepLR)."""
    def make_scheduler(optimizer, total, per_epoch):
        warmup = max(1, int(warmup_fraction * total))

        def multiplier(taken: int) -> float:
            if taken < warmup:
                return (taken + 1) / warmup
            return gamma ** sum(taken >= milestone * per_epoch for milestone in milestones)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier), "step"
    return make_scheduler


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("arith_lr_too_high_adamw", "arithmetic-stream transformer, AdamW 6e-2 (6x the working lr), warm-up + "
            "cosine, 11 epochs", adamw(6e-2), 11,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low"],
            allow=["loss_spike", "underfitting", "best_epoch_not_last", "update_ratio_out_of_band",
                   "exploding_gradients", "no_better_than_baseline", "missing_warmup"]),
        run("arith_lr_too_low_adamax", "arithmetic-stream transformer, Adamax 2e-5 (1000x below the working lr), "
            "warm-up-stable-decay, 11 epochs, seed 1, logged every 5 steps", adamax(2e-5), 11,
            scheduler=warmup_stable_decay(0.05, 0.2), seed=1, logging=Logging(every=5, layer_every=10),
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "no_better_than_baseline"]),
        run("arith_train_longer_stopped", "arithmetic-stream transformer, AdamW 1e-2, warm-up + cosine planned "
            "for 11 epochs (1,375 steps), the job stopped after 2 epochs (250 steps: a spot instance reclaimed), "
            "val every 25 steps", adamw(1e-2), 2, scheduler=planned_warmup_cosine(0.05, 1375), evals_per_epoch=5,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underfitting"]),
        run("arith_underfitting_width8", "arithmetic-stream transformer cut to one block of width 8 with one head "
            "(the sizes of a smoke-test config), AdamW 1e-2, warm-up + cosine, 11 epochs", adamw(1e-2), 11,
            model=gpt(width=8, depth=1, heads=1),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"], allow=["train_longer"]),
        run("arith_missing_warmup_adamw", "arithmetic-stream transformer, AdamW 3e-2 from the first step (warm-up "
            "fraction 0), cosine, 11 epochs", adamw(3e-2), 11, scheduler=warmup_cosine(0.0),
            expect={"missing_warmup": [1, 150]},
            allow=["lr_too_high", "loss_spike", "adam_hyperparameters", "exploding_gradients",
                   "update_ratio_out_of_band", "best_epoch_not_last", "underfitting", "no_better_than_baseline"]),
        run("arith_decayed_too_early_multistep", "arithmetic-stream transformer, AdamW 1e-2, 5 % warm-up then "
            "the lr x0.1 after epochs 1 and 2 (MultiStepLR milestones copied from a config for a run 10x shorter "
            "than its milestones at epochs 7 and 9): 1e-3 from step 125, 1e-4 from step 250 of 1,375, 11 epochs",
            adamw(1e-2), 11, scheduler=warmup_multistep(0.05, (1, 2)),
            expect={"decayed_too_early": [100, 400]}, forbid=["lr_too_high"],
            allow=["underfitting", "lr_too_low", "train_longer", "update_ratio_out_of_band",
                   "no_better_than_baseline"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["arith_healthy_adamw_warmup_cosine"] for spec in faults()}
    twins["arith_lr_too_low_adamax"] = healthy["arith_healthy_adamax_wsd_every_5"]
    twins["arith_decayed_too_early_multistep"] = run(
        "arith_twin_adamw_multistep_7_9", "arithmetic-stream transformer, AdamW 1e-2, 5 % warm-up then the lr "
        "x0.1 after epochs 7 and 9, 11 epochs", adamw(1e-2), 11, scheduler=warmup_multistep(0.05, (7, 9)))
    twins["arith_missing_warmup_adamw"] = run(
        "arith_twin_adamw_3e2_warmup", "arithmetic-stream transformer, AdamW 3e-2 with 5 % warm-up then cosine, "
        "11 epochs", adamw(3e-2), 11)
    return twins
