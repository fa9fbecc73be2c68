"""Word2vec skip-gram with negative sampling on a synthetic topical corpus (two embedding tables, a logistic loss on one true and 5 sampled context words), SGD or Adam with linear decay to 0, constant Adagrad, 50-step window means (eleventh hold-out, healthy only).

The corpus, made here: a vocabulary of 400 words (40 function words shared
by every topic, 8 topics of 45 words each); a sentence of 12 words picks
one topic and draws each word from the function words (30 %, Zipfian) or
from its topic's words (70 %, Zipfian). Training pairs: every (centre,
context) pair within a window of ±2, each with 5 negative words drawn from
the unigram distribution to the power 0.75 (drawn once, when the pairs
are made). 4,000 training sentences (~168,000 pairs) and 500 validation
sentences (their own pairs and negatives).

The model: an input and an output embedding of 32 per word (word2vec's
initialisation: input uniform ±0.5/32, output 0, so the first loss is
6 ln 2 = 4.16); a pair's scores are the dot products of the centre's input
vector with its context's and its negatives' output vectors; the loss is
−log σ(s⁺) − Σ log σ(−s⁻), averaged over the batch. Batches of 512 (~330
steps per epoch), 3 to 4 epochs.

Logged as the mean over each 50-step window (the loss, the window's last lr
and gradient norm), per-layer statistics every 50 steps; val loss after
every epoch (twice per epoch for two runs).

Why these settings (quick check by final val loss, 2026-11-30, each base
run at its lr × 1/3, × 1, × 3; the loss floor of this corpus is ~1.85):
- SGD with linear decay to 0: lr 6.7 2.0125 (3 epochs), lr 10 1.8785
  (4 epochs), lr 20 1.8650 (3 epochs) and 1.8590 (4 epochs), lr 60
  diverges (loss ~1e9). 20 is the best; 4 epochs, as the val loss still
  fell by 0.05 in the third.
- Adagrad constant, 3 epochs: 0.033 1.8933, 0.1 1.8632 (best at the last
  evaluation), 0.3 1.8990: 0.1.
- Adam with linear decay to 0, 4 epochs: 3.3e-3 1.9027, 1e-2 1.8524,
  3e-2 1.8744: 1e-2.

No task kind recorded (``task_kind="unknown"``).
Eleventh hold-out (issue #12); see ``softmax_lbfgs_tabular.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "skipgram_negative_sampling"
LOGGING = Logging(every=50, mean=True, layer_every=50)
FUNCTION, TOPICS, PER_TOPIC, LENGTH, WINDOW, NEGATIVES, DIM = 40, 8, 45, 12, 2, 5, 32
VOCAB = FUNCTION + TOPICS * PER_TOPIC


def _zipf(n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1)
    return weights / weights.sum()


def _sentences(rng: np.random.Generator, count: int) -> np.ndarray:
    topics = rng.integers(0, TOPICS, count)
    function = rng.choice(FUNCTION, size=(count, LENGTH), p=_zipf(FUNCTION))
    topical = FUNCTION + topics[:, None] * PER_TOPIC + rng.choice(PER_TOPIC, size=(count, LENGTH), p=_zipf(PER_TOPIC))
    return np.where(rng.random((count, LENGTH)) < 0.3, function, topical)


def _pairs(sentences: np.ndarray, rng: np.random.Generator, noise: np.ndarray) -> np.ndarray:
    rows = []
    for offset in range(-WINDOW, WINDOW + 1):
        if offset == 0:
            continue
        lo, hi = max(0, -offset), LENGTH - max(0, offset)
        rows.append(np.stack([sentences[:, lo:hi].ravel(), sentences[:, lo + offset:hi + offset].ravel()], 1))
    pairs = np.concatenate(rows)
    negatives = rng.choice(VOCAB, size=(len(pairs), NEGATIVES), p=noise)
    return np.concatenate([pairs, negatives], 1)


@functools.lru_cache(maxsize=None)
def corpus(train: int = 4000, val: int = 500, seed: int = 115) -> Split:
    rng = np.random.default_rng(seed)
    train_sentences, val_sentences = _sentences(rng, train), _sentences(rng, val)
    counts = np.bincount(train_sentences.ravel(), minlength=VOCAB) + 1.0
    noise = counts ** 0.75 / (counts ** 0.75).sum()
    x_train, x_val = torch.tensor(_pairs(train_sentences, rng, noise)), torch.tensor(_pairs(val_sentences, rng, noise))
    return Split(x_train, torch.zeros(len(x_train)), x_val, torch.zeros(len(x_val)), VOCAB)


class SkipGram(nn.Module):
    def __init__(self, dim: int = DIM):
        super().__init__()
        self.centre = nn.Embedding(VOCAB, dim)
        self.context = nn.Embedding(VOCAB, dim)
        nn.init.uniform_(self.centre.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.context.weight)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """(B, 2 + k) word ids → (B, 1 + k) scores of the true context and the negatives."""
        return (self.context(pairs[:, 1:]) * self.centre(pairs[:, :1])).sum(-1)


def skipgram(dim: int = DIM):
    return lambda data: SkipGram(dim)


def negative_sampling_loss(scores: torch.Tensor, _unused: torch.Tensor) -> torch.Tensor:
    return -(F.logsigmoid(scores[:, 0]) + F.logsigmoid(-scores[:, 1:]).sum(1)).mean()


def linear_to_zero():
    """word2vec's own schedule: the lr falls linearly to 0 over the run (polynomial decay, power 1)."""
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total, power=1.0), "step")


def make(kind, lr: float, **kwargs):
    return lambda model: kind(model.parameters(), lr=lr, **kwargs)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", logging=LOGGING, batch_size=512,
                    probe_layout=True, loss=negative_sampling_loss, healthy=True)
    settings.update(kwargs)
    return Spec(name, description, corpus, settings.pop("model", skipgram()), optimizer, epochs, **settings)


def specs() -> list[Spec]:
    return [
        run("sgns_sgd_linear_decay", "skip-gram with negative sampling, SGD lr 20 (a batch-mean loss; word2vec's "
            "0.025 per pair × 512 in a batch, rounded), linear decay to 0, 4 epochs",
            make(torch.optim.SGD, 20.0), 4, scheduler=linear_to_zero()),
        run("sgns_sgd_linear_decay_seed1", "skip-gram with negative sampling, SGD lr 20, linear decay to 0, "
            "4 epochs, seed 1", make(torch.optim.SGD, 20.0), 4, scheduler=linear_to_zero(), seed=1),
        run("sgns_adagrad", "skip-gram with negative sampling, Adagrad 0.1, constant, 3 epochs, val twice per "
            "epoch", make(torch.optim.Adagrad, 0.1), 3, evals_per_epoch=2),
        run("sgns_adam_linear_decay_seed2", "skip-gram with negative sampling, Adam 1e-2, linear decay to 0, "
            "4 epochs, seed 2", make(torch.optim.Adam, 1e-2), 4, scheduler=linear_to_zero(), seed=2),
        run("sgns_adam_dim48_late_logging_seed3", "skip-gram with negative sampling, 48-dimensional vectors, "
            "Adam 1e-2, linear decay to 0, 3 epochs, logging from step 100, seed 3", make(torch.optim.Adam, 1e-2),
            3, model=skipgram(48), scheduler=linear_to_zero(), seed=3, evals_per_epoch=2,
            logging=Logging(every=50, mean=True, start=100, layer_every=50)),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
