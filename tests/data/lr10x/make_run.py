"""Regenerate ``store/``: a digits classifier trained with its lr 10× too high, recorded by the real probe.

An MLP 64-128-10 on sklearn's 8×8 digits (1,400 train, 397 val images),
SGD with momentum 0.9 at lr 1.0 where 0.1 trains well, batch 32, 10 epochs
(440 optimizer steps), seed 1. The huge steps kill the hidden ReLUs within
~150 steps: accuracy falls to the majority-class share and the update
ratios of the dead layers to ~1e-7. Issue #17: the verdict must be
``lr_too_high`` (not "no better than the majority class"), and its evidence
must not quote the dead layers' tiny update ratios as the lr's.

Usage::

    python tests/data/lr10x/make_run.py      # about 2 s on a CPU
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

from traindoctor import Probe

STORE = Path(__file__).resolve().parent / "store"
RUN_NAME = "digits-lr10x"
LR = 1.0  # 10× the 0.1 that trains this model well
SEED = 1
EPOCHS = 10
BATCH = 32


def main() -> None:
    shutil.rmtree(STORE, ignore_errors=True)
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)  # (1797, 64), pixels in [0, 1]
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=generator)
    train, val = order[:1400], order[1400:]
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    config = {"lr": LR, "momentum": 0.9, "optimizer": "SGD", "batch_size": BATCH, "epochs": EPOCHS, "seed": SEED}
    with Probe(run=RUN_NAME, store=STORE, config=config, num_classes=10) as probe:
        probe.watch(model, optimizer)
        for epoch in range(EPOCHS):
            model.train()
            shuffled = train[torch.randperm(len(train), generator=generator)]
            for start in range(0, len(shuffled), BATCH):
                batch = shuffled[start:start + BATCH]
                loss = criterion(model(x[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                probe.step(loss=loss, epoch=epoch)
            model.eval()
            with torch.no_grad(), probe.evaluate("val") as evaluation:
                logits = model(x[val])
                evaluation.update(logits, y[val], loss=criterion(logits, y[val]))
            model.train()


if __name__ == "__main__":
    main()
