"""A small DenseNet (two dense blocks of BN-ReLU-conv layers whose outputs are concatenated) counting the Gaussian blobs in synthetic 12×12 images, MSE on the standardised count, AdamW with one-cycle or warm-up-stable-decay, logged as 4-step window means (sixteenth hold-out).

Images made here: 12×12 pixels, one channel, 0 to 9 blobs (the count
drawn uniformly), each a Gaussian bump at a uniform position in [1, 11]² of
width σ 0.6-1.0 pixels and height 0.6-1.4, plus Gaussian pixel noise (σ
0.15); pixels standardised with the training mean and deviation. The
target is the count standardised ((count − 4.5) / 2.87), one value an
image. 1,600 training and 400 validation images, batches of 64 (25 steps
an epoch). The model: a stem convolution 1 → 16 (3×3), a dense block of 3
layers (BatchNorm, ReLU, 3×3 convolution with growth 8, concatenated: 16 →
40 channels), a transition (BatchNorm, ReLU, 1×1 convolution to 20,
2×2 average pooling), a second dense block of 3 layers (20 → 44), BatchNorm,
ReLU, global average pooling and a linear head to one output; MSE. AdamW
(lr 3e-3, weight decay 1e-4) with OneCycleLR, or with warm-up-stable-decay
(5 % linear warm-up, constant, linear decay to zero over the last 20 %), 10
epochs. Logged as the mean of every 4 steps (loss, with the lr and gradient
norm of the 4th), per-layer statistics every 8 steps, val loss twice an
epoch. Task: regression.

Sixteenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout16``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family densenet_blob_counting``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "densenet_blob_counting"
LOGGING = Logging(every=4, mean=True, layer_every=8)
SIDE, MAX_BLOBS = 12, 9


@functools.lru_cache(maxsize=None)
def blobs(train: int = 1600, val: int = 400, seed: int = 162) -> Split:
    rng = np.random.default_rng(seed)
    grid = np.arange(SIDE, dtype=float)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        counts = rng.integers(0, MAX_BLOBS + 1, n)
        images = np.zeros((n, SIDE, SIDE))
        for k in range(MAX_BLOBS):
            present = (counts > k)[:, None, None]
            cx, cy = rng.uniform(1, SIDE - 1, (2, n, 1, 1))
            sigma, height = rng.uniform(0.6, 1.0, (n, 1, 1)), rng.uniform(0.6, 1.4, (n, 1, 1))
            bump = height * np.exp(-((grid[None, None, :] - cx) ** 2 + (grid[None, :, None] - cy) ** 2)
                                   / (2 * sigma ** 2))
            images += np.where(present, bump, 0.0)
        images += rng.normal(0, 0.15, images.shape)
        return images, (counts - 4.5) / 2.87

    (x_train, y_train), (x_val, y_val) = draw(train), draw(val)
    mean, std = x_train.mean(), x_train.std()

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.tensor(array, dtype=torch.float32)

    return Split(tensor((x_train - mean) / std)[:, None], tensor(y_train)[:, None],
                 tensor((x_val - mean) / std)[:, None], tensor(y_val)[:, None], 1)


class DenseLayer(nn.Module):
    def __init__(self, inputs: int, growth: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(inputs)
        self.conv = nn.Conv2d(inputs, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(torch.relu(self.norm(x)))], dim=1)


class BlobDenseNet(nn.Module):
    def __init__(self, stem: int = 16, growth: int = 8, layers: int = 3):
        super().__init__()
        block1 = [DenseLayer(stem + i * growth, growth) for i in range(layers)]
        after1 = stem + layers * growth
        middle = after1 // 2
        block2 = [DenseLayer(middle + i * growth, growth) for i in range(layers)]
        after2 = middle + layers * growth
        self.stem = nn.Conv2d(1, stem, 3, padding=1, bias=False)
        self.block1 = nn.Sequential(*block1)
        self.transition = nn.Sequential(nn.BatchNorm2d(after1), nn.ReLU(), nn.Conv2d(after1, middle, 1, bias=False),
                                        nn.AvgPool2d(2))
        self.block2 = nn.Sequential(*block2)
        self.final_norm = nn.BatchNorm2d(after2)
        self.head = nn.Linear(after2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.block2(self.transition(self.block1(self.stem(x))))
        return self.head(torch.relu(self.final_norm(hidden)).mean((2, 3)))


def densenet(**kwargs):
    return lambda data: BlobDenseNet(**kwargs)


def adamw(lr: float, weight_decay: float = 1e-4):
    def make(model: nn.Module) -> torch.optim.Optimizer:
        named = list(model.named_parameters())
        decay = [p for n, p in named if p.ndim >= 2]
        exempt = [p for n, p in named if p.ndim < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                  {"params": exempt, "weight_decay": 0.0}], lr=lr)
    return make


def sgd(lr: float, momentum: float = 0.9):
    return lambda model: torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def one_cycle():
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total + 1), "step")


def wsd(warmup: float = 0.05, decay_from: float = 0.8, decay_to: float | None = None, floor: float = 0.0):
    """Warm-up-stable-decay as a LambdaLR: linear warm-up over ``warmup`` of the run, constant, then linear decay
    from ``decay_from`` to ``decay_to`` (the end) down to ``floor`` × the lr."""
    def multiplier(taken: int, total: int) -> float:
        warm, start = max(1, int(warmup * total)), int(decay_from * total)
        end = int((decay_to if decay_to is not None else 1.0) * total)
        if taken < warm:
            return (taken + 1) / warm
        if taken < start:
            return 1.0
        return max(floor, 1.0 - (taken - start) / max(1, end - start))
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda taken: multiplier(taken, total)), "step")


def raw_counts(at: int, length: int):
    """The targets of ``length`` batches from step ``at`` as raw counts (0-9), not standardised."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x, y * 2.87 + 4.5) if at <= step < at + length else (x, y)
    return hook


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="regression", logging=LOGGING, batch_size=64,
                    probe_layout=True, scheduler=one_cycle(), evals_per_epoch=2)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", blobs), settings.pop("model", densenet()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    return [
        run("count_healthy_adamw_onecycle", "DenseNet (2 dense blocks of 3 layers, growth 8) counting Gaussian "
            "blobs in 12x12 images, MSE on the standardised count, AdamW 3e-3 wd 1e-4, one-cycle, 10 epochs "
            "(250 steps)", adamw(3e-3), 10, healthy=True),
        run("count_healthy_adamw_onecycle_seed1", "blob-counting DenseNet, AdamW one-cycle peak 3e-3, 10 epochs, "
            "seed 1", adamw(3e-3), 10, seed=1, healthy=True),
        run("count_healthy_adamw_wsd", "blob-counting DenseNet, AdamW 2e-3, 5 % warm-up, stable, linear decay to "
            "zero over the last 20 %, 10 epochs, seed 2", adamw(2e-3), 10, scheduler=wsd(), seed=2, healthy=True),
        run("count_healthy_adamw_wsd_every_8", "blob-counting DenseNet, AdamW 2e-3, warm-up-stable-decay, 10 "
            "epochs, seed 3, logged every 8 steps (that step's loss)", adamw(2e-3), 10, scheduler=wsd(), seed=3,
            logging=Logging(every=8, layer_every=8), healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    "count_lr_too_low_adamw": (
        "final val 0.319 vs twin 0.048, 6.7x, the first val 0.96; val falling at 17 of the 19 evaluations "
        "after the first"),
    "count_decayed_too_early_wsd": (
        "val 0.088-0.103 at every evaluation from step 60 on while the twin goes on to 0.050; final val 1.83x "
        "the twin's; final train 0.099 vs 0.060"),
    "count_divergence_sgd": (
        "the train loss reaches 1.6e33 at step 32 and is NaN from step 36 on, val NaN from the second "
        "evaluation; the twin (AdamW one-cycle) ends at val 0.048"),
    "count_train_longer_two_epochs": (
        "val falls at every evaluation (0.91 to 0.14), best at the last; final val 0.136 vs 0.048 for the "
        "twin that runs 10 epochs, 2.9x"),
    "count_loss_spike_raw_counts": (
        "the 4-step mean of the train loss at step 152 is 11.6 against 0.05-0.07 before, 0.19-0.41 for the "
        "next five records; final val 0.058 vs twin 0.050, 1.16x"),
    "count_update_ratio_low_adamw": (
        "median update/weight ratio of the weight tensors 1.4e-7 to 4.6e-6 vs the twin's 3e-4 to 7e-3; final "
        "val 0.734 vs twin 0.048, 15x, the first val 0.96"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("count_lr_too_low_adamw", "blob-counting DenseNet, AdamW one-cycle to a peak of 3e-5 (100x below the "
            "working peak: the lr of a fine-tuning recipe), 10 epochs", adamw(3e-5), 10,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("count_decayed_too_early_wsd", "blob-counting DenseNet, AdamW 2e-3, warm-up-stable-decay whose decay "
            "phase was set to start at 8 % and end at 12 % of the run (fractions meant for the warm-up) down to "
            "1e-3 x the lr, 10 epochs", adamw(2e-3), 10, scheduler=wsd(0.05, 0.08, 0.12, 1e-3), seed=2,
            expect={"decayed_too_early": [15, 120]}, forbid=["lr_too_high"],
            allow=["underfitting", "lr_too_low", "train_longer", "update_ratio_out_of_band"]),
        run("count_divergence_sgd", "blob-counting DenseNet, SGD momentum 0.9 at lr 3 (an lr-finder's upper end "
            "taken as the lr), one-cycle, 10 epochs", sgd(3.0), 10, expect={"divergence": everywhere},
            allow=["lr_too_high", "loss_spike", "exploding_gradients", "update_ratio_out_of_band",
                   "best_epoch_not_last", "underfitting", "dead_layers"]),
        run("count_train_longer_two_epochs", "blob-counting DenseNet, AdamW 5e-4 at a constant lr, stopped after "
            "2 epochs (50 steps: a quick check config left in), val four times an epoch", adamw(5e-4), 2,
            scheduler=None, evals_per_epoch=4, expect={"train_longer": everywhere},
            forbid=["overfitting", "best_epoch_not_last"], allow=["lr_too_low", "underfitting"]),
        run("count_loss_spike_raw_counts", "blob-counting DenseNet, AdamW 2e-3, warm-up-stable-decay, 10 epochs, "
            "the targets of the batches of steps 150 and 151 read as raw counts instead of standardised ones (a "
            "shard written before the scaling step)", adamw(2e-3), 10, scheduler=wsd(), seed=2,
            batch_hook=raw_counts(150, 2), expect={"loss_spike": [147, 175]},
            forbid=["divergence"], allow=["exploding_gradients", "update_ratio_out_of_band", "best_epoch_not_last"]),
        run("count_update_ratio_low_adamw", "blob-counting DenseNet, AdamW one-cycle to a peak of 3e-7 (a "
            "per-sample lr that was meant to be multiplied by the batch size and a x100 'base' factor), 10 "
            "epochs", adamw(3e-7), 10, expect={"update_ratio_out_of_band": everywhere},
            allow=["lr_too_low", "underfitting", "train_longer", "no_better_than_baseline"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["count_healthy_adamw_onecycle"] for spec in faults()}
    twins["count_decayed_too_early_wsd"] = healthy["count_healthy_adamw_wsd"]
    twins["count_loss_spike_raw_counts"] = healthy["count_healthy_adamw_wsd"]
    return twins
