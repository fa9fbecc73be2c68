"""lr_too_high and train_longer on sparse logs (a record every 20-25 steps) and on layers killed by large steps."""

from __future__ import annotations

import numpy as np
import pytest

from traindoctor.diagnosis.generalisation import train_longer
from traindoctor.diagnosis.learning_rate import lr_too_high
from tests.diagnosis.factories import make_run, scalar_rows

STEPS = np.arange(20, 841, 20)  # 42 records, one every 20 steps (HF logging_steps=20)


def _sparse_lm(climb: bool) -> object:
    """A language model logged every 20 steps, no task kind: it falls from 4.66, then (``climb``) goes back
    to 4.5 for 23 records and comes down as the lr decays, or keeps falling like a healthy run."""
    rng = np.random.default_rng(5)
    if climb:
        loss = np.concatenate([[4.66, 3.70, 3.74], np.linspace(3.9, 4.5, 4), np.full(23, 4.5),
                               np.linspace(4.4, 3.73, 12)])
    else:
        loss = 3.1 + 2.7 * np.exp(-np.linspace(0, 6, 42))
    return make_run(loss=loss * (1 + 0.005 * rng.standard_normal(42)), steps=STEPS)


@pytest.mark.parametrize(("climb", "fired"), [(True, ["lr_too_high"]), (False, [])], ids=["climb", "healthy"])
def test_lr_too_high_finds_a_climb_in_a_sparse_log(climb, fired):
    found = lr_too_high(_sparse_lm(climb))
    assert [f.rule for f in found] == fired
    if found:
        assert found[0].evidence["kind"] == "rebound" and 100 <= found[0].evidence["rebound_steps"][0] <= 200


def _killed(ratio_first: float, fades: bool, all_dead: bool = False) -> object:
    """A regression run (no task kind) whose loss falls 0.15 -> 0.11 and stays; layer ``enc.weight`` has a zero
    gradient at every record (every 20 steps) and an update/weight ratio starting at ``ratio_first``."""
    rng = np.random.default_rng(7)
    loss = np.concatenate([np.linspace(0.15, 0.11, 20), np.full(380, 0.11)]) * (1 + 0.01 * rng.standard_normal(400))
    steps = np.arange(20, 401, 20)
    ratio = ratio_first * (0.1 ** np.arange(20) if fades else np.ones(20))
    live_grad = np.zeros(20) if all_dead else np.full(20, 0.02)
    frames = [scalar_rows("grad_norm", np.zeros(20), steps=steps, layer="enc.weight"),
              scalar_rows("grad_norm", live_grad, steps=steps, layer="dec.weight"),
              scalar_rows("update_ratio", ratio, steps=steps, layer="enc.weight"),
              scalar_rows("update_ratio", np.full(20, 3e-3), steps=steps, layer="dec.weight")]
    return make_run(loss=loss, frames=frames)


@pytest.mark.parametrize(
    ("run", "fired"),
    [(_killed(1.5e-2, fades=True), ["lr_too_high"]),
     (_killed(0.0, fades=True), []),
     (_killed(3e-5, fades=False), []),
     (_killed(1.5e-2, fades=False), []),
     (_killed(1.5e-2, fades=True, all_dead=True), [])],
    ids=["killed-by-large-steps", "frozen-ratio-0", "weight-decay-only", "ratio-never-fades", "no-layer-alive"],
)
def test_lr_too_high_on_layers_killed_by_large_steps(run, fired):
    found = lr_too_high(run)
    assert [f.rule for f in found] == fired
    if found:
        assert found[0].evidence["kind"] == "killed_layers"
        assert list(found[0].evidence["killed_layers"]) == ["enc.weight"]


@pytest.mark.parametrize(("records", "evidence"), [(8, "train_share_last_quarter"), (7, "train_share_last_third")],
                         ids=["8-records", "7-records"])
def test_train_longer_reads_a_training_loss_of_eight_records(records, evidence):
    """Eight records are enough for the quarters of the training loss; with seven the share test runs on the last
    third of its records instead (before, seven records of a run still falling were never judged)."""
    train = np.linspace(1.39, 0.78, records) ** 1.5
    val = 1.39 - 0.8 * np.linspace(0, 1, 20) ** 1.5
    frames = [scalar_rows("loss", val, steps=np.linspace(11, 25 * records, 20).astype(int), split="val")]
    run = make_run(loss=train, steps=np.arange(25, 25 * records + 1, 25), frames=frames)
    found = train_longer(run)
    assert [f.rule for f in found] == ["train_longer"]
    assert evidence in found[0].evidence
