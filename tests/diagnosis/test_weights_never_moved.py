"""End to end: weights that never move under the real Probe (dead_layers' still-weights finding).

A 64-32-10 MLP on scikit-learn's digits (the README's quick start: Adam at
lr 3e-3, batches of 64), trained 44 optimizer steps with per-layer
statistics every 10 steps, four ways: with ``optimizer.zero_grad()`` between
``loss.backward()`` and ``optimizer.step()`` (the user's bug: the probe's
hooks see the gradients, the step sees none), with the optimizer built over
a copy of the model, as written (healthy), and with the first layer frozen
on purpose (``requires_grad_(False)``, optimizer over the rest).
"""

from __future__ import annotations

import copy

import pytest
import torch
from sklearn.datasets import load_digits

from traindoctor import Probe
from traindoctor.api import diagnose
from traindoctor.diagnosis.verdict import verdict

pytestmark = pytest.mark.slow

EPOCHS = 2  # 22 batches of 64 an epoch: 44 optimizer steps


def train(variant: str, store) -> list:
    """One run of ``variant`` recorded into ``store``; its findings."""
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x))
    x, y = x[order], y[order]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:1400], y[:1400]), batch_size=64,
                                         shuffle=True)
    val = (x[1400:], y[1400:])
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    if variant == "frozen_first_layer":
        model[0].requires_grad_(False)
        optimizer = torch.optim.Adam(model[2].parameters(), lr=3e-3)
    elif variant == "optimizer_over_a_copy":
        optimizer = torch.optim.Adam(copy.deepcopy(model).parameters(), lr=3e-3)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    criterion = torch.nn.CrossEntropyLoss()
    with Probe(run=variant, store=store, num_classes=10, layer_every=10) as probe:
        probe.watch(model, optimizer)
        for epoch in range(EPOCHS):
            model.train()
            for xb, yb in loader:
                if variant != "zero_grad_before_step":
                    optimizer.zero_grad()
                loss = criterion(model(xb), yb)
                loss.backward()
                if variant == "zero_grad_before_step":
                    optimizer.zero_grad()  # the bug: the step below sees no gradient
                optimizer.step()
                probe.step(loss=loss, epoch=epoch)
            model.eval()
            with torch.no_grad(), probe.evaluate("val") as ev:
                logits = model(val[0])
                ev.update(logits, val[1], loss=criterion(logits, val[1]))
    return diagnose(variant, store=store, strict=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("still_weights")


@pytest.mark.parametrize("variant", ["zero_grad_before_step", "optimizer_over_a_copy"])
def test_weights_that_never_move_are_the_verdict(store, variant):
    findings = train(variant, store)
    found = verdict(findings)
    assert (found.rule, found.severity) == ("dead_layers", "critical"), [(f.rule, f.severity) for f in findings]
    assert "never moved" in found.sentence
    head = findings[0]
    assert head.evidence["still"] is True and len(head.evidence["layers"]) == 4
    if variant == "zero_grad_before_step":
        # The gradients the probe saw were real: the step threw them away.
        assert min(head.evidence["grad_norm"].values()) > 0.01 and head.evidence["records"] >= 4
        assert "zero_grad()" in found.try_first
    # The symptom the user was told before: folded under its cause.
    assert all(f.explained_by == "dead_layers" for f in findings if f.rule == "no_better_than_baseline")


@pytest.mark.parametrize("variant", ["healthy", "frozen_first_layer"])
def test_runs_whose_optimizer_steps_update_stay_quiet(store, variant):
    findings = train(variant, store)
    assert [f for f in findings if f.rule == "dead_layers"] == []
    assert all(f.severity != "critical" for f in findings), [(f.rule, f.severity) for f in findings]
