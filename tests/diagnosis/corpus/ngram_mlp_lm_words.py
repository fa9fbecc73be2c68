"""A Bengio-style neural n-gram language model (Bengio et al. 2003: the embeddings of the previous 3 words concatenated, a tanh hidden layer, a softmax over the vocabulary) over the words of a synthetic 568-word grammar language, next-word cross-entropy, averaged SGD (ASGD) at a constant lr, Adam with exponential decay or SGD with Nesterov momentum and ReduceLROnPlateau, logged every step, every 20 steps from step 100 or as one mean per epoch (eighteenth hold-out).

Text made here by a small probabilistic grammar: a sentence is a subject
noun phrase (a pronoun one time in four, else a determiner, 0-2 adjectives
and a noun), a verb, an object noun phrase, then with probability 0.4 a
prepositional phrase (a preposition and a noun phrase) or else with
probability 0.3 an adverb, and a full stop; one sentence in five is joined
to the next by a conjunction instead. The vocabulary: 8 determiners, 96
adjectives, 240 nouns, 160 verbs, 36 adverbs, 12 prepositions, 10
pronouns, 5 conjunctions and the full stop (568 words, ids in that order;
V = 568). Each sentence has one of 4 topics: its nouns, verbs and
adjectives come from its topic's quarter of their class with probability
0.85 (else from the whole class), Zipf-like (exponent 0.9) within it, and
each verb takes its object from its own 12 nouns of the topic 7 times in
10. The sentences run on in one stream; an example is the 3 words before a
position and the word there: 48,000 training examples from the start of
the stream and 6,000 validation examples from its end, batches of 400 (120
steps an epoch). A unigram model scores 5.2 nats on the validation words.
The model: word embeddings (width 32) of the 3 context words concatenated
(96), a tanh hidden layer of 128 and a linear output over the 568 words
(about 104,000 parameters). ASGD (lr 2.0, averaging from step 100; its
own slow decay of the step size, lambd 1e-4, leaves the recorded lr
constant), Adam (2e-3) with the lr x0.8 after every epoch, or SGD (lr
0.2, Nesterov momentum 0.9) with ReduceLROnPlateau (x0.5, patience 1); 8
epochs (960 steps). Logged every step, every 20 steps from step 100 (that
step's loss) or as one mean per epoch, per-layer statistics every 20
steps, val twice an epoch. Task: language_modelling, V = 568. (Adam at
3e-2 without warm-up was tried as a missing-warm-up fault and dropped: it
ended at val 4.349 against 4.352 with a 6 % warm-up.)

Eighteenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout18``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family ngram_mlp_lm_words``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import make, plateau
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "ngram_mlp_lm_words"
LOGGING = Logging(layer_every=20)
CONTEXT, TOPICS = 3, 4
CLASSES = (("determiner", 8), ("adjective", 96), ("noun", 240), ("verb", 160), ("adverb", 36),
           ("preposition", 12), ("pronoun", 10), ("conjunction", 5), ("stop", 1))
FIRST = dict(zip([name for name, _ in CLASSES], np.cumsum([0] + [size for _, size in CLASSES])[:-1].tolist()))
SIZE = dict(CLASSES)
VOCAB = sum(SIZE.values())


def _zipf(size: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** 0.9
    return weights / weights.sum()


@functools.lru_cache(maxsize=None)
def stream(tokens: int, seed: int = 181) -> np.ndarray:
    """``tokens`` words of the grammar language, (tokens,) int64."""
    rng = np.random.default_rng(seed)
    objects = {verb: rng.choice(SIZE["noun"] // TOPICS, 12, replace=False)
               for verb in range(SIZE["verb"])}  # each verb's preferred objects within its topic's nouns

    def topical(kind: str, topic: int) -> int:
        quarter = SIZE[kind] // TOPICS
        if rng.random() < 0.85:
            return FIRST[kind] + topic * quarter + rng.choice(quarter, p=_zipf(quarter))
        return FIRST[kind] + rng.choice(SIZE[kind], p=_zipf(SIZE[kind]))

    def word(kind: str) -> int:
        return FIRST[kind] + rng.choice(SIZE[kind], p=_zipf(SIZE[kind]))

    def noun_phrase(topic: int, out: list[int], verb: int | None = None) -> None:
        if verb is None and rng.random() < 0.25:
            out.append(word("pronoun"))
            return
        out.append(word("determiner"))
        for _ in range(rng.choice(3, p=[0.5, 0.35, 0.15])):
            out.append(topical("adjective", topic))
        if verb is not None and rng.random() < 0.7:
            quarter = SIZE["noun"] // TOPICS
            out.append(FIRST["noun"] + topic * quarter + rng.choice(objects[verb]))
        else:
            out.append(topical("noun", topic))

    text: list[int] = []
    while len(text) < tokens:
        topic = rng.integers(TOPICS)
        noun_phrase(topic, text)
        verb = topical("verb", topic)
        text.append(verb)
        noun_phrase(topic, text, verb=verb - FIRST["verb"])
        draw = rng.random()
        if draw < 0.4:
            text.append(word("preposition"))
            noun_phrase(topic, text)
        elif draw < 0.7:
            text.append(word("adverb"))
        text.append(word("conjunction") if rng.random() < 0.2 else FIRST["stop"])
    return np.asarray(text[:tokens], dtype=np.int64)


@functools.lru_cache(maxsize=None)
def ngrams(train: int = 48000, val: int = 6000, seed: int = 181) -> Split:
    """(3 previous words → next word) examples: the first ``train`` positions of the stream for training, the
    last ``val`` for validation."""
    words = stream(train + val + 2 * CONTEXT, seed)
    positions = np.arange(CONTEXT, len(words))
    x = np.stack([words[positions - k] for k in range(CONTEXT, 0, -1)], axis=1)
    y = words[positions]
    x_train, y_train = x[:train], y[:train]
    x_val, y_val = x[-val:], y[-val:]
    return Split(torch.tensor(x_train), torch.tensor(y_train), torch.tensor(x_val), torch.tensor(y_val), VOCAB)


class NeuralNgram(nn.Module):
    def __init__(self, width: int = 32, hidden: int = 128):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.hidden = nn.Linear(CONTEXT * width, hidden)
        self.out = nn.Linear(hidden, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(self.embed(x).flatten(1))))


def ngram_mlp(**kwargs):
    return lambda data: NeuralNgram(**kwargs)


def asgd(lr: float):
    return make(torch.optim.ASGD, lr, t0=100.0)


def adam(lr: float):
    return make(torch.optim.Adam, lr)


def nesterov(lr: float):
    return make(torch.optim.SGD, lr, momentum=0.9, nesterov=True)


def exponential(gamma: float):
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma), "epoch")


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling",
                    logging=LOGGING, batch_size=400, probe_layout=True, scheduler=None, evals_per_epoch=2)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", ngrams), settings.pop("model", ngram_mlp()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    return [
        run("ngram_healthy_asgd_constant", "Bengio neural 3-gram LM (3 x 32-d embeddings concatenated, tanh 128, "
            "softmax over 568 words) on a synthetic grammar language, ASGD lr 2.0 at a constant lr, 8 epochs (960 "
            "steps), logged every step", asgd(2.0), 8, healthy=True),
        run("ngram_healthy_adam_exponential", "neural 3-gram LM, Adam 2e-3, lr x0.8 after every epoch, 8 epochs, "
            "seed 1, logged every 20 steps from step 100", adam(2e-3), 8, scheduler=exponential(0.8), seed=1,
            logging=Logging(every=20, start=100, layer_every=20), healthy=True),
        run("ngram_healthy_nesterov_plateau_epoch_means", "neural 3-gram LM, SGD Nesterov 0.9 lr 0.2, "
            "ReduceLROnPlateau (x0.5, patience 1), 8 epochs, seed 2, logged as one mean per epoch",
            nesterov(0.2), 8, scheduler=plateau(0.5, 1), seed=2, logging=Logging(per_epoch=True, layer_every=20),
            healthy=True),
        run("ngram_healthy_adam_exponential_seed3", "neural 3-gram LM, Adam 2e-3, lr x0.8 after every epoch, 8 "
            "epochs, seed 3, logged every step", adam(2e-3), 8, scheduler=exponential(0.8), seed=3, healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    "ngram_lr_too_high_asgd": (
        "the train loss jumps from 6.39 at step 1 to 36 at step 4 and 89 at step 7 and stays above its first "
        "value until about step 450; final val 5.04 vs twin 3.885, 1.30x; final train 4.72 vs 3.45; gradient norm "
        "peak 10.2x its median (twin 1.5x); ASGD at 3x the working lr (6.0) ends at val 4.15"),
    "ngram_lr_too_low_asgd": (
        "val falls slowly and steadily from 6.31 to 5.225 vs the twin's 3.885, 1.34x (a unigram model scores "
        "5.2); final train 5.20 vs 3.45"),
    "ngram_underfitting_tiny": (
        "final val 4.668 vs twin 3.885, 1.20x (the twin gains 1.3 nats over a unigram model, this one 0.5); the "
        "train loss's last 20 steps average 4.66 against a final val of 4.67 (train and val close)"),
    "ngram_decayed_too_early_adam": (
        "val 4.459-4.458 at every evaluation from step 240 on while the twin (x0.8 an epoch) goes on to 3.816; "
        "final train 4.31 vs 3.50"),
    "ngram_dead_layers_frozen_embeddings": (
        "the embeddings' gradient norm and update ratio recorded as 0 at every per-layer record (the twin's "
        "embedding update ratio median 8e-4); final val 4.122 vs twin 3.885, 1.06x: the hidden layer learns from "
        "fixed random embeddings"),
    "ngram_overfitting_small_stream": (
        "val falls to 5.148 at step 84 then rises at every evaluation to 6.793 at the end while the train loss "
        "goes to 0.197; final val 1.79x the 3.804 of the twin on the 48,000 examples (same optimizer and number "
        "of steps)"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def freeze_embeddings(model: nn.Module) -> None:
    model.embed.weight.requires_grad_(False)


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("ngram_lr_too_high_asgd", "neural 3-gram LM, ASGD lr 10 (5x the working lr: the top value of an "
            "lr sweep kept), constant, 8 epochs", asgd(10.0), 8,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low"],
            allow=["loss_spike", "divergence", "underfitting", "best_epoch_not_last", "update_ratio_out_of_band",
                   "exploding_gradients", "overfitting"]),
        run("ngram_lr_too_low_asgd", "neural 3-gram LM, ASGD lr 0.02 (100x below the working lr), constant, 8 "
            "epochs", asgd(0.02), 8, expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("ngram_underfitting_tiny", "neural 3-gram LM with 2-d embeddings and 2 tanh units (the sizes of a "
            "unit-test config), ASGD lr 2.0, constant, 8 epochs", asgd(2.0), 8, model=ngram_mlp(width=2, hidden=2),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"], allow=["train_longer"]),
        run("ngram_decayed_too_early_adam", "neural 3-gram LM, Adam 2e-3, ExponentialLR gamma 0.05 after every "
            "epoch (the gamma of a schedule stepped every 10 epochs): 1e-4 from step 121, 5e-6 from step 241, 8 "
            "epochs, seed 3, logged every step", adam(2e-3), 8, scheduler=exponential(0.05), seed=3,
            expect={"decayed_too_early": [100, 400]}, forbid=["lr_too_high"],
            allow=["underfitting", "lr_too_low", "train_longer", "update_ratio_out_of_band"]),
        run("ngram_dead_layers_frozen_embeddings", "neural 3-gram LM whose word embeddings were left frozen (the "
            "requires_grad=False of a pre-trained-embedding option, with random embeddings), ASGD lr 2.0, "
            "constant, 8 epochs", asgd(2.0), 8, prepare=freeze_embeddings, expect={"dead_layers": everywhere},
            allow=["underfitting", "lr_too_low", "train_longer", "update_ratio_out_of_band"]),
        run("ngram_overfitting_small_stream", "neural 3-gram LM on the first 2,400 examples of the stream only (a "
            "debugging subset left in), Adam 2e-3 at a constant lr, 80 epochs (480 steps), val every epoch",
            adam(2e-3), 80, data=lambda: ngrams(train=2400), evals_per_epoch=1,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["ngram_healthy_asgd_constant"] for spec in faults()}
    twins["ngram_decayed_too_early_adam"] = healthy["ngram_healthy_adam_exponential_seed3"]
    twins["ngram_overfitting_small_stream"] = run(
        "ngram_twin_adam_constant_full_stream", "neural 3-gram LM on the 48,000 examples, Adam 2e-3 at a constant "
        "lr, 4 epochs (480 steps), val every 10 % of an epoch", adam(2e-3), 4, evals_per_epoch=10)
    return twins
