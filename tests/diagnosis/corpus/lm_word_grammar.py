"""A word-level transformer LM on a synthetic grammar, logged like HF Trainer (held out: added after the rules).

Sentences from a small probabilistic grammar made here (noun phrases with
determiners, adjectives, prepositional phrases and relative clauses;
transitive and intransitive verbs agreeing in number with their subject;
nouns preferring some adjectives and verbs preferring some objects; words
drawn Zipf-like within their class) over a vocabulary of 336 words, 120,000
tokens; windows of 32 tokens, batches of 16 (211 steps per epoch). A
decoder-only transformer (width 48, 2 layers, pre-LN unless said). Logged
as HF Trainer's ``trainer_state.json`` would have it: every 20 steps the
mean loss since the previous record, the lr and the gradient norm
(``logging_steps=20``, so the first record is at step 20), eval loss every
100 steps, no per-layer statistics. Task: language modelling, V = 336 (one
run says nothing).

Added after the rules were written, as a held-out test; see
``gru_waveforms.py`` and ``tests/diagnosis/heldout_twins.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from tests.diagnosis.corpus.common import (CausalLM, _lambda, adafactor, make, nadam, token_windows,
                                           warmup_cosine, warmup_linear, warmup_stable_decay)
from tests.diagnosis.corpus.common import adamw as common_adamw
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "lm_word_grammar"
LOGGING = Logging(every=20, mean=True, layer_every=None)
CONTEXT = 32
# Word classes and their sizes; singular and plural nouns and verbs are separate words.
CLASSES = {"punctuation": 4, "det_singular": 5, "det_plural": 5, "adjective": 50, "noun_singular": 80,
           "noun_plural": 80, "verb_transitive_singular": 25, "verb_transitive_plural": 25,
           "verb_intransitive_singular": 15, "verb_intransitive_plural": 15, "preposition": 12, "adverb": 20}
VOCAB = sum(CLASSES.values())  # 336
PERIOD, COMMA, AND, THAT = 0, 1, 2, 3


class Grammar:
    """Samples sentences as token ids; all randomness from one numpy Generator."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.first: dict[str, int] = {}
        start = 0
        for name, size in CLASSES.items():
            self.first[name] = start
            start += size
        # Each noun prefers 6 adjectives; each transitive verb prefers 8 object nouns (index within the class).
        self.adjectives_of = self.rng.integers(0, CLASSES["adjective"], size=(CLASSES["noun_singular"], 6))
        self.objects_of = self.rng.integers(0, CLASSES["noun_singular"], size=(CLASSES["verb_transitive_singular"], 8))

    def zipf(self, size: int) -> int:
        weights = 1.0 / np.arange(1, size + 1) ** 1.1
        return int(self.rng.choice(size, p=weights / weights.sum()))

    def word(self, name: str, index: int | None = None) -> int:
        return self.first[name] + (self.zipf(CLASSES[name]) if index is None else index)

    def noun_phrase(self, plural: bool, depth: int, noun: int | None = None) -> list[int]:
        number = "plural" if plural else "singular"
        noun = self.zipf(CLASSES["noun_singular"]) if noun is None else noun
        words = [self.word(f"det_{number}")]
        while self.rng.random() < 0.35 and len(words) < 3:
            preferred = self.rng.random() < 0.8
            words.append(self.word("adjective", int(self.rng.choice(self.adjectives_of[noun])) if preferred else None))
        words.append(self.word(f"noun_{number}", noun))
        if depth < 2 and self.rng.random() < 0.2:
            words += [self.word("preposition")] + self.noun_phrase(self.rng.random() < 0.4, depth + 1)
        if depth < 2 and self.rng.random() < 0.1:
            words += [THAT] + self.verb_phrase(plural, depth + 1)
        return words

    def verb_phrase(self, plural: bool, depth: int) -> list[int]:
        number = "plural" if plural else "singular"
        if self.rng.random() < 0.6:
            verb = self.zipf(CLASSES["verb_transitive_singular"])
            obj = int(self.rng.choice(self.objects_of[verb])) if self.rng.random() < 0.8 else None
            words = [self.word(f"verb_transitive_{number}", verb)]
            words += self.noun_phrase(self.rng.random() < 0.4, depth + 1, obj)
        else:
            words = [self.word(f"verb_intransitive_{number}")]
            if depth < 2 and self.rng.random() < 0.3:
                words += [self.word("preposition")] + self.noun_phrase(self.rng.random() < 0.4, depth + 1)
        if self.rng.random() < 0.2:
            words.append(self.word("adverb"))
        return words

    def sentence(self) -> list[int]:
        plural = self.rng.random() < 0.4
        words = self.noun_phrase(plural, 0) + self.verb_phrase(plural, 0)
        if self.rng.random() < 0.15:
            second = self.rng.random() < 0.4
            words += [COMMA, AND] + self.noun_phrase(second, 1) + self.verb_phrase(second, 1)
        return words + [PERIOD]


