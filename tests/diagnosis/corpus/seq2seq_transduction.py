"""An encoder-decoder transformer transducing token strings with teacher forcing, logged as 30-step window means (fourth hold-out).

Pairs made here: a source of 10 tokens from a vocabulary of 24 (token 0 is
the decoder's start symbol and never occurs in a source), and its target:
the source reversed with every token passed through a fixed random
substitution (a cipher), and each token whose left neighbour in the source
is larger shifted by one (so the model must look at two source places);
then 10 % of the target tokens replaced by random ones (noisy pairs: the
loss has a floor). 12,000 training and 1,000 validation pairs, batches of
64 (188 steps per epoch). ``nn.Transformer`` scaled down (width 32, 4 heads, 2 encoder and 2
decoder layers, feed-forward 64, no dropout; post-LN as the 2017 paper
unless said), learned source and target positions, an output layer
sharing the target embedding's weights (tied, as the 2017 paper;
embeddings initialised N(0, 1/width) and multiplied by √width, as fairseq); trained with teacher forcing (the decoder reads the start symbol
and the target shifted right, under a causal mask); per-token cross-entropy.
Adam with the paper's β2 = 0.98 and eps 1e-9 under its inverse-square-root
schedule with warm-up ("Noam"), and AdamW; constant, warm-up + linear
decay, warm-up + cosine, StepLR and growing schedules. Logged as a HF-style trainer:
every 30 steps the mean loss since the previous record, the lr and
gradient norm of that step; per-layer statistics every 30 steps; val loss
every 94 steps, twice an epoch (teacher-forced). Task: language modelling (per-token
cross-entropy over V = 24; one run says nothing).

Fourth hold-out (issue #12); see ``gin_graph_motifs.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import make, warmup_cosine, warmup_linear, warmup_stable_decay
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "seq2seq_transduction"
LOGGING = Logging(every=30, mean=True, layer_every=30)
EVAL_EVERY = 94
VOCAB, LENGTH, START, NOISE = 24, 10, 0, 0.1


@functools.lru_cache(maxsize=None)
def pairs(train: int = 12000, val: int = 1000, train_limit: int | None = None, seed: int = 91) -> Split:
    """Inputs (N, 2, LENGTH) int64 (the source, then the decoder's input: START and the target shifted right)
    and targets (N, LENGTH); ``num_classes`` = VOCAB."""
    rng = np.random.default_rng(seed)
    cipher = np.concatenate([[0], 1 + rng.permutation(VOCAB - 1)])
    source = rng.integers(1, VOCAB, size=(train + val, LENGTH))
    target = cipher[source[:, ::-1]]
    left_larger = np.concatenate([np.zeros((len(source), 1), bool), source[:, :-1] > source[:, 1:]], 1)[:, ::-1]
    target = np.where(left_larger, target % (VOCAB - 1) + 1, target)
    target = np.where(rng.random(target.shape) < NOISE, rng.integers(1, VOCAB, size=target.shape), target)
    decoder_input = np.concatenate([np.full((len(source), 1), START), target[:, :-1]], 1)
    x = torch.tensor(np.stack([source, decoder_input], 1))
    y = torch.tensor(target)
    keep = train if train_limit is None else train_limit
    return Split(x[:keep], y[:keep], x[train:], y[train:], VOCAB)


class Seq2SeqTransformer(nn.Module):
    """(B, 2, T) source and shifted target → (B, T, V) logits for the target, teacher-forced."""

    def __init__(self, vocab: int = VOCAB, width: int = 32, heads: int = 4, layers: int = 2,
                 norm_first: bool = False):
        super().__init__()
        self.source_embed = nn.Embedding(vocab, width)
        self.target_embed = nn.Embedding(vocab, width)
        self.source_position = nn.Parameter(torch.randn(LENGTH, width) * 0.02)
        self.target_position = nn.Parameter(torch.randn(LENGTH, width) * 0.02)
        self.transformer = nn.Transformer(width, heads, layers, layers, dim_feedforward=2 * width, dropout=0.0,
                                          batch_first=True, norm_first=norm_first)
        self.out = nn.Linear(width, vocab)
        self.out.weight = self.target_embed.weight  # tied: the 2017 paper shares them
        self.scale = width ** 0.5
        with torch.no_grad():  # fairseq's init: N(0, 1/width), the embeddings × sqrt(width) when read
            self.source_embed.weight.normal_(0.0, width ** -0.5)
            self.target_embed.weight.normal_(0.0, width ** -0.5)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(LENGTH), persistent=False)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        source = self.source_embed(pair[:, 0]) * self.scale + self.source_position
        target = self.target_embed(pair[:, 1]) * self.scale + self.target_position
        hidden = self.transformer(source, target, tgt_mask=self.mask, tgt_is_causal=True)
        return self.out(hidden)


def transformer(width: int = 32, layers: int = 2, norm_first: bool = False, heads: int = 4):
    return lambda data: Seq2SeqTransformer(data.num_classes, width, heads, layers, norm_first)


def adam(lr: float):
    """Adam with the 2017 paper's betas (0.9, 0.98) and eps 1e-9."""
    return make(torch.optim.Adam, lr, betas=(0.9, 0.98), eps=1e-9)


def adamw(lr: float):
    return make(torch.optim.AdamW, lr, weight_decay=0.01)


def noam(warmup: int, width: int = 32):
    """The 2017 paper's schedule: lr = base × width^-0.5 × min(step^-0.5, step × warmup^-1.5)."""
    def build(optimizer, total, per_epoch):
        def factor(taken: int) -> float:
            step = taken + 1
            return width ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "step"
    return build


def step_every(steps: int, gamma: float = 0.1):
    """StepLR stepped after every optimizer step: lr × ``gamma`` every ``steps`` steps."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.StepLR(optimizer, steps, gamma), "step")


def growing(factor: float):
    """LambdaLR: the lr × ``factor`` every step (an lr range test left running)."""
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda taken: factor ** taken), "step")


def bump(at: int, length: int, factor: float):
    """The lr × ``factor`` for ``length`` steps from step ``at`` (a schedule bug), else constant."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda taken: factor if at <= taken + 1 < at + length else 1.0), "step")


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling", logging=LOGGING,
                    batch_size=64, attention=True, probe_layout=True, eval_every=EVAL_EVERY)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", pairs), settings.pop("model", transformer()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("s2s_healthy_adam_noam", "post-LN seq2seq transformer, Adam (0.9, 0.98, eps 1e-9) base 0.3 under the "
            "Noam schedule (warm-up 200 steps, peak 3.75e-3), 8 epochs", adam(0.3), 8, scheduler=noam(200),
            healthy=True),
        run("s2s_healthy_adamw_preln_warmup_linear", "pre-LN seq2seq transformer, AdamW 3e-3 wd 0.01, 5% warm-up "
            "then linear decay to 0, 5 epochs", adamw(3e-3), 5, model=transformer(norm_first=True),
            scheduler=warmup_linear(0.05), healthy=True),
        run("s2s_healthy_adamw_preln_cosine_unknown_task", "pre-LN seq2seq transformer, AdamW 3e-3 wd 0.01, 5% "
            "warm-up + cosine to 0, 5 epochs, seed 1, no task kind", adamw(3e-3), 5,
            model=transformer(norm_first=True), scheduler=warmup_cosine(0.05), seed=1, task_kind="unknown",
            healthy=True),
        run("s2s_healthy_adam_noam_long", "post-LN seq2seq transformer, Adam (0.9, 0.98, eps 1e-9) base 0.3 under "
            "the Noam schedule (warm-up 200 steps), 10 epochs (1,880 steps), val every 188 steps", adam(0.3), 10,
            scheduler=noam(200), eval_every=188, healthy=True),
        run("s2s_missing_warmup_postln", "post-LN seq2seq transformer with 3 encoder and 3 decoder layers, Adam (0.9, "
            "0.98, eps 1e-9) 1e-2 constant from step 1 (no warm-up), 5 epochs", adam(1e-2), 5,
            model=transformer(layers=3),
            expect={"missing_warmup": [1, 300]},
            allow=["lr_too_high", "loss_spike", "underfitting", "best_epoch_not_last", "exploding_gradients",
                   "update_ratio_out_of_band", "adam_hyperparameters"]),
        run("s2s_lr_too_high_adamw", "pre-LN seq2seq transformer, AdamW 0.1 wd 0.01 (33x the working lr), 5% "
            "warm-up then linear decay to 0, 5 epochs", adamw(0.1), 5, model=transformer(norm_first=True),
            scheduler=warmup_linear(0.05),
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "missing_warmup"]),
        run("s2s_lr_too_low_noam", "post-LN seq2seq transformer, Adam (0.9, 0.98, eps 1e-9) base 0.003 under the "
            "Noam schedule (1/100 of the working lr: peak 3.75e-5), 8 epochs", adam(0.003), 8, scheduler=noam(200),
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("s2s_decayed_too_early_steplr_per_step", "pre-LN seq2seq transformer, AdamW 3e-3 wd 0.01, StepLR "
            "step_size 100 x0.1 stepped every optimizer step where epochs were meant (lr 3e-4 from step 100, 3e-5 "
            "from step 200), 5 epochs", adamw(3e-3), 5, model=transformer(norm_first=True),
            scheduler=step_every(100, 0.1),
            expect={"decayed_too_early": [80, 260]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer"]),
        run("s2s_loss_spike_lr_bump", "pre-LN seq2seq transformer, AdamW 3e-3 wd 0.01 constant, lr x30 for 3 steps "
            "from step 500 (a schedule bug), 5 epochs", adamw(3e-3), 5, model=transformer(norm_first=True),
            scheduler=bump(500, 3, 30.0),
            expect={"loss_spike": [490, 600]}, forbid=["divergence"],
            allow=["exploding_gradients", "best_epoch_not_last", "update_ratio_out_of_band", "train_longer",
                   "lr_too_high"]),
        run("s2s_divergence_lr_growth", "pre-LN seq2seq transformer, AdamW 3e-3 wd 0.01 growing x1.01 per step (an lr "
            "range test left running: lr 0.06 by step 300, 5 by step 750), 5 epochs", adamw(3e-3), 5,
            model=transformer(norm_first=True), scheduler=growing(1.01),
            expect={"divergence": everywhere}, allow=DIVERGED_ALLOW),
        run("s2s_train_longer", "post-LN seq2seq transformer, Adam (0.9, 0.98, eps 1e-9) base 0.3 under the Noam "
            "schedule (warm-up 200 steps), stopped after 1 of 8 epochs (188 steps), val every 20 steps", adam(0.3), 1,
            scheduler=noam(200), eval_every=20,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "missing_warmup"]),
        run("s2s_underfitting_width_4", "post-LN seq2seq transformer of width 4 (1 head, 1 encoder and 1 decoder "
            "layer), Adam (0.9, 0.98, eps 1e-9) base 0.3 under the Noam schedule of width 32, 8 epochs", adam(0.3), 8,
            model=transformer(width=4, layers=1, heads=1), scheduler=noam(200),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
    ]


DIVERGED_ALLOW = ["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                  "best_epoch_not_last", "underfitting", "overfitting", "no_better_than_baseline", "missing_warmup"]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    noam_run = healthy["s2s_healthy_adam_noam"]
    constant = run("s2s_twin_preln_adamw_constant", "pre-LN seq2seq transformer, AdamW 3e-3 wd 0.01 constant, "
                   "5 epochs", adamw(3e-3), 5, model=transformer(norm_first=True))
    return {
        "s2s_missing_warmup_postln": run("s2s_twin_postln_deep_warmup", "post-LN seq2seq transformer with 3 encoder "
                                         "and 3 decoder layers, Adam (0.9, 0.98, eps 1e-9) 1e-2, 8% warm-up then "
                                         "constant, 5 epochs", adam(1e-2), 5, model=transformer(layers=3),
                                         scheduler=warmup_stable_decay(0.08, 0.0)),
        "s2s_lr_too_high_adamw": healthy["s2s_healthy_adamw_preln_warmup_linear"],
        "s2s_lr_too_low_noam": noam_run,
        "s2s_decayed_too_early_steplr_per_step": constant,
        "s2s_loss_spike_lr_bump": constant,
        "s2s_divergence_lr_growth": constant,
        "s2s_train_longer": noam_run,
        "s2s_underfitting_width_4": noam_run,
    }
