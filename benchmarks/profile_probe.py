"""Where the probe's time goes on the CPU: the MLP of compare_loggers trained under cProfile.

Trains the CPU MLP with the probe for ``--steps`` steps under cProfile and
prints the top functions by cumulative and by own time, restricted to the
probe's code (``probe/`` and the store writer it calls), in microseconds per
training step. The training step itself (forward, backward, AdamW) is shown
once as the yardstick. With ``--py-spy`` it also records a py-spy flame graph
(sampling, native frames off) of a second run into the given SVG.

    OMP_NUM_THREADS=1 python benchmarks/profile_probe.py
    OMP_NUM_THREADS=1 python benchmarks/profile_probe.py --layer-every 1 --steps 200
    OMP_NUM_THREADS=1 python benchmarks/profile_probe.py --small     # a tiny MLP: Python overhead dominates
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from traindoctor.probe import Probe  # noqa: E402

PROBE_FILES = (str(ROOT / "probe"), str(ROOT / "store" / "segments.py"))


def make_mlp(small: bool) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    width, batch = (64, 8) if small else (1024, 256)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    return model, torch.randn(batch, 512), torch.randint(0, 10, (batch,))


def train(steps: int, layer_every: int, small: bool, store: str) -> None:
    model, inputs, targets = make_mlp(small)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    with Probe(run="profile", store=store, layer_every=layer_every, handle_sigterm=False,
               compact_on_close=False) as probe:
        probe.watch(model, optimizer)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
            probe.step(loss=loss)


def timed_in_code(steps: int, small: bool, store: str) -> dict[str, float]:
    """Milliseconds per step spent inside the probe's code (its grad hooks, optimizer hooks and
    probe.step, timed with perf_counter: no profiler), and, for scale, inside a hand-written
    TensorBoard-style loop recording the same per-layer statistics every step (norms + .item()),
    on the same model; plus the whole step."""
    import time

    from traindoctor.probe import core

    spent = [0.0]

    def timing(function):
        def wrapped(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started
        return wrapped

    original_make = core.Probe._make_grad_hook
    originals = {name: getattr(core.Probe, name) for name in ("step", "_before_optimizer_step", "_after_optimizer_step")}
    core.Probe._make_grad_hook = lambda self, *args: timing(original_make(self, *args))
    for name, function in originals.items():
        setattr(core.Probe, name, timing(function))
    try:
        started = time.perf_counter()
        train(steps, 50, small, store)
        whole = time.perf_counter() - started
    finally:
        core.Probe._make_grad_hook = original_make
        for name, function in originals.items():
            setattr(core.Probe, name, function)
    probe_ms = 1e3 * spent[0] / steps

    model, inputs, targets = make_mlp(small)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    named = list(model.named_parameters())
    logged: dict[str, float] = {}
    peer = 0.0
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        started = time.perf_counter()
        logged["loss"] = loss.item()
        total = 0.0
        for name, param in named:
            grad_norm = param.grad.norm().item()
            total += grad_norm ** 2
            logged[f"grad_norm/{name}"] = grad_norm
            logged[f"weight_norm/{name}"] = param.norm().item()
        logged["grad_norm/total"] = total ** 0.5
        logged["lr/group0"] = optimizer.param_groups[0]["lr"]
        peer += time.perf_counter() - started
    return {"step_ms": 1e3 * whole / steps, "probe_ms": probe_ms, "peer_ms": 1e3 * peer / steps}


def _is_probe(filename: str) -> bool:
    return filename.startswith(PROBE_FILES)


def report(stats: pstats.Stats, steps: int, top: int) -> None:
    entries = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in entries.items():
        if _is_probe(filename):
            label = f"{Path(filename).relative_to(ROOT)}:{line}({function})"
            rows.append((label, calls, own, cumulative))
    step_total = sum(cum for (f, _, name), (_, _, _, cum, _) in entries.items()
                     if name == "train" and f.endswith("profile_probe.py"))
    hook_names = ("hook", "_before_optimizer_step", "_after_optimizer_step", "step")
    probe_total = sum(cum for (f, _, name), (_, _, _, cum, _) in entries.items()
                      if _is_probe(f) and f.endswith("core.py") and name in hook_names)
    scale = 1e6 / steps
    print(f"{steps} steps; the whole training loop {step_total * scale:9.1f} us/step; "
          f"probe entry points (grad hooks + optimizer hooks + probe.step) {probe_total * scale:8.1f} us/step "
          f"({100 * probe_total / step_total:.2f} % of the loop; profiler overhead inflates small functions)")
    for title, key in (("cumulative", 3), ("own", 2)):
        print(f"\nprobe functions by {title} time (us per training step; calls per step):")
        print(f"  {'us/step':>9s} {'own us':>8s} {'calls':>7s}  function")
        for label, calls, own, cumulative in sorted(rows, key=lambda r: r[key], reverse=True)[:top]:
            print(f"  {cumulative * scale:9.1f} {own * scale:8.1f} {calls / steps:7.2f}  {label}")
    print("\ntorch calls made from probe code, by own time (us per training step):")
    callees: dict[str, list[float]] = {}
    for (filename, line, function), (_, calls, own, cumulative, callers) in entries.items():
        if _is_probe(filename):
            continue
        from_probe = [(c, value) for c, value in callers.items() if _is_probe(c[0])]
        if not from_probe:
            continue
        total_calls = sum(v[1] for _, v in from_probe)
        total_time = sum(v[3] for _, v in from_probe)
        key = function if filename == "~" else f"{Path(filename).name}:{line}({function})"
        current = callees.setdefault(key, [0.0, 0.0])
        current[0] += total_calls
        current[1] += total_time
    for key, (calls, time_spent) in sorted(callees.items(), key=lambda item: item[1][1], reverse=True)[:top]:
        print(f"  {time_spent * scale:9.1f} {calls / steps:7.2f}  {key}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--layer-every", type=int, default=50, help="the probe's per-layer cadence (default: the default)")
    parser.add_argument("--small", action="store_true", help="a tiny MLP, where the probe's Python cost shows")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--py-spy", metavar="SVG", help="also record a py-spy flame graph of a second run here")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'small' if args.small else '1024-wide'} MLP, layer_every={args.layer_every}")
    with tempfile.TemporaryDirectory() as store:
        train(5, args.layer_every, args.small, store)  # warm-up: imports, allocator, first lint
        profiler = cProfile.Profile()
        profiler.enable()
        train(args.steps, args.layer_every, args.small, store)
        profiler.disable()
    report(pstats.Stats(profiler), args.steps, args.top)
    with tempfile.TemporaryDirectory() as store:
        timed = timed_in_code(args.steps, args.small, store)
    print(f"\nwithout the profiler, layer_every=50: step {timed['step_ms']:.2f} ms; inside the probe's code "
          f"{timed['probe_ms']:.3f} ms/step ({100 * timed['probe_ms'] / timed['step_ms']:.2f} %); the same per-layer "
          f"statistics every step by hand (norms + .item(), no writer) {timed['peer_ms']:.3f} ms/step "
          f"({timed['peer_ms'] / timed['probe_ms']:.1f}x the probe's)")
    if args.py_spy:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        command = [spy, "record", "--output", args.py_spy, "--rate", "500", "--", sys.executable, __file__,
                   "--steps", str(args.steps), "--layer-every", str(args.layer_every), "--top", "0"]
        if args.small:
            command.append("--small")
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode == 0:
            print(f"\npy-spy flame graph: {args.py_spy}")
        else:
            print(f"\npy-spy could not record (rc {result.returncode}): {result.stderr.strip().splitlines()[-1:]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
