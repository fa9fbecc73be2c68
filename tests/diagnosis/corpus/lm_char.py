"""Character-level language modelling with a tiny decoder-only transformer, logged like HF Trainer.

Text from an character model with a one-token memory over 32 symbols (made here, 100,000
tokens); windows of 32 tokens, batches of 16; the loss is the mean over the window's tokens,
logged every 5 optimizer steps as the mean since the previous record (HF
Trainer's logging_steps), with the lr and gradient norm; val loss every 50
steps. Task: language modelling, V = 32 (one run says nothing).
"""

from __future__ import annotations

import functools

import torch

from tests.diagnosis.corpus.common import adamw as common_adamw
from tests.diagnosis.corpus.common import (CausalLM, bump_at, decay_at, make, markov_table, markov_text, scale_head,
                                           token_windows, warmup_cosine, warmup_linear, warmup_stable_decay)
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "lm_char_transformer"
VOCAB, CONTEXT = 32, 32
LOGGING = Logging(every=5, mean=True, layer_every=20)


@functools.lru_cache(maxsize=None)
def text(limit: int | None = None) -> Split:
    tokens = markov_text(markov_table(VOCAB, seed=11), 100_000, seed=12)
    return token_windows(tokens, CONTEXT, 0.1, VOCAB, train_limit=limit)


def model(norm_first: bool = True, width: int = 32, depth: int = 1):
    return lambda data: CausalLM(VOCAB, CONTEXT, width=width, depth=depth, norm_first=norm_first)


def lm(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling", logging=LOGGING,
                    attention=True, eval_every=50, batch_size=16)
    settings.update(kwargs)
    return Spec(name, description, text, settings.pop("model", model()), optimizer, epochs, **settings)


def adamw(lr: float, **kwargs):
    return common_adamw(lr, weight_decay=0.1, betas=(0.9, 0.98), **kwargs)


DIVERGED_ALLOW = ["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "missing_warmup",
                  "best_epoch_not_last", "dead_layers", "underfitting", "overfitting"]


def specs() -> list[Spec]:
    everywhere = None
    return [
        lm("lm_char_healthy_adamw_warmup_cosine", "pre-LN char LM, AdamW 3e-3, 5% warm-up + cosine to 0",
           adamw(3e-3), 4, scheduler=warmup_cosine(0.05), healthy=True),
        lm("lm_char_healthy_adam_warmup_linear", "pre-LN char LM, Adam 2e-3, 6% warm-up + linear decay",
           make(torch.optim.Adam, 2e-3, betas=(0.9, 0.98)), 4, scheduler=warmup_linear(0.06), healthy=True),
        lm("lm_char_healthy_wsd_unknown_task",
           "pre-LN char LM, AdamW 3e-3, warm-up-stable-decay, no task kind recorded",
           adamw(3e-3), 4, scheduler=warmup_stable_decay(0.05, 0.2), task_kind="unknown", healthy=True),
        lm("lm_char_healthy_radam_constant", "pre-LN char LM, RAdam 1e-3 constant (RAdam needs no warm-up)",
           make(torch.optim.RAdam, 1e-3), 4, healthy=True),
        lm("lm_char_missing_warmup_postln", "post-LN char LM, Adam 3e-2 from step 1 (no warm-up)",
           make(torch.optim.Adam, 3e-2), 2, model=model(norm_first=False, depth=2),
           expect={"missing_warmup": [1, 100]},
           allow=["lr_too_high", "adam_hyperparameters", "loss_spike", "underfitting", "best_epoch_not_last",
                  "exploding_gradients", "update_ratio_out_of_band"]),
        lm("lm_char_lr_too_high", "pre-LN char LM, AdamW 1e-1 after warm-up, constant (30× the working lr)",
           adamw(1e-1), 4, scheduler=warmup_stable_decay(0.05, 0.0),
           expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
           allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "underfitting",
                  "exploding_gradients", "missing_warmup"]),
        lm("lm_char_lr_too_low", "pre-LN char LM, AdamW 2e-5 with warm-up and cosine",
           adamw(2e-5), 4, scheduler=warmup_cosine(0.05),
           expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
           allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        lm("lm_char_decayed_too_early", "pre-LN char LM, AdamW 3e-3, lr x0.001 after 8% of training",
           adamw(3e-3), 4, scheduler=decay_at(0.08, 1e-3),
           expect={"decayed_too_early": [40, 140]}, forbid=["lr_too_high"],
           allow=["update_ratio_out_of_band", "underfitting", "lr_too_low"]),
        lm("lm_char_loss_spike_lr_bump", "pre-LN char LM, AdamW 2e-3, lr x40 for 5 steps at step 400",
           adamw(2e-3), 4, scheduler=bump_at(400, 5, 40.0),
           expect={"loss_spike": [395, 470]}, forbid=["divergence"],
           allow=["exploding_gradients", "best_epoch_not_last", "update_ratio_out_of_band", "lr_too_high"]),
        lm("lm_char_divergence", "post-LN char LM, SGD momentum 0.9 lr 30: weights blow up",
           make(torch.optim.SGD, 30.0, momentum=0.9), 1, model=model(norm_first=False),
           expect={"divergence": everywhere}, allow=DIVERGED_ALLOW),
        lm("lm_char_train_longer", "pre-LN char LM, AdamW 3e-4 constant, stopped after 1 of 4 epochs",
           adamw(3e-4), 1, eval_every=25,
           expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
           allow=["lr_too_low", "underfitting"]),
        lm("lm_char_bad_initial_loss", "pre-LN char LM whose output layer is x20 at init, AdamW 3e-3 + cosine",
           adamw(3e-3), 4, scheduler=warmup_cosine(0.05), prepare=scale_head(20.0),
           expect={"bad_initial_loss": [1, 10]}, allow=["loss_spike", "exploding_gradients"]),
    ]
