"""A 2-layer LSTM encoder-decoder with Luong attention translating human-written dates into ISO format character by character, teacher forcing, Adam with gradient-norm clipping, linear warm-up then inverse square root decay, every 5 steps (fourteenth hold-out, healthy only).

Dates made here: a day drawn uniformly from 1950-01-01 to 2049-12-31,
written in one of 8 human formats ("5 march 1987", "March 5, 1987",
"05/03/87" (day first), "1987.03.05", "thu 5 mar 1987", "5-mar-1987",
"the 5th of march 1987", "mar 05 87"), lower-cased, right-padded to 28
characters; the target is "1987-03-05" (10 characters). 6,000 training and
1,000 validation dates. One vocabulary of 44 symbols for both sides (a
pad, a start symbol, digits, letters and punctuation).

The model: embeddings of 32; an encoder of 2 LSTM layers (hidden 64); a decoder
of 2 LSTM layers (hidden 64) started from the encoder's final
states and fed the target shifted right behind the start symbol (teacher
forcing, in training and validation); Luong "general" attention of every
decoder output over the encoder outputs (pad positions masked), the
context and the decoder output concatenated through tanh(Linear) to the hidden size,
then Linear to the 44 symbols. The loss is the cross-entropy of the 10
target characters (the first loss is about ln 44 = 3.8; it ends near 0,
the task being deterministic).

The loop: batches of 64 (94 steps per epoch), 6 epochs (564 steps);
Adam (β₂ 0.98; 0.999 in one run) with the gradient norm clipped to 1
(5 in one run) before every step (the logged norm is the one before
clipping, as a probe sees it); the lr warms up linearly over 100 steps
(200 in one run), then decays as 1/√step (the Transformer's schedule,
normalised to the base lr at the end of warm-up). One run takes batches
of 32 for 4 epochs. Logged every 5 steps (every 10 in that run; the
step's values), per-layer statistics every 25 steps; val loss after
every epoch.

Why these settings (quick check by final val loss, 2026-12-01, each base
run at its lr × 1/3, × 1, × 3): Adam 3.3e-3 0.83 (over 8 epochs: still
far from done), 1e-2 0.024, 3e-2 0.024 (its val loss stuck near 1.0 for
half the run before dropping: 1e-2 chosen). At hidden 96 and 9,000 dates
the run took 3x longer for the same end, hence the smaller model; at
hidden 96 and 6,000 dates it was still far from done after 6 epochs
(0.27), so no run is wider.

Task kind recorded: language_modelling with the vocabulary of 44 (what
``Probe(vocab_size=44)`` writes for a character-level sequence model).
Fourteenth hold-out (issue #12, healthy only); see
``tests/diagnosis/make_heldout.py heldout14``.
"""

from __future__ import annotations

import datetime
import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "lstm_attention_dates"
SOURCE, TARGET = 28, 10
PAD, START = 0, 1
SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyz ,./-"
VOCAB = 2 + len(SYMBOLS) + 1  # pad, start, the symbols, one spare
INDEX = {symbol: 2 + position for position, symbol in enumerate(SYMBOLS)}
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december"]
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def written(date: datetime.date, style: int) -> str:
    month, short = MONTHS[date.month - 1], MONTHS[date.month - 1][:3]
    return [f"{date.day} {month} {date.year}", f"{month} {date.day}, {date.year}",
            f"{date.day:02d}/{date.month:02d}/{date.year % 100:02d}", f"{date.year}.{date.month:02d}.{date.day:02d}",
            f"{DAYS[date.weekday()]} {date.day} {short} {date.year}", f"{date.day}-{short}-{date.year}",
            f"the {ordinal(date.day)} of {month} {date.year}", f"{short} {date.day:02d} {date.year % 100:02d}"][style]


def encode(text: str, length: int) -> list[int]:
    codes = [INDEX[symbol] for symbol in text]
    return codes + [PAD] * (length - len(codes))


@functools.lru_cache(maxsize=None)
def dates(train: int = 6000, val: int = 1000, seed: int = 142) -> Split:
    """Inputs (N, 28 + 10): the written date then the decoder's input (start + target[:-1]); targets (N, 10)."""
    rng = np.random.default_rng(seed)
    first = datetime.date(1950, 1, 1).toordinal()
    span = datetime.date(2049, 12, 31).toordinal() - first + 1
    x, y = [], []
    for _ in range(train + val):
        date = datetime.date.fromordinal(first + int(rng.integers(span)))
        source = encode(written(date, int(rng.integers(8))), SOURCE)
        target = encode(date.isoformat(), TARGET)
        x.append(source + [START] + target[:-1])
        y.append(target)
    x, y = torch.tensor(x), torch.tensor(y)
    return Split(x[:train], y[:train], x[train:], y[train:], VOCAB)


