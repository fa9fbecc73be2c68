"""The probe's check for gradients never zeroed between optimizer steps (probe/zeroing.py).

How it judges the norms a witness parameter gives (persistence, unknown steps, NaN), that measuring reads
nothing on the host, that a witness which gets no gradient is replaced, and that the event is written once
with its step.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from traindoctor.probe import Probe
from traindoctor.probe.guard import StatisticGuard
from traindoctor.probe.zeroing import (
    EVENT, GRADS_NOT_ZEROED_RATIO, GRADS_NOT_ZEROED_STEPS, GRADS_ZEROED_STEPS, WITNESS_MISSES, ZeroGradCheck,
    witness_candidates,
)
from traindoctor.store.format import EVENT_KINDS
from tests.probe.conftest import make_batches, make_model, read_run
from tests.probe.test_no_sync import host_reads_forbidden

KEPT, ZEROED, NONE, UNKNOWN, NAN = "kept", "zeroed", "none", "unknown", "nan"


def _check() -> ZeroGradCheck:
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]
    return ZeroGradCheck(params, ["a", "b"], torch.device("cpu"), 64, StatisticGuard(strict=True))


def _rows(kinds: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1.., the snapshot's flags and [rows, 2] norms for each kind of step."""
    flags = {KEPT: 2, ZEROED: 2, NAN: 2, NONE: 1, UNKNOWN: 0}
    norms = {KEPT: (0.8, 1.0), ZEROED: (0.0, 1.0), NAN: (np.nan, np.nan), NONE: (np.nan, np.nan),
             UNKNOWN: (np.nan, np.nan)}
    return (np.arange(1, len(kinds) + 1), np.array([flags[k] for k in kinds], dtype=np.int8),
            np.array([norms[k] for k in kinds], dtype=np.float32))


@pytest.mark.parametrize("kinds, found_at", [
    ([KEPT] * GRADS_NOT_ZEROED_STEPS, 1),
    ([ZEROED, KEPT, KEPT, KEPT, KEPT], 2),
    ([KEPT, KEPT, ZEROED, KEPT, KEPT, NONE, KEPT, KEPT], None),  # never 3 in a row
    ([KEPT, UNKNOWN, KEPT, UNKNOWN, KEPT], 1),  # a step the witness did not see neither breaks nor extends it
    ([KEPT, KEPT, NAN, KEPT, KEPT], None),  # a non-finite gradient tells nothing: not kept
    ([ZEROED] * 10 + [NONE] * 10, None),
], ids=["three-kept", "after-a-zeroed-step", "broken-by-zeroing", "unknown-steps", "nan", "healthy"])
def test_judge_needs_kept_gradients_at_consecutive_measured_steps(kinds, found_at):
    check = _check()
    found = check.judge(*_rows(kinds))
    assert (found[0] if found else None) == found_at
    if found:
        detail = json.loads(found[1])
        assert detail["first_step"] == found_at and detail["steps"] == GRADS_NOT_ZEROED_STEPS
        assert detail["parameter"] == "b" and detail["ratio"] == pytest.approx(0.8)  # the smaller one watches
        assert check.done and check.judge(*_rows([KEPT] * 5)) is None  # once


def test_judge_carries_a_stretch_across_flushes():
    check = _check()
    assert check.judge(*_rows([ZEROED, KEPT, KEPT])) is None
    steps, flags, values = _rows([KEPT, KEPT])
    assert check.judge(steps + 3, flags, values)[0] == 2


@pytest.mark.parametrize("kinds, stops", [
    ([ZEROED] * GRADS_ZEROED_STEPS, True),
    ([NONE, ZEROED] * (GRADS_ZEROED_STEPS // 2), True),
    ([ZEROED] * (GRADS_ZEROED_STEPS - 1) + [KEPT] + [ZEROED] * (GRADS_ZEROED_STEPS - 1), False),
    ([ZEROED, UNKNOWN] * (GRADS_ZEROED_STEPS - 1), False),
], ids=["zeroed", "cleared-or-zeroed", "broken-by-a-kept-step", "too-few"])
def test_judge_stops_measuring_once_the_loop_is_seen_to_zero(kinds, stops):
    check = _check()
    assert check.judge(*_rows(kinds)) is None
    assert check.measuring is not stops and not check.done


def test_a_ratio_below_the_threshold_is_not_kept():
    check = _check()
    steps, flags, values = _rows([KEPT] * 4)
    values[:, 0] = GRADS_NOT_ZEROED_RATIO / 2
    assert check.judge(steps, flags, values) is None


def test_witnesses_are_dense_floating_trainable_tensors_smallest_first():
    params = [torch.nn.Parameter(torch.zeros(5)), torch.nn.Parameter(torch.zeros(2), requires_grad=False),
              torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(0)),
              torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))]
    assert witness_candidates(params, torch.device("cpu")) == [4, 2, 0]


def _loop(model, optimizer, batches, probe, variant: str) -> None:
    for x, y in batches:
        if variant == "in_place":
            optimizer.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        probe.step(loss=1.0)


