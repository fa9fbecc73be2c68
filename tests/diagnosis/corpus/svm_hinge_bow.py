"""A linear support vector machine (multi-class hinge loss, Weston-Watkins, L2 weight decay) on sparse tf-idf bag-of-words vectors of synthetic documents from 8 topics, plain SGD at a constant lr then a linear cool-down over the last 20 %, logged as 25-step window means (fourteenth hold-out, healthy only).

Documents made here: a vocabulary of 1,200 words (a Zipf-weighted common
part of 200 words shared by every topic, then 125 words per topic); each
document has 8-40 words, 35 % of them common words, the rest drawn from
its topic (60 %) or from one other random topic (40 %), each topic's words
Zipf-weighted. Counts → tf-idf (sublinear tf, idf from the training set),
each row L2-normalised; about 95 % of the entries are 0 (stored dense).
4,000 training and 1,200 validation documents (topics balanced).

The model: one Linear layer 1,200 → 8 scores. The loss is
``multi_margin_loss`` (Σ over the wrong classes of max(0, 1 - s_y + s_j),
divided by the 8 classes; at the zero-ish start it is about 7/8) — hinge,
not cross-entropy, so it goes to exactly 0 on documents classified with a
margin; the L2 penalty comes from SGD's weight decay (1e-4, λ of the SVM).

The loop: batches of 32 (125 steps per epoch), 12 epochs (1,500 steps);
SGD without momentum (momentum 0.9 in one run) at a constant lr for 80 %
of the steps, then linear decay to 0 (sklearn's SGDClassifier-style
constant lr, with the cool-down averaging would otherwise do). Logged as
25-step window means (the mean loss and batch accuracy since the previous
record), per-layer statistics every 25 steps; val loss, accuracy and
confusion counts after every epoch.

Why these settings (quick check by final val loss, 2026-12-01, each base
run at its lr × 1/3, × 1, × 3): SGD 0.5 0.1265, 1.5 0.1085, 4.5 0.1080
(best 0.1048 at epoch 7, then rising: the constant phase overfits), so
1.5 (a large lr is usual for a linear model on L2-normalised tf-idf rows,
whose gradients are small). The task was made harder first (documents of
20-100 words, 85 % on topic: val hinge 0.006 at any lr, nothing to learn
after epoch 2).

Task kind recorded: classification, 8 classes (what ``Probe(num_classes=8)``
records; the loss is a hinge, so its level is not a cross-entropy's).
Fourteenth hold-out (issue #12, healthy only); see
``tests/diagnosis/make_heldout.py heldout14``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.corpus import common
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "svm_hinge_bow"
TOPICS, COMMON, PER_TOPIC = 8, 200, 125
WORDS = COMMON + TOPICS * PER_TOPIC


def _zipf(count: int, exponent: float = 1.0) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    return weights / weights.sum()


@functools.lru_cache(maxsize=None)
def documents(train: int = 4000, val: int = 1200, seed: int = 144) -> Split:
    rng = np.random.default_rng(seed)
    common_words, topic_words = _zipf(COMMON), _zipf(PER_TOPIC, 0.8)
    count = train + val
    y = np.arange(count) % TOPICS
    rng.shuffle(y)
    counts = np.zeros((count, WORDS), dtype=np.float64)
    for index, topic in enumerate(y):
        length = int(rng.integers(8, 41))
        shared = rng.binomial(length, 0.35)
        other = int(rng.integers(TOPICS - 1))
        other += other >= topic
        own = rng.binomial(length - shared, 0.6)
        words = np.concatenate([rng.choice(COMMON, size=shared, p=common_words),
                                COMMON + topic * PER_TOPIC + rng.choice(PER_TOPIC, size=own, p=topic_words),
                                COMMON + other * PER_TOPIC + rng.choice(PER_TOPIC, size=length - shared - own,
                                                                        p=topic_words)])
        np.add.at(counts[index], words, 1.0)
    tf = np.where(counts > 0, 1.0 + np.log(np.maximum(counts, 1.0)), 0.0)
    documents_with = (counts[:train] > 0).sum(0)
    idf = np.log((1 + train) / (1 + documents_with)) + 1.0
    x = tf * idf
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    return Split(x[:train], y[:train], x[train:], y[train:], TOPICS)


def linear_svm(data: Split) -> nn.Module:
    return nn.Linear(WORDS, TOPICS)


def hinge(power: int = 1):
    return lambda scores, y: F.multi_margin_loss(scores, y, p=power, margin=1.0)


def sgd(lr: float, momentum: float = 0.0, weight_decay: float = 1e-4):
    return lambda model: torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def constant_then_cooldown(cooldown: float = 0.2):
    """The base lr, then a linear decay to 0 over the last ``cooldown`` of the steps."""
    return common.warmup_stable_decay(warmup_fraction=0.0, decay_fraction=cooldown)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="classification", task_kind="classification", batch_size=32,
                    logging=Logging(every=25, mean=True, layer_every=25), scheduler=constant_then_cooldown(),
                    loss=hinge(), healthy=True)
    settings.update(kwargs)
    return Spec(name, description, documents, linear_svm, optimizer, epochs, **settings)


LR = 1.5


def specs() -> list[Spec]:
    return [
        run("svm_sgd_constant_cooldown", f"linear SVM (multi-class hinge) on tf-idf bag-of-words of 8 topics, SGD "
            f"{LR:g} (wd 1e-4) constant then linear cool-down over the last 20 %, 12 epochs (1,500 steps), 25-step "
            "window means", sgd(LR), 12),
        run("svm_sgd_constant_cooldown_seed1", f"linear SVM on tf-idf bag-of-words, SGD {LR:g} constant then "
            "cool-down, 12 epochs, 25-step window means, seed 1", sgd(LR), 12, seed=1),
        run("svm_squared_hinge_seed2", f"linear SVM with the squared hinge on tf-idf bag-of-words, SGD {LR:g} "
            "constant then cool-down, 12 epochs, 25-step window means, seed 2", sgd(LR), 12, seed=2, loss=hinge(2)),
        run("svm_sgd_momentum_seed3", f"linear SVM on tf-idf bag-of-words, SGD {LR / 10:g} with momentum 0.9 "
            "constant then cool-down, 12 epochs, 25-step window means, seed 3", sgd(LR / 10, momentum=0.9), 12,
            seed=3),
        run("svm_batch16_cooldown30_seed4", f"linear SVM on tf-idf bag-of-words, batches of 16, SGD {LR / 2:g} "
            "constant then cool-down over the last 30 %, 8 epochs (2,000 steps), 25-step window means, seed 4",
            sgd(LR / 2), 8, seed=4, batch_size=16, scheduler=constant_then_cooldown(0.3)),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