@functools.lru_cache(maxsize=None)
def text(limit: int | None = None) -> Split:
    """120,000 tokens of grammar sentences as 32-token windows, 10 % held out; ``num_classes`` = V = 336."""
    grammar = Grammar(seed=41)
    tokens: list[int] = []
    while len(tokens) < 120_000:
        tokens += grammar.sentence()
    return token_windows(np.asarray(tokens[:120_000], dtype=np.int64), CONTEXT, 0.1, VOCAB, train_limit=limit)


def model(norm_first: bool = True, width: int = 48, depth: int = 2):
    return lambda data: CausalLM(VOCAB, CONTEXT, width=width, depth=depth, norm_first=norm_first)


def lm(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling", logging=LOGGING,
                    attention=True, eval_every=100, batch_size=16)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", text), settings.pop("model", model()), optimizer, epochs,
                **settings)


def adamw(lr: float, **kwargs):
    return common_adamw(lr, weight_decay=0.1, betas=(0.9, 0.98), **kwargs)


def adam(lr: float, **kwargs):
    return make(torch.optim.Adam, lr, **kwargs)


def bump_at_after_warmup(step: int, length: int, factor: float, warmup_fraction: float = 0.05):
    """Warm-up then constant, with the lr × ``factor`` for ``length`` steps from ``step`` (a schedule bug)."""
    def multiplier(taken: int, total: int) -> float:
        warmup = max(1, int(warmup_fraction * total))
        base = (taken + 1) / warmup if taken < warmup else 1.0
        return base * (factor if step <= taken + 1 < step + length else 1.0)
    return _lambda(multiplier)


def linear_schedule_for(steps: int, warmup: int):
    """transformers' linear schedule with ``num_training_steps=steps``: the lr is 0 from then on."""
    def multiplier(taken: int, total: int) -> float:
        if taken < warmup:
            return (taken + 1) / warmup
        return max(0.0, (steps - taken) / max(1, steps - warmup))
    return _lambda(multiplier)


DIVERGED_ALLOW = ["loss_spike", "exploding_gradients", "lr_too_high", "missing_warmup", "best_epoch_not_last",
                  "underfitting", "overfitting"]