class Seq2SeqAttention(nn.Module):
    def __init__(self, hidden: int = 64, embed: int = 32, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed, padding_idx=PAD)
        self.encoder = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.decoder = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.attend = nn.Linear(hidden, hidden, bias=False)
        self.combine = nn.Linear(2 * hidden, hidden)
        self.out = nn.Linear(hidden, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        source, decoder_in = x[:, :SOURCE], x[:, SOURCE:]
        encoded, state = self.encoder(self.embed(source))  # (B, S, H)
        decoded, _ = self.decoder(self.embed(decoder_in), state)  # (B, T, H)
        scores = torch.einsum("bth,bsh->bts", self.attend(decoded), encoded)
        scores = scores.masked_fill((source == PAD).unsqueeze(1), float("-inf"))
        context = torch.einsum("bts,bsh->bth", torch.softmax(scores, -1), encoded)
        return self.out(torch.tanh(self.combine(torch.cat([decoded, context], -1))))  # (B, T, V)


def seq2seq(hidden: int = 64):
    return lambda data: Seq2SeqAttention(hidden)


def clipped_adam(lr: float, max_norm: float = 1.0, **kwargs):
    """Adam (β₂ 0.98 unless given) clipping the gradient norm to ``max_norm`` at the start of every step."""
    def build(model: nn.Module) -> torch.optim.Optimizer:
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=lr, **({"betas": (0.9, 0.98)} | kwargs))
        def clip(optimizer, args, kwargs) -> None:
            torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        optimizer.register_step_pre_hook(clip)
        return optimizer
    return build


def warmup_inverse_sqrt(warmup: int = 100):
    """Linear warm-up over ``warmup`` steps to the base lr, then base × √(warmup / step)."""
    def multiplier(taken: int) -> float:
        step = taken + 1
        return step / warmup if step < warmup else (warmup / step) ** 0.5
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier), "step")


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="language_modelling", task_kind="language_modelling", batch_size=64,
                    attention=True, logging=Logging(every=5, layer_every=25), scheduler=warmup_inverse_sqrt(),
                    healthy=True)
    settings.update(kwargs)
    return Spec(name, description, dates, settings.pop("model", seq2seq()), optimizer, epochs, **settings)


LR = 1e-2


def specs() -> list[Spec]:
    return [
        run("dates_adam_clip_invsqrt", f"2-layer LSTM encoder-decoder with Luong attention, dates to ISO, Adam "
            f"{LR:g} (β₂ 0.98), grad-norm clip 1, 100-step warm-up then 1/√step, 6 epochs (564 steps), every 5 "
            "steps",
            clipped_adam(LR), 6),
        run("dates_adam_clip_invsqrt_seed1", f"2-layer LSTM seq2seq with attention, dates to ISO, Adam {LR:g}, clip "
            "1, warm-up then 1/√step, 6 epochs, seed 1", clipped_adam(LR), 6, seed=1),
        run("dates_adam_clip5_warmup200_seed2", f"2-layer LSTM seq2seq with attention, dates to ISO, Adam {LR:g}, "
            "clip 5, 200-step warm-up then 1/√step, 6 epochs, seed 2", clipped_adam(LR, 5.0), 6, seed=2,
            scheduler=warmup_inverse_sqrt(200)),
        run("dates_beta999_seed3", f"2-layer LSTM seq2seq with attention, dates to ISO, Adam {LR:g} (β₂ 0.999), "
            "clip 1, warm-up then 1/√step, 6 epochs, seed 3", clipped_adam(LR, betas=(0.9, 0.999)), 6, seed=3),
        run("dates_batch32_every10_seed4", f"2-layer LSTM seq2seq with attention, dates to ISO, batches of 32, Adam "
            f"{LR:g}, clip 1, warm-up then 1/√step, 4 epochs (752 steps), every 10 steps, seed 4",
            clipped_adam(LR), 4, seed=4, batch_size=32, logging=Logging(every=10, layer_every=50)),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
