"""A tiny Perceiver (learned latents cross-attending to the inputs) classifying noisy point sets into 100 classes, ADOPT, warm-up-stable-decay, every 5 steps (tenth hold-out).

Point sets made here: each of 100 classes has a prototype of 6 points in
4-D (standard normal); a sample is its class's prototype points with
Gaussian noise (σ 0.25) plus 10 distractor points (standard normal), in a
random order (16 points of 4 values). 6,000 training samples (60 a class)
and 2,000 validation samples (20 a class), batches of 64 (94 steps per
epoch). The model: a linear embedding of each point to 48, 8 learned
latents of 48 that cross-attend to the points (4 heads, pre-LN, then an MLP
48→96→48), one pre-LN self-attention block over the latents, mean pooling,
a LayerNorm and a linear head to 100 logits; cross-entropy. ADOPT (written
here, Taniguchi et al. 2024: the gradient normalised by the second moment
of the previous steps, clipped at step^¼, then momentum; β (0.9, 0.9999)),
NAdam and Adam. The schedule (per step, as a multiplier): linear warm-up over
the first 5 % of the steps, constant, then a linear cool-down to 0 over
the last 20 % (WSD). Logged every 5 steps: the step's loss, training
accuracy, lr and gradient norm; per-layer statistics every 25 steps; val
loss, accuracy and confusion counts after every epoch. Task: classification,
C = 100.

Tenth hold-out (issue #12); see ``realnvp_flow_mixture.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "perceiver_point_sets"
LOGGING = Logging(every=5, layer_every=25)
CLASSES, PROTOTYPE, DISTRACTORS, FEATURES = 100, 6, 10, 4


@functools.lru_cache(maxsize=None)
def point_sets(per_class_train: int = 60, per_class_val: int = 20, noise: float = 0.25, long_tail: float | None = None,
               shuffled: bool = False, seed: int = 101) -> Split:
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(CLASSES, PROTOTYPE, FEATURES))

    def draw(per_class: int, tail: bool) -> tuple[torch.Tensor, torch.Tensor]:
        counts = np.full(CLASSES, per_class)
        if tail:  # a crawl that found class k with frequency ∝ 1/(k+1)^long_tail (as many samples in all)
            weights = (np.arange(CLASSES) + 1.0) ** -long_tail
            counts = np.maximum(1, np.round(per_class * CLASSES * weights / weights.sum())).astype(int)
        y = np.repeat(np.arange(CLASSES), counts)
        points = prototypes[y] + noise * rng.normal(size=(len(y), PROTOTYPE, FEATURES))
        points = np.concatenate([points, rng.normal(size=(len(y), DISTRACTORS, FEATURES))], axis=1)
        order = rng.random((len(y), PROTOTYPE + DISTRACTORS)).argsort(1)
        points = np.take_along_axis(points, order[:, :, None], axis=1)
        shuffle = rng.permutation(len(y))
        return torch.tensor(points[shuffle], dtype=torch.float32), torch.tensor(y[shuffle])

    x_train, y_train = draw(per_class_train, long_tail is not None)
    x_val, y_val = draw(per_class_val, long_tail is not None)
    if shuffled:  # labels joined to the wrong samples in training (val intact)
        y_train = y_train[torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))]
    return Split(x_train, y_train, x_val, y_val, CLASSES)


class Perceiver(nn.Module):
    def __init__(self, width: int = 48, latents: int = 8, self_blocks: int = 1, norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.embed = nn.Linear(FEATURES, width)
        self.latents = nn.Parameter(torch.randn(latents, width) * 0.2)
        self.cross_norm_q, self.cross_norm_kv = nn.LayerNorm(width), nn.LayerNorm(width)
        self.cross = nn.MultiheadAttention(width, 4, batch_first=True)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True,
                                                               norm_first=norm_first) for _ in range(self_blocks))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        inputs = self.embed(points)
        latents = self.latents.expand(points.shape[0], -1, -1)
        if self.norm_first:
            latents = latents + self.cross(self.cross_norm_q(latents), self.cross_norm_kv(inputs),
                                           self.cross_norm_kv(inputs), need_weights=False)[0]
            latents = latents + self.mlp(self.mlp_norm(latents))
        else:  # post-LN: normalise after each residual sum
            latents = self.cross_norm_q(latents + self.cross(latents, inputs, inputs, need_weights=False)[0])
            latents = self.mlp_norm(latents + self.mlp(latents))
        for block in self.blocks:
            latents = block(latents)
        return self.head(self.norm(latents.mean(1)))


def perceiver(**kwargs):
    return lambda data: Perceiver(**kwargs)


class ADOPT(torch.optim.Optimizer):
    """ADOPT (Taniguchi et al. 2024): v₀ = g₀²; then m ← β₁ m + (1-β₁) clip(g / max(√v, ε), step^¼),
    w ← w - lr·m, and only then v ← β₂ v + (1-β₂) g² (the normaliser never sees the current gradient)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.9999), eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad, state = param.grad, self.state[param]
                if not state:
                    state["step"], state["m"], state["v"] = 0, torch.zeros_like(param), grad * grad
                    continue
                state["step"] += 1
                if group["weight_decay"]:
                    param.mul_(1 - group["lr"] * group["weight_decay"])
                normalised = grad / state["v"].sqrt().clamp(min=group["eps"])
                limit = state["step"] ** 0.25
                state["m"].mul_(beta1).add_(normalised.clamp(-limit, limit), alpha=1 - beta1)
                param.sub_(state["m"], alpha=group["lr"])
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)


