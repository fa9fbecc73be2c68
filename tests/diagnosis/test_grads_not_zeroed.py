"""Gradients never zeroed between optimizer steps: the probe's ``grads_not_zeroed`` event and the critical
``exploding_gradients`` finding it makes the verdict, with what it causes folded under it.

Such a run thrashes like one with too high an lr, and was told to lower the lr (a digits MLP with Adam at
3e-3: exploding_gradients "lower the lr or add a schedule" and lr_too_high), to add warm-up (a tiny
transformer LM: missing_warmup), that it diverged (an MLP with SGD and momentum), or nothing at all (a small
CNN with Adam). The training table runs three small models on the CPU: each without zero_grad (and with
gradient accumulation that never zeroes) must get the finding as the verdict's cause; each loop that clears
the gradients one of seven ways must not.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.diagnosis_accuracy import corpus_cases
from traindoctor import Probe
from traindoctor.api import diagnose as diagnose_stored
from traindoctor.diagnosis import diagnose
from traindoctor.diagnosis.engine import RECORDS
from traindoctor.diagnosis.finding import Finding
from traindoctor.diagnosis.records import Evidence, rule
from traindoctor.diagnosis.verdict import verdict
from traindoctor.store.frames import Table
from traindoctor.store.reader import Store

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
EVENT = "grads_not_zeroed"


def _with_event(run, step: int = 2, **columns):
    """``run`` with a grads_not_zeroed event as the probe writes it, and other scalar columns replaced."""
    detail = {"message": "the gradients were not zeroed between optimizer steps", "parameter": "head.bias",
              "first_step": step, "last_step": step + 2, "steps": 3, "ratio": 0.8}
    event = pd.DataFrame([{"step": step, "wall_time": 0.0, "kind": EVENT, "detail": json.dumps(detail)}])
    events = pd.concat([run.events, event], ignore_index=True) if len(run.events) else event
    return dataclasses.replace(run, events=events, **columns)


@pytest.fixture(scope="module")
def thrashing_run():
    """A real run the rules read as lr too high, with a loss spike (the corpus's char-level LM at a high lr)."""
    case, = corpus_cases(CORPUS, only={"lm_char_lr_too_high"})
    return case.run


def test_the_event_names_the_cause_and_folds_what_it_causes(thrashing_run):
    before = verdict(diagnose(thrashing_run, strict=True))
    assert before.rule == "lr_too_high"  # what the user was told: lower the lr
    findings = diagnose(_with_event(thrashing_run), strict=True)
    found = verdict(findings)
    assert (found.rule, found.severity) == ("exploding_gradients", "critical")
    assert "never zeroed" in found.sentence and found.step_start == 2
    assert found.try_first.startswith("Call optimizer.zero_grad() once per optimizer step")
    assert "after optimizer.step()" in found.try_first
    assert {"lr_too_high", "loss_spike"} <= set(found.explains)
    assert all(f.explained_by is not None for f in findings[1:] if f.rule in ("lr_too_high", "loss_spike"))
    # The explosion's own advice (clip, lower the lr) is not given beside it.
    assert [f.severity for f in findings if f.rule == "exploding_gradients"] == ["critical"]


def test_the_message_gives_the_gradient_norm_from_the_event_step_to_the_end(thrashing_run):
    found = [f for f in diagnose(_with_event(thrashing_run, step=3), strict=True) if f.rule == "exploding_gradients"]
    norm = thrashing_run.series("grad_norm").dropna()
    norm = norm[norm.index >= 3]
    assert f"{norm.iloc[0]:.3g} at step {norm.index[0]}" in found[0].message
    assert f"{norm.iloc[-1]:.3g} at step {norm.index[-1]}" in found[0].message
    assert "'head.bias'" in found[0].message and "steps 3–5" in found[0].message
    assert found[0].evidence["kind"] == EVENT and found[0].step_end == int(norm.index[-1])


def test_an_ordinary_gradient_explosion_explains_nothing(thrashing_run):
    # A gradient spike of another cause is a symptom: the lr stays the verdict, nothing is folded under it.
    norm = thrashing_run.series("grad_norm").dropna()
    spiked_values = norm.to_numpy().copy()
    spiked_values[len(spiked_values) // 2] *= 1000
    spiked = dict(zip(norm.index.tolist(), spiked_values.tolist()))
    table = thrashing_run.scalars
    rows = thrashing_run.global_rows("grad_norm", "train")
    values = np.asarray(table["value"], dtype="float64").copy()
    values[rows] = [spiked.get(step, math.nan) for step in table["step"][rows].tolist()]
    scalars = Table({**{column: table[column] for column in table.columns}, "value": values})
    findings = diagnose(dataclasses.replace(thrashing_run, scalars=scalars), strict=True)
    exploding = [f for f in findings if f.rule == "exploding_gradients"]
    assert exploding and all(f.severity == "warning" and f.explains == () for f in exploding)
    assert verdict(findings).rule == "lr_too_high"
    assert all(f.explained_by != "exploding_gradients" for f in findings)


def test_explaining_without_explains_is_refused_at_declaration():
    with pytest.raises(ValueError, match="explains no rule"):
        @rule(severities=("warning",), inputs=("loss",), evidence=Evidence.series("loss"),
              explaining=lambda finding: True)
        def demo(run):
            """Demo.

            Symptom: s. Likely cause: c. Try: t. Source: seed 004.
            """
            return []


def test_the_record_explains_through_the_not_zeroed_finding_only():
    record = RECORDS["exploding_gradients"]
    assert {"lr_too_high", "loss_spike", "divergence", "missing_warmup"} <= set(record.explains)
    plain = Finding("exploding_gradients", "warning", "t", "m", "a", evidence={"factor": 300.0})
    kept = Finding("exploding_gradients", "critical", "t", "m", "a", evidence={"kind": EVENT})
    assert (record.explains_through(plain), record.explains_through(kept)) == (False, True)


# ----------------------------------------------------------------------------- training


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order][:1344], y[order][:1344]


class TinyLM(torch.nn.Module):
    """A one-block causal transformer over 16 tokens."""

    def __init__(self, vocab: int = 16, dim: int = 32, context: int = 16):
        super().__init__()
        self.token = torch.nn.Embedding(vocab, dim)
        self.position = torch.nn.Embedding(context, dim)
        layer = torch.nn.TransformerEncoderLayer(dim, 2, 64, dropout=0.0, batch_first=True)
        self.body = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = torch.nn.Linear(dim, vocab)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(context))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        length = tokens.shape[1]
        hidden = self.token(tokens) + self.position(torch.arange(length))
        return self.head(self.body(hidden, mask=self.mask[:length, :length], is_causal=True))


