"""Fine-tuning a pre-trained MLP-Mixer from shape kinds to kind-and-size classes (8 classes) with layer-wise lr decay, NovoGrad, warm-up + linear decay, 4-step window means (seventh hold-out).

Images made here: 12×12 pixels, one channel, one shape per image (disc,
ring, square, hollow square, plus or X) of radius r at a random place, a
random contrast in [0.6, 1.4] and white noise. The source task (the
pre-training, not recorded): the 6 kinds, r uniform in [2, 5], noise σ 0.3,
3,000 images; the target task: ring, square, plus or X, each small (r in
[2.5, 3.2]) or large (r in [4, 5]), 8 classes, noise σ 0.35, 160 training
and 40 validation images per class, batches of 32 (40 steps per epoch),
each training batch flipped and transposed at random (the 8 symmetries of
the square, under which every class is invariant). The
model: an MLP-Mixer (Tolstikhin et al. 2021) on 3×3 patches (16 patches,
a linear patch embedding of width 32), 4 blocks of a token-mixing MLP
(16-32-16) and a channel-mixing MLP (32-64-32), each pre-LN and residual,
GELU, a final LayerNorm, mean pooling and a linear head. Pre-trained here on
the source task (800 Adam steps); each run loads the backbone and puts a
fresh 8-way head on it. Layer-wise lr decay (BEiT / ELECTRA fine-tuning):
one param group per depth (patch embedding, blocks 1-4, final norm and
head), group d getting lr · decay^(5 - d). NovoGrad (written here,
Ginsburg et al. 2019: a per-tensor second moment of the gradient's norm,
the gradient normalised by it before the momentum) and SGD with momentum;
a linear warm-up over 10 % of the run then a linear decay to 0 (HF's
get_linear_schedule_with_warmup). The loss, accuracy, lr (per group) and
gradient norm are logged every 4 steps as the mean since the previous
record, per-layer statistics every 20 steps, val loss, accuracy and
confusion counts after every epoch. Task: classification with C = 8.

Seventh hold-out (issue #12); see ``moe_lm_domains.py``. Dropped for doing
no harm against its twin: NovoGrad 5e-2 from step 1 (no warm-up), final val
loss 0.91x the same run with its warm-up (NovoGrad normalises each tensor's
step); SGD at 0.2 from step 1 is kept for ``missing_warmup``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "mixer_finetune_shapes"
LOGGING = Logging(every=4, mean=True, layer_every=20)
SIZE, PATCH = 12, 3
TOKENS = (SIZE // PATCH) ** 2
KINDS = ("disc", "ring", "square", "hollow_square", "plus", "x")
TARGET_KINDS = ("ring", "square", "plus", "x")


def draw(kind: str, radius: float, rng: np.random.Generator) -> np.ndarray:
    """One (SIZE, SIZE) image of a shape of ``kind`` and ``radius`` at a random place, unit contrast, no noise."""
    centre_y, centre_x = rng.uniform(radius - 0.5, SIZE - 0.5 - radius, 2)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    dy, dx = np.abs(yy - centre_y), np.abs(xx - centre_x)
    distance, box = np.hypot(dy, dx), np.maximum(dy, dx)
    shapes = {"disc": distance <= radius, "ring": np.abs(distance - radius) <= 0.7, "square": box <= radius,
              "hollow_square": np.abs(box - radius) <= 0.6,
              "plus": ((dx <= 0.7) & (dy <= radius)) | ((dy <= 0.7) & (dx <= radius)),
              "x": (np.abs(dx - dy) <= 0.7) & (box <= radius)}
    return shapes[kind].astype(np.float32)


def images(labels: np.ndarray, kind_and_radius, noise: float, rng: np.random.Generator) -> torch.Tensor:
    out = np.stack([draw(*kind_and_radius(label, rng), rng) * rng.uniform(0.6, 1.4) for label in labels])
    return torch.tensor(out + rng.normal(0, noise, out.shape).astype(np.float32))  # (N, SIZE, SIZE)


@functools.lru_cache(maxsize=None)
def source_shapes(count: int = 3000, seed: int = 81) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(KINDS), count)
    return images(labels, lambda label, rng: (KINDS[label], rng.uniform(2, 5)), 0.3, rng), torch.tensor(labels)


def _target(label: int, rng: np.random.Generator) -> tuple[str, float]:
    kind, large = TARGET_KINDS[label % 4], label >= 4
    return kind, rng.uniform(4, 5) if large else rng.uniform(2.5, 3.2)


@functools.lru_cache(maxsize=None)
def target_shapes(train_per_class: int = 160, val_per_class: int = 40, seed: int = 82,
                  rare: tuple[int, ...] = (), rare_keep: float = 1.0, shuffled_labels: bool = False) -> Split:
    """The 8-class target task; ``rare`` classes keep ``rare_keep`` of their images (training and validation);
    ``shuffled_labels``: the training labels permuted against the images (a join on a mis-sorted key)."""
    rng = np.random.default_rng(seed)
    split = []
    for per_class in (train_per_class, val_per_class):
        counts = [max(2, int(round(per_class * rare_keep))) if label in rare else per_class for label in range(8)]
        labels = rng.permutation(np.repeat(np.arange(8), counts))
        split += [images(labels, _target, 0.35, rng), torch.tensor(labels)]
    x_train, y_train, x_val, y_val = split
    if shuffled_labels:
        y_train = y_train[torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))]
    return Split(x_train, y_train, x_val, y_val, 8)


class MixerBlock(nn.Module):
    def __init__(self, width: int, tokens: int):
        super().__init__()
        self.token_norm = nn.LayerNorm(width)
        self.token_mixing = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens))
        self.channel_norm = nn.LayerNorm(width)
        self.channel_mixing = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, TOKENS, W)
        hidden = hidden + self.token_mixing(self.token_norm(hidden).transpose(1, 2)).transpose(1, 2)
        return hidden + self.channel_mixing(self.channel_norm(hidden))


class Mixer(nn.Module):
    """(B, SIZE, SIZE) images → (B, C) logits."""

    def __init__(self, classes: int, width: int = 32, depth: int = 4):
        super().__init__()
        self.patch_embed = nn.Linear(PATCH * PATCH, width)
        self.blocks = nn.ModuleList(MixerBlock(width, TOKENS) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        batch = pixels.shape[0]
        patches = pixels.reshape(batch, SIZE // PATCH, PATCH, SIZE // PATCH, PATCH).permute(0, 1, 3, 2, 4)
        hidden = self.patch_embed(patches.reshape(batch, TOKENS, PATCH * PATCH))  # (B, TOKENS, W)
        for block in self.blocks:
            hidden = block(hidden)
        return self.head(self.final_norm(hidden).mean(1))


@functools.lru_cache(maxsize=1)
def pretrained_backbone() -> dict[str, torch.Tensor]:
    """The Mixer trained on the 6 source kinds (the "checkpoint"); its head is left out."""
    torch.manual_seed(200)
    generator = torch.Generator().manual_seed(200)
    x, y = source_shapes()
    model = Mixer(len(KINDS))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(800):
        index = torch.randint(0, len(y), (64,), generator=generator)
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {name: value.detach().clone() for name, value in model.state_dict().items() if not name.startswith("head.")}


def fine_tuned(head_std: float | None = None):
    """The pre-trained backbone with a fresh head (PyTorch's default init, or normal(0, ``head_std``))."""
    def build(data: Split) -> nn.Module:
        model = Mixer(data.num_classes)
        model.load_state_dict(pretrained_backbone(), strict=False)
        if head_std is not None:
            with torch.no_grad():
                nn.init.normal_(model.head.weight, std=head_std)
        return model
    return build


def depth_groups(model: nn.Module, lr: float, decay: float) -> list[dict]:
    """One param group per depth: patch embedding 0, blocks 1-4, final norm and head 5; lr · decay^(5 - depth)."""
    top = len(model.blocks) + 1

    def depth(name: str) -> int:
        if name.startswith("patch_embed"):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return top

    groups: dict[int, list] = {}
    for name, parameter in model.named_parameters():
        groups.setdefault(depth(name), []).append(parameter)
    return [{"params": groups[d], "lr": lr * decay ** (top - d)} for d in sorted(groups)]


class NovoGrad(torch.optim.Optimizer):
    """NovoGrad (Ginsburg et al. 2019, "Stochastic Gradient Methods with Layer-wise Adaptive Moments"): per tensor
    v ← β2 v + (1-β2) ‖g‖² (v = ‖g‖² at the first step), m ← β1 m + g / (√v + ε) + λ w, w ← w - lr · m."""

    def __init__(self, params, lr: float = 1e-2, betas: tuple[float, float] = (0.95, 0.98), eps: float = 1e-8,
                 weight_decay: float = 1e-3):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                squared = float(param.grad.pow(2).sum())
                if not state:
                    state["v"], state["m"] = squared, torch.zeros_like(param)
                else:
                    state["v"] = beta2 * state["v"] + (1 - beta2) * squared
                normalised = param.grad / (state["v"] ** 0.5 + group["eps"]) + group["weight_decay"] * param
                state["m"].mul_(beta1).add_(normalised)
                param.add_(state["m"], alpha=-group["lr"])


def novograd(lr: float, decay: float = 0.7, **kwargs):
    return lambda model: NovoGrad(depth_groups(model, lr, decay), lr=lr, **kwargs)


def sgd(lr: float, decay: float = 0.7):
    return lambda model: torch.optim.SGD(depth_groups(model, lr, decay), lr=lr, momentum=0.9)


def warmup_linear(warmup: float = 0.1, planned_total: int | None = None):
    """Linear warm-up over ``warmup`` of the run then linear decay to 0 at ``planned_total`` (the run's steps
    unless given; 0 after it), per step, on every group's own lr."""
    def build(optimizer, total, per_epoch):
        planned = planned_total(per_epoch) if callable(planned_total) else (planned_total or total)
        warmup_steps = max(1, int(warmup * planned))

        def multiplier(taken: int) -> float:
            if taken < warmup_steps:
                return (taken + 1) / warmup_steps
            return max(0.0, (planned - taken) / max(1, planned - warmup_steps))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier), "step"
    return build


