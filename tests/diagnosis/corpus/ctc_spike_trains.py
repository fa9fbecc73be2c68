"""A convolutional + bidirectional-LSTM recogniser transcribing synthetic multi-channel spike trains into symbol strings with the CTC loss, AdamW one-cycle / Adam multi-step / Nesterov SGD cosine, every 10 steps (eleventh hold-out, healthy only).

Recordings made here: 48 frames of spike counts on 8 channels. A recording
spells 2 to 4 symbols out of 6; each symbol is a burst lasting 5 to 9
frames during which its own 3 channels fire at a Poisson rate of 2.5 per
frame (the rest at the background 0.4), separated by 0 to 3 silent
frames, at a random offset. Inputs are log(1 + counts); the target is the
symbol string (1 to 6, padded with 0, the CTC blank). 6,000 training and
1,000 validation recordings.

The model: a 1-D convolution (8 → 32 channels, kernel 5, ReLU), a one-layer
bidirectional LSTM of 48 per direction, a linear layer to 7 classes (blank
and the 6 symbols) per frame; ``F.ctc_loss`` (mean over the batch of each
string's loss divided by its length) on the frame log-probabilities, every
frame valid. Batches of 64 (94 steps per epoch), 8 to 12 epochs.

Logged every 10 steps (the step's loss, lr and gradient norm), per-layer
statistics every 50 steps; val CTC loss after every epoch.

Why these settings (quick check by final val CTC loss, 2026-11-30, each
base run at its lr × 1/3, × 1, × 3). A CTC model first learns to emit only
blanks (a plateau near 2.3 here) and then breaks out; the lr decides how
soon:
- AdamW with one-cycle, 10 epochs: 1e-3 1.9354 (still on the blank
  plateau), 3e-3 0.3249, 9e-3 0.1031, 1e-2 0.1032, 3e-2 0.1230: 1e-2
  (the best val loss at the last epoch in every run).
- Adam, lr × 0.3 after epochs 6 and 9, 12 epochs: 1e-3 0.9919, 3e-3
  0.1337, 9e-3 0.2246: 3e-3. (Adam 3e-3 with ReduceLROnPlateau (0.5,
  patience 1) instead ended on an evaluation 30 % above its best one,
  0.1170 against 0.0887: that run was replaced by the step schedule.)
- SGD Nesterov 0.9, cosine to 0, 12 epochs: 0.033 0.0981, 0.1 0.0723, 0.3
  2.3137 (blows up in the first steps and stays on the blank plateau): 0.1.

No task kind recorded (``task_kind="unknown"``).
Eleventh hold-out (issue #12); see ``softmax_lbfgs_tabular.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.corpus import common
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "ctc_spike_trains"
LOGGING = Logging(every=10, layer_every=50)
SYMBOLS, CHANNELS, FRAMES, LONGEST = 6, 8, 48, 4


@functools.lru_cache(maxsize=None)
def recordings(train: int = 6000, val: int = 1000, seed: int = 113) -> Split:
    rng = np.random.default_rng(seed)
    channels_of = np.stack([rng.choice(CHANNELS, 3, replace=False) for _ in range(SYMBOLS)])
    n = train + val
    rates = np.full((n, CHANNELS, FRAMES), 0.4)
    targets = np.zeros((n, LONGEST), dtype=np.int64)
    for i in range(n):
        count = rng.integers(2, LONGEST + 1)
        symbols = rng.integers(0, SYMBOLS, count)
        lengths = rng.integers(5, 10, count)
        gaps = rng.integers(0, 4, count)
        used = int(lengths.sum() + gaps.sum())
        t = int(rng.integers(0, FRAMES - used + 1))
        for symbol, length, gap in zip(symbols, lengths, gaps):
            rates[i, channels_of[symbol], t:t + length] = 2.5
            t += int(length + gap)
        targets[i, :count] = symbols + 1
    x = np.log1p(rng.poisson(rates)).astype(np.float32)
    x, y = torch.tensor(x), torch.tensor(targets)
    return Split(x[:train], y[:train], x[train:], y[train:], SYMBOLS + 1)


class Recogniser(nn.Module):
    def __init__(self, hidden: int = 48):
        super().__init__()
        self.conv = nn.Conv1d(CHANNELS, 32, 5, padding=2)
        self.lstm = nn.LSTM(32, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, SYMBOLS + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(F.relu(self.conv(x)).transpose(1, 2))  # (B, T, 2H)
        return self.out(hidden).log_softmax(-1)  # (B, T, C)


def recogniser(hidden: int = 48):
    return lambda data: Recogniser(hidden)


def ctc(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    lengths = (targets > 0).sum(1)
    frames = torch.full((log_probs.shape[0],), log_probs.shape[1], dtype=torch.long)
    return F.ctc_loss(log_probs.transpose(0, 1), targets[targets > 0], frames, lengths, blank=0)


def one_cycle():
    return common.one_cycle()


def multistep_epochs(milestones=(6, 9), gamma: float = 0.3):
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma), "epoch")


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", logging=LOGGING, batch_size=64,
                    probe_layout=True, loss=ctc, healthy=True)
    settings.update(kwargs)
    return Spec(name, description, recordings, settings.pop("model", recogniser()), optimizer, epochs, **settings)


def specs() -> list[Spec]:
    return [
        run("ctc_adamw_one_cycle", "conv-BiLSTM CTC recogniser of spike trains, AdamW 1e-2 (wd 0.01, not on "
            "biases), one-cycle, 10 epochs (940 steps)", common.adamw(1e-2), 10, scheduler=one_cycle()),
        run("ctc_adamw_one_cycle_seed1", "conv-BiLSTM CTC recogniser, AdamW 1e-2, one-cycle, 10 epochs, seed 1",
            common.adamw(1e-2), 10, scheduler=one_cycle(), seed=1),
        run("ctc_adam_multistep", "conv-BiLSTM CTC recogniser, Adam 3e-3, lr x0.3 after epochs 6 and 9, "
            "12 epochs (1,128 steps)", common.make(torch.optim.Adam, 3e-3), 12, scheduler=multistep_epochs()),
        run("ctc_nesterov_cosine_seed2", "conv-BiLSTM CTC recogniser, SGD Nesterov momentum 0.9 lr 0.1, cosine to "
            "0, 12 epochs, seed 2", common.make(torch.optim.SGD, 0.1, momentum=0.9, nesterov=True), 12,
            scheduler=common.cosine_to_zero(), seed=2),
        run("ctc_adamw_64_one_cycle_seed3", "conv-BiLSTM (64 per direction) CTC recogniser, AdamW 1e-2, one-cycle, "
            "8 epochs (752 steps), seed 3", common.adamw(1e-2), 8, model=recogniser(64), scheduler=one_cycle(),
            seed=3),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
