"""A pre-norm residual MLP on tabular data with the newer optimizers, logged every 10 steps as window means.

make_classification with 24 features and 6 classes; residual blocks with
LayerNorm and GELU; Adafactor, RAdam, NAdam, AdamW; batches of 32. The loss
is logged every 10 steps as the mean since the previous record (a metrics
logger's running mean), val twice per epoch. Task: classification with
C = 6 for half the runs, nothing said for the others.
"""

from __future__ import annotations

import torch

from tests.diagnosis.corpus.common import (ResidualMLP, adafactor, adamw, bump_at, decay_at, freeze, make, nadam,
                                           radam, warmup_linear, warmup_stable_decay)
from tests.diagnosis.make_corpus import Logging, Spec, classification, random_labels

FAMILY = "resmlp_tabular"
LOGGING = Logging(every=10, mean=True, layer_every=10)


def data(**kwargs):
    settings = dict(n=6000, features=24, classes=6, informative=12, class_sep=1.0, flip_y=0.02)
    settings.update(kwargs)
    return classification(**settings)


def residual(width: int = 64, depth: int = 2):
    return lambda split: ResidualMLP(split.x_train.shape[1], width, depth, split.num_classes)


def res(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, evals_per_epoch=2)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", data), settings.pop("model", residual()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        res("res_healthy_adafactor_unknown_task", "residual MLP, Adafactor lr 1e-2 constant, no task kind",
            adafactor(1e-2), 8, task_kind="unknown", healthy=True),
        res("res_healthy_radam_wsd", "residual MLP, RAdam 2e-3 warm-up-stable-decay", radam(2e-3), 8,
            scheduler=warmup_stable_decay(0.05, 0.2), healthy=True),
        res("res_healthy_nadam_warmup_linear", "residual MLP, NAdam 2e-3, warm-up + linear decay", nadam(2e-3), 8,
            scheduler=warmup_linear(0.06), healthy=True),
        res("res_healthy_adamw_constant_unknown_task", "residual MLP, AdamW 1e-3 constant, no task kind",
            adamw(1e-3, weight_decay=0.05), 8, task_kind="unknown", healthy=True),
        res("res_lr_too_high_nadam", "residual MLP, NAdam 0.3 constant (150× the working lr)", nadam(0.3), 8,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "missing_warmup"]),
        res("res_lr_too_low_radam", "residual MLP, RAdam 1e-5 constant", radam(1e-5), 8,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes"]),
        res("res_overfitting_small_noisy", "wide residual MLP on 240 samples with 20% flipped labels, AdamW 3e-3",
            adamw(3e-3), 100, data=lambda: data(n=600, flip_y=0.2, train_limit=240),
            model=residual(256, 2), evals_per_epoch=1,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
        res("res_loss_spike_lr_bump", "residual MLP, RAdam 2e-3, lr x30 for 10 steps at step 500", radam(2e-3), 8,
            scheduler=bump_at(500, 10, 30.0), task_kind="unknown",
            expect={"loss_spike": [495, 560]}, forbid=["divergence"],
            allow=["exploding_gradients", "best_epoch_not_last"]),
        res("res_divergence_sgd", "residual MLP, SGD momentum 0.99 lr 3: the loss blows up",
            make(torch.optim.SGD, 3.0, momentum=0.99), 5,
            expect={"divergence": everywhere},
            allow=["loss_spike", "exploding_gradients", "update_ratio_out_of_band", "lr_too_high", "dead_layers",
                   "best_epoch_not_last", "underfitting", "no_better_than_baseline", "underperforming_classes"]),
        res("res_train_longer", "residual MLP, NAdam 2e-4, stopped after 2 epochs, 8 evals per epoch", nadam(2e-4), 2,
            evals_per_epoch=8, expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underperforming_classes"]),
        res("res_decayed_too_early", "residual MLP, AdamW 2e-3, lr x0.001 after 6% of training",
            adamw(2e-3), 8, scheduler=decay_at(0.06, 1e-3),
            expect={"decayed_too_early": [45, 90]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "underperforming_classes"]),
        res("res_no_better_than_baseline_random_labels",
            "residual MLP on features unrelated to 70/30 labels, RAdam 1e-3",
            radam(1e-3), 10, data=lambda: random_labels(n=1500, features=24, weights=(0.7, 0.3)),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last"]),
        res("res_dead_layers_unused_block", "residual MLP whose second block is frozen by mistake", radam(2e-3), 8,
            prepare=freeze("blocks.1."),
            expect={"dead_layers": everywhere}, allow=["underperforming_classes", "vanishing_gradients"]),
    ]
