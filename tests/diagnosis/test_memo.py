"""The per-run memo: each shared intermediate result is computed once per diagnose() call, and only then."""

from __future__ import annotations

import collections
import importlib
import math
import pkgutil

import numpy as np
import pytest

import traindoctor.diagnosis
from traindoctor.diagnosis import RunData, diagnose
from traindoctor.diagnosis.loss import divergence, divergence_onset, loss_spike, loss_spikes
from traindoctor.diagnosis.memo import MemoisedRun, is_per_run, per_run
from tests.diagnosis.factories import full_run, make_run, noisy_decay


def shared_intermediates() -> dict[str, object]:
    """Every function of the diagnosis package marked @per_run, by qualified name (found, not listed)."""
    found = {}
    for info in pkgutil.iter_modules(traindoctor.diagnosis.__path__):
        module = importlib.import_module(f"traindoctor.diagnosis.{info.name}")
        for value in vars(module).values():
            if is_per_run(value) and value.__module__ == module.__name__:
                found[f"{info.name}.{value.__name__}"] = value
    return found


SHARED = shared_intermediates()


def _spiky_diverging_run() -> RunData:
    """A full run whose loss spikes, then diverges: every shared result is needed by several rules."""
    run = full_run(600)
    loss = noisy_decay(600, noise=0.02)
    loss[200:203] *= 4
    loss[-20:] = math.nan
    frame = run.scalars
    is_loss = (frame["name"] == "loss") & (frame["split"] == "train")
    frame["value"][is_loss] = loss  # the Table's column itself: the run sees the change
    return run


def test_the_shared_intermediates_are_found():
    assert {"common.train_loss", "loss.divergence_onset", "loss.loss_spikes", "loss.start_level",
            "learning_rate.loss_profile", "generalisation.eval_losses", "classes.last_confusion"} <= set(SHARED)


# The healthy full run needs every shared result (so "once" is not "never");
# on a diverged run some rules stop before asking for theirs.
RUNS = {"healthy": (full_run(600), True), "spiky-diverging": (_spiky_diverging_run(), False)}


@pytest.mark.parametrize("run_name", list(RUNS))
@pytest.mark.parametrize("name", list(SHARED), ids=list(SHARED))
def test_each_shared_intermediate_is_computed_once_per_diagnose_call(monkeypatch, name, run_name):
    run, needs_all = RUNS[run_name]
    shared = SHARED[name]
    calls: collections.Counter = collections.Counter()
    compute = shared.__wrapped__

    def counting(run_data, *args):
        calls[args] += 1
        return compute(run_data, *args)

    monkeypatch.setattr(shared, "__wrapped__", counting)
    diagnose(run, strict=True)
    assert set(calls.values()) <= {1} and (bool(calls) or not needs_all), dict(calls)
    diagnose(run, strict=True)  # a new call, a new memo: nothing is kept between calls
    assert set(calls.values()) <= {2}, dict(calls)


def test_without_the_memo_a_rule_computes_what_it_needs_itself(monkeypatch):
    calls = collections.Counter()
    compute = divergence_onset.__wrapped__
    monkeypatch.setattr(divergence_onset, "__wrapped__", lambda run: calls.update(["onset"]) or compute(run))
    run = make_run(loss=list(noisy_decay(100)) + [math.nan] * 5)
    assert [f.severity for f in divergence(run)] == ["critical"]
    assert loss_spike(run) == [] and divergence(run)
    assert calls["onset"] == 3  # each call computes it again: divergence twice, loss_spike once
    assert not hasattr(run, "memo")


def test_memoised_results_equal_plain_ones_and_the_run_is_shared_not_copied():
    run = full_run(300)
    memoised = MemoisedRun.of(run)
    assert memoised.scalars is run.scalars and memoised.task is run.task and memoised.memo == {}
    assert loss_spikes(memoised) == loss_spikes(run)
    assert divergence_onset(memoised) == divergence_onset(run)
    assert memoised.memo and not hasattr(run, "memo")


def test_per_run_keys_on_the_arguments():
    @per_run
    def column(run, name):
        return run.scalars[name].copy()

    memoised = MemoisedRun.of(make_run(loss=[3.0, 2.0]))
    steps, values = column(memoised, "step"), column(memoised, "value")
    assert steps.tolist() == [1, 2] and values.tolist() == [3.0, 2.0]
    assert column(memoised, "step") is steps and len(memoised.memo) == 2


def test_diagnose_hands_every_rule_the_same_memoised_run():
    seen = []
    rules = {"first": lambda run: seen.append(run) or [], "second": lambda run: seen.append(run) or []}
    run = make_run(loss=np.linspace(2, 1, 50))
    diagnose(run, rules=rules, strict=True)
    assert len(seen) == 2 and seen[0] is seen[1] and isinstance(seen[0], MemoisedRun)
    assert seen[0] is not run and seen[0].scalars is run.scalars
