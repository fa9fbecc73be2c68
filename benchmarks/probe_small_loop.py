"""The probe's cost on a tutorial-sized loop: a 7k-parameter MLP (a few ms a step on a CPU),
run bare, with the probe without live checks, and with them, interleaved in one process.

``probe_overhead.py`` measures a step of >= 20 ms, where the probe's fixed cost per step is
noise. A new user's first loop is often this small, and it flushes every 256 steps long
before 2 s have passed, and after every evaluation: the live checks (about 30 ms each on a
quiet machine) then run far more often than the README's "one check per flush, at the
default 2 s flush" assumes. This prints the median ms per step of each variant and its
ratio to bare, with an evaluation every ``--eval-every`` steps (0: none).

    OMP_NUM_THREADS=1 python benchmarks/probe_small_loop.py
    OMP_NUM_THREADS=1 python benchmarks/probe_small_loop.py --eval-every 50 --rounds 5
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

VARIANTS = ("bare", "probe, live=False", "probe, live=True")


def _batches(count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, 32, generator=generator) * 0.35
    batches = []
    for _ in range(count):
        y = torch.randint(0, 10, (64,), generator=generator)  # (B,)
        batches.append((centers[y] + torch.randn(64, 32, generator=generator), y))  # (B, 32)
    return batches


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def run(variant: str, batches: list, steps: int, eval_every: int, store: Path) -> float:
    """Milliseconds per training step (evaluation passes excluded from the count, not the time)."""
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    criterion = nn.CrossEntropyLoss()
    probe = None
    if variant != "bare":
        probe = Probe(run=variant, store=store, num_classes=10, live=variant.endswith("True"))
        probe.__enter__()
        probe.watch(model, optimizer)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x, y = batches[step % len(batches)]
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        if probe is not None:
            probe.step(loss=loss)
        if eval_every and step % eval_every == 0:
            with torch.no_grad():
                model.eval()
                x, y = batches[0]
                logits = model(x)
                if probe is not None:
                    with probe.evaluate("val") as evaluation:
                        evaluation.update(logits, y, loss=criterion(logits, y))
                model.train()
    elapsed = time.perf_counter() - start
    if probe is not None:
        probe.__exit__(None, None, None)
    return elapsed / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-every", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = _batches(50)
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for variant in VARIANTS:
                times[variant].append(run(variant, batches, args.steps, args.eval_every, Path(folder)))
    bare = statistics.median(times["bare"])
    print(f"{args.steps} steps x {args.rounds} rounds, evaluation every {args.eval_every or 'never'}")
    print(f"{'variant':<20} {'ms/step':>8} {'ratio':>6}")
    for variant in VARIANTS:
        median = statistics.median(times[variant])
        print(f"{variant:<20} {median:>8.2f} {median / bare:>6.2f}")


if __name__ == "__main__":
    main()
