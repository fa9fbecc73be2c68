"""A character-level LSTM language model over a stream of synthetic personal names (27 symbols: a-z and the separator), next-character cross-entropy, RMSprop with ReduceLROnPlateau, Adamax with exponential decay or Adagrad, 5-step window means (seventeenth hold-out).

Names made here: three naming traditions, each a set of 12 syllables
(consonant-vowel patterns of its own) and its own name length (2-4
syllables); a name picks a tradition, then its syllables with
tradition-specific Zipf-like frequencies, and names are written one after
the other separated by ``.``. The stream is cut into non-overlapping
windows of 24 characters (inputs) and the same windows shifted by one
(targets): 1,500 training and 300 validation windows, batches of 50 (30
steps an epoch). The model: a character embedding (width 24), one LSTM
layer (96 units), a ReLU projection (64) and a linear head over the 27
symbols; cross-entropy over every position (B, T, V). RMSprop (lr 3e-3)
with ReduceLROnPlateau on the val loss (factor 0.5, patience 2), Adamax
(2e-2) with ExponentialLR (x0.8 an epoch) or Adagrad (0.1) at a constant
lr, 10 epochs (300 steps). Logged as the mean of every 5 steps (loss, with
the lr and gradient norm of the 5th; one healthy run one mean per epoch),
per-layer statistics every 10 steps, val twice an epoch. Task:
language_modelling, V = 27.

Seventeenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout17``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family lstm_names_lm``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import make, plateau
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "lstm_names_lm"
LOGGING = Logging(every=5, mean=True, layer_every=10)
ALPHABET = ".abcdefghijklmnopqrstuvwxyz"
VOCAB, CONTEXT = len(ALPHABET), 24
TRADITIONS = (("bcdgklmnrst", "aeiou", (2, 3)), ("fhjlmnprvwy", "aeio", (3, 4)), ("bdgkpqstxz", "aiu", (2, 2)))


@functools.lru_cache(maxsize=None)
def names(train: int = 1500, val: int = 300, seed: int = 171) -> Split:
    rng = np.random.default_rng(seed)
    syllables = []
    for consonants, vowels, _ in TRADITIONS:
        chosen = {rng.choice(list(consonants)) + rng.choice(list(vowels)) + ("" if rng.random() < 0.6 else
                  rng.choice(list(consonants))) for _ in range(40)}
        chosen = sorted(chosen)[:12]
        weights = 1.0 / np.arange(1, len(chosen) + 1)
        syllables.append((chosen, weights / weights.sum()))
    text = []
    while len(text) < (train + val) * CONTEXT + 1:
        tradition = rng.integers(0, len(TRADITIONS))
        chosen, weights = syllables[tradition]
        low, high = TRADITIONS[tradition][2]
        name = "".join(chosen[k] for k in rng.choice(len(chosen), rng.integers(low, high + 1), p=weights))
        text.extend(ALPHABET.index(c) for c in name + ".")
    tokens = torch.tensor(text[:(train + val) * CONTEXT + 1], dtype=torch.long)
    x = tokens[:-1].view(-1, CONTEXT)
    y = tokens[1:].view(-1, CONTEXT)
    return Split(x[:train], y[:train], x[train:], y[train:], VOCAB)


class NameLSTM(nn.Module):
    def __init__(self, width: int = 24, hidden: int = 96, projection: int = 64):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.lstm = nn.LSTM(width, hidden, batch_first=True)
        self.projection = nn.Linear(hidden, projection)
        self.head = nn.Linear(projection, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.embed(x))
        return self.head(torch.relu(self.projection(hidden)))


def lstm(**kwargs):
    return lambda data: NameLSTM(**kwargs)


def rmsprop(lr: float):
    return make(torch.optim.RMSprop, lr)


def adamax(lr: float):
    return make(torch.optim.Adamax, lr)


def adagrad(lr: float):
    return make(torch.optim.Adagrad, lr)


def sgd(lr: float):
    return make(torch.optim.SGD, lr)


def exponential(gamma: float):
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma), "epoch")


def dead_projection(bias: float):
    """The projection's biases set to ``bias`` at init (every ReLU unit dead from the first step)."""
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.projection.bias.fill_(bias)
    return prepare


