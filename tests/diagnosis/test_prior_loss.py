"""End to end: a classifier whose loss never leaves the class-prior level (no_better_than_baseline's loss test).

Labels that do not belong to their inputs are the classic data bug: the
loss stays at the class-prior loss H (ln C for balanced classes) however
long the run trains, while its accuracy, pulled up by chance and the class
shares, can sit clearly above the majority share (0.26 against 0.10 on the
digits). Before the loss test such a run got "no problem found".

Four programs, none of them in the corpus, each trained twice under the
real Probe: with its labels decoupled from its inputs in a different way
(labels shuffled inside each batch; each batch given the previous batch's labels;
labels shuffled inside each batch with no evaluation at all, so only the
training loss can tell; labels of a different sample drawn each epoch) and
as written. The broken runs get ``no_better_than_baseline`` as the verdict's
cause; their twins do not get it.
"""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine

from traindoctor import Probe
from traindoctor.api import diagnose
from traindoctor.diagnosis.generalisation import PRIOR_LOSS_SHARE, class_prior_loss
from traindoctor.diagnosis.verdict import verdict

pytestmark = pytest.mark.slow


def _tensors(load, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load()
    x = torch.tensor(data.data, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[order], torch.tensor(data.target)[order]


def _train(store, name: str, broken: bool, program: str):
    """Train ``program`` (broken or as written) under the Probe into ``store``; its findings and verdict."""
    torch.manual_seed(1)
    if program == "digits_mlp_sgd":        # labels shuffled inside each batch, val evaluated
        x, y = _tensors(load_digits, 0)
        classes, epochs, batch = 10, 6, 64
        model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    elif program == "digits_cnn_adamw":    # each batch trained on the previous batch's labels
        x, y = _tensors(load_digits, 1)
        x = x.reshape(-1, 1, 8, 8)
        classes, epochs, batch = 10, 5, 32
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                    torch.nn.Linear(8 * 64, 10))
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    elif program == "cancer_no_eval_adam":  # labels shuffled inside each batch, never evaluated
        x, y = _tensors(load_breast_cancer, 2)
        classes, epochs, batch = 2, 12, 32
        model = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:                                   # wine_rmsprop: each epoch pairs every input with a random label
        x, y = _tensors(load_wine, 3)
        classes, epochs, batch = 3, 40, 16
        model = torch.nn.Sequential(torch.nn.Linear(13, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
        optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    split = int(0.75 * len(x))
    (x_train, y_train), (x_val, y_val) = (x[:split], y[:split]), (x[split:], y[split:])
    criterion = torch.nn.CrossEntropyLoss()
    with Probe(run=name, store=store, num_classes=classes, layer_every=10) as probe:
        probe.watch(model, optimizer)
        for epoch in range(epochs):
            model.train()
            labels = y_train[torch.randperm(len(y_train))] if broken and program == "wine_rmsprop" else y_train
            order = torch.randperm(len(x_train))
            for start in range(0, len(order) - batch + 1, batch):  # whole batches only
                index = order[start:start + batch]
                xb, yb = x_train[index], labels[index]
                if broken and program in ("digits_mlp_sgd", "cancer_no_eval_adam"):
                    yb = yb[torch.randperm(len(yb))]
                if broken and program == "digits_cnn_adamw":
                    yb, previous = (previous if start else labels[order[-batch:]]), yb
                optimizer.zero_grad()
                loss = criterion(model(xb), yb)
                loss.backward()
                optimizer.step()
                probe.step(loss=loss, epoch=epoch)
            if program != "cancer_no_eval_adam":
                model.eval()
                with torch.no_grad(), probe.evaluate("val") as ev:
                    logits = model(x_val)
                    ev.update(logits, y_val, loss=criterion(logits, y_val))
    findings = diagnose(name, store=store, strict=True)
    return findings, verdict(findings)


PROGRAMS = ["digits_mlp_sgd", "digits_cnn_adamw", "cancer_no_eval_adam", "wine_rmsprop"]


@pytest.mark.parametrize("program", PROGRAMS)
def test_labels_unrelated_to_inputs_are_named_and_the_healthy_twin_is_not(program, tmp_path):
    store = tmp_path / "runs"
    findings, top = _train(store, f"{program}-broken", True, program)
    assert top is not None and top.rule == "no_better_than_baseline", [(f.rule, f.message) for f in findings]
    twin, _ = _train(store, f"{program}-healthy", False, program)
    assert "no_better_than_baseline" not in {f.rule for f in twin}, [(f.rule, f.message) for f in twin]


def test_the_class_prior_loss_is_the_entropy_of_the_class_shares_or_ln_c():
    """H from the last evaluation's confusion counts; ln C without them; None for a non-classifier or
    a loss the user says is not a plain cross-entropy."""
    import math

    import pandas as pd

    from traindoctor.store.run_data import RunData

    confusion = pd.DataFrame({"step": [10] * 2, "split": ["val"] * 2, "true_class": [0, 1], "pred_class": [0, 0],
                              "count": [75, 25]})
    run = RunData("r", "r", task={"kind": "classification", "num_classes": 2}, confusion=confusion)
    entropy, how = class_prior_loss(run)
    assert entropy == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))) and "val" in how
    assert class_prior_loss(RunData("r", "r", task={"num_classes": 4}))[0] == pytest.approx(math.log(4))
    assert class_prior_loss(RunData("r", "r", task={"kind": "regression"})) is None
    assert class_prior_loss(RunData("r", "r", task={"num_classes": 4, "expected_initial_loss": 0.4})) is None
    assert 0.5 < PRIOR_LOSS_SHARE < 1
