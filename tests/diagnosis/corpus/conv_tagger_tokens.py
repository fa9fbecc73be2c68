"""Token tagging (part-of-speech-like) with a 1-D CNN, logged every 15 steps from step 90 (second hold-out).

Sentences from a small template grammar made here (noun phrases with a
determiner, adjectives and a noun; a verb with or without an object; an
optional prepositional phrase; a full stop), 150,000 tokens over a
vocabulary of 268 words, each word tagged with one of 6 tags (determiner,
adjective, noun, verb, preposition, punctuation). 30 words are both nouns
and verbs and 12 both adjectives and nouns, among the most frequent of
each tag, so their tag depends on the words around them; 2 % of tags are
annotation noise. Windows of 32 tokens (10 % held out), batches of 32
(132 steps per epoch). An embedding (width 32), two convolutions of width 3 with ReLU and a 1×1 convolution to the 6
tags: (B, 6, T) logits, cross-entropy over every token. The loss (mean
since the previous record), token accuracy, lr and gradient norm are
logged every 15 steps from step 90 on (the tracker is attached once the
first epoch's warm-up of the data loader is over), per-layer statistics
every 30 steps, val loss, token accuracy and tag confusion counts every 65
steps. Task: classification with C = 6 tags per token (one run says
nothing).

Added with ``bn_mlp_tabular`` and ``vit_digits`` as a second held-out test
(issue #12); see ``bn_mlp_tabular.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import DIVERGED_CLASSIFIER_ALLOW
from tests.diagnosis.corpus.common import adamw, cosine_to_zero, make, plateau, radam, warmup_linear
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "conv_tagger_tokens"
LOGGING = Logging(every=15, mean=True, start=90, layer_every=30)
EVAL_EVERY = 65
CONTEXT = 32
TAGS = ("DET", "ADJ", "NOUN", "VERB", "PREP", "PUNCT")
DET, ADJ, NOUN, VERB, PREP, PUNCT = range(6)


def _lexicon() -> dict[int, list[int]]:
    """Word ids per tag, most frequent first; the noun-verb and adjective-noun words lead their lists."""
    words = iter(range(1000))
    noun_verb = [next(words) for _ in range(30)]
    adjective_noun = [next(words) for _ in range(12)]
    return {DET: [next(words) for _ in range(6)], ADJ: adjective_noun + [next(words) for _ in range(48)],
            NOUN: noun_verb[::2] + adjective_noun[::2] + [next(words) for _ in range(100)] + noun_verb[1::2]
            + adjective_noun[1::2],
            VERB: noun_verb[1::2] + noun_verb[::2] + [next(words) for _ in range(60)],
            PREP: [next(words) for _ in range(10)], PUNCT: [next(words) for _ in range(2)]}


LEXICON = _lexicon()
VOCAB = 1 + max(max(words) for words in LEXICON.values())


@functools.lru_cache(maxsize=None)
def tagged(n_tokens: int = 150_000, train_limit: int | None = None, tag_shift: int = 0, noise: float = 0.02,
           seed: int = 61) -> Split:
    """Windows of tokens (N, 32) int64 and their tags (N, 32) in 0..5; ``tag_shift``: tags misaligned by that many."""
    rng = np.random.default_rng(seed)
    weights = {tag: 1.0 / np.arange(1, len(words) + 1) ** 0.7 for tag, words in LEXICON.items()}

    tags: list[int] = []

    def noun_phrase() -> None:
        tags.append(DET)
        tags.extend([ADJ] * int(rng.choice(3, p=[0.5, 0.35, 0.15])))
        tags.append(NOUN)

    while len(tags) < n_tokens:
        noun_phrase()
        tags.append(VERB)
        if rng.random() < 0.6:
            noun_phrase()
        if rng.random() < 0.35:
            tags.append(PREP)
            noun_phrase()
        tags.append(PUNCT)
    y = np.asarray(tags[:n_tokens], dtype=np.int64)
    x = np.empty(n_tokens, dtype=np.int64)
    for tag, words in LEXICON.items():  # each word drawn Zipf-like within its tag
        where = np.flatnonzero(y == tag)
        x[where] = rng.choice(words, size=len(where), p=weights[tag] / weights[tag].sum())
    flip = rng.random(n_tokens) < noise
    y[flip] = rng.integers(0, len(TAGS), size=int(flip.sum()))
    count = n_tokens // CONTEXT
    x, y = x[:count * CONTEXT].reshape(count, CONTEXT), y[:count * CONTEXT].reshape(count, CONTEXT)
    cut = int(0.9 * count)
    train = slice(0, cut if train_limit is None else min(cut, train_limit))
    y_train = y[train]
    if tag_shift:
        y_train = np.roll(y_train.reshape(-1), tag_shift).reshape(y_train.shape)
    return Split(torch.tensor(x[train]), torch.tensor(y_train), torch.tensor(x[cut:]), torch.tensor(y[cut:]),
                 len(TAGS))


class ConvTagger(nn.Module):
    """(B, T) token ids → (B, C, T) tag logits: an embedding, two convolutions of ``kernel`` and a 1×1 one."""

    def __init__(self, vocab: int, tags: int, width: int = 32, channels: int = 64, kernel: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.convs = nn.Sequential(nn.Conv1d(width, channels, kernel, padding=kernel // 2), nn.ReLU(),
                                   nn.Conv1d(channels, channels, kernel, padding=kernel // 2), nn.ReLU())
        self.out = nn.Conv1d(channels, tags, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.convs(self.embed(tokens).transpose(1, 2)))


def tagger(channels: int = 64, kernel: int = 3):
    return lambda data: ConvTagger(VOCAB, data.num_classes, channels=channels, kernel=kernel)


def exponential_per_step(gamma: float):
    """ExponentialLR(gamma) stepped every batch."""
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma), "step")


def corrupt_labels(first: int, count: int):
    """Tags permuted within each window for ``count`` batches from step ``first`` (a corrupted data shard)."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if first <= step < first + count:
            generator = torch.Generator().manual_seed(step)
            y = y[:, torch.randperm(y.shape[1], generator=generator)]
        return x, y
    return hook


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, eval_every=EVAL_EVERY)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", tagged), settings.pop("model", tagger()), optimizer, epochs,
                **settings)


