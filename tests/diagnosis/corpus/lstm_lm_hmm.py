"""A word-level LSTM language model on text from a hidden Markov model, clipped SGD, logged every 50 steps (third hold-out).

Text made here by a hidden Markov model: 16 hidden states with sparse
transitions (Dirichlet 0.1 rows), each emitting words Zipf-like from its
own set of 60 of the 400 words (the sets overlap), 60,000 tokens. Windows
of 35 tokens (back-propagation through time 35, no state carried between
windows; 10 % held out), batches of 20 (78 steps per epoch). An embedding
of width 64, one LSTM layer of 64 units and a linear decoder tied to the
embedding (PyTorch's word_language_model example, scaled down). SGD with
the gradient norm clipped to 0.25 (the clipping is part of the optimizer
step; the gradient norm is logged before it), ASGD, Adagrad and Adam;
ReduceLROnPlateau (×0.25 whenever the val loss does not improve, as the
example anneals), cosine and warm-up + linear decay schedules. Logged as
the example's ``log_interval``: every 50 steps the mean loss since the
previous record, with the lr and gradient norm of that step; per-layer
statistics every 50 steps; val loss once per epoch. Task: language
modelling, V = 400 (one run says nothing).

Third hold-out (issue #12); see ``unet_signals.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import cosine_to_zero, make, plateau, step_lr, token_windows, warmup_linear
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "lstm_lm_hmm"
LOGGING = Logging(every=50, mean=True, layer_every=50)
VOCAB, STATES, CONTEXT = 400, 16, 35


@functools.lru_cache(maxsize=None)
def hmm_text(length: int = 60_000, seed: int = 51) -> np.ndarray:
    """``length`` tokens (length,) int64 in 0..VOCAB-1 sampled from the hidden Markov model."""
    rng = np.random.default_rng(seed)
    transitions = rng.dirichlet(np.full(STATES, 0.1), size=STATES)  # (S, S)
    emissions = np.zeros((STATES, VOCAB))
    for state in range(STATES):
        words = rng.choice(VOCAB, size=60, replace=False)
        emissions[state, words] = 1.0 / np.arange(1, 61) ** 1.1
    emissions /= emissions.sum(1, keepdims=True)
    state_draws, word_draws = rng.random(length), rng.random(length)
    cumulative_transitions, cumulative_emissions = transitions.cumsum(1), emissions.cumsum(1)
    tokens = np.empty(length, dtype=np.int64)
    state = 0
    for position in range(length):
        state = min(int(np.searchsorted(cumulative_transitions[state], state_draws[position])), STATES - 1)
        tokens[position] = min(int(np.searchsorted(cumulative_emissions[state], word_draws[position])), VOCAB - 1)
    return tokens


@functools.lru_cache(maxsize=None)
def text(train_limit: int | None = None) -> Split:
    """Windows of CONTEXT tokens and their next tokens, (N, CONTEXT) each; ``num_classes`` = VOCAB."""
    return token_windows(hmm_text(), CONTEXT, 0.1, VOCAB, train_limit=train_limit)


class LSTMLanguageModel(nn.Module):
    """(B, T) tokens → (B, T, V) next-token logits; the decoder shares the embedding's weights when ``tied``."""

    def __init__(self, vocab: int = VOCAB, width: int = 64, tied: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, width, batch_first=True)
        self.decoder = nn.Linear(width, vocab)
        if tied:
            self.decoder.weight = self.embed.weight
        with torch.no_grad():
            self.embed.weight.uniform_(-0.1, 0.1)
            self.decoder.bias.zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.embed(tokens))
        return self.decoder(hidden)


def lstm(width: int = 64, tied: bool = True):
    return lambda data: LSTMLanguageModel(data.num_classes, width, tied)


def clipped(build, max_norm: float | None):
    """The optimizer ``build`` makes, clipping the gradient norm to ``max_norm`` at the start of every step."""
    def make_clipped(model: nn.Module) -> torch.optim.Optimizer:
        optimizer = build(model)
        if max_norm is not None:
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            def clip(optimizer, args, kwargs) -> None:
                torch.nn.utils.clip_grad_norm_(parameters, max_norm)
            optimizer.register_step_pre_hook(clip)
        return optimizer
    return make_clipped


def sgd(lr: float, clip: float | None = 0.25):
    return clipped(make(torch.optim.SGD, lr), clip)


def asgd(lr: float, clip: float | None = 0.25):
    return clipped(make(torch.optim.ASGD, lr, t0=500), clip)


def adagrad(lr: float, clip: float | None = 0.25):
    return clipped(make(torch.optim.Adagrad, lr), clip)


def adam(lr: float, clip: float | None = 1.0):
    return clipped(make(torch.optim.Adam, lr), clip)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling", logging=LOGGING,
                    batch_size=20, probe_layout=True)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", text), settings.pop("model", lstm()), optimizer, epochs,
                **settings)


