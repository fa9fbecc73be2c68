"""Fine-tuning a pre-trained character language model on text of a related source, logged every step.

The model (the lm_char family's tiny decoder-only transformer) is
pre-trained here on one character source with a one-token memory (500 AdamW steps, not
recorded); each run fine-tunes it on text of a source half changed, with
the loss, lr and gradient norm every step and val once per epoch. Task:
language modelling, V = 32 (one run says nothing).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from tests.diagnosis.corpus.common import adamw as common_adamw
from tests.diagnosis.corpus.common import (CausalLM, bump_at, cosine_to_zero, decay_at, make, markov_table,
                                           markov_text, token_windows, warmup_linear)
from tests.diagnosis.make_corpus import Spec, Split

FAMILY = "lm_finetune"
VOCAB, CONTEXT = 32, 32


def source(pretraining: bool) -> np.ndarray:
    table = markov_table(VOCAB, seed=21)
    if not pretraining:
        other = markov_table(VOCAB, seed=22)
        changed = np.random.default_rng(23).random(VOCAB) < 0.5
        table = np.where(changed[:, None], other, table)
    return table


@functools.lru_cache(maxsize=None)
def fine_tuning_text(train_limit: int | None = None) -> Split:
    return token_windows(markov_text(source(False), 40_000, seed=24), CONTEXT, 0.15, VOCAB, train_limit=train_limit)


@functools.lru_cache(maxsize=1)
def pretrained_state() -> dict[str, torch.Tensor]:
    """The model after pre-training on the first source (the 'checkpoint' every run starts from)."""
    torch.manual_seed(200)
    generator = torch.Generator().manual_seed(200)
    data = token_windows(markov_text(source(True), 60_000, seed=25), CONTEXT, 0.0, VOCAB)
    model = CausalLM(VOCAB, CONTEXT, width=32, depth=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    for step in range(500):
        for group in optimizer.param_groups:
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 25)
        index = torch.randint(0, len(data.y_train), (16,), generator=generator)
        logits = model(data.x_train[index])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), data.y_train[index].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def pretrained(data: Split) -> CausalLM:
    model = CausalLM(VOCAB, CONTEXT, width=32, depth=1)
    model.load_state_dict(pretrained_state())
    return model


def finetune(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling", attention=True,
                    batch_size=16)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", fine_tuning_text), pretrained, optimizer, epochs, **settings)


def adamw(lr: float):
    return common_adamw(lr, weight_decay=0.01)


def specs() -> list[Spec]:
    everywhere = None
    return [
        finetune("lmft_healthy_adamw_warmup_linear", "fine-tune, AdamW 1e-3, warm-up + linear decay, 5 epochs",
                 adamw(1e-3), 5, scheduler=warmup_linear(0.06), healthy=True),
        finetune("lmft_healthy_adam_constant", "fine-tune, Adam 3e-4 constant, 5 epochs",
                 make(torch.optim.Adam, 3e-4), 5, healthy=True),
        finetune("lmft_healthy_cosine_unknown_task", "fine-tune, AdamW 1e-3 cosine to 0, no task kind", adamw(1e-3), 5,
                 scheduler=cosine_to_zero(), task_kind="unknown", healthy=True),
        finetune("lmft_overfitting_tiny_set", "fine-tune on 24 windows, AdamW 3e-3, 80 epochs", adamw(3e-3), 80,
                 data=lambda: fine_tuning_text(train_limit=24),
                 expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
                 forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
        finetune("lmft_lr_too_high", "fine-tune, AdamW 0.3 constant (forgets the pre-training, stays high)",
                 adamw(0.3), 5,
                 expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
                 allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "underfitting",
                        "exploding_gradients", "divergence", "missing_warmup"]),
        finetune("lmft_decayed_too_early", "fine-tune, AdamW 1e-3, lr x0.001 after 5% of training", adamw(1e-3), 5,
                 scheduler=decay_at(0.05, 1e-3),
                 expect={"decayed_too_early": [10, 40]}, forbid=["lr_too_high"],
                 allow=["update_ratio_out_of_band", "underfitting", "lr_too_low"]),
        finetune("lmft_loss_spike_lr_bump", "fine-tune, AdamW 1e-3, lr x150 for 4 steps at step 200", adamw(1e-3), 5,
                 scheduler=bump_at(200, 4, 150.0),
                 expect={"loss_spike": [198, 240]}, forbid=["divergence"],
                 allow=["exploding_gradients", "best_epoch_not_last", "update_ratio_out_of_band", "lr_too_high"]),
    ]