def _setup(model_kind: str):
    """(model, optimizer, batches of 64, loss function, Probe task arguments)."""
    torch.manual_seed(0)
    if model_kind == "lm_adamw":
        generator = torch.Generator().manual_seed(0)
        start = torch.randint(0, 16, (1344, 1), generator=generator)
        sequences = (start + torch.arange(17)) % 16  # counting mod 16, 10 % of tokens replaced at random
        noise = torch.rand(sequences.shape, generator=generator) < 0.1
        sequences = torch.where(noise, torch.randint(0, 16, sequences.shape, generator=generator), sequences)
        model = TinyLM()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batches = [(sequences[i:i + 64, :-1], sequences[i:i + 64, 1:]) for i in range(0, 1344, 64)]

        def loss_of(tokens, targets):
            return torch.nn.functional.cross_entropy(model(tokens).reshape(-1, 16), targets.reshape(-1))

        return model, optimizer, batches, loss_of, {"task": "language_modelling", "vocab_size": 16}
    x, y = _digits()
    if model_kind == "mlp_sgd":
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:  # cnn_adam
        x = x.view(-1, 1, 8, 8)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                    torch.nn.Flatten(), torch.nn.Linear(8 * 16, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 1344, 64)]

    def loss_of(inputs, targets):
        return torch.nn.functional.cross_entropy(model(inputs), targets)

    return model, optimizer, batches, loss_of, {"num_classes": 10}


