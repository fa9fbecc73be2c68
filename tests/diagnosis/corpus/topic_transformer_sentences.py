"""A small post-LN transformer encoder (2 layers, width 32, a learned [CLS] token) classifying synthetic sentences of a 300-word vocabulary into 20 topics, cross-entropy, AdamW with warm-up then linear decay or Adam with one-cycle, logged every step or every 10 steps (seventeenth hold-out).

Sentences made here: 16 words from a vocabulary of 300 (20 topics × 10
topic words, then 100 function words). Each sentence has one topic; each of
its words is one of that topic's words with probability 0.3, a word of a
random other topic with probability 0.1 (distractors), else a function word
(Zipf-like frequencies). 2,000 training and 500 validation sentences, the
topics uniform, batches of 50 (40 steps an epoch). The model: word
embeddings (width 32) plus learned positions, a [CLS] token prepended, two
post-LN ``nn.TransformerEncoderLayer`` (4 heads, feed-forward 64, no
dropout), a linear head on the [CLS] output; cross-entropy over the 20
topics. AdamW (lr 5e-3, weight decay 1e-2, biases and norms exempt) with 10 %
linear warm-up then linear decay to zero, or Adam with one-cycle, 8
epochs (320 steps). Logged every step (one healthy run every 10 steps),
per-layer statistics every 10 steps, val after every epoch. Task:
classification, C = 20.

Seventeenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout17``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family topic_transformer_sentences``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import adamw, make, one_cycle, warmup_linear
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "topic_transformer_sentences"
LOGGING = Logging(layer_every=10)
TOPICS, TOPIC_WORDS, FUNCTION_WORDS, LENGTH = 20, 10, 100, 16
VOCAB = TOPICS * TOPIC_WORDS + FUNCTION_WORDS


@functools.lru_cache(maxsize=None)
def sentences(per_topic: tuple[int, ...] = (100,) * TOPICS, val_per_topic: tuple[int, ...] = (25,) * TOPICS,
              shuffle_train_labels: bool = False, label_noise: float = 0.0, seed: int = 170) -> Split:
    """``per_topic[k]`` training and ``val_per_topic[k]`` validation sentences of topic k; with
    ``shuffle_train_labels`` the training topics are permuted against their sentences; ``label_noise``: the
    share of training topics redrawn at random."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, FUNCTION_WORDS + 1)
    zipf /= zipf.sum()

    def draw(counts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.repeat(np.arange(TOPICS), counts))
        kind = rng.random((len(y), LENGTH))
        own = y[:, None] * TOPIC_WORDS + rng.integers(0, TOPIC_WORDS, (len(y), LENGTH))
        other = rng.integers(0, TOPICS, (len(y), LENGTH)) * TOPIC_WORDS + rng.integers(0, TOPIC_WORDS, (len(y), LENGTH))
        function = TOPICS * TOPIC_WORDS + rng.choice(FUNCTION_WORDS, (len(y), LENGTH), p=zipf)
        words = np.where(kind < 0.3, own, np.where(kind < 0.4, other, function))
        return words, y

    (x_train, y_train), (x_val, y_val) = draw(per_topic), draw(val_per_topic)
    if shuffle_train_labels:
        y_train = rng.permutation(y_train)
    wrong = rng.random(len(y_train)) < label_noise
    y_train = np.where(wrong, rng.integers(0, TOPICS, len(y_train)), y_train)
    return Split(torch.tensor(x_train, dtype=torch.long), torch.tensor(y_train, dtype=torch.long),
                 torch.tensor(x_val, dtype=torch.long), torch.tensor(y_val, dtype=torch.long), TOPICS)


class TopicEncoder(nn.Module):
    def __init__(self, width: int = 32, heads: int = 4, depth: int = 2, feedforward: int = 64):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Parameter(torch.randn(LENGTH + 1, width) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=feedforward, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, TOPICS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), self.embed(x)], dim=1) + self.position
        return self.head(self.encoder(tokens)[:, 0])


