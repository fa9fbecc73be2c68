"""A Set Transformer classifying 2-D point sets into 120 classes with Muon, logged as fastai's smoothed loss (third hold-out).

Point sets made here: each of 120 classes is a mixture of 4 Gaussian
blobs (centres uniform in [-1, 1]², σ = 0.1, class-specific weights); a
sample is 16 points drawn from its class's mixture, in random order (40
training and 15 validation sets per class unless said). A Set Transformer
without positions: a linear point embedding (width 32), two self-attention
blocks (transformer encoder layers, 4 heads, pre-LN unless said, no
dropout), pooling by multi-head attention from one learned seed (PMA), a
LayerNorm and a linear head; cross-entropy with label smoothing 0.1;
batches of 128 (38 steps per epoch). Muon for the hidden weight matrices
with AdamW for embeddings, norms, biases and the head (one optimizer
object, ``MuonWithAdamW``), AdamW, SGD with Nesterov momentum and Adam;
warm-up-stable-decay, warm-up + cosine, warm-up + multi-step and warm-up +
polynomial schedules. Logged as fastai's ``Recorder`` would: every step
the bias-corrected exponential moving average of the loss (β = 0.98), no
training accuracy, the lr and gradient norm of that step; per-layer
statistics every 20 steps; val loss, accuracy and confusion counts every
100 steps. Task: classification with C = 120 (one run says nothing).

Third hold-out (issue #12); see ``unet_signals.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.corpus.common import adamw as common_adamw
from tests.diagnosis.corpus.common import DIVERGED_CLASSIFIER_ALLOW
from tests.diagnosis.corpus.common import make, scale_head, warmup_cosine, warmup_stable_decay
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "set_transformer_points"
LOGGING = Logging(ema=0.98, layer_every=20)
EVAL_EVERY = 100
CLASSES, POINTS, BLOBS, SPREAD = 120, 16, 4, 0.1


@functools.lru_cache(maxsize=None)
def point_sets(train_per_class: int = 40, val_per_class: int = 15, long_tail: bool = False,
               duplicated_pairs: int = 0, shuffled_labels: bool = False, seed: int = 61) -> Split:
    """Sets (N, POINTS, 2) float32 and their class (N,).

    ``long_tail``: class k keeps a share ∝ 1/(k+1) of the sets (train and val; at least 2 and 1);
    ``duplicated_pairs``: classes 2i+1 use class 2i's mixture for i < duplicated_pairs (indistinguishable);
    ``shuffled_labels``: every label replaced by a random class (nothing to learn).
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-1, 1, size=(CLASSES, BLOBS, 2))
    weights = rng.dirichlet(np.full(BLOBS, 2.0), size=CLASSES)
    for pair in range(duplicated_pairs):
        centres[2 * pair + 1], weights[2 * pair + 1] = centres[2 * pair], weights[2 * pair]
    if long_tail:
        share = 1.0 / np.arange(1, CLASSES + 1)
        train_counts = np.maximum(2, np.round(4 * train_per_class * share)).astype(int)
        val_counts = np.maximum(1, np.round(4 * val_per_class * share)).astype(int)
    else:
        train_counts = np.full(CLASSES, train_per_class)
        val_counts = np.full(CLASSES, val_per_class)

    def draw(counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        labels = np.repeat(np.arange(CLASSES), counts)
        blob = (rng.random((len(labels), POINTS, 1)) > weights[labels].cumsum(1)[:, None, :]).sum(-1).clip(0, BLOBS - 1)
        points = centres[labels[:, None], blob] + SPREAD * rng.normal(size=(len(labels), POINTS, 2))
        if shuffled_labels:
            labels = rng.integers(0, CLASSES, size=len(labels))
        return torch.tensor(points, dtype=torch.float32), torch.tensor(labels)

    x_train, y_train = draw(train_counts)
    x_val, y_val = draw(val_counts)
    return Split(x_train, y_train, x_val, y_val, CLASSES)


def smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with label smoothing 0.1, (B, C) logits and (B,) classes."""
    return F.cross_entropy(logits, targets, label_smoothing=0.1)


class SetTransformer(nn.Module):
    """(B, N, 2) point sets → (B, C) logits, invariant to the order of the points."""

    def __init__(self, classes: int = CLASSES, width: int = 32, depth: int = 2, heads: int = 4,
                 norm_first: bool = True):
        super().__init__()
        self.embed = nn.Linear(2, width)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True,
                                           norm_first=norm_first)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.seed = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.pool = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        hidden = self.blocks(self.embed(points))  # (B, N, W)
        pooled, _ = self.pool(self.seed.expand(len(points), -1, -1), hidden, hidden, need_weights=False)  # (B, 1, W)
        return self.head(self.norm(pooled[:, 0]))


def set_transformer(width: int = 32, norm_first: bool = True, depth: int = 2):
    return lambda data: SetTransformer(data.num_classes, width, depth, norm_first=norm_first)


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon (torch.optim.Muon) for 2-D hidden weight matrices and AdamW for the rest, stepped as one optimizer.

    ``param_groups`` are Muon's group then AdamW's two (decayed, not decayed) groups, the same dicts the
    inner optimizers use, so an lr scheduler drives both. Muon's lr is scaled to match AdamW's update RMS
    (``adjust_lr_fn="match_rms_adamw"``), so one lr serves both.
    """

    def __init__(self, model: nn.Module, lr: float, weight_decay: float = 0.01):
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        matrices = [p for name, p in named if p.ndim == 2 and not name.startswith(("embed", "head"))]
        chosen = {id(p) for p in matrices}
        rest = [(name, p) for name, p in named if id(p) not in chosen]
        decay = [p for name, p in rest if p.ndim >= 2]
        exempt = [p for name, p in rest if p.ndim < 2]
        self.muon = torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                        {"params": exempt, "weight_decay": 0.0}], lr=lr)
        super().__init__([{"params": matrices}, {"params": decay}, {"params": exempt}], {"lr": lr})
        self.param_groups = self.muon.param_groups + self.adamw.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)


