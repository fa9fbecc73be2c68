"""Operators (kernel launches, on a GPU) the probe adds per training step, and how they grow with L.

On a GPU a step's host time is mostly launching kernels, and a probe that
launches one small kernel per parameter tensor per step pays ~5-10 µs each
(GPT-2 small has L = 148 tensors: ~1 ms a step, measured on an H200 with
``benchmarks/gpu_suite.sh``). Launch counts are exact and the same on any
machine, so this runs on the CPU: every aten operator dispatched during a
step is counted with a ``TorchDispatchMode``, for a bare copy and a probed
copy of the same model, optimizer (AdamW) and batch, in one process.

Printed per workload: operators per ordinary step (bare, probed, added),
added at a per-layer step (every ``layer_every`` = 50 steps, and step 1),
and the mean added over 50 steps. The models have the tensor structure of
the GPU benchmark's (GPT-2 small: 12 blocks, L = 148; ResNet-18: L = 62)
at a tiny width, since the count does not depend on the width. Then an L
sweep (a stack of 8×8 linear layers) shows how the added count grows with L.

    python benchmarks/probe_kernels.py
"""

from __future__ import annotations

import argparse
import collections
import copy
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from probe_overhead import GPT, resnet18  # noqa: E402

from traindoctor.probe import Probe  # noqa: E402


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _workloads(sweep: list[int]) -> list[tuple[str, nn.Module, callable]]:
    torch.manual_seed(0)
    gpt = GPT(12, 32, 2, 101, 16)
    idx = torch.randint(0, 101, (2, 17))

    def gpt_loss(model):
        logits = model(idx[:, :-1])
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))

    cnn = resnet18(8, 10)
    images, targets = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    loads = [("gpt2-small structure", gpt, gpt_loss),
             ("resnet18 structure", cnn, lambda model: nn.functional.cross_entropy(model(images), targets))]
    x = torch.randn(4, 8)
    for tensors in sweep:
        stack = nn.Sequential(*[nn.Linear(8, 8) for _ in range(tensors // 2)])
        loads.append((f"linear stack L={tensors}", stack, lambda model: model(x).pow(2).mean()))
    return loads


def count_steps(model: nn.Module, loss_of, probed: bool, steps: int, store: str) -> list[int]:
    """Operators dispatched by each of ``steps`` training steps (zero_grad, forward, backward, step, probe.step)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    probe = None
    if probed:
        probe = Probe(run="kernels", store=store, handle_sigterm=False, live=False, flush_every_steps=10_000,
                      flush_every_s=3600)
        probe.watch(model, optimizer)
    counts = []
    for _ in range(steps):
        counter = OpCounter()
        with counter:
            optimizer.zero_grad()
            loss = loss_of(model)
            loss.backward()
            optimizer.step()
            if probe is not None:
                probe.step(loss)
        counts.append(counter.count)
    if probe is not None:
        probe.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=int, nargs="*", default=[8, 32, 128, 512])
    args = parser.parse_args(argv)
    steps = 51  # step 1 and step 50 are per-layer steps at the default layer_every=50
    print(f"torch {torch.__version__}; operators dispatched per step, bare vs probed (AdamW, default probe settings)")
    print(f"{'workload':24s} {'L':>4s} {'bare':>6s} {'probed':>7s} {'added':>6s} {'ratio':>6s} "
          f"{'added at per-layer step':>24s} {'added, mean of 50 steps':>24s}")
    with tempfile.TemporaryDirectory() as store:
        for name, model, loss_of in _workloads(args.sweep):
            tensors = sum(1 for p in model.parameters() if p.requires_grad)
            bare = count_steps(copy.deepcopy(model), loss_of, False, steps, store)
            probed = count_steps(copy.deepcopy(model), loss_of, True, steps, store)
            added = [p - b for p, b in zip(probed, bare)]
            ordinary = [i for i in range(2, steps) if i != 49]  # skip warm-up steps 1-2 and step 50 (index 49)
            bare_step = statistics.median(bare[i] for i in ordinary)
            probed_step = statistics.median(probed[i] for i in ordinary)
            print(f"{name:24s} {tensors:4d} {bare_step:6.0f} {probed_step:7.0f} {probed_step - bare_step:6.0f} "
                  f"{probed_step / bare_step:6.3f} {added[49]:24d} {statistics.fmean(added[1:51]):24.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
