"""A patch transformer (ViT-like) on the 8×8 digits, logged every 10 steps (second hold-out).

The digits' pixels standardised per pixel (70 % of the 1,797 images for
training), cut into 16 patches of 2×2 pixels; each patch is embedded
linearly (width 32), a learned class token and position embeddings are
added, two transformer encoder layers (4 heads, pre-LN unless said, no
dropout) and a LayerNorm then a linear head read the class token; batches
of 32 (40 steps per epoch). Adamax, RMSprop, Adagrad, NAdam and SGD; the
loss, accuracy, lr and gradient norm are logged every 10 steps as that
step's value (a tracker sampling the loop; the first record is at step 10),
per-layer statistics every 40 steps, val loss, accuracy and confusion
counts every 50 steps. Task: classification with C = 10 (one run says
nothing).

Added with ``bn_mlp_tabular`` and ``conv_tagger_tokens`` as a second
held-out test (issue #12); see ``bn_mlp_tabular.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import DIVERGED_CLASSIFIER_ALLOW
from tests.diagnosis.corpus.common import bump_at, cosine_to_zero, make, step_lr, warmup_cosine, warmup_stable_decay
from tests.diagnosis.make_corpus import Logging, Spec, Split, digits

FAMILY = "vit_digits"
LOGGING = Logging(every=10, layer_every=40)
EVAL_EVERY = 50


@functools.lru_cache(maxsize=None)
def images(train_limit: int | None = None, rare: tuple[int, ...] = (), keep: int = 0) -> Split:
    """Standardised digits as (N, 8, 8) images; ``rare`` classes keep ``keep`` training images each."""
    data = digits(seed=4, train_limit=train_limit)
    x_train, y_train = data.x_train.reshape(-1, 8, 8), data.y_train
    if rare:
        labels = y_train.numpy()
        mask = np.ones(len(labels), dtype=bool)
        for cls in rare:
            mask[np.flatnonzero(labels == cls)[keep:]] = False
        x_train, y_train = x_train[torch.from_numpy(mask)], y_train[torch.from_numpy(mask)]
    return Split(x_train, y_train, data.x_val.reshape(-1, 8, 8), data.y_val, data.num_classes)


class PatchTransformer(nn.Module):
    """(B, 8, 8) image → (B, C) logits: 2×2 patches, a class token, transformer encoder layers."""

    def __init__(self, classes: int, width: int = 32, depth: int = 2, heads: int = 4, norm_first: bool = True):
        super().__init__()
        self.patch = nn.Linear(4, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.randn(1, 17, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = x.reshape(-1, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(-1, 16, 4)  # (B, 16, 4)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), self.patch(patches)], 1) + self.position
        return self.head(self.norm(self.encoder(tokens)[:, 0]))


def vit(width: int = 32, depth: int = 2, norm_first: bool = True):
    return lambda data: PatchTransformer(data.num_classes, width, depth, norm_first=norm_first)


def scale_head(factor: float):
    """The head's weights × ``factor`` at init (an init far too large)."""
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.head.weight.mul_(factor)
    return prepare


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, eval_every=EVAL_EVERY,
                    attention=True)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", images), settings.pop("model", vit()), optimizer, epochs,
                **settings)


def adamax(lr: float, **kwargs):
    return make(torch.optim.Adamax, lr, **kwargs)


def rmsprop(lr: float, **kwargs):
    return make(torch.optim.RMSprop, lr, **kwargs)