@pytest.mark.parametrize("variant", ["never", "in_place"])
def test_measuring_reads_nothing_on_the_host(tmp_path, monkeypatch, variant):
    # Gradients kept between steps are the case that launches kernels: still no host read until the flush.
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = make_batches(10)
    probe = Probe(run=variant, store=tmp_path, flush_every_steps=10_000, flush_every_s=3600, strict=True,
                  handle_sigterm=False)
    probe.watch(model, optimizer)
    _loop(model, optimizer, batches[:2], probe, variant)
    probe.flush()
    with host_reads_forbidden(monkeypatch):
        _loop(model, optimizer, batches[2:], probe, variant)
    probe.close()
    _, _, events, _ = read_run(tmp_path)
    found = events[events["kind"] == EVENT]
    if variant == "never":
        assert found["step"].tolist() == [2] and EVENT in EVENT_KINDS  # the format's contract names it
    else:
        assert found.empty


def test_a_witness_that_gets_no_gradient_is_replaced(tmp_path):
    model = make_model()
    unused = torch.nn.Parameter(torch.zeros(1))  # the smallest tensor: in the optimizer, never in forward()
    optimizer = torch.optim.SGD([unused, *model.parameters()], lr=0.05)
    steps = WITNESS_MISSES + 1 + GRADS_NOT_ZEROED_STEPS + 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the probe names the parameter without a gradient
        with Probe(run="unused", store=tmp_path, strict=True, handle_sigterm=False) as probe:
            probe.watch(model, optimizer)
            _loop(model, optimizer, make_batches(steps), probe, "never")
    _, _, events, _ = read_run(tmp_path)
    found = events[events["kind"] == EVENT]
    assert len(found) == 1
    detail = json.loads(found["detail"].iloc[0])
    assert detail["parameter"] != "group0.param0"
    # Steps 2-4 went to the silent witness; its successor sees the kept gradients from the step after.
    assert int(found["step"].iloc[0]) == WITNESS_MISSES + 2


@pytest.mark.parametrize("set_to_none", [True, False])
def test_a_loop_that_zeroes_stops_the_check(tmp_path, set_to_none):
    # Cleared (None) is seen on the host at once; zeroed in place at the flush that brings the norms.
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    steps = GRADS_ZEROED_STEPS + 2
    with Probe(run="zeroes", store=tmp_path, flush_every_steps=steps, strict=True, handle_sigterm=False) as probe:
        probe.watch(model, optimizer)
        witness = probe._zero_check._candidates[0][0]
        for x, y in make_batches(steps):
            optimizer.zero_grad(set_to_none=set_to_none)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            probe.step(loss=1.0)
        assert probe._zero_check.measuring is False and not probe._zero_check.done
        # Only the probe's own gradient-norm hook is left on the witness.
        assert not witness._backward_hooks and len(witness._post_accumulate_grad_hooks) == 1


def test_hooks_are_removed_at_close(tmp_path):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = Probe(run="close", store=tmp_path, handle_sigterm=False)
    probe.watch(model, optimizer)
    witness = probe._zero_check._candidates[0][0]
    probe.close()
    assert not witness._backward_hooks and not witness._post_accumulate_grad_hooks


def _dcgan_events(tmp_path, discriminator_zeroing: str, run: str) -> list[str]:
    """PyTorch's DCGAN example loop with the probe watching the discriminator: D's step, then G's backward
    through D (into D's .grad, before D's next zero_grad()), then D zeroes and trains again."""
    torch.manual_seed(0)
    generator = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6))
    discriminator = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.LeakyReLU(0.2), torch.nn.Linear(8, 1))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = torch.nn.BCEWithLogitsLoss()
    with Probe(run=run, store=tmp_path, handle_sigterm=False, flush_every_steps=5) as probe:
        probe.watch(discriminator, opt_d)
        for _ in range(30):
            real, noise = torch.randn(16, 6), torch.randn(16, 4)
            if discriminator_zeroing == "set_to_none":
                discriminator.zero_grad()
            elif discriminator_zeroing == "in_place":
                discriminator.zero_grad(set_to_none=False)
            fake = generator(noise)
            loss_real = bce(discriminator(real), torch.ones(16, 1))
            loss_real.backward()
            loss_fake = bce(discriminator(fake.detach()), torch.zeros(16, 1))
            loss_fake.backward()
            opt_d.step()
            probe.step(loss_real + loss_fake)
            generator.zero_grad()
            bce(discriminator(fake), torch.ones(16, 1)).backward()  # adds into D's .grad too
            opt_g.step()
    _, _, events, _ = read_run(tmp_path, run)
    return list(events["kind"]) if not events.empty else []


@pytest.mark.parametrize("zeroing, found", [("set_to_none", False), ("in_place", False), ("never", True)])
def test_a_gans_generator_backward_through_the_discriminator_is_no_missing_zero_grad(tmp_path, zeroing, found):
    """The generator's backward after D's step finds D's last gradients in .grad, legitimately: D zeroes
    them before its own next backward. That was a critical 'gradients never zeroed' on the standard
    DCGAN loop; a D that really never zeroes is still found."""
    assert (EVENT in _dcgan_events(tmp_path, zeroing, zeroing)) is found