def specs() -> list[Spec]:
    everywhere = None
    return [
        lm("lmw_healthy_adamw_warmup_linear", "word LM, AdamW 2e-3, 6% warm-up + linear decay (HF default), 4 epochs",
           adamw(2e-3), 4, scheduler=warmup_linear(0.06), healthy=True),
        lm("lmw_healthy_adamw_warmup_cosine", "word LM, AdamW 3e-3, 5% warm-up + cosine to 0, 4 epochs",
           adamw(3e-3), 4, scheduler=warmup_cosine(0.05), healthy=True),
        lm("lmw_healthy_adafactor_wsd", "word LM, Adafactor lr 1e-2, warm-up-stable-decay, 4 epochs",
           adafactor(1e-2), 4, scheduler=warmup_stable_decay(0.05, 0.2), healthy=True),
        lm("lmw_healthy_postln_adam_unknown_task",
           "post-LN word LM, Adam 1e-3, 10% warm-up + linear decay, 4 epochs, no task kind",
           adam(1e-3, betas=(0.9, 0.98)), 4, model=model(norm_first=False), scheduler=warmup_linear(0.1),
           task_kind="unknown", healthy=True),
        lm("lmw_healthy_nadam_warmup_constant", "word LM, NAdam 1e-3, 5% warm-up then constant, 4 epochs",
           nadam(1e-3), 4, scheduler=warmup_stable_decay(0.05, 0.0), healthy=True),
        lm("lmw_missing_warmup_postln",
           "post-LN 3-layer word LM, Adam 2e-2 constant from step 1 (no warm-up). Collapses to 4.6 (the unigram "
           "entropy is 4.7) in its first 100 steps and stays; twin with 10% warm-up: final val loss 3.51 (1.31x)",
           adam(2e-2), 4, model=model(norm_first=False, depth=3),
           expect={"missing_warmup": [1, 200]},
           allow=["lr_too_high", "adam_hyperparameters", "loss_spike", "underfitting", "best_epoch_not_last",
                  "exploding_gradients"]),
        lm("lmw_lr_too_high",
           "word LM, AdamW 0.2 with 6% warm-up + linear decay (100x the healthy run's lr). Train loss 3.70 at step 40, "
           "back up to 4.6 by step ~300; final val loss 3.83 vs the twin's 3.15 (1.22x)",
           adamw(0.2), 4, scheduler=warmup_linear(0.06),
           expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
           allow=["loss_spike", "best_epoch_not_last", "underfitting", "exploding_gradients", "missing_warmup"]),
        lm("lmw_lr_too_low",
           "word LM, AdamW 2e-5, 6% warm-up + linear decay (HF default schedule). Twin (2e-3): final val loss 5.42 vs "
           "3.15 (1.72x)",
           adamw(2e-5), 4, scheduler=warmup_linear(0.06),
           expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
           allow=["train_longer", "underfitting"]),
        lm("lmw_decayed_too_early_wrong_total",
           "word LM, AdamW 2e-3, linear schedule built for 84 of its 844 steps (num_training_steps a tenth of "
           "the run's): the lr reaches 0 at step 84 and stays there. Val loss flat at 4.16 from step 100; twin "
           "(schedule for 844 steps): 3.15 (1.32x)",
           adamw(2e-3), 4, scheduler=linear_schedule_for(84, 10),
           expect={"decayed_too_early": [60, 300]}, forbid=["lr_too_high"],
           allow=["underfitting", "lr_too_low"]),
        lm("lmw_train_longer", "word LM, AdamW 1e-3, warm-up then constant, stopped after 1 of 4 epochs (211 steps), "
           "eval every 20 steps. Twin (4 epochs): final val loss 3.49 vs 3.18 (1.10x; perplexity 1.36x)",
           adamw(1e-3), 1, scheduler=warmup_stable_decay(0.05, 0.0), eval_every=20,
           expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
           allow=["lr_too_low", "underfitting"]),
        lm("lmw_loss_spike_lr_bump",
           "word LM, AdamW 2e-3 warm-up then constant, lr x40 for 10 steps at step 400. Logged loss 3.22 -> 5.41 at "
           "step 420 (1.7x), 3.50 at the end vs the twin's 3.03; final val loss 3.58 vs 3.07 (1.17x)",
           adamw(2e-3), 4, scheduler=bump_at_after_warmup(400, 10, 40.0), expect={"loss_spike": [395, 520]},
           forbid=["divergence"], allow=["exploding_gradients", "best_epoch_not_last", "lr_too_high", "train_longer"]),
        lm("lmw_divergence", "post-LN word LM, SGD momentum 0.9 lr 50: the loss is NaN from the first record (step 20)",
           make(torch.optim.SGD, 50.0, momentum=0.9), 2, model=model(norm_first=False),
           expect={"divergence": everywhere}, allow=DIVERGED_ALLOW),
        lm("lmw_overfitting_small", "word LM width 96 on 48 windows (1,536 tokens), AdamW 3e-3 warm-up then constant, "
           "300 epochs (3 steps each), eval every 30 steps. Val loss best 4.39 at step 60, final 8.9 (2.0x) while "
           "train loss falls to 0.02; twin on every window: 3.26", adamw(3e-3), 300, data=lambda: text(48),
           model=model(width=96), scheduler=warmup_stable_decay(0.05, 0.0), eval_every=30,
           expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
           forbid=["underfitting", "train_longer"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    constant = lm("lmw_twin_adamw_warmup_constant", "word LM, AdamW 2e-3 warm-up then constant, 4 epochs",
                  adamw(2e-3), 4, scheduler=warmup_stable_decay(0.05, 0.0))
    return {
        "lmw_missing_warmup_postln": lm("lmw_twin_postln_warmup", "post-LN 3-layer word LM, Adam 2e-2, 10% warm-up "
                                        "then constant", adam(2e-2), 4, model=model(norm_first=False, depth=3),
                                        scheduler=warmup_stable_decay(0.1, 0.0)),
        "lmw_lr_too_high": healthy["lmw_healthy_adamw_warmup_linear"],
        "lmw_lr_too_low": healthy["lmw_healthy_adamw_warmup_linear"],
        "lmw_decayed_too_early_wrong_total": healthy["lmw_healthy_adamw_warmup_linear"],
        "lmw_train_longer": lm("lmw_twin_adamw_1e-3_constant", "word LM, AdamW 1e-3, warm-up then constant, 4 epochs",
                               adamw(1e-3), 4, scheduler=warmup_stable_decay(0.05, 0.0)),
        "lmw_loss_spike_lr_bump": constant,
        "lmw_divergence": healthy["lmw_healthy_postln_adam_unknown_task"],
        "lmw_overfitting_small": lm("lmw_twin_wide_all_windows", "word LM width 96 on every window, AdamW 3e-3, "
                                    "1 epoch", adamw(3e-3), 1, model=model(width=96),
                                    scheduler=warmup_stable_decay(0.05, 0.0)),
    }
