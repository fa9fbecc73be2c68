"""Gradient norms taken together at the end of each backward pass.

The per-tensor hooks only note which gradients a backward accumulated; one
``_foreach_norm`` at the engine's end-of-backward callback measures them. So
what the probe launches on an ordinary step does not grow with the number of
parameter tensors L (it was one norm kernel per tensor: ~1 ms a step for
GPT-2 small's 148 tensors on an H200), and the recorded norms stay those of
the gradients as backward left them (before clipping).
"""

from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from traindoctor.probe import Probe
from tests.probe.conftest import read_run, series


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched while active (each one kernel, or a few, on a GPU)."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _deep_model(tensors: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layers = []
    for _ in range(tensors // 2):
        layers += [torch.nn.Linear(8, 8), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers)


def _ops_of_ordinary_steps(tensors: int, probed: bool, tmp_path) -> collections.Counter:
    """Operators dispatched by steps 3 and 4 (no per-layer statistics, no flush) of an SGD loop."""
    model = _deep_model(tensors)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    probe = None
    if probed:
        probe = Probe(run=f"ops{tensors}", store=tmp_path, layer_every=1000, flush_every_steps=1000,
                      flush_every_s=3600)
        probe.watch(model, optimizer)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    counter = OpCounter()
    for step in range(1, 5):
        with (counter if step >= 3 else _nothing()):
            loss = model(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if probe is not None:
                probe.step(loss)
    if probe is not None:
        probe.close()
    return counter.counts


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_operators_added_per_ordinary_step_do_not_grow_with_the_tensor_count(tmp_path):
    added = {}
    for tensors in (8, 64):
        bare = _ops_of_ordinary_steps(tensors, False, tmp_path / f"bare{tensors}")
        probed = _ops_of_ordinary_steps(tensors, True, tmp_path / f"probe{tensors}")
        added[tensors] = probed - bare
        # No per-tensor norm kernel: the gradients' norms are one _foreach_norm per backward.
        assert added[tensors]["aten.linalg_vector_norm"] <= 2 * 1  # the global norm over the slots, per step
        assert added[tensors]["aten._foreach_norm"] == 2
    assert sum(added[64].values()) == sum(added[8].values()), added
    assert sum(added[8].values()) <= 2 * 12, added  # a handful per step


def test_a_tensor_unused_in_a_backward_is_left_out_of_its_norm(tmp_path):
    torch.manual_seed(0)
    trunk, head_a, head_b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
    model = torch.nn.ModuleList([trunk, head_a, head_b])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    expected = {}
    with Probe(run="heads", store=tmp_path, layer_every=2) as probe:
        probe.watch(model, optimizer)
        for step in range(1, 7):
            x = torch.randn(8, 4)
            head = head_a if step % 2 else head_b  # each step trains one head
            loss = head(torch.relu(trunk(x))).pow(2).mean()
            optimizer.zero_grad()  # set_to_none: the other head has no gradient
            loss.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            expected[step] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            optimizer.step()
            probe.step(loss)
    _, scalars, _, _ = read_run(tmp_path)
    recorded = series(scalars, "grad_norm")
    assert recorded.keys() == expected.keys()
    for step, value in expected.items():
        assert abs(recorded[step] - value) <= 1e-5 * value


class _FailsInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("a user's backward failed")


def test_a_backward_that_raises_midway_leaves_the_next_steps_right(tmp_path):
    torch.manual_seed(0)
    first, second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    model = torch.nn.Sequential(first, second)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    expected = {}
    with Probe(run="raises", store=tmp_path) as probe:
        probe.watch(model, optimizer)
        for step in range(1, 5):
            x = torch.randn(8, 4)
            if step == 2:  # second's gradient accumulates, then backward raises before first's
                try:
                    second(_FailsInBackward.apply(first(x))).pow(2).mean().backward()
                except RuntimeError:
                    pass
            optimizer.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            expected[step] = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))
            optimizer.step()
            probe.step(loss)
    _, scalars, _, _ = read_run(tmp_path)
    recorded = series(scalars, "grad_norm")
    for step, value in expected.items():
        assert abs(recorded[step] - value) <= 1e-5 * value, (step, recorded[step], value)
