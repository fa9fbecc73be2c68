"""How the probe's added time per step grows with parameters P and tensors L (CPU).

The "model" is L weight tensors of P/L elements each and the loss is
Σ_i ‖w_i‖² (its gradient is 2·w_i), trained with plain SGD: a step costs
little more than touching every weight a few times, so what the probe adds is
not buried under matrix products. Bare and probed copies of the same weights
train in alternating blocks of steps in one process; the added time per step
is the median over rounds of (probed block − bare block of the same round) /
steps, in microseconds. A block spans ``layer_every`` steps, so the mean
includes one per-layer step (weight copy, norms, update ratio) per block.

Two sweeps: P at fixed L, then L at fixed P; each for the default cadence
(layer_every=50) and for per-layer statistics every step (layer_every=1).

    OMP_NUM_THREADS=1 python benchmarks/probe_scaling.py
    OMP_NUM_THREADS=1 python benchmarks/probe_scaling.py --rounds 9 --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from traindoctor.probe import Probe  # noqa: E402


class Tensors(nn.Module):
    """L weight tensors of ``size`` elements; the loss is the sum of their squared norms."""

    def __init__(self, layers: int, size: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weights = nn.ParameterList(nn.Parameter(torch.randn(size, generator=generator)) for _ in range(layers))

    def forward(self) -> torch.Tensor:
        return sum(torch.dot(w, w) for w in self.weights)


def _block(model: nn.Module, optimizer: torch.optim.Optimizer, probe: Probe | None, steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = model()
        loss.backward()
        optimizer.step()
        if probe is not None:
            probe.step(loss=loss)
    return time.perf_counter() - started


def measure(params: int, layers: int, layer_every: int, rounds: int, store: str) -> dict[str, float]:
    """Bare step time and the probe's added time per step (median, quartiles) in microseconds."""
    size = max(1, params // layers)
    bare, probed = Tensors(layers, size), Tensors(layers, size)
    # lr small enough that 1 - 2·lr keeps the weights from vanishing over the run.
    bare_optimizer = torch.optim.SGD(bare.parameters(), lr=1e-4)
    probed_optimizer = torch.optim.SGD(probed.parameters(), lr=1e-4)
    steps = max(layer_every, 10)
    with Probe(run=f"scaling-{params}-{layers}", store=store, layer_every=layer_every, handle_sigterm=False,
               compact_on_close=False) as probe:
        probe.watch(probed, probed_optimizer)
        _block(bare, bare_optimizer, None, 3)
        _block(probed, probed_optimizer, probe, 3)
        bare_times, added = [], []
        for index in range(rounds):
            if index % 2 == 0:
                base = _block(bare, bare_optimizer, None, steps)
                with_probe = _block(probed, probed_optimizer, probe, steps)
            else:
                with_probe = _block(probed, probed_optimizer, probe, steps)
                base = _block(bare, bare_optimizer, None, steps)
            bare_times.append(base / steps)
            added.append((with_probe - base) / steps)
    quartiles = statistics.quantiles(added, n=4, method="inclusive") if len(added) > 1 else [added[0]] * 3
    return {"bare_us": 1e6 * statistics.median(bare_times), "added_us": 1e6 * statistics.median(added),
            "p25_us": 1e6 * quartiles[0], "p75_us": 1e6 * quartiles[2]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer, smaller points")
    args = parser.parse_args(argv)
    fixed_layers, fixed_params = 16, 1_000_000
    sizes = [100_000, 1_000_000, 4_000_000] if args.quick else [100_000, 1_000_000, 4_000_000, 16_000_000]
    counts = [4, 64, 256] if args.quick else [4, 16, 64, 256, 1024]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; SGD on L tensors, loss = sum of squared norms")
    print("added: probe's extra time per step, median over rounds of paired blocks (p25-p75 in brackets), in us")
    print(f"{'sweep':6s} {'P':>10s} {'L':>5s} {'bare us':>9s} {'default (every 50)':>26s} {'per-layer every step':>26s}")
    points = [("P", p, fixed_layers) for p in sizes] + [("L", fixed_params, n) for n in counts]
    with tempfile.TemporaryDirectory() as store:
        for sweep, params, layers in points:
            cells = []
            bare_us = None
            for layer_every in (50, 1):
                result = measure(params, layers, layer_every, args.rounds, store)
                bare_us = result["bare_us"] if bare_us is None else bare_us
                cells.append(f"{result['added_us']:8.1f} [{result['p25_us']:6.1f},{result['p75_us']:7.1f}]")
            print(f"{sweep:6s} {params:10d} {layers:5d} {bare_us:9.1f} {cells[0]:>26s} {cells[1]:>26s}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
