"""A character-level bidirectional GRU tagging every character of synthetic text with its word's class and its position in the word (31 tags), Adam with cosine to zero or warm-up + constant, logged every 5 steps (sixteenth hold-out).

Text made here: an alphabet of 26 letters and a space (character ids 1-27;
0 is unused). Ten word classes, each marked by three two-letter suffixes of
its own (30 distinct suffixes drawn once) and, for half the classes, a
one-letter prefix; a word is its prefix (if any), a stem of 1-4 letters
drawn from the letters no suffix starts with, and one of its class's
suffixes (drawn Zipf-like). Words are drawn with class probabilities
proportional to 1/(k+1)^0.5 and joined by single spaces into a stream cut
into windows of 32 characters. The tag of a character is
``3 × class + position`` (0: the word's first letter, 1: inside, 2: its last
letter) and 30 for a space: 31 tags, and the class of a word's first
letters is mostly given by the suffix that follows them (a backward
context). 2,000 training and 400 validation windows, batches of 50 (40
steps an epoch). The model: a character embedding (28 × 32), one
bidirectional GRU layer (hidden 32 a direction), a linear head 64 → 31
applied at every position; cross-entropy over all characters, on (B, C,
T) logits. Adam (lr 1e-2) with cosine to zero per step, 8 epochs; or
warm-up (30 steps) then a constant lr. Logged every 5 steps (the value of
that step), per-layer statistics every 10 steps, val loss, accuracy and
confusion counts over the characters twice an epoch. Task:
classification, C = 31 tags.

Sixteenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout16``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family bigru_char_tagger``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "bigru_char_tagger"
LOGGING = Logging(every=5, layer_every=10)
WINDOW, WORD_CLASSES, LETTERS = 32, 10, 26
SPACE = LETTERS + 1
TAGS = 3 * WORD_CLASSES + 1


@functools.lru_cache(maxsize=None)
def text(train: int = 2000, val: int = 400, seed: int = 161) -> Split:
    rng = np.random.default_rng(seed)
    letters = np.arange(1, LETTERS + 1)
    suffix_first = rng.choice(letters, 6, replace=False)  # suffixes start with one of 6 letters
    stem_letters = np.setdiff1d(letters, suffix_first)
    pairs = [(a, b) for a in suffix_first for b in letters]
    chosen = rng.choice(len(pairs), 3 * WORD_CLASSES, replace=False)
    suffixes = [[pairs[chosen[3 * k + j]] for j in range(3)] for k in range(WORD_CLASSES)]
    prefixes = {k: int(rng.choice(stem_letters)) for k in range(0, WORD_CLASSES, 2)}
    class_p = 1 / np.arange(1, WORD_CLASSES + 1) ** 0.5
    class_p /= class_p.sum()
    suffix_p = np.array([0.6, 0.3, 0.1])

    def stream(length: int) -> tuple[np.ndarray, np.ndarray]:
        chars, tags = [], []
        while len(chars) < length:
            k = int(rng.choice(WORD_CLASSES, p=class_p))
            word = ([prefixes[k]] if k in prefixes else [])
            word += list(rng.choice(stem_letters, rng.integers(1, 5)))
            word += list(suffixes[k][rng.choice(3, p=suffix_p)])
            chars += word + [SPACE]
            tags += [3 * k] + [3 * k + 1] * (len(word) - 2) + [3 * k + 2] + [TAGS - 1]
        return np.asarray(chars[:length]), np.asarray(tags[:length])

    def windows(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        chars, tags = stream(count * WINDOW)
        return (torch.tensor(chars.reshape(count, WINDOW), dtype=torch.long),
                torch.tensor(tags.reshape(count, WINDOW), dtype=torch.long))

    (x_train, y_train), (x_val, y_val) = windows(train), windows(val)
    return Split(x_train, y_train, x_val, y_val, TAGS)


class CharTagger(nn.Module):
    def __init__(self, width: int = 32, hidden: int = 32, bidirectional: bool = True):
        super().__init__()
        self.embed = nn.Embedding(LETTERS + 2, width)
        self.gru = nn.GRU(width, hidden, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), TAGS)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(self.embed(chars))
        return self.head(states).transpose(1, 2)  # (B, C, T): cross-entropy over every character


def tagger(**kwargs):
    return lambda data: CharTagger(**kwargs)


def adam(lr: float):
    return lambda model: torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)


def cosine():
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=0.0), "step")


def warmup_constant(warmup: int = 30):
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda taken: min(1.0, (taken + 1) / warmup)), "step")


def freeze_backward_direction(model: nn.Module) -> None:
    """requires_grad off on the GRU's reverse direction (a freeze meant for a loaded left-to-right GRU)."""
    for name, parameter in model.gru.named_parameters():
        if name.endswith("_reverse"):
            parameter.requires_grad_(False)


def scale_head(factor: float):
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.head.weight.mul_(factor)
            model.head.bias.uniform_(-factor / 10, factor / 10)
    return prepare


