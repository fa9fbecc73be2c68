"""The probe's cost: one training loop run bare and with the probe, interleaved in one process.

Two copies of the model (same init) train side by side; blocks of steps
alternate bare / probed, so drift in the machine's speed hits both alike.
Prints the median step time of each, their ratio (the figure the targets
refer to), the mean ratio (which includes the per-layer steps every
``layer_every``), and the peak extra memory the probe holds.

    OMP_NUM_THREADS=1 python benchmarks/probe_overhead.py            # CPU MLP (+ GPU models on CUDA)
    python benchmarks/probe_overhead.py --models gpt2 resnet18 --rounds 20

Targets (issue 3): <= 1.03 on the CPU MLP (a step >= 20 ms); on a GPU <= 1.01
for a GPT-2-small-sized transformer in bf16 and <= 1.03 for a ResNet-18-sized CNN.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from traindoctor.probe import Probe  # noqa: E402


@dataclass
class Workload:
    name: str
    model: nn.Module
    batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    device: str
    amp_dtype: torch.dtype | None = None
    classes: int | None = None


def cpu_mlp(smoke: bool = False) -> Workload:
    """A 4-layer MLP whose AdamW step takes >= 20 ms on one CPU core."""
    width, batch = (64, 8) if smoke else (1024, 256)
    model = nn.Sequential(nn.Linear(512, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    inputs, targets = torch.randn(batch, 512), torch.randint(0, 10, (batch,))
    return Workload("cpu-mlp", model, lambda: (inputs, targets), "cpu", classes=10)


class Block(nn.Module):
    """A pre-norm GPT-2 block (causal self-attention + 4x MLP)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, attn_mask=mask, need_weights=False, is_causal=True)[0]
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """GPT-2 small: 12 layers, width 768, 12 heads, vocabulary 50257, context 1024 (124M parameters)."""

    def __init__(self, layers: int = 12, width: int = 768, heads: int = 12, vocab: int = 50257, context: int = 1024) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tokens.weight  # tied, as in GPT-2

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        length = idx.shape[1]
        mask = torch.full((length, length), float("-inf"), device=idx.device).triu(1)
        x = self.tokens(idx) + self.positions(torch.arange(length, device=idx.device))
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm(x))


