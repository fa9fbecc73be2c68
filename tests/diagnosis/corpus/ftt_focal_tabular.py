"""An FT-Transformer (feature tokens, a [CLS] token, attention) classifying tabular records into 5 classes with a focal loss, AdaMod, warm-up then cosine with hard restarts, every 6 steps from step 24 (eighth hold-out).

Records made here: 6 categorical fields of 6 levels and 4 standard-normal
numeric fields. Each of 5 classes scores a record by three field crosses
(fixed 6×6 tables of N(0, 1.2²) values over the field pairs (0, 1),
(2, 3), (4, 5)), a linear term in the numeric fields (N(0, 0.6²)) and a
class bias (0.5, 0.3, 0.1, -0.1, -0.3; the classes come out 25, 20, 20, 25 and 10 %); the class
is the best score after Gumbel noise (scale 0.4). 4,000 training and
1,000 validation records, batches of 128 (32 steps per epoch). The model:
FT-Transformer (Gorishniy et al. 2021): one 32-wide token per field (an
embedding per categorical field, w·x + b per numeric one), a learned [CLS]
token, 2 pre-LN transformer layers (4 heads, feed-forward 64, no dropout),
LayerNorm, ReLU and a linear head on the [CLS] token. The loss is the
focal loss (Lin et al. 2017), mean of -(1 - p_t)^2 log p_t (about 0.64 ln 5
for a uniform guess, 1.03 rather than 1.61). AdaMod (written here, Ding
et al. 2019: Adam whose per-element step sizes are capped by their own
exponential average, β3 0.999) and AdamW (weight decay 1e-4). The
schedule: HF's ``get_cosine_with_hard_restarts_schedule_with_warmup``,
5 % linear warm-up then 2 cosine cycles each down to 0, stepped every
step. Logged every 6 steps from step 24: the step's loss, training
accuracy, lr and gradient norm (point values), per-layer statistics every
24 steps; val loss, accuracy and confusion counts twice per epoch. Task:
none recorded (``unknown``): a focal loss is not a C-class cross-entropy,
so its author says nothing about its scale.

Eighth hold-out (issue #12); see ``seg_convnet_regions.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "ftt_focal_tabular"
LOGGING = Logging(every=6, start=24, layer_every=24)
FIELDS, LEVELS, NUMERIC, CLASSES, WIDTH = 6, 6, 4, 5, 32
BIASES = (0.5, 0.3, 0.1, -0.1, -0.3)


@functools.lru_cache(maxsize=None)
def records(train: int = 4000, val: int = 1000, seed: int = 29) -> Split:
    """x: (N, FIELDS + NUMERIC) float, the categorical levels stored as floats 0-5 first; y: (N,) classes."""
    rng = np.random.default_rng(seed)
    count = train + val
    levels = rng.integers(0, LEVELS, (count, FIELDS))
    numeric = rng.normal(size=(count, NUMERIC))
    tables = rng.normal(0, 1.2, (CLASSES, 3, LEVELS, LEVELS))
    weights = rng.normal(0, 0.6, (NUMERIC, CLASSES))
    scores = numeric @ weights + np.asarray(BIASES) + rng.gumbel(0, 0.4, (count, CLASSES))
    for pair in range(3):
        scores += tables[:, pair, levels[:, 2 * pair], levels[:, 2 * pair + 1]].T
    x = torch.tensor(np.concatenate([levels, numeric], 1), dtype=torch.float32)
    y = torch.tensor(scores.argmax(1))
    return Split(x[:train], y[:train], x[train:], y[train:], CLASSES)


def few_records() -> Split:
    return records(train=200)


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    log_p = F.log_softmax(logits, 1).gather(1, labels[:, None]).squeeze(1)
    return (-(1 - log_p.exp()) ** gamma * log_p).mean()


class FTTransformer(nn.Module):
    """(B, FIELDS + NUMERIC) → (B, CLASSES). ``depth`` 0 with ``pool`` "mean": no attention, the head reads the
    mean of the feature tokens (a sum of per-field effects); ``norm_first`` False: post-LN layers."""

    def __init__(self, depth: int = 2, norm_first: bool = True, pool: str = "cls"):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(LEVELS, WIDTH) for _ in range(FIELDS))
        self.numeric_weight = nn.Parameter(torch.randn(NUMERIC, WIDTH) / math.sqrt(WIDTH))
        self.numeric_bias = nn.Parameter(torch.zeros(NUMERIC, WIDTH))
        self.cls = nn.Parameter(torch.randn(1, 1, WIDTH) / math.sqrt(WIDTH))
        layer = nn.TransformerEncoderLayer(WIDTH, 4, dim_feedforward=2 * WIDTH, dropout=0.0, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False) if depth else None
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)
        self.pool = pool

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        levels = rows[:, :FIELDS].long()
        fields = torch.stack([self.embeddings[field](levels[:, field]) for field in range(FIELDS)], 1)
        numbers = rows[:, FIELDS:, None] * self.numeric_weight + self.numeric_bias
        tokens = torch.cat([fields, numbers], 1)  # (B, FIELDS + NUMERIC, WIDTH)
        if self.pool == "mean":
            return self.head(F.relu(self.norm(tokens.mean(1))))
        hidden = self.encoder(torch.cat([self.cls.expand(len(rows), -1, -1), tokens], 1))
        return self.head(F.relu(self.norm(hidden[:, 0])))


def ft_transformer(**kwargs):
    return lambda data: FTTransformer(**kwargs)


class AdaMod(torch.optim.Optimizer):
    """AdaMod (Ding, Ren, Luo & Sun 2019): Adam's per-element step size η = lr / (√v̂ + ε) is capped by its own
    exponential average s ← β3 s + (1-β3) η (s starts at 0), w ← w - min(η, s) · m̂."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), beta3: float = 0.999,
                 eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "beta3": beta3, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["m"], state["v"], state["s"] = (torch.zeros_like(param) for _ in range(3))
                state["step"] += 1
                grad, step = param.grad, state["step"]
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                size = group["lr"] * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step) / (
                    state["v"].sqrt().add_(group["eps"]))
                state["s"].mul_(group["beta3"]).add_(size, alpha=1 - group["beta3"])
                param.sub_(torch.minimum(size, state["s"]) * state["m"])


