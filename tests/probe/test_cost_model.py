"""The cost model the README states, checked on real runs.

- Bytes that cross from the device buffers to the host per flush:
  12 per step (loss, global grad norm, AMP scale as float32) plus 12·L per
  per-layer record (grad norm, weight norm, update ratio for each of the L
  tensors), whatever the number of parameters P.
- The update ratio takes one copy of the weights per per-layer step: the
  post-step side works in place on that copy instead of copying again.
"""

from __future__ import annotations

import pytest
import torch

from traindoctor.probe import Probe
from traindoctor.probe.core import Probe as CoreProbe
from traindoctor.probe.statistics import UpdateTracker


def _tensors_model(layers: int, size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.ParameterList(torch.nn.Parameter(torch.randn(size)) for _ in range(layers))


def _transfer_bytes(transfer) -> int:
    tensors = [transfer.values, transfer.layer_values, transfer.logged]
    for _, totals, confusion in transfer.evaluations:
        tensors += [totals, confusion]
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _expected_bytes(first: int, last: int, layers: int, layer_every: int) -> int:
    """The oracle: 3 float32 per step, 3·L float32 per per-layer step (step 1 and multiples of layer_every)."""
    steps = range(first, last + 1)
    records = sum(1 for step in steps if step == 1 or step % layer_every == 0)
    return 4 * 3 * len(steps) + 4 * 3 * layers * records


@pytest.mark.parametrize(
    "layers,size,flush_every_steps,layer_every",
    [(1, 10, 8, 4), (4, 10, 16, 5), (4, 1000, 16, 5), (32, 3, 10, 1), (7, 50, 32, 50)],
    ids=["one_tensor", "four_small", "four_big_same_bytes", "every_step_cadence", "default_cadence"],
)
def test_bytes_per_flush_are_12_per_step_plus_12_per_tensor_per_layer_record(
        tmp_path, monkeypatch, layers, size, flush_every_steps, layer_every):
    snapshots: list = []
    original = CoreProbe._snapshot

    def counting(self):
        transfer = original(self)
        snapshots.append(None if transfer is None else _transfer_bytes(transfer))
        return transfer

    monkeypatch.setattr(CoreProbe, "_snapshot", counting)
    model = _tensors_model(layers, size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    total_steps = 2 * flush_every_steps + 3
    with Probe(run="bytes", store=tmp_path, layer_every=layer_every, flush_every_steps=flush_every_steps,
               flush_every_s=1e9, handle_sigterm=False, compact_on_close=False) as probe:
        probe.watch(model, optimizer)
        for _ in range(total_steps):
            loss = sum((p * p).sum() for p in model)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            probe.step(loss=loss)
    flushed = [b for b in snapshots if b is not None]
    windows = [(1, flush_every_steps), (flush_every_steps + 1, 2 * flush_every_steps),
               (2 * flush_every_steps + 1, total_steps)]
    assert flushed == [_expected_bytes(first, last, layers, layer_every) for first, last in windows]


def test_update_ratio_allocates_no_second_weight_copy():
    """after_step() subtracts in place on the pre-step copy: no weight-sized buffer is allocated there."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(256, 1024)), torch.nn.Parameter(torch.randn(1024))]
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    tracker = UpdateTracker(params)
    tracker.before_step()
    before = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p in params:
            p.add_(0.01 * torch.randn_like(p))
    after = [p.detach().clone() for p in params]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        weight_norms, ratios = tracker.after_step()
    allocated = sum(event.cpu_memory_usage for event in profile.events() if event.cpu_memory_usage > 0)
    assert allocated < weight_bytes / 4, f"after_step allocated {allocated} bytes for {weight_bytes} bytes of weights"
    # Same values as the plain computation, and the weights themselves untouched.
    for p, a in zip(params, after):
        assert torch.equal(p.detach(), a)
    reference = torch.stack([(a - b).norm() / b.norm() for a, b in zip(after, before)])
    torch.testing.assert_close(ratios, reference, rtol=1e-5, atol=0)
    torch.testing.assert_close(weight_norms, torch.stack([a.norm() for a in after]))