DIVERGED_ALLOW = ["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                  "best_epoch_not_last", "underfitting", "overfitting", "no_better_than_baseline", "bad_initial_loss"]


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("lstm_healthy_sgd_clip_plateau", "LSTM LM, SGD lr 10 clipped at 0.25, ReduceLROnPlateau x0.25 patience 0, "
            "12 epochs", sgd(10.0), 12, scheduler=plateau(0.25, 0), healthy=True),
        run("lstm_healthy_asgd", "LSTM LM, ASGD lr 10 clipped at 0.25 (averaging from step 500), 12 epochs",
            asgd(10.0), 12, healthy=True),
        run("lstm_healthy_adagrad", "LSTM LM, Adagrad lr 0.03 clipped at 0.25, 12 epochs", adagrad(0.03), 12,
            healthy=True),
        run("lstm_healthy_adam_warmup_linear", "LSTM LM, Adam 3e-3 clipped at 1, 6% warm-up then linear decay to 0, "
            "12 epochs", adam(3e-3), 12, scheduler=warmup_linear(0.06), healthy=True),
        run("lstm_healthy_sgd_cosine_unknown_task", "LSTM LM, SGD lr 10 clipped at 0.25, cosine to 0, 12 epochs, no "
            "task kind", sgd(10.0), 12, scheduler=cosine_to_zero(), task_kind="unknown", healthy=True),
        run("lstm_lr_too_high_sgd", "LSTM LM, SGD lr 80 clipped at 0.25 (8x the working lr), constant, 12 epochs",
            sgd(80.0), 12,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "missing_warmup"]),
        run("lstm_lr_too_low_sgd", "LSTM LM, SGD lr 0.1 clipped at 0.25 (1/100 of the working lr), "
            "ReduceLROnPlateau x0.25 patience 0, 12 epochs", sgd(0.1), 12, scheduler=plateau(0.25, 0),
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("lstm_decayed_too_early_steplr_every_epoch", "LSTM LM, SGD lr 10 clipped at 0.25, StepLR x0.1 every epoch "
            "(step_size 1 where 10 was meant: lr 1 after epoch 1, 0.1 after epoch 2), 12 epochs", sgd(10.0), 12,
            scheduler=step_lr(1, 0.1),
            expect={"decayed_too_early": [60, 260]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low"]),
        run("lstm_divergence_sgd_no_clip", "LSTM LM, SGD lr 100 without gradient clipping, 6 epochs", sgd(100.0, None),
            6, expect={"divergence": everywhere, "exploding_gradients": everywhere}, allow=DIVERGED_ALLOW),
        run("lstm_overfitting_small_text", "LSTM LM width 256, decoder not tied, on 40 windows (1,400 tokens), Adam "
            "3e-3 clipped at 1, constant, 300 epochs (2 steps each), val every 20 steps", adam(3e-3), 300,
            data=lambda: text(train_limit=40), model=lstm(256, tied=False), eval_every=20,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
        run("lstm_underfitting_width_2", "LSTM LM of width 2 (embedding and LSTM), Adam 3e-3 clipped at 1, 6% warm-up "
            "then linear decay, 12 epochs", adam(3e-3), 12, model=lstm(2), scheduler=warmup_linear(0.06),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        run("lstm_train_longer", "LSTM LM, Adam 1e-3 clipped at 1, constant, stopped after 2 of 12 epochs, val every "
            "20 steps", adam(1e-3), 2, eval_every=20,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    return {
        "lstm_lr_too_high_sgd": run("lstm_twin_sgd_clip_constant", "LSTM LM, SGD lr 10 clipped at 0.25, constant, "
                                    "12 epochs", sgd(10.0), 12),
        "lstm_lr_too_low_sgd": healthy["lstm_healthy_sgd_clip_plateau"],
        "lstm_decayed_too_early_steplr_every_epoch": run("lstm_twin_steplr_every_10_epochs", "LSTM LM, SGD lr 10 "
                                                         "clipped at 0.25, StepLR x0.1 every 10 epochs, 12 epochs",
                                                         sgd(10.0), 12, scheduler=step_lr(10, 0.1)),
        "lstm_divergence_sgd_no_clip": run("lstm_twin_sgd_clip_100_6_epochs", "LSTM LM, SGD lr 100 clipped at 0.25, "
                                           "constant, 6 epochs", sgd(100.0), 6),
        "lstm_overfitting_small_text": run("lstm_twin_wide_all_text", "LSTM LM width 256, decoder not tied, on all "
                                           "the text, Adam 3e-3 clipped at 1, constant, 6 epochs", adam(3e-3), 6,
                                           model=lstm(256, tied=False)),
        "lstm_underfitting_width_2": healthy["lstm_healthy_adam_warmup_linear"],
        "lstm_train_longer": run("lstm_twin_adam_1e-3", "LSTM LM, Adam 1e-3 clipped at 1, constant, 12 epochs, val "
                                 "every 20 steps", adam(1e-3), 12, eval_every=20),
    }