def adamod(lr: float, **kwargs):
    return lambda model: AdaMod(model.parameters(), lr=lr, **kwargs)


def adamw(lr: float):
    return lambda model: torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)


def hard_restarts(warmup: float = 0.05, cycles: int = 2, scheduled_fraction: float = 1.0):
    """HF's cosine with hard restarts after a linear warm-up, over ``scheduled_fraction`` of the run's steps
    (past them the lr is 0, as in HF); ``warmup`` 0: none."""
    def build(optimizer, total, per_epoch):
        planned = max(1, int(total * scheduled_fraction))
        warm = int(planned * warmup)

        def multiplier(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = (step - warm) / max(1, planned - warm)
            if progress >= 1.0:
                return 0.0
            return max(0.0, 0.5 * (1 + math.cos(math.pi * ((cycles * progress) % 1.0))))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier), "step"
    return build


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="classification", task_kind="unknown", logging=LOGGING,
                    batch_size=128, probe_layout=True, loss=focal_loss, scheduler=hard_restarts(), evals_per_epoch=2,
                    attention=True)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", records), settings.pop("model", ft_transformer()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("ftt_healthy_adamod", "FT-Transformer, focal loss, AdaMod 5e-3, 5 % warm-up then cosine with 2 hard "
            "restarts, 15 epochs (480 steps)", adamod(5e-3), 15, healthy=True),
        run("ftt_healthy_adamod_seed1", "FT-Transformer, focal loss, AdaMod 5e-3, warm-up then 2 hard restarts, 15 "
            "epochs, seed 1", adamod(5e-3), 15, seed=1, healthy=True),
        run("ftt_healthy_adamw", "FT-Transformer, focal loss, AdamW 1e-3 wd 1e-4, warm-up then 2 hard restarts, 15 "
            "epochs", adamw(1e-3), 15, healthy=True),
        run("ftt_healthy_adamod_three_cycles", "FT-Transformer, focal loss, AdaMod 2e-3, warm-up then 3 hard "
            "restarts, 24 epochs (768 steps)", adamod(2e-3), 24, scheduler=hard_restarts(cycles=3), healthy=True),
        run("ftt_missing_warmup_postln", "post-LN FT-Transformer (norm_first=False, 3 layers), focal loss, AdamW "
            "3e-2 from step 1 (warm-up 0 in the config), 2 hard restarts, 15 epochs", adamw(3e-2), 15,
            model=ft_transformer(depth=3, norm_first=False), scheduler=hard_restarts(warmup=0.0),
            expect={"missing_warmup": [1, 100]},
            allow=["adam_hyperparameters", "lr_too_high", "best_epoch_not_last", "no_better_than_baseline",
                   "underfitting", "underperforming_classes", "loss_spike", "overfitting"]),
        run("ftt_update_ratio_low_adamod_beta3", "FT-Transformer, focal loss, AdaMod 5e-3 with β3 0.99999 (the "
            "step-size average's memory of 100,000 steps on a 480-step run): steps stay capped at ~1/200 of "
            "Adam's, warm-up then 2 hard restarts, 15 epochs", adamod(5e-3, beta3=0.99999), 15,
            expect={"update_ratio_out_of_band": everywhere}, forbid=["lr_too_high"],
            allow=["lr_too_low", "underfitting", "train_longer", "no_better_than_baseline",
                   "underperforming_classes"]),
        run("ftt_overfitting_few_records", "FT-Transformer on 200 training records (2 steps per epoch), focal loss, "
            "AdaMod 5e-3, warm-up then 2 hard restarts, 160 epochs (320 steps), val every 4 steps", adamod(5e-3),
            160, data=few_records, eval_every=4,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
        run("ftt_decayed_too_early_wrong_total", "FT-Transformer, focal loss, AdaMod 5e-3, warm-up then 2 hard "
            "restarts over num_training_steps taken from the first of 8 shards (60 of 480 steps): the lr is 0 from "
            "step 61", adamod(5e-3), 15, scheduler=hard_restarts(scheduled_fraction=0.125),
            expect={"decayed_too_early": [25, 120]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer",
                   "underperforming_classes"]),
        run("ftt_underfitting_no_attention", "FT-Transformer with n_blocks 0 and mean pooling (a sweep's "
            "default): the head reads the mean of the feature tokens, a sum of per-field effects, which cannot "
            "express the classes' field crosses, AdaMod 5e-3, 15 epochs", adamod(5e-3), 15,
            model=ft_transformer(depth=0, pool="mean"), attention=False,
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
            allow=["underperforming_classes"]),
        run("ftt_train_longer_two_epochs", "FT-Transformer, focal loss, AdaMod 1e-3, warm-up then 2 hard restarts, "
            "stopped after 2 epochs (64 steps; 4 evaluations)", adamod(1e-3), 2,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underfitting", "underperforming_classes", "no_better_than_baseline"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base = healthy["ftt_healthy_adamod"]
    return {
        "ftt_missing_warmup_postln": run("ftt_twin_postln_warmup", "post-LN FT-Transformer (3 layers), focal loss, "
                                         "AdamW 3e-2 with 5 % warm-up, 2 hard restarts, 15 epochs", adamw(3e-2), 15,
                                         model=ft_transformer(depth=3, norm_first=False)),
        "ftt_update_ratio_low_adamod_beta3": base,
        "ftt_overfitting_few_records": base,
        "ftt_decayed_too_early_wrong_total": base,
        "ftt_underfitting_no_attention": base,
        "ftt_train_longer_two_epochs": run("ftt_twin_adamod_1e-3", "FT-Transformer, focal loss, AdaMod 1e-3, warm-up "
                                           "then 2 hard restarts, 15 epochs", adamod(1e-3), 15),
    }