def dihedral(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch augmentation: each (SIZE, SIZE) image flipped and transposed at random (the 8 symmetries of the square,
    under which every target class is invariant), seeded by the step."""
    generator = torch.Generator().manual_seed(30_000 + step)
    flips = torch.rand(len(x), 3, generator=generator) < 0.5
    x = torch.where(flips[:, 0, None, None], x.flip(1), x)
    x = torch.where(flips[:, 1, None, None], x.flip(2), x)
    return torch.where(flips[:, 2, None, None], x.transpose(1, 2), x), y


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, batch_size=32, probe_layout=True,
                    scheduler=warmup_linear(), batch_hook=dihedral)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", target_shapes), settings.pop("model", fine_tuned()),
                optimizer, epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("mix_healthy_novograd_llrd", "pre-trained Mixer, new 8-way head, NovoGrad 1e-2 with layer-wise decay 0.7, "
            "warm-up 10 % + linear decay, 16 epochs (640 steps)", novograd(1e-2), 16, healthy=True),
        run("mix_healthy_novograd_llrd_seed1", "pre-trained Mixer, NovoGrad 1e-2, layer-wise decay 0.7, warm-up + "
            "linear decay, 16 epochs, seed 1", novograd(1e-2), 16, seed=1, healthy=True),
        run("mix_healthy_sgd_llrd", "pre-trained Mixer, SGD momentum 0.9 lr 0.05, layer-wise decay 0.8, warm-up "
            "+ linear decay, 16 epochs", sgd(0.05, decay=0.8), 16, healthy=True),
        run("mix_healthy_novograd_long", "pre-trained Mixer, NovoGrad 5e-3, layer-wise decay 0.6, warm-up 6 % + "
            "linear decay, 30 epochs (1,200 steps)", novograd(5e-3, decay=0.6), 30,
            scheduler=warmup_linear(warmup=0.06), healthy=True),
        run("mix_lr_too_high_novograd", "pre-trained Mixer, NovoGrad 0.3 (30x the working lr; each tensor moves "
            "by ~lr of its gradient's direction per step), layer-wise decay 0.7, warm-up + linear decay, 16 epochs",
            novograd(0.3), 16,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "underfitting", "exploding_gradients",
                   "best_epoch_not_last", "underperforming_classes", "no_better_than_baseline", "overfitting"]),
        run("mix_lr_too_low_novograd", "pre-trained Mixer, NovoGrad 1e-4 (1/100 of the working lr), layer-wise decay "
            "0.7, warm-up + linear decay, 16 epochs", novograd(1e-4), 16,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes",
                   "no_better_than_baseline"]),
        run("mix_decayed_too_early_per_epoch_total", "pre-trained Mixer, NovoGrad 1e-2, layer-wise decay 0.7, "
            "warm-up + linear decay given num_training_steps of 3 epochs (120 steps: the smoke test's, kept), so "
            "the lr is 0 from step 120 of 640", novograd(1e-2), 16,
            scheduler=warmup_linear(planned_total=lambda per_epoch: 3 * per_epoch),
            expect={"decayed_too_early": [40, 200]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer",
                   "underperforming_classes"]),
        run("mix_underfitting_layer_decay_zero", "pre-trained Mixer, NovoGrad 1e-2 with layer_decay 0 (meant as 'no "
            "decay', which is 1.0): every group below the head gets lr 0, so only the head trains on source-task "
            "features, warm-up + linear decay, 16 epochs", novograd(1e-2, decay=0.0), 16,
            expect={"underfitting": everywhere, "update_ratio_out_of_band": everywhere},
            forbid=["overfitting", "lr_too_high"],
            allow=["underperforming_classes", "lr_too_low", "dead_layers"]),
        run("mix_missing_warmup_sgd", "pre-trained Mixer, SGD momentum 0.9 lr 0.2, layer-wise decay 0.8, linear decay "
            "from step 1 (no warm-up: the fresh head's large early gradients reach the pre-trained blocks at the "
            "full lr; the same lr with the warm-up trains well), 16 epochs", sgd(0.2, decay=0.8), 16,
            scheduler=warmup_linear(warmup=0.0),
            expect={"missing_warmup": [1, 80]},
            allow=["lr_too_high", "loss_spike", "exploding_gradients", "update_ratio_out_of_band",
                   "underperforming_classes", "best_epoch_not_last"]),
        run("mix_overfitting_few_images", "pre-trained Mixer fine-tuned on 6 images per class (48; batches of 32, 2 "
            "steps per epoch), NovoGrad 1e-2, layer-wise decay 0.7, warm-up + linear decay, 150 epochs",
            novograd(1e-2), 150, data=lambda: target_shapes(train_per_class=6),
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"],
            allow=["update_ratio_out_of_band", "underperforming_classes"]),
        run("mix_class_imbalance_large_rare", "pre-trained Mixer, the 4 large-shape classes keep 12 % of their images "
            "(19 of 160 training, 5 of 40 validation), NovoGrad 1e-2, layer-wise decay 0.7, warm-up + linear decay, "
            "16 epochs", novograd(1e-2), 16, data=lambda: target_shapes(rare=(4, 5, 6, 7), rare_keep=0.12),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere}),
        run("mix_no_better_than_baseline_shuffled_labels", "pre-trained Mixer fine-tuned on training labels permuted "
            "against the images (a join on a mis-sorted key; validation labels right), NovoGrad 1e-2, layer-wise "
            "decay 0.7, warm-up + linear decay, 16 epochs", novograd(1e-2), 16,
            data=lambda: target_shapes(shuffled_labels=True),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last"]),
        run("mix_bad_initial_loss_head_std1", "pre-trained Mixer whose new head is drawn with nn.init.normal_ "
            "(std 1.0, for PyTorch's ~0.1), NovoGrad 1e-2, layer-wise decay 0.7, warm-up + linear decay, 16 epochs",
            novograd(1e-2), 16, model=fine_tuned(head_std=1.0),
            expect={"bad_initial_loss": [1, 8]},
            allow=["loss_spike", "underperforming_classes", "best_epoch_not_last", "overfitting"]),
        run("mix_train_longer_max_steps", "pre-trained Mixer, NovoGrad 2e-3, layer-wise decay 0.7, warm-up + linear "
            "decay planned for 640 steps, stopped after 3 of 16 epochs (120 steps: a max_steps left in the config)",
            novograd(2e-3), 3, scheduler=warmup_linear(planned_total=640),
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underperforming_classes"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base = healthy["mix_healthy_novograd_llrd"]
    return {
        "mix_lr_too_high_novograd": base,
        "mix_lr_too_low_novograd": base,
        "mix_decayed_too_early_per_epoch_total": base,
        "mix_underfitting_layer_decay_zero": base,
        "mix_missing_warmup_sgd": run("mix_twin_sgd_0.2_warmup", "pre-trained Mixer, SGD momentum 0.9 lr 0.2, "
                                      "layer-wise decay 0.8, warm-up 10 % + linear decay, 16 epochs",
                                      sgd(0.2, decay=0.8), 16),
        "mix_overfitting_few_images": base,  # all 160 images per class
        "mix_class_imbalance_large_rare": base,
        "mix_no_better_than_baseline_shuffled_labels": base,
        "mix_bad_initial_loss_head_std1": base,
        "mix_train_longer_max_steps": run("mix_twin_novograd_2e-3", "pre-trained Mixer, NovoGrad 2e-3, layer-wise "
                                          "decay 0.7, warm-up + linear decay, 16 epochs", novograd(2e-3), 16),
    }