def encoder(**kwargs):
    return lambda data: TopicEncoder(**kwargs)


def adam(lr: float):
    return make(torch.optim.Adam, lr)


def scale_head(factor: float, bias: float):
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.head.weight.mul_(factor)
            model.head.bias.uniform_(-bias, bias)
    return prepare


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, batch_size=50, probe_layout=True,
                    scheduler=warmup_linear(0.1), attention=True)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", sentences), settings.pop("model", encoder()), optimizer,
                epochs, **settings)


SKEWED = tuple(int(round(400 * 0.76 ** k)) for k in range(TOPICS))  # 400 down to 2 sentences a topic


def specs() -> list[Spec]:
    return [
        run("topic_healthy_adamw_warmup_linear", "post-LN transformer encoder (2 layers, width 32, [CLS]) "
            "classifying 16-word synthetic sentences into 20 topics, AdamW 5e-3 wd 1e-2, 10 % warm-up then linear "
            "decay to zero, 8 epochs (320 steps)", adamw(5e-3), 8, healthy=True),
        run("topic_healthy_adamw_warmup_linear_seed1", "topic transformer, AdamW 5e-3, warm-up + linear decay, 8 "
            "epochs, seed 1", adamw(5e-3), 8, seed=1, healthy=True),
        run("topic_healthy_adam_onecycle", "topic transformer, Adam one-cycle to a peak of 5e-3, 8 epochs, seed 2",
            adam(5e-3), 8, scheduler=one_cycle(), seed=2, healthy=True),
        run("topic_healthy_adamw_every_10", "topic transformer, AdamW 3e-3, warm-up + linear decay, 10 epochs, "
            "seed 3, logged every 10 steps (that step's loss)", adamw(3e-3), 10, seed=3,
            logging=Logging(every=10, layer_every=10), healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    "topic_missing_warmup_adamw": (
        "the train loss stays at 2.4-2.7 from step 16 to step 39 while the twin (the same 4-layer model and "
        "lr with 10 % warm-up) falls to 1.14 at step 40; final val 0.541 vs twin 0.275, 1.97x; final train "
        "0.170 vs 0.009"),
    "topic_lr_too_high_adam": (
        "final val 0.843 vs twin 0.255 (one-cycle to 5e-3), 3.3x; final train 0.406 vs 0.036; val accuracy "
        "0.796 vs 0.938; gradient norm peak 12.6x its median (twin 2.5x); at the working peak x3 down and up "
        "(1.7e-3, 1.5e-2, AdamW) final val 0.54 and 0.24"),
    "topic_bad_initial_loss_scaled_head": (
        "first loss 58.8 against ln 20 = 3.00 (twin 3.31); gradient norm peak 17.9x its median (twin 3.4x); "
        "final val 0.729 vs twin 0.306, 2.4x"),
    "topic_class_imbalance_skewed": (
        "mean val recall of the 5 rarest topics 0.20 and of the 10 most frequent 0.94 vs 0.92 and 0.93 for "
        "the twin trained on 100 sentences a topic; overall val accuracy 0.932 against a majority share of "
        "0.244"),
    "topic_no_better_than_baseline_shuffled": (
        "val accuracy 0.046 against a majority share of 0.050 (twin 0.926); final val 3.29, above ln 20 = "
        "3.00; final val 10.8x the twin's 0.306"),
    "topic_overfitting_few_sentences": (
        "val falls to 1.85 at step 56 then rises at every evaluation to 2.21 at the end while the train loss "
        "goes to 0.0006; final val 2.83x the 0.782 of the twin on the 100 sentences a topic with the same "
        "label noise"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("topic_missing_warmup_adamw", "topic transformer deepened to 4 post-LN layers, AdamW at 2e-2 from the "
            "first step (the warm-up fraction left at 0 when the lr was raised for a short run), linear decay, 8 "
            "epochs", adamw(2e-2), 8, model=encoder(depth=4), scheduler=warmup_linear(0.0), expect={"missing_warmup": [1, 80]},
            allow=["lr_too_high", "loss_spike", "adam_hyperparameters", "best_epoch_not_last", "underfitting",
                   "underperforming_classes", "no_better_than_baseline", "update_ratio_out_of_band"]),
        run("topic_lr_too_high_adam", "topic transformer, Adam one-cycle to a peak of 5e-2 (10x the working "
            "peak: an lr tuned for a batch of 500), 8 epochs", adam(5e-2), 8, scheduler=one_cycle(), seed=2,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low"],
            allow=["loss_spike", "underfitting", "underperforming_classes", "no_better_than_baseline",
                   "best_epoch_not_last", "update_ratio_out_of_band", "missing_warmup", "divergence"]),
        run("topic_bad_initial_loss_scaled_head", "topic transformer whose head was multiplied by 40 and its "
            "biases drawn in +-10 at init, AdamW 5e-3, warm-up + linear decay, 8 epochs", adamw(5e-3), 8,
            prepare=scale_head(40.0, 10.0), expect={"bad_initial_loss": [1, 1]},
            allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "underperforming_classes",
                   "underfitting", "train_longer"]),
        run("topic_class_imbalance_skewed", "topic transformer on a skewed collection (400 sentences of the first "
            "topic down to 2 of the last, x0.76 a topic; val a quarter of those, at least 1), AdamW 5e-3, warm-up "
            "+ linear decay, 8 epochs", adamw(5e-3), 8,
            data=lambda: sentences(per_topic=SKEWED, val_per_topic=tuple(max(1, n // 4) for n in SKEWED)),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere},
            allow=["overfitting", "best_epoch_not_last"]),
        run("topic_no_better_than_baseline_shuffled", "topic transformer trained on topics permuted against their "
            "sentences (labels joined on the wrong key; val labels right), AdamW 5e-3, warm-up + linear decay, 8 "
            "epochs", adamw(5e-3), 8, data=lambda: sentences(shuffle_train_labels=True),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last"]),
        run("topic_overfitting_few_sentences", "topic transformer (width 64, feed-forward 128) on 8 sentences a "
            "topic (a pilot sample labelled in a hurry: 25 % of its topics redrawn at random), AdamW 5e-3 without "
            "weight decay, a constant lr after a 10 % warm-up, 120 epochs (480 steps)", adamw(5e-3, weight_decay=0.0),
            120, model=encoder(width=64, feedforward=128), scheduler=warmup_linear_then_constant(0.1),
            data=lambda: sentences(per_topic=(8,) * TOPICS, label_noise=0.25),
            batch_size=40, expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
    ]


def warmup_linear_then_constant(warmup_fraction: float):
    def make_scheduler(optimizer, total, per_epoch):
        warm = max(1, int(warmup_fraction * total))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda taken: min(1.0, (taken + 1) / warm)), "step"
    return make_scheduler


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["topic_healthy_adamw_warmup_linear"] for spec in faults()}
    twins["topic_lr_too_high_adam"] = healthy["topic_healthy_adam_onecycle"]
    twins["topic_missing_warmup_adamw"] = run(
        "topic_twin_depth4_warmup", "topic transformer with 4 post-LN layers, AdamW 2e-2 with 10 % warm-up then "
        "linear decay, 8 epochs", adamw(2e-2), 8, model=encoder(depth=4))
    twins["topic_overfitting_few_sentences"] = run(
        "topic_twin_width64_full", "topic transformer (width 64, feed-forward 128) on the 100 sentences a topic "
        "(25 % of the topics redrawn at random), AdamW 5e-3 without weight decay, constant after a 10 % warm-up, 8 "
        "epochs", adamw(5e-3, weight_decay=0.0), 8, model=encoder(width=64, feedforward=128),
        scheduler=warmup_linear_then_constant(0.1), data=lambda: sentences(label_noise=0.25))
    return twins
