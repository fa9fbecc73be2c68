"""What the probe's grads_not_zeroed check (probe/zeroing.py) adds per step, on the CPU.

Two probes watch two copies of the same small MLP in one process; one has
its check removed after ``watch()`` (hooks off, ``_zero_check`` None). They
train in alternating blocks of steps, with ``zero_grad()``'s default
``set_to_none=True`` (the check reads ``.grad is None`` and launches nothing)
and with ``set_to_none=False`` (the check launches its three small kernels
at every step's first backward). Twice: as it runs (the check stops after
GRADS_ZEROED_STEPS steps that zeroed), and with that stop turned off (what
the first steps cost). Printed: the median over rounds of the per-step time
of each, and the check's added time against a step with the probe but
without the check.

    OMP_NUM_THREADS=1 python benchmarks/zero_grad_check.py [--rounds 15] [--steps 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from traindoctor.probe import Probe, zeroing  # noqa: E402


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 10))


def _block(model, optimizer, probe, batch, steps: int, set_to_none: bool) -> float:
    """Seconds per step over ``steps`` steps."""
    x, y = batch
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=set_to_none)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        probe.step(loss=loss)
    return (time.perf_counter() - start) / steps


def _probes(store: str, phase: str) -> dict[str, tuple]:
    runs = {}
    for name in ("with_check", "without_check"):
        model = _model()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        probe = Probe(run=f"{phase}-{name}", store=store, live=False, handle_sigterm=False, compact_on_close=False)
        probe.watch(model, optimizer)
        if name == "without_check":
            probe._zero_check.remove()
            probe._zero_check = None
        runs[name] = (model, optimizer, probe)
    return runs


def _measure(store: str, phase: str, batch, rounds: int, steps: int) -> dict[tuple[str, bool], list[float]]:
    """Per-step seconds of each probe, for both zero_grad() settings, in alternating blocks."""
    times: dict[tuple[str, bool], list[float]] = {}
    for kept in (False, True):
        runs = _probes(store, f"{phase}-{kept}")
        for name in runs:  # warm-up; a stopping check stops here (GRADS_ZEROED_STEPS)
            _block(*runs[name], batch, 20, set_to_none=not kept)
            runs[name][2].flush()
        for _ in range(rounds):
            for name in runs:
                times.setdefault((name, kept), []).append(_block(*runs[name], batch, steps, set_to_none=not kept))
        for _, _, probe in runs.values():
            probe.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batch = (torch.randn(32, 64), torch.randint(0, 10, (32,)))
    results = {}
    with tempfile.TemporaryDirectory() as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results["after it stopped (a loop that zeroes)"] = _measure(store, "stopped", batch, args.rounds, args.steps)
        # While it measures: what a run pays over its first GRADS_ZEROED_STEPS steps, or for good when
        # the loop zeroes only some steps.
        zeroing.GRADS_ZEROED_STEPS = 10**9
        results["while it measures"] = _measure(store, "measuring", batch, args.rounds, args.steps)
    for phase, times in results.items():
        print(phase)
        for kept, label in ((False, "zero_grad() (set_to_none=True)"), (True, "zero_grad(set_to_none=False)")):
            on = statistics.median(times[("with_check", kept)]) * 1e6
            off = statistics.median(times[("without_check", kept)]) * 1e6
            print(f"  {label:32s} step with check {on:7.1f} us, without {off:7.1f} us: "
                  f"added {on - off:+6.1f} us per step, ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
