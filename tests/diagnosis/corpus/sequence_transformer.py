"""More runs of the original sequence_transformer family (make_corpus.py): healthy ones and two faults.

A small encoder transformer classifying token sequences (make_corpus's
``sequences``), logged every step like the probe, val once per epoch.
"""

from __future__ import annotations

from tests.diagnosis.corpus.common import adamw, decay_at, make, one_cycle, radam, warmup_stable_decay
from tests.diagnosis.make_corpus import Spec, sequences, transformer

FAMILY = "sequence_transformer"


def seq(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, attention=True, task_kind="classification")
    settings.update(kwargs)
    return Spec(name, description, sequences, settings.pop("model", transformer(norm_first=True)), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    import torch

    everywhere = None
    return [
        seq("seq_healthy_adam_onecycle", "pre-LN transformer, Adam 2e-3 one-cycle, 10 epochs",
            make(torch.optim.Adam, 2e-3, betas=(0.9, 0.98)), 10, scheduler=one_cycle(), healthy=True),
        seq("seq_healthy_radam_wsd_unknown_task", "pre-LN transformer, RAdam 1e-3 warm-up-stable-decay, no task kind",
            radam(1e-3), 10, scheduler=warmup_stable_decay(0.05, 0.2), task_kind="unknown", healthy=True),
        seq("seq_lr_too_low", "pre-LN transformer, AdamW 3e-5 constant", adamw(3e-5), 10,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes",
                   "no_better_than_baseline"]),
        seq("seq_decayed_too_early", "pre-LN transformer, AdamW 2e-3, lr x0.001 after 8% of training",
            adamw(2e-3), 10, scheduler=decay_at(0.08, 1e-3),
            expect={"decayed_too_early": [40, 80]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "underperforming_classes",
                   "no_better_than_baseline"]),
    ]