def muon(lr: float):
    return lambda model: MuonWithAdamW(model, lr)


def adamw(lr: float):
    return common_adamw(lr, weight_decay=0.01)


def nesterov(lr: float):
    return make(torch.optim.SGD, lr, momentum=0.9, nesterov=True, weight_decay=5e-4)


def adam(lr: float):
    return make(torch.optim.Adam, lr)


def warmup_then(fraction: float, after):
    """SequentialLR: LinearLR warm-up from 1 % over ``fraction`` of the run, then ``after(optimizer, rest)``."""
    def build(optimizer, total, per_epoch):
        warmup = max(1, int(fraction * total))
        schedulers = [torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup),
                      after(optimizer, total - warmup)]
        return torch.optim.lr_scheduler.SequentialLR(optimizer, schedulers, milestones=[warmup]), "step"
    return build


def multistep(optimizer, remaining: int):
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(0.6 * remaining), int(0.85 * remaining)], 0.1)


def polynomial(optimizer, remaining: int):
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=remaining, power=2.0)


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, eval_every=EVAL_EVERY,
                    attention=True, batch_size=128, loss=smoothed_cross_entropy, probe_layout=True)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", point_sets), settings.pop("model", set_transformer()),
                optimizer, epochs, **settings)


DIVERGED_ALLOW = DIVERGED_CLASSIFIER_ALLOW + ["missing_warmup", "overfitting"]


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("set_healthy_muon_wsd", "Set Transformer, Muon + AdamW 3e-3, warm-up-stable-decay (5% up, last 20% "
            "down), 20 epochs", muon(3e-3), 20, scheduler=warmup_stable_decay(0.05, 0.2), healthy=True),
        run("set_healthy_adamw_warmup_cosine", "Set Transformer, AdamW 3e-3, 5% warm-up + cosine to 0, 20 epochs",
            adamw(3e-3), 20, scheduler=warmup_cosine(0.05), healthy=True),
        run("set_healthy_sgd_warmup_multistep", "Set Transformer, SGD Nesterov momentum 0.9 lr 0.1 wd 5e-4, 5% "
            "warm-up then MultiStepLR x0.1 at 60% and 85%, 20 epochs", nesterov(0.1), 20,
            scheduler=warmup_then(0.05, multistep), healthy=True),
        run("set_healthy_adam_warmup_polynomial", "Set Transformer, Adam 3e-3, 5% warm-up then PolynomialLR power 2 to "
            "0, 20 epochs", adam(3e-3), 20, scheduler=warmup_then(0.05, polynomial), healthy=True),
        run("set_healthy_muon_warmup_constant_unknown_task", "Set Transformer, Muon + AdamW 2e-3, 5% warm-up then "
            "constant, 20 epochs, no task kind", muon(2e-3), 20, scheduler=warmup_stable_decay(0.05, 0.0),
            task_kind="unknown", healthy=True),
        run("set_lr_too_high_sgd", "Set Transformer, SGD Nesterov momentum 0.9 lr 1.5 wd 5e-4 (15x the working lr), 5% "
            "warm-up then MultiStepLR x0.1 at 60% and 85%, 20 epochs", nesterov(1.5), 20,
            scheduler=warmup_then(0.05, multistep),
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "underperforming_classes", "missing_warmup", "no_better_than_baseline"]),
        run("set_missing_warmup_postln", "post-LN Set Transformer with 4 attention blocks, AdamW 3e-2 constant from "
            "step 1 (no warm-up), 20 epochs", adamw(3e-2), 20, model=set_transformer(norm_first=False, depth=4),
            expect={"missing_warmup": [1, 200]},
            allow=["lr_too_high", "loss_spike", "underfitting", "best_epoch_not_last", "exploding_gradients",
                   "update_ratio_out_of_band", "underperforming_classes", "no_better_than_baseline"]),
        run("set_bad_initial_loss_scaled_head", "Set Transformer, AdamW 3e-3 warm-up + cosine, 20 epochs, the head's "
            "weights x40 at init", adamw(3e-3), 20, scheduler=warmup_cosine(0.05), prepare=scale_head(40.0),
            expect={"bad_initial_loss": [1, 30]},
            allow=["underperforming_classes", "loss_spike", "exploding_gradients"]),
        run("set_class_imbalance_long_tail", "Set Transformer, AdamW 3e-3 warm-up + cosine, 100 epochs (7 steps each), "
            "class k keeps a share 1/(k+1) of the sets (160 down to 2 training sets; val alike)", adamw(3e-3), 100,
            scheduler=warmup_cosine(0.05), data=lambda: point_sets(long_tail=True),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere},
            allow=["overfitting", "best_epoch_not_last", "no_better_than_baseline"]),
        run("set_underperforming_duplicate_classes", "Set Transformer, AdamW 3e-3 warm-up + cosine, 20 epochs, classes "
            "1, 3, ..., 15 drawn from the same mixtures as 0, 2, ..., 14 (16 indistinguishable classes; balanced)",
            adamw(3e-3), 20, scheduler=warmup_cosine(0.05), data=lambda: point_sets(duplicated_pairs=8),
            expect={"underperforming_classes": everywhere}, forbid=["class_imbalance"]),
        run("set_no_better_than_baseline_shuffled_labels", "Set Transformer, AdamW 3e-3 warm-up + cosine, 20 epochs, "
            "every label replaced by a random class", adamw(3e-3), 20, scheduler=warmup_cosine(0.05),
            data=lambda: point_sets(shuffled_labels=True),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last", "class_imbalance",
                   "train_longer"]),
        run("set_update_ratio_low_muon", "Set Transformer, Muon + AdamW 3e-6 (1/1000 of the working lr: updates "
            "~1e-6 of the weights), WSD, 20 epochs", muon(3e-6), 20, scheduler=warmup_stable_decay(0.05, 0.2),
            expect={"update_ratio_out_of_band": everywhere},
            allow=["lr_too_low", "no_better_than_baseline", "underfitting", "underperforming_classes", "train_longer"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    cosine = healthy["set_healthy_adamw_warmup_cosine"]
    return {
        "set_lr_too_high_sgd": healthy["set_healthy_sgd_warmup_multistep"],
        "set_missing_warmup_postln": run("set_twin_postln_warmup", "post-LN Set Transformer with 4 attention blocks, "
                                         "AdamW 3e-2, 7% warm-up then constant, 20 epochs", adamw(3e-2), 20,
                                         model=set_transformer(norm_first=False, depth=4),
                                         scheduler=warmup_stable_decay(0.07, 0.0)),
        "set_bad_initial_loss_scaled_head": cosine,
        "set_class_imbalance_long_tail": cosine,
        "set_underperforming_duplicate_classes": cosine,
        "set_no_better_than_baseline_shuffled_labels": cosine,
        "set_update_ratio_low_muon": healthy["set_healthy_muon_wsd"],
    }