def shuffled_tags(first: int, count: int):
    """Tags shifted by 7 characters against their text for ``count`` batches from ``first`` (a misaligned shard)."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if first <= step < first + count:
            y = torch.roll(y, 7, dims=1)
        return x, y
    return hook


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, batch_size=50, probe_layout=True,
                    scheduler=cosine(), evals_per_epoch=2)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", text), settings.pop("model", tagger()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    return [
        run("tagger_healthy_adam_cosine", "character bi-GRU tagger (embedding 32, hidden 32 a direction, 31 tags) "
            "on synthetic text, Adam 1e-2, cosine to zero, 8 epochs (320 steps)", adam(1e-2), 8, healthy=True),
        run("tagger_healthy_adam_cosine_seed1", "character bi-GRU tagger, Adam 1e-2, cosine to zero, 8 epochs, "
            "seed 1", adam(1e-2), 8, seed=1, healthy=True),
        run("tagger_healthy_adam_warmup_constant", "character bi-GRU tagger, Adam 5e-3, 30-step warm-up then "
            "constant, 6 epochs, seed 2", adam(5e-3), 6, scheduler=warmup_constant(), seed=2, healthy=True),
        run("tagger_healthy_adam_cosine_every_step", "character bi-GRU tagger, Adam 1e-2, cosine to zero, 8 epochs, "
            "seed 3, logged every step", adam(1e-2), 8, seed=3, logging=Logging(layer_every=10), healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    "tagger_lr_too_low_adam": (
        "final val 3.05 vs twin 0.068, 45x, against ln 31 = 3.43; val falling at every evaluation (3.38 to "
        "3.05); val accuracy 0.290 vs 0.974"),
    "tagger_train_longer_one_epoch": (
        "val falls at every evaluation (1.90, 0.88, 0.36, 0.18), best at the last; final val 0.177 vs 0.068 "
        "for the twin that runs 8 epochs, 2.6x"),
    "tagger_underfitting_hidden2": (
        "final val 1.62 vs twin 0.068, 24x; final train 1.60-1.68 vs the twin's 0.05, train and val close; "
        "val accuracy 0.531 vs 0.974"),
    "tagger_dead_layers_frozen_backward": (
        "the four reverse-direction GRU tensors have no gradient at any step; final val 0.350 vs twin 0.068, "
        "5.1x; val accuracy 0.891 vs 0.974, lowest tag recall 0.23 vs 0.81"),
    "tagger_loss_spike_misaligned_shard": (
        "the train loss of step 240 is 12.3 against 0.058-0.081 before and after; final val 0.081 vs twin "
        "0.068, 1.19x"),
    "tagger_bad_initial_loss_scaled_head": (
        "first loss 19.3 against ln 31 = 3.43 (twin 2.69 at its first record); final val 0.162 vs twin 0.068, "
        "2.4x"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("tagger_lr_too_low_adam", "character bi-GRU tagger, Adam 1e-4 (100x below the working lr: the lr of "
            "a fine-tuning recipe), cosine to zero, 8 epochs", adam(1e-4), 8, expect={"lr_too_low": everywhere},
            forbid=["lr_too_high"], allow=["train_longer", "underfitting", "update_ratio_out_of_band",
                                           "underperforming_classes", "no_better_than_baseline"]),
        run("tagger_train_longer_one_epoch", "character bi-GRU tagger, Adam 1e-2 at a constant lr, stopped after "
            "1 epoch (40 steps: a smoke-test config shipped as the run), val every 10 steps", adam(1e-2), 1,
            scheduler=None, evals_per_epoch=4,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underfitting", "underperforming_classes"]),
        run("tagger_underfitting_hidden2", "character bi-GRU tagger with 2 hidden units a direction (a "
            "'hidden=2' meant as the number of layers), Adam 1e-2, cosine to zero, 8 epochs", adam(1e-2), 8,
            model=tagger(hidden=2), expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
            allow=["underperforming_classes"]),
        run("tagger_dead_layers_frozen_backward", "character bi-GRU tagger whose backward-direction GRU weights "
            "have requires_grad off (a freeze meant for a loaded left-to-right GRU), Adam 1e-2, cosine to zero, "
            "8 epochs", adam(1e-2), 8, prepare=freeze_backward_direction, expect={"dead_layers": everywhere},
            allow=["underfitting", "underperforming_classes"]),
        run("tagger_loss_spike_misaligned_shard", "character bi-GRU tagger, Adam 1e-2, cosine to zero, 8 epochs, "
            "tags shifted 7 characters against their text in the batches of steps 240-244 (a misaligned shard)",
            adam(1e-2), 8, batch_hook=shuffled_tags(240, 5), expect={"loss_spike": [239, 270]},
            forbid=["divergence"], allow=["exploding_gradients", "update_ratio_out_of_band"]),
        run("tagger_bad_initial_loss_scaled_head", "character bi-GRU tagger whose head weights were multiplied by "
            "150 and biases drawn in +-15 at init (an init scaled for a one-hot input), Adam 1e-2, cosine to zero, 8 "
            "epochs", adam(1e-2), 8, prepare=scale_head(150.0), expect={"bad_initial_loss": [1, 1]},
            allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "underperforming_classes",
                   "underfitting", "train_longer"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["tagger_healthy_adam_cosine"] for spec in faults()}
    return twins