def gpt2_small(device: str, smoke: bool = False) -> Workload:
    if smoke:
        model, batch, length, vocab = GPT(2, 32, 2, 101, 16), 2, 16, 101
    else:
        model, batch, length, vocab = GPT(), 8, 1024, 50257
    idx = torch.randint(0, vocab, (batch, length + 1), device=device)
    return Workload("gpt2-small-bf16", model.to(device), lambda: (idx[:, :-1], idx[:, 1:]), device,
                    amp_dtype=torch.bfloat16, classes=vocab)


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18(width: int = 64, classes: int = 1000) -> nn.Module:
    """ResNet-18 (11.7M parameters at width 64), as torchvision builds it, without torchvision."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                               nn.MaxPool2d(3, 2, 1)]
    inputs = width
    for index, outputs in enumerate((width, 2 * width, 4 * width, 8 * width)):
        stride = 1 if index == 0 else 2
        layers += [BasicBlock(inputs, outputs, stride), BasicBlock(outputs, outputs, 1)]
        inputs = outputs
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, classes)]
    return nn.Sequential(*layers)


def resnet18_cnn(device: str, smoke: bool = False) -> Workload:
    model = resnet18(8, 10) if smoke else resnet18()
    batch, size, classes = (2, 32, 10) if smoke else (128, 224, 1000)
    images = torch.randn(batch, 3, size, size, device=device)
    targets = torch.randint(0, classes, (batch,), device=device)
    return Workload("resnet18-bf16", model.to(device).to(memory_format=torch.channels_last),
                    lambda: (images.contiguous(memory_format=torch.channels_last), targets), device,
                    amp_dtype=torch.bfloat16, classes=classes)


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _make_step(workload: Workload, model: nn.Module, optimizer: torch.optim.Optimizer, probe: Probe | None):
    criterion = nn.CrossEntropyLoss()
    device_type = torch.device(workload.device).type

    def step() -> None:
        inputs, targets = workload.batch()
        with torch.autocast(device_type, dtype=workload.amp_dtype or torch.bfloat16, enabled=workload.amp_dtype is not None):
            logits = model(inputs)
            loss = criterion(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if probe is not None:
            probe.step(loss=loss)

    return step


def _time_block(step: Callable[[], None], steps: int, device: str) -> tuple[list[float], list[float]]:
    """Wall time and process CPU time (all threads: the probe's publisher included) per step."""
    walls, cpus = [], []
    for _ in range(steps):
        _synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        _synchronize(device)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return walls, cpus


def probe_bytes(probe: Probe) -> int:
    """Memory the probe holds: its buffers plus, at a per-layer step, the weight copy (or samples)."""
    held = sum(t.numel() * t.element_size() for t in (probe._values, probe._layer_values, probe._grad_slots))
    tracker = probe._tracker
    if tracker.exact:
        snapshot = sum(p.numel() * p.element_size() for p in tracker.params)
    else:
        snapshot = sum((p.numel() if i is None else i.numel()) * (p.element_size() + 8)
                       for p, i in zip(tracker.params, tracker.indices))
    return held + snapshot


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def run(workload: Workload, rounds: int, steps: int, warmup: int, noise_floor: bool = False,
        live: bool = True) -> dict[str, float]:
    """Bare vs probed; with ``noise_floor`` the "probed" copy trains bare too (an A/A run); ``live``: the
    probe's live checks at each flush (on by default, as for users)."""
    device = workload.device
    bare_model = workload.model
    probed_model = copy.deepcopy(bare_model)
    fused = {"fused": True} if device.startswith("cuda") else {}
    bare_optimizer = torch.optim.AdamW(bare_model.parameters(), lr=1e-4, **fused)
    probed_optimizer = torch.optim.AdamW(probed_model.parameters(), lr=1e-4, **fused)
    with tempfile.TemporaryDirectory() as store:
        probe = Probe(run=f"overhead-{workload.name}", store=store, num_classes=workload.classes, handle_sigterm=False,
                      live=live)
        if not noise_floor:
            probe.watch(probed_model, probed_optimizer)
        bare = _make_step(workload, bare_model, bare_optimizer, None)
        probed = _make_step(workload, probed_model, probed_optimizer, None if noise_floor else probe)
        for _ in range(warmup):
            bare()
            probed()
        bare_times: list[float] = []
        probed_times: list[float] = []
        bare_cpu: list[float] = []
        probed_cpu: list[float] = []
        bare_peak = probed_peak = 0
        for index in range(rounds):
            order = [(bare, bare_times, bare_cpu), (probed, probed_times, probed_cpu)]
            for step, times, cpu in (order if index % 2 == 0 else order[::-1]):
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                walls, cpus = _time_block(step, steps, device)
                times.extend(walls)
                cpu.extend(cpus)
                if device.startswith("cuda"):
                    peak = torch.cuda.max_memory_allocated()
                    if step is bare:
                        bare_peak = max(bare_peak, peak)
                    else:
                        probed_peak = max(probed_peak, peak)
        extra = 0 if noise_floor else probe_bytes(probe)
        probe.close()
    bare_median, probed_median = statistics.median(bare_times), statistics.median(probed_times)
    result = {
        "bare_ms": 1e3 * bare_median,
        "probe_ms": 1e3 * probed_median,
        "median_ratio": probed_median / bare_median,
        "mean_ratio": statistics.fmean(probed_times) / statistics.fmean(bare_times),
        # Interference on a shared machine only adds time: the 10th percentile is steadier.
        "p10_ratio": _quantile(probed_times, 0.10) / _quantile(bare_times, 0.10),
        # On a shared machine wall time includes waiting for a core; CPU time does not.
        "cpu_median_ratio": statistics.median(probed_cpu) / statistics.median(bare_cpu),
        "probe_held_mib": extra / 2**20,
    }
    if device.startswith("cuda"):
        result["peak_extra_mib"] = (probed_peak - bare_peak) / 2**20
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, choices=["mlp", "gpt2", "resnet18"])
    parser.add_argument("--rounds", type=int, default=10, help="alternating block pairs")
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny models, to check the script runs")
    parser.add_argument("--noise-floor", action="store_true",
                        help="A/A run: both copies train bare, to show how far ratios drift on this machine")
    parser.add_argument("--live", choices=["on", "off", "both"], default="on",
                        help="the probe's live checks at each flush: on (the default for users), off, or both in "
                             "turn (the mean ratio includes the flushes, so their difference is the live checks' cost)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    models = args.models or (["mlp", "gpt2", "resnet18"] if cuda else ["mlp"])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {torch.cuda.get_device_name() if cuda else 'cpu'}")
    for name in models:
        if name != "mlp" and not cuda and not args.smoke:
            print(f"{name}: skipped (needs CUDA)")
            continue
        device = "cuda" if cuda else "cpu"
        workload = {"mlp": lambda: cpu_mlp(args.smoke),
                    "gpt2": lambda: gpt2_small(device, args.smoke),
                    "resnet18": lambda: resnet18_cnn(device, args.smoke)}[name]()
        for live in {"on": [True], "off": [False], "both": [False, True]}[args.live]:
            torch.manual_seed(0)
            result = run(workload, args.rounds, args.steps, args.warmup, noise_floor=args.noise_floor, live=live)
            params = sum(p.numel() for p in workload.model.parameters()) / 1e6
            memory = (f", measured CUDA peak extra {result['peak_extra_mib']:.1f} MiB"
                      if "peak_extra_mib" in result else "")
            label = (f"{workload.name} [A/A noise floor]" if args.noise_floor
                     else f"{workload.name} [live checks {'on' if live else 'off'}]")
            print(f"{label} ({params:.1f}M params, {workload.device}): bare {result['bare_ms']:.2f} ms/step, "
                  f"probe {result['probe_ms']:.2f} ms/step, median ratio {result['median_ratio']:.4f}, "
                  f"mean ratio {result['mean_ratio']:.4f}, p10 ratio {result['p10_ratio']:.4f}, "
                  f"CPU-time median ratio {result['cpu_median_ratio']:.4f}, "
                  f"peak extra memory {result['probe_held_mib']:.1f} MiB "
                  f"(probe buffers + weight copy at per-layer steps){memory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