def sgd(lr: float, **kwargs):
    return make(torch.optim.SGD, lr, momentum=0.9, **kwargs)


def adagrad(lr: float, **kwargs):
    return make(torch.optim.Adagrad, lr, **kwargs)


DIVERGED_ALLOW = DIVERGED_CLASSIFIER_ALLOW + ["overfitting", "class_imbalance"]


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("tag_healthy_adamw_warmup_linear", "conv tagger, AdamW 3e-3, 6% warm-up + linear decay, 8 epochs",
            adamw(3e-3), 8, scheduler=warmup_linear(0.06), healthy=True),
        run("tag_healthy_radam_constant", "conv tagger, RAdam 2e-3 constant, 8 epochs", radam(2e-3), 8, healthy=True),
        run("tag_healthy_adagrad_constant", "conv tagger, Adagrad 0.05 constant, 8 epochs", adagrad(0.05), 8,
            healthy=True),
        run("tag_healthy_sgd_plateau_wide", "conv tagger with 128 channels, SGD momentum 0.9 lr 0.1, "
            "ReduceLROnPlateau, 8 epochs", sgd(0.1), 8, model=tagger(128), scheduler=plateau(0.5, 2), healthy=True),
        run("tag_healthy_adam_cosine_unknown_task", "conv tagger, Adam 2e-3, cosine to 0, 8 epochs, seed 3, no task "
            "kind", make(torch.optim.Adam, 2e-3), 8, scheduler=cosine_to_zero(), seed=3, task_kind="unknown",
            healthy=True),
        run("tag_lr_too_high_radam", "conv tagger, RAdam 0.3 constant (150x the working lr), 8 epochs",
            radam(0.3), 8,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "underperforming_classes", "no_better_than_baseline", "dead_layers"]),
        run("tag_lr_too_low_adagrad", "conv tagger, Adagrad 5e-4 constant (1 % of the working lr), 8 epochs",
            adagrad(5e-4), 8,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes",
                   "no_better_than_baseline"]),
        run("tag_decayed_too_early_exponential_per_step", "conv tagger, SGD momentum 0.9 lr 0.1, ExponentialLR(0.99) "
            "meant per epoch but stepped every batch: the lr is 5 % of its start by step 300 of 1,056", sgd(0.1), 8,
            scheduler=exponential_per_step(0.99),
            expect={"decayed_too_early": [90, 500]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "underperforming_classes"]),
        run("tag_divergence_sgd", "conv tagger, SGD momentum 0.9 lr 100, 3 epochs", sgd(100.0), 3,
            expect={"divergence": everywhere}, allow=DIVERGED_ALLOW),
        run("tag_loss_spike_corrupt_shard", "conv tagger, AdamW 3e-3 warm-up + linear decay, 8 epochs; 10 batches "
            "from step 500 have their tags permuted within each window (a corrupted shard)", adamw(3e-3), 8,
            scheduler=warmup_linear(0.06), batch_hook=corrupt_labels(500, 10),
            expect={"loss_spike": [495, 600]}, forbid=["divergence"],
            allow=["exploding_gradients", "best_epoch_not_last", "update_ratio_out_of_band", "train_longer"]),
        run("tag_overfitting_small", "conv tagger with 256 channels on 12 windows (384 tokens), AdamW 3e-3 constant "
            "without weight decay, 600 epochs (1 step each)", adamw(3e-3, weight_decay=0.0), 600,
            data=lambda: tagged(train_limit=12), model=tagger(256), eval_every=20,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
        run("tag_underfitting_no_context", "conv tagger with kernel width 1 (each word tagged alone, no context), "
            "AdamW 3e-3 warm-up + linear decay, 8 epochs", adamw(3e-3), 8, model=tagger(kernel=1),
            scheduler=warmup_linear(0.06),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
            allow=["underperforming_classes"]),
        run("tag_train_longer", "conv tagger, RAdam 3e-4 constant, stopped after 2 of 8 epochs, val every 20 steps",
            radam(3e-4), 2, eval_every=20,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underperforming_classes"]),
        run("tag_no_better_than_baseline_shifted", "conv tagger, AdamW 3e-3 warm-up + linear decay, 8 epochs, training"
            " tags shifted 9 tokens against their words (an off-by-9 join of the token and tag files)", adamw(3e-3), 8,
            data=lambda: tagged(tag_shift=9), scheduler=warmup_linear(0.06),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last",
                   "class_imbalance"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    linear = healthy["tag_healthy_adamw_warmup_linear"]
    return {
        "tag_lr_too_high_radam": healthy["tag_healthy_radam_constant"],
        "tag_lr_too_low_adagrad": healthy["tag_healthy_adagrad_constant"],
        "tag_decayed_too_early_exponential_per_step": run("tag_twin_sgd_constant", "conv tagger, SGD momentum 0.9 lr "
                                                          "0.1 constant, 8 epochs", sgd(0.1), 8),
        "tag_divergence_sgd": run("tag_twin_sgd_3_epochs", "conv tagger, SGD momentum 0.9 lr 0.1, 3 epochs", sgd(0.1),
                                  3),
        "tag_loss_spike_corrupt_shard": linear,
        "tag_overfitting_small": run("tag_twin_wide_all_windows", "conv tagger with 256 channels on every window, "
                                     "AdamW 3e-3 constant without weight decay, 2 epochs",
                                     adamw(3e-3, weight_decay=0.0), 2, model=tagger(256)),
        "tag_underfitting_no_context": linear,
        "tag_train_longer": run("tag_twin_radam_3e-4", "conv tagger, RAdam 3e-4 constant, 8 epochs, val every 20 "
                                "steps", radam(3e-4), 8, eval_every=20),
        "tag_no_better_than_baseline_shifted": linear,
    }