def reencoded(at: int, length: int, offset: int):
    """The batches of ``length`` steps from ``at`` encoded with every symbol id shifted by ``offset``."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if at <= step < at + length:
            return (x + offset) % VOCAB, (y + offset) % VOCAB
        return x, y
    return hook


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling",
                    logging=LOGGING, batch_size=50, probe_layout=True, scheduler=plateau(0.5, 2), evals_per_epoch=2)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", names), settings.pop("model", lstm()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    return [
        run("names_healthy_rmsprop_plateau", "character LSTM LM (embedding 24, LSTM 96, ReLU projection 64) over "
            "a stream of synthetic names, RMSprop 3e-3, ReduceLROnPlateau (x0.5, patience 2), 10 epochs (300 "
            "steps)", rmsprop(3e-3), 10, healthy=True),
        run("names_healthy_rmsprop_plateau_seed1", "names LSTM LM, RMSprop 3e-3, ReduceLROnPlateau, 10 epochs, "
            "seed 1", rmsprop(3e-3), 10, seed=1, healthy=True),
        run("names_healthy_adamax_exponential", "names LSTM LM, Adamax 2e-2, lr x0.8 after every epoch, 10 "
            "epochs, seed 2", adamax(2e-2), 10, scheduler=exponential(0.8), seed=2, healthy=True),
        run("names_healthy_adagrad_epoch_means", "names LSTM LM, Adagrad 0.1 at a constant lr, 12 epochs, seed 3, "
            "logged as one mean per epoch", adagrad(0.1), 12, scheduler=None, seed=3,
            logging=Logging(per_epoch=True, layer_every=10), healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    "names_lr_too_low_rmsprop": (
        "final val 2.83 vs twin 1.06, 2.66x; train loss 3.31 at the start, 2.84 at the end vs the twin's "
        "1.06; at the working lr x3 down and up (1e-3, 1e-2) final val 1.097 and 1.060"),
    "names_decayed_too_early_adamax": (
        "val 1.200-1.206 at every evaluation from step 60 on while the twin (x0.8 an epoch) goes on to 1.056; "
        "final train 1.17 vs 1.03"),
    "names_train_longer_one_epoch": (
        "val falls at every evaluation (2.20 to 1.24), best at the last; final val 1.237 vs 1.062 for the "
        "twin that runs 10 epochs, 1.17x"),
    "names_dead_layers_projection_bias": (
        "final val 2.68 vs twin 1.06, 2.52x (a unigram model: the head sees only its bias); final train 2.69 "
        "vs 1.06"),
    "names_loss_spike_reencoded_shard": (
        "the 5-step mean of the train loss is 2.81 at step 150 and 2.16 at step 155 against 1.07-1.10 before; "
        "val 1.354 at step 150 vs 1.099 at step 135, back to 1.105 at step 165; final val 1.061 vs twin 1.062 "
        "(no lasting harm)"),
    "names_exploding_gradients_sgd": (
        "the gradient norm grows from 0.29 at step 1 to 81 at step 5, 2.2e4 at step 6 and 3.1e7 at step 7 "
        "(twin peak 2.3x its median); the train loss reaches 2.0e7 at step 8; final val 329 vs twin 1.06; the "
        "same SGD at lr 5 ends at val 1.09"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("names_lr_too_low_rmsprop", "names LSTM LM, RMSprop 3e-5 (100x below the working lr: the lr of a "
            "fine-tuning recipe), ReduceLROnPlateau, 10 epochs", rmsprop(3e-5), 10,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("names_decayed_too_early_adamax", "names LSTM LM, Adamax 2e-2, ExponentialLR gamma 0.1 after every "
            "epoch (the gamma of a StepLR every 10 epochs): 2e-3 from step 31, 2e-4 from step 61, 10 epochs",
            adamax(2e-2), 10, scheduler=exponential(0.1), seed=2, expect={"decayed_too_early": [25, 100]}, forbid=["lr_too_high"],
            allow=["underfitting", "lr_too_low", "train_longer", "update_ratio_out_of_band"]),
        run("names_train_longer_one_epoch", "names LSTM LM, RMSprop 3e-3 at a constant lr, stopped after 1 epoch "
            "(30 steps: a smoke-test config left in), val every 5 steps", rmsprop(3e-3), 1, scheduler=None,
            evals_per_epoch=6, expect={"train_longer": everywhere},
            forbid=["overfitting", "best_epoch_not_last"], allow=["lr_too_low", "underfitting"]),
        run("names_dead_layers_projection_bias", "names LSTM LM whose ReLU projection biases were initialised to "
            "-20 (an init meant for a gate's bias), RMSprop 3e-3, ReduceLROnPlateau, 10 epochs", rmsprop(3e-3), 10,
            prepare=dead_projection(-20.0), expect={"dead_layers": everywhere},
            allow=["underfitting", "no_better_than_baseline", "vanishing_gradients", "lr_too_low",
                   "update_ratio_out_of_band"]),
        run("names_loss_spike_reencoded_shard", "names LSTM LM, RMSprop 3e-3, ReduceLROnPlateau, 10 epochs, the "
            "batches of steps 150-152 encoded with every symbol id shifted by 9 (a shard tokenised with another "
            "alphabet table)", rmsprop(3e-3), 10, batch_hook=reencoded(150, 3, 9),
            expect={"loss_spike": [146, 180]}, forbid=["divergence"],
            allow=["exploding_gradients", "update_ratio_out_of_band", "best_epoch_not_last"]),
        run("names_exploding_gradients_sgd", "names LSTM LM, plain SGD at lr 20 (the word_language_model recipe) "
            "with its gradient clipping at 0.25 left out, 10 epochs, logged every step (a debugging run)", sgd(20.0), 10,
            scheduler=None, logging=Logging(layer_every=5),
            expect={"exploding_gradients": everywhere},
            allow=["loss_spike", "lr_too_high", "divergence", "update_ratio_out_of_band", "underfitting",
                   "best_epoch_not_last", "no_better_than_baseline", "dead_layers"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["names_healthy_rmsprop_plateau"] for spec in faults()}
    twins["names_decayed_too_early_adamax"] = healthy["names_healthy_adamax_exponential"]
    return twins
