"""The probe against what users run today, in one process (issue 8).

The same training loop runs bare and with each way of getting per-layer
statistics. All variants train one shared model with one optimizer on one
batch: each attaches its hooks for a block of steps and takes them off after
(outside the timed region), and the blocks are interleaved in a shuffled
order each round, so drift in the machine's speed hits all of them alike. Prints, per variant, the
median step time, the median over rounds of its block's time over the bare
block's of the same round (and that ratio's quartiles: the spread), the added
time per step and what that is as a multiple of the probe's; plus peak extra
memory (CUDA only: on the CPU torch's allocations are not attributable per
variant in one process).

Every peer records what the probe records at its every-step cadence: the
per-layer gradient norm, the per-layer weight norm, the global gradient norm,
the lr and the loss (the probe also measures per-layer update ratios, which
the peers do not, so the comparison leans their way).

    python benchmarks/compare_loggers.py                 # CPU MLP (+ GPU models when CUDA is there)
    python benchmarks/compare_loggers.py --rounds 10 --steps 20 --models mlp

Variants:
  bare              no statistics at all
  bare-again        a second bare copy (an A/A control: how far the ratios drift on this machine)
  probe             traindoctor's probe at default settings
  probe-every-step  the probe with per-layer statistics every step (layer_every=1)
  wandb             wandb.watch(model, log="all", log_freq=1), offline
  tensorboard       a hand-written SummaryWriter loop: per-layer grad and weight
                    norms with .item() every step (the usual pattern)
  lightning         lightning.pytorch.utilities.grad_norm every step (per-layer and total),
                    plus per-layer weight norms and lr, logged with .item()

A peer that cannot be installed or started is reported as such.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------- models


def cpu_mlp() -> tuple[nn.Module, Callable[[], tuple[torch.Tensor, torch.Tensor]], str]:
    """A 4-layer MLP whose Adam step takes ≥ 20 ms on one CPU core."""
    width, batch = 1024, 256
    model = nn.Sequential(nn.Linear(512, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    inputs, targets = torch.randn(batch, 512), torch.randint(0, 10, (batch,))
    return model, lambda: (inputs, targets), "cpu"


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(hidden)
        hidden = hidden + self.attention(normed, normed, normed, attn_mask=mask, need_weights=False)[0]
        return hidden + self.mlp(self.norm2(hidden))


class GPT(nn.Module):
    """GPT-2 small's shape (12 layers, width 768, 12 heads, vocab 50257), built in code."""

    def __init__(self, vocab: int = 50257, width: int = 768, layers: int = 12, heads: int = 12, length: int = 1024) -> None:
        super().__init__()
        self.embed, self.position = nn.Embedding(vocab, width), nn.Embedding(length, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        mask = torch.triu(torch.full((length, length), float("-inf"), device=tokens.device), 1)
        hidden = self.embed(tokens) + self.position(torch.arange(length, device=tokens.device))
        for block in self.blocks:
            hidden = block(hidden, mask)
        return self.head(self.norm(hidden)).flatten(0, 1)


def gpu_gpt2() -> tuple[nn.Module, Callable, str]:
    model = GPT().cuda()
    tokens = torch.randint(0, 50257, (8, 1024), device="cuda")
    return model, lambda: (tokens, tokens.flatten()), "cuda-bf16"


def resnet18_like() -> nn.Module:
    def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
        def block(i: int, o: int, s: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
        return nn.Sequential(block(cin, cout, stride), block(cout, cout, 1))

    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         stage(64, 64, 1), stage(64, 128, 2), stage(128, 256, 2), stage(256, 512, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))


def gpu_resnet() -> tuple[nn.Module, Callable, str]:
    model = resnet18_like().cuda().to(memory_format=torch.channels_last)
    images = torch.randn(128, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    targets = torch.randint(0, 1000, (128,), device="cuda")
    return model, lambda: (images, targets), "cuda-bf16"


MODELS = {"mlp": cpu_mlp, "gpt2-small": gpu_gpt2, "resnet18": gpu_resnet}


# ----------------------------------------------------------------- variants


@dataclass
class Variant:
    """A way of recording statistics, attached to the shared model for each of its blocks.

    ``attach(step)`` (untimed) returns the function called after each
    optimizer step; ``detach()`` (untimed) takes its hooks off again;
    ``close()`` ends it after the last round.
    """

    name: str
    attach: Callable[[int], Callable[[torch.Tensor, int], None]]
    detach: Callable[[], None]
    close: Callable[[], None]
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    peak_extra_bytes: int = 0


def _no_op(*_: Any) -> None:
    return None


def _bare(model: nn.Module, optimizer: torch.optim.Optimizer, name: str) -> tuple:
    return (lambda step: _no_op), _no_op, _no_op


def _probe_variant(store: Path, layer_every: int | None) -> Callable[[nn.Module, torch.optim.Optimizer, str], tuple]:
    def make(model: nn.Module, optimizer: torch.optim.Optimizer, name: str) -> tuple:
        from traindoctor.probe import Probe

        kwargs = {} if layer_every is None else {"layer_every": layer_every}
        current: list[Probe] = []

        def attach(step: int) -> Callable:
            # A probe per block, continuing the step count, so its per-layer steps fall
            # where one watching the whole run would put them (multiples of layer_every).
            probe = Probe(run=name, store=store, initial_step=step, handle_sigterm=False, compact_on_close=False,
                          **kwargs)
            probe.watch(model, optimizer)
            current.append(probe)
            return lambda loss, _: probe.step(loss=loss)

        def detach() -> None:
            current.pop().close()
        return attach, detach, _no_op
    return make


def _wandb_variant(directory: Path) -> Callable:
    def make(model: nn.Module, optimizer: torch.optim.Optimizer, name: str) -> tuple:
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        run = wandb.init(project="traindoctor-bench", name=name, mode="offline", dir=str(directory), reinit=True)

        def attach(step: int) -> Callable:
            wandb.watch(model, log="all", log_freq=1)

            def after(loss: torch.Tensor, step: int) -> None:
                wandb.log({"loss": loss.item()}, step=step)  # wandb's own examples log the loss like this
            return after

        return attach, (lambda: wandb.unwatch(model)), run.finish
    return make


def _tensorboard_variant(directory: Path) -> Callable:
    def make(model: nn.Module, optimizer: torch.optim.Optimizer, name: str) -> tuple:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(directory / name))
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

        def after(loss: torch.Tensor, step: int) -> None:
            writer.add_scalar("train/loss", loss.item(), step)
            total = 0.0
            for parameter_name, parameter in named:
                if parameter.grad is None:
                    continue
                grad_norm = parameter.grad.norm().item()
                total += grad_norm ** 2
                writer.add_scalar(f"grad_norm/{parameter_name}", grad_norm, step)
                writer.add_scalar(f"weight_norm/{parameter_name}", parameter.norm().item(), step)
            writer.add_scalar("grad_norm/total", total ** 0.5, step)
            for index, group in enumerate(optimizer.param_groups):
                writer.add_scalar(f"lr/group{index}", group["lr"], step)
        return (lambda step: after), _no_op, writer.close
    return make


def _lightning_variant() -> Callable:
    def make(model: nn.Module, optimizer: torch.optim.Optimizer, name: str) -> tuple:
        from lightning.pytorch.utilities import grad_norm

        logged: dict[str, float] = {}
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

        def after(loss: torch.Tensor, step: int) -> None:
            # What `self.log_dict(grad_norm(self, norm_type=2))` in on_before_optimizer_step
            # amounts to (per-layer and total grad norms), plus the weight norms and lr
            # the probe also records, each logged value copied to the host with .item().
            norms = grad_norm(model, norm_type=2)
            logged.update({key: value.item() for key, value in norms.items()})
            logged.update({f"weight_norm/{n}": p.detach().norm().item() for n, p in named})
            logged.update({f"lr/group{i}": group["lr"] for i, group in enumerate(optimizer.param_groups)})
            logged["loss"] = loss.item()
        return (lambda step: after), _no_op, _no_op
    return make


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Callable, device: str) -> torch.Tensor:
    inputs, targets = batch()
    optimizer.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(inputs), targets)
    else:
        loss = nn.functional.cross_entropy(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss


def benchmark(model_name: str, rounds: int, steps: int, variants: list[str], workdir: Path) -> list[dict]:
    factories: dict[str, Callable] = {
        "bare": _bare,
        "bare-again": _bare,
        "probe": _probe_variant(workdir / "probe-store", None),
        "probe-every-step": _probe_variant(workdir / "probe-store", 1),
        "wandb": _wandb_variant(workdir / "wandb"),
        "tensorboard": _tensorboard_variant(workdir / "tensorboard"),
        "lightning": _lightning_variant(),
    }
    # One model, one optimizer, one batch for every variant: each attaches to it for its
    # block and detaches after. Separate copies of the model differ in speed by a few
    # per cent on a CPU from where their tensors happen to lie in memory (the A/A row
    # showed 4 %), which is more than the effect being measured.
    model, batch, device = MODELS[model_name]()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    active: list[Variant] = []
    unavailable: list[dict] = []
    for name in variants:
        try:
            attach, detach, close = factories[name](model, optimizer, f"{model_name}-{name}")
        except Exception as error:  # a peer that is not installed or cannot start
            unavailable.append({"model": model_name, "variant": name, "status": f"unavailable: {type(error).__name__}: {error}"})
            continue
        active.append(Variant(name, attach, detach, close))

    step = 0
    for variant in active:  # warm-up: allocator, autotuning, first flushes
        after_step = variant.attach(step)
        for _ in range(3):
            loss = _train_step(model, optimizer, batch, device)
            step += 1
            after_step(loss, step)
        variant.detach()
    _sync(device)

    for _ in range(rounds):
        order = list(active)
        random.shuffle(order)
        for variant in order:
            after_step = variant.attach(step)
            # One untimed step after attaching: a fresh probe lints the set-up at its first step.
            loss = _train_step(model, optimizer, batch, device)
            step += 1
            after_step(loss, step)
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            _sync(device)
            started, started_cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                loss = _train_step(model, optimizer, batch, device)
                step += 1
                after_step(loss, step)
            _sync(device)
            variant.times.append((time.perf_counter() - started) / steps)
            variant.cpu_times.append((time.process_time() - started_cpu) / steps)
            if device.startswith("cuda"):
                variant.peak_extra_bytes = max(variant.peak_extra_bytes, torch.cuda.max_memory_allocated() - before)
            variant.detach()

    for variant in active:
        variant.close()
    bare_variant = next(v for v in active if v.name == "bare")
    bare_times, bare_cpu = bare_variant.times, bare_variant.cpu_times
    added_by_name: dict[str, list[float]] = {}
    results = []
    for variant in active:
        # Paired per round: a variant's block against the bare block of the same round,
        # so slow spells of the shared machine cancel out as far as they can.
        ratios = [t / b for t, b in zip(variant.times, bare_times)]
        added = [t - b for t, b in zip(variant.times, bare_times)]
        added_by_name[variant.name] = added
        low, high = _quartiles(ratios)
        cpu_ratio = statistics.median([t / b for t, b in zip(variant.cpu_times, bare_cpu)])
        results.append({"model": model_name, "variant": variant.name, "median_ms": statistics.median(variant.times) * 1e3,
                        "ratio": statistics.median(ratios), "ratio_p25": low, "ratio_p75": high, "cpu_ratio": cpu_ratio,
                        # Interference from other jobs only adds time: the fastest blocks are the steadiest.
                        "best_ratio": min(variant.times) / min(bare_times),
                        "added_ms": statistics.median(added) * 1e3,
                        # CUDA's allocator counts per block; on the CPU torch's
                        # allocations are not attributable per variant in one process.
                        "peak_extra_mib": variant.peak_extra_bytes / 2**20 if device.startswith("cuda") else None})
    probe_added = statistics.median(added_by_name["probe"]) if "probe" in added_by_name else None
    for row in results:
        row["x_probe_added"] = (row["added_ms"] / (probe_added * 1e3)) if probe_added and probe_added > 0 else None
    return results + unavailable


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return quartiles[0], quartiles[2]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="probe vs peers, interleaved in one process")
    parser.add_argument("--models", nargs="*", default=None, help="mlp, gpt2-small, resnet18 (default: mlp, and GPU ones on CUDA)")
    parser.add_argument("--variants", nargs="*", default=["bare", "bare-again", "probe", "probe-every-step", "wandb", "tensorboard", "lightning"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50,
                        help="steps per block (50: every probe block holds exactly one of its per-layer steps)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    random.seed(0)
    models = args.models or (["mlp", "gpt2-small", "resnet18"] if torch.cuda.is_available() else ["mlp"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as workdir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model_name in models:
            if model_name != "mlp" and not torch.cuda.is_available():
                rows.append({"model": model_name, "variant": "*", "status": "skipped: no CUDA device"})
                continue
            rows += benchmark(model_name, args.rounds, args.steps, args.variants, Path(workdir))
    print("ratio: median over rounds of (variant block / bare block of the same round), wall time; p25-p75: its "
          "spread; cpu: the same with this process's CPU time (all its threads; not wandb's separate service "
          "process); best: fastest block over bare's fastest; added: median per-step wall time over bare; x probe: added / the probe's added (n/a when "
          "the probe's is <= 0)")
    print(f"{'model':11s} {'variant':17s} {'step ms':>8s} {'ratio':>7s} {'p25-p75':>13s} {'cpu':>6s} {'best':>6s} {'added ms':>9s} "
          f"{'x probe':>8s} {'peak MiB':>9s}")
    for row in rows:
        if "status" in row:
            print(f"{row['model']:11s} {row['variant']:17s} {row['status']}")
            continue
        multiple = "n/a" if row["x_probe_added"] is None else f"{row['x_probe_added']:.1f}"
        peak = "n/a" if row["peak_extra_mib"] is None else f"{row['peak_extra_mib']:.1f}"
        spread = f"{row['ratio_p25']:.3f}-{row['ratio_p75']:.3f}"
        print(f"{row['model']:11s} {row['variant']:17s} {row['median_ms']:8.2f} {row['ratio']:7.3f} {spread:>13s} "
              f"{row['cpu_ratio']:6.3f} {row['best_ratio']:6.3f} "
              f"{row['added_ms']:9.3f} {multiple:>8s} {peak:>9s}")

if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