def adopt(lr: float, **kwargs):
    return lambda model: ADOPT(model.parameters(), lr=lr, **kwargs)


def adam(lr: float):
    return lambda model: torch.optim.Adam(model.parameters(), lr=lr)


def nadam(lr: float):
    return lambda model: torch.optim.NAdam(model.parameters(), lr=lr)


def wsd(warmup: float = 0.05, decay: float = 0.2, bump_at: int | None = None, bump_length: int = 0,
        bump: float = 1.0):
    """(step, total) → multiplier: warm-up over ``warmup`` of the steps (0: none), constant, linear cool-down over
    the last ``decay``; × ``bump`` for ``bump_length`` steps from ``bump_at``."""
    def schedule(step: int, total: int) -> float:
        ramp = int(warmup * total)
        value = 1.0
        if ramp and step <= ramp:
            value = step / ramp
        elif step > (1 - decay) * total:
            value = max(0.0, (total - step) / (decay * total))
        if bump_at is not None and bump_at <= step < bump_at + bump_length:
            value *= bump
        return value
    return schedule


def scale_head(factor: float):
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.head.weight.mul_(factor)
    return prepare


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="classification", task_kind="classification", logging=LOGGING,
                    batch_size=64, probe_layout=True, lr_at=wsd(), attention=True)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", point_sets), settings.pop("model", perceiver()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("perceiver_healthy_adopt", "Perceiver on 100-class point sets, ADOPT 3e-3, WSD (5 % warm-up, 20 % "
            "cool-down), 16 epochs (1,504 steps)", adopt(3e-3), 16, healthy=True),
        run("perceiver_healthy_adopt_seed1", "Perceiver, ADOPT 3e-3, WSD, 16 epochs, seed 1", adopt(3e-3), 16,
            seed=1, healthy=True),
        run("perceiver_healthy_nadam", "Perceiver, NAdam 2e-3, WSD, 16 epochs", nadam(2e-3), 16, healthy=True),
        run("perceiver_healthy_adopt_two_blocks", "Perceiver with 2 latent self-attention blocks, ADOPT 2e-3 wd "
            "1e-4, WSD, 18 epochs (1,692 steps), seed 2", adopt(2e-3, weight_decay=1e-4), 18,
            model=perceiver(self_blocks=2), seed=2, healthy=True),
        run("perceiver_lr_too_high_adopt", "Perceiver, ADOPT 3e-2 (10x the working lr: a value from a run with "
            "batch 1,024), WSD, 16 epochs (checked: final val 2.148 vs twin 0.515, 4.2x; val accuracy 0.469 vs 0.847)",
            adopt(3e-2), 16,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["update_ratio_out_of_band", "best_epoch_not_last", "underfitting", "loss_spike", "overfitting",
                   "underperforming_classes", "no_better_than_baseline", "divergence", "dead_layers"]),
        run("perceiver_missing_warmup_postln", "post-LN Perceiver with 3 latent blocks, Adam 1e-2 from step 1 "
            "(warm-up 0 in the config), stable then cool-down, 12 epochs: it never leaves chance (checked: final val "
            "4.61 = ln 100, accuracy 0.01; the twin with a 15 % warm-up reaches 1.61, accuracy 0.58)", adam(1e-2), 12,
            model=perceiver(norm_first=False, self_blocks=3), lr_at=wsd(warmup=0.0),
            expect={"missing_warmup": [1, 150]},
            allow=["adam_hyperparameters", "lr_too_high", "best_epoch_not_last", "underfitting", "loss_spike",
                   "update_ratio_out_of_band", "underperforming_classes", "no_better_than_baseline", "dead_layers"]),
        run("perceiver_bad_initial_loss_scaled_head", "Perceiver whose head weights are x25 at init (an init scale "
            "meant for a head without the LayerNorm before it), ADOPT 3e-3, WSD, 16 epochs (checked: first loss 32.3 "
            "against ln 100 = 4.61 and the twin's 4.8; final val 1.516 vs twin 0.515)", adopt(3e-3), 16,
            prepare=scale_head(25.0),
            expect={"bad_initial_loss": [1, 10]},
            allow=["loss_spike", "underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last",
                   "train_longer", "update_ratio_out_of_band", "lr_too_low"]),
        run("perceiver_no_better_than_baseline_shuffled", "Perceiver trained on labels shuffled against their "
            "samples (a join on the wrong key; val intact), ADOPT 3e-3, WSD, 12 epochs (checked: val accuracy 0.007 "
            "against the majority class's 0.010; twin 0.847)", adopt(3e-3), 12,
            data=lambda: point_sets(shuffled=True),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last"]),
        run("perceiver_class_imbalance_long_tail", "Perceiver on point sets from a crawl whose class k has frequency "
            "∝ 1/(k+1) (about as many samples in all: 1,157 training samples of class 0, 12 of class 99; val "
            "alike, 386 to 4), ADOPT 3e-3, WSD, 16 epochs (checked: val recall of classes 50-99 0.52 vs 0.84 "
            "in the twin, of classes 0-9 0.98 vs 0.84)",
            adopt(3e-3), 16, data=lambda: point_sets(long_tail=1.0),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere},
            allow=["overfitting", "best_epoch_not_last"]),
        run("perceiver_overfitting_six_per_class", "Perceiver (width 64) on 6 training samples a class (600; 10 "
            "steps per epoch), ADOPT 2e-3, no weight decay, WSD, 60 epochs (600 steps) (checked: best val 3.134 at "
            "step 200, then up to 3.42 while train falls to 0.003; twin 0.515)", adopt(2e-3), 60,
            data=lambda: point_sets(per_class_train=6), model=perceiver(width=64),
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
        run("perceiver_loss_spike_lr_bump", "Perceiver, ADOPT 3e-3, WSD with the lr x12 for 5 steps from step 800 "
            "(a restart that reloaded the peak lr of a larger batch), 16 epochs (checked: the train loss jumps from "
            "about 0.9 to 6.0 at step 805 and is back near 1.5 by step 900, the twin's stays under 1.3; val 2.42 "
            "at step 846 vs the twin's 1.03; final val 0.562 vs 0.515)", adopt(3e-3), 16,
            lr_at=wsd(bump_at=800, bump_length=5, bump=12.0),
            expect={"loss_spike": [798, 900]}, forbid=["divergence"],
            allow=["exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "best_epoch_not_last"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base = healthy["perceiver_healthy_adopt"]
    return {
        "perceiver_lr_too_high_adopt": base,
        "perceiver_missing_warmup_postln": run("perceiver_twin_postln_warmup", "post-LN Perceiver with 3 latent "
                                               "blocks, Adam 1e-2 with a 15 % warm-up, stable then cool-down, 12 "
                                               "epochs", adam(1e-2), 12,
                                               model=perceiver(norm_first=False, self_blocks=3),
                                               lr_at=wsd(warmup=0.15)),
        "perceiver_bad_initial_loss_scaled_head": base,
        "perceiver_no_better_than_baseline_shuffled": base,
        "perceiver_class_imbalance_long_tail": base,
        "perceiver_overfitting_six_per_class": base,
        "perceiver_loss_spike_lr_bump": base,
    }