DIVERGED_ALLOW = DIVERGED_CLASSIFIER_ALLOW + ["missing_warmup", "overfitting"]


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("vit_healthy_adamax_warmup_cosine", "ViT, Adamax 4e-3, 5% warm-up + cosine to 0, 30 epochs", adamax(4e-3),
            30, scheduler=warmup_cosine(0.05), healthy=True),
        run("vit_healthy_rmsprop_warmup_constant", "ViT, RMSprop 5e-4, 5% warm-up then constant, 30 epochs",
            rmsprop(5e-4), 30, scheduler=warmup_stable_decay(0.05, 0.0), healthy=True),
        run("vit_healthy_adagrad_constant", "ViT, Adagrad 1e-2 constant, 20 epochs", make(torch.optim.Adagrad, 1e-2),
            20, healthy=True),
        run("vit_healthy_nadam_step_wide", "ViT width 48, NAdam 2e-3 with decoupled weight decay 0.05, StepLR x0.3 "
            "every 10 epochs, 30 epochs", make(torch.optim.NAdam, 2e-3, weight_decay=0.05, decoupled_weight_decay=True),
            30, model=vit(width=48), scheduler=step_lr(10, 0.3), healthy=True),
        run("vit_healthy_sgd_cosine_unknown_task", "ViT, SGD momentum 0.9 lr 0.05, cosine to 0, 30 epochs, no task "
            "kind", make(torch.optim.SGD, 0.05, momentum=0.9), 30, scheduler=cosine_to_zero(), task_kind="unknown",
            healthy=True),
        run("vit_lr_too_high_adamax", "ViT, Adamax 0.1 with 5% warm-up + cosine to 0 (25x the working lr), 30 epochs",
            adamax(0.1), 30, scheduler=warmup_cosine(0.05),
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "underperforming_classes", "missing_warmup", "no_better_than_baseline"]),
        run("vit_lr_too_low_rmsprop", "ViT, RMSprop 1e-5 with 5% warm-up then constant (2 % of the working lr), "
            "30 epochs", rmsprop(1e-5), 30, scheduler=warmup_stable_decay(0.05, 0.0),
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes",
                   "no_better_than_baseline"]),
        run("vit_missing_warmup_postln", "post-LN ViT, RMSprop 1e-2 constant from step 1 (no warm-up), 30 epochs",
            rmsprop(1e-2), 30, model=vit(norm_first=False),
            expect={"missing_warmup": [1, 200]},
            allow=["lr_too_high", "loss_spike", "underfitting", "best_epoch_not_last", "exploding_gradients",
                   "update_ratio_out_of_band", "underperforming_classes", "no_better_than_baseline"]),
        run("vit_divergence_rmsprop", "ViT, RMSprop lr 3 constant, 5 epochs", rmsprop(3.0), 5,
            expect={"divergence": everywhere}, allow=DIVERGED_ALLOW),
        run("vit_loss_spike_lr_bump", "ViT, Adamax 4e-3 constant, lr x50 for 5 steps at step 600, 30 epochs",
            adamax(4e-3), 30, scheduler=bump_at(600, 5, 50.0),
            expect={"loss_spike": [595, 700]}, forbid=["divergence"],
            allow=["exploding_gradients", "best_epoch_not_last", "update_ratio_out_of_band", "lr_too_high",
                   "train_longer", "underperforming_classes"]),
        run("vit_overfitting_small", "ViT width 64 on 120 images, Adamax 4e-3 constant, 250 epochs (4 steps each), "
            "val every 20 steps", adamax(4e-3), 250, data=lambda: images(train_limit=120), model=vit(width=64),
            eval_every=20,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
        run("vit_train_longer", "ViT, Adamax 1e-3 constant, stopped after 3 of 30 epochs, val every 10 steps",
            adamax(1e-3), 3, eval_every=10,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underperforming_classes"]),
        run("vit_underperforming_rare_classes", "ViT, Adamax 4e-3 warm-up + cosine, 30 epochs, digits 3 and 8 cut to "
            "6 training images each (val keeps all)", adamax(4e-3), 30, scheduler=warmup_cosine(0.05),
            data=lambda: images(rare=(3, 8), keep=6),
            expect={"underperforming_classes": everywhere}, allow=["class_imbalance"]),
        run("vit_bad_initial_loss_scaled_head", "ViT, Adamax 4e-3 warm-up + cosine, 30 epochs, the head's weights x60 "
            "at init", adamax(4e-3), 30, scheduler=warmup_cosine(0.05), prepare=scale_head(60.0),
            expect={"bad_initial_loss": [1, 30]},
            allow=["underperforming_classes", "loss_spike", "exploding_gradients"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    cosine = healthy["vit_healthy_adamax_warmup_cosine"]
    constant = run("vit_twin_adamax_constant", "ViT, Adamax 4e-3 constant, 30 epochs", adamax(4e-3), 30)
    return {
        "vit_lr_too_high_adamax": cosine,
        "vit_lr_too_low_rmsprop": healthy["vit_healthy_rmsprop_warmup_constant"],
        "vit_missing_warmup_postln": run("vit_twin_postln_warmup", "post-LN ViT, RMSprop 1e-2, 10% warm-up then "
                                         "constant, 30 epochs", rmsprop(1e-2), 30, model=vit(norm_first=False),
                                         scheduler=warmup_stable_decay(0.1, 0.0)),
        "vit_divergence_rmsprop": run("vit_twin_rmsprop_5_epochs", "ViT, RMSprop 1e-3 constant, 5 epochs",
                                      rmsprop(1e-3), 5),
        "vit_loss_spike_lr_bump": constant,
        "vit_overfitting_small": run("vit_twin_wide_all_images", "ViT width 64 on every image, Adamax 4e-3, 30 "
                                     "epochs", adamax(4e-3), 30, model=vit(width=64)),
        "vit_train_longer": run("vit_twin_adamax_1e-3", "ViT, Adamax 1e-3 constant, 30 epochs, val every 10 steps",
                                adamax(1e-3), 30, eval_every=10),
        "vit_underperforming_rare_classes": cosine,
        "vit_bad_initial_loss_scaled_head": cosine,
    }