def _clear_before_backward(variant: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    if variant == "zero_grad_before_backward":
        optimizer.zero_grad()
    elif variant == "set_to_none_false":
        optimizer.zero_grad(set_to_none=False)
    elif variant == "model_zero_grad":
        model.zero_grad()
    elif variant == "grad_none_by_hand":
        for param in model.parameters():
            param.grad = None
    elif variant == "grad_data_zero":  # the old idiom: in place, and .data does not bump the version counter
        for param in model.parameters():
            if param.grad is not None:
                param.grad.data.zero_()


EPOCHS = 2  # 21 batches of 64 an epoch: 42 optimizer steps (10 with accumulation over 4)


def train(model_kind: str, variant: str, store) -> list[Finding]:
    """One run of ``model_kind`` with the loop ``variant``, recorded into ``store``; its findings."""
    model, optimizer, batches, loss_of, task = _setup(model_kind)
    accumulate = 4 if variant.startswith("accumulation") else 1
    name = f"{model_kind}-{variant}"
    with Probe(run=name, store=store, layer_every=10, handle_sigterm=False, **task) as probe:
        probe.watch(model, optimizer)
        for epoch in range(EPOCHS):
            for first in range(0, len(batches) - accumulate + 1, accumulate):
                _clear_before_backward(variant, model, optimizer)
                total = torch.zeros(())
                for inputs, targets in batches[first:first + accumulate]:
                    loss = loss_of(inputs, targets) / accumulate
                    loss.backward()
                    total += loss.detach()
                optimizer.step()
                if variant in ("zero_grad_after_step", "accumulation"):
                    optimizer.zero_grad()
                probe.step(loss=total, epoch=epoch)
    return diagnose_stored(name, store=store, strict=True)


def _events(store, name: str) -> pd.DataFrame:
    reader = Store(store)
    events = reader.events([reader.resolve(name)])
    return events[events["kind"] == EVENT]


MODELS = ("mlp_sgd", "cnn_adam", "lm_adamw")
NOT_ZEROED = ("no_zero_grad", "accumulation_without_zero_grad")
CLEARED = ("zero_grad_before_backward", "zero_grad_after_step", "accumulation", "set_to_none_false",
           "model_zero_grad", "grad_none_by_hand", "grad_data_zero")
# Rules the kept gradients cause: folded under the finding, never the verdict.
CONSEQUENCES = set(RECORDS["exploding_gradients"].explains)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("grads_not_zeroed")


@pytest.mark.slow
@pytest.mark.parametrize("variant", NOT_ZEROED)
@pytest.mark.parametrize("model_kind", MODELS)
def test_a_loop_that_never_zeroes_the_gradients_gets_it_as_the_verdict(store, model_kind, variant):
    findings = train(model_kind, variant, store)
    found = verdict(findings)
    assert (found.rule, found.severity) == ("exploding_gradients", "critical"), \
        [(f.rule, f.severity, f.explained_by) for f in findings]
    assert "never zeroed" in found.sentence and "zero_grad()" in found.try_first
    events = _events(store, f"{model_kind}-{variant}")
    assert len(events) == 1 and int(events["step"].iloc[0]) == 2  # once, from the first step it can be seen
    assert found.step_start == 2
    assert json.loads(events["detail"].iloc[0])["ratio"] > 0.1
    # Whatever else the thrashing set off is listed under it.
    assert all(f.explained_by is not None for f in findings if f.rule in CONSEQUENCES
               and f.severity != "info")


@pytest.mark.slow
@pytest.mark.parametrize("variant", CLEARED)
@pytest.mark.parametrize("model_kind", MODELS)
def test_a_loop_that_clears_the_gradients_stays_quiet(store, model_kind, variant):
    findings = train(model_kind, variant, store)
    assert _events(store, f"{model_kind}-{variant}").empty
    assert [f for f in findings if f.rule == "exploding_gradients"] == []
    assert all(f.severity != "critical" for f in findings), [(f.rule, f.severity) for f in findings]
