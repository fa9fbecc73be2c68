"""A small transformer regressing event counts from a sequence of readings with a Poisson log-likelihood, AdaBound, warm-up then inverse square root, every 4 steps, val twice per epoch (ninth hold-out).

Records made here: 16 readings of 4 standard-normal values each; the log
of the count's rate is 1.5 tanh(3 · mean_t a·x_t) + 0.8 max_t b·x_t (fixed
random unit vectors a, b; mean rate about 6.4), and the count is drawn from a
Poisson of that rate. 2,400 training and 600 validation records, batches
of 48 (50 steps per epoch). The model: a linear embedding of each reading
to 32, a learned position embedding, 2 pre-LN transformer layers (4 heads,
feed-forward 64, no dropout), mean pooling and a linear head giving the
log-rate; the loss is PyTorch's ``poisson_nll_loss`` on the log-rate with the
Stirling term (``full=True``)
(not a C-class cross-entropy: no task kind recorded). AdaBound (written
here, Luo et al. 2019: Adam whose per-element step is clipped into bounds
that close on final_lr 0.02 at rate γ 1e-3) and AdamW (weight decay 1e-2).
The schedule (per step): linear warm-up over 40 steps, then the inverse
square root of step/40. Logged every 4 steps: the step's loss, lr and
gradient norm, per-layer statistics every 20 steps; val loss twice per
epoch.

Ninth hold-out (issue #12); see ``gru_next_event.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "poisson_counts_transformer"
LOGGING = Logging(every=4, layer_every=20)
READINGS, VALUES, WIDTH = 16, 4, 32


@functools.lru_cache(maxsize=None)
def count_records(train: int = 2400, val: int = 600, seed: int = 83) -> Split:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=VALUES), rng.normal(size=VALUES)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    x = rng.normal(size=(train + val, READINGS, VALUES))
    log_rate = 1.5 * np.tanh(3 * (x @ a).mean(1)) + 0.8 * (x @ b).max(1)
    y = rng.poisson(np.exp(log_rate)).astype(np.float32)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    return Split(x[:train], y[:train], x[train:], y[train:], 1)


def few_records() -> Split:
    data = count_records()
    return Split(data.x_train[:96], data.y_train[:96], data.x_val, data.y_val, 1)


def poisson_loss(log_rate: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return F.poisson_nll_loss(log_rate.reshape(counts.shape), counts, log_input=True, full=True)


class CountTransformer(nn.Module):
    def __init__(self, depth: int = 2, norm_first: bool = True, width: int = WIDTH):
        super().__init__()
        self.embed = nn.Linear(VALUES, width)
        self.position = nn.Parameter(torch.randn(READINGS, width) * 0.02)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True,
                                                               norm_first=norm_first) for _ in range(depth))
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.position
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(1))


def transformer(**kwargs):
    return lambda data: CountTransformer(**kwargs)


class AdaBound(torch.optim.Optimizer):
    """AdaBound (Luo, Xiong, Liu & Sun 2019): Adam's step lr/(√v̂+ε) clipped element-wise into
    [final_lr (1 - 1/(γt+1)), final_lr (1 + 1/(γt))], times m̂."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), final_lr: float = 0.02,
                 gamma: float = 1e-3, eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "final_lr": final_lr, "gamma": gamma, "eps": eps})
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"], state["m"], state["v"] = 0, torch.zeros_like(param), torch.zeros_like(param)
                state["step"] += 1
                grad, step = param.grad, state["step"]
                state["m"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                size = group["lr"] * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
                # the bounds follow the schedule: final_lr scaled as the lr is
                final = group["final_lr"] * group["lr"] / group["initial_lr"]
                lower = final * (1 - 1 / (group["gamma"] * step + 1))
                upper = final * (1 + 1 / (group["gamma"] * step))
                steps = (size / (state["v"].sqrt() + group["eps"])).clamp_(lower, upper)
                param.sub_(steps * state["m"])


def adabound(lr: float, **kwargs):
    return lambda model: AdaBound(model.parameters(), lr=lr, **kwargs)


def adamw(lr: float):
    return lambda model: torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)


def warm_inverse_sqrt(warmup: int = 40, cut_at: int | None = None, cut: float = 1.0):
    """(step, total) → multiplier: linear warm-up over ``warmup`` steps (0: none), then √(warmup/step); times
    ``cut`` from step ``cut_at`` on."""
    def schedule(step: int, total: int) -> float:
        scale = 40 if warmup == 0 else warmup
        base = step / warmup if step <= warmup else math.sqrt(scale / max(step, scale))
        return base * (cut if cut_at is not None and step >= cut_at else 1.0)
    return schedule


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", logging=LOGGING, batch_size=48,
                    probe_layout=True, loss=poisson_loss, lr_at=warm_inverse_sqrt(), evals_per_epoch=2,
                    attention=True)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", count_records), settings.pop("model", transformer()),
                optimizer, epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("poisson_healthy_adabound", "count transformer, Poisson NLL, AdaBound 3e-3 (final_lr 0.02), 40-step "
            "warm-up then inverse square root, 12 epochs (600 steps)", adabound(3e-3), 12, healthy=True),
        run("poisson_healthy_adabound_seed1", "count transformer, AdaBound 3e-3, warm-up then inverse square root, "
            "12 epochs, seed 1", adabound(3e-3), 12, seed=1, healthy=True),
        run("poisson_healthy_adamw", "count transformer, AdamW 2e-3 wd 1e-2, warm-up then inverse square root, 12 "
            "epochs", adamw(2e-3), 12, healthy=True),
        run("poisson_healthy_adabound_long", "count transformer, AdaBound 2e-3, warm-up then inverse square root, "
            "18 epochs (900 steps)", adabound(2e-3), 18, healthy=True),
        run("poisson_missing_warmup_postln", "post-LN count transformer (norm_first=False, 3 layers), AdamW 3e-2 "
            "from step 1 (warmup_steps 0 in the config), inverse square root, 12 epochs", adamw(3e-2), 12,
            model=transformer(depth=3, norm_first=False), lr_at=warm_inverse_sqrt(warmup=0),
            expect={"missing_warmup": [1, 100]},
            allow=["adam_hyperparameters", "lr_too_high", "best_epoch_not_last", "underfitting", "loss_spike",
                   "overfitting", "update_ratio_out_of_band"]),
        run("poisson_update_ratio_low_final_lr", "count transformer, AdaBound 3e-3 with final_lr 1e-6 and γ 0.1 "
            "(a final_lr meant as a weight decay): within ~50 steps every step size is clipped near 1e-6, warm-up "
            "then inverse square root, 12 epochs", adabound(3e-3, final_lr=1e-6, gamma=0.1), 12,
            expect={"update_ratio_out_of_band": everywhere}, forbid=["lr_too_high"],
            allow=["lr_too_low", "underfitting", "train_longer", "decayed_too_early"]),
        run("poisson_decayed_too_early_cut_in_steps", "count transformer, AdaBound 3e-3, warm-up then inverse square "
            "root, with a x0.01 cut meant for epoch 100 placed at step 100 (milestones counted in steps)",
            adabound(3e-3), 12, lr_at=warm_inverse_sqrt(cut_at=100, cut=0.01),
            expect={"decayed_too_early": [60, 250]}, forbid=["lr_too_high"],
            allow=["update_ratio_out_of_band", "underfitting", "lr_too_low", "train_longer"]),
        run("poisson_underfitting_no_blocks", "count transformer with 0 layers (n_layers left at a sweep's 0): the "
            "head reads the mean of the embedded readings, linear in them, which cannot express the tanh and the "
            "max, AdaBound 3e-3, 12 epochs", adabound(3e-3), 12, model=transformer(depth=0), attention=False,
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        run("poisson_train_longer_three_epochs", "count transformer, AdaBound 1e-3, warm-up then inverse square "
            "root, stopped after 3 epochs (150 steps; 6 evaluations)", adabound(1e-3), 3,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underfitting"]),
        run("poisson_overfitting_few_records", "count transformer (width 64, 3 layers) on 96 training records (2 "
            "steps per epoch), AdamW 2e-3, 200 epochs (400 steps), val every 4 steps", adamw(2e-3), 200,
            data=few_records, model=transformer(depth=3, width=64), eval_every=4,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base = healthy["poisson_healthy_adabound"]
    return {
        "poisson_missing_warmup_postln": run("poisson_twin_postln_warmup", "post-LN count transformer (3 layers), "
                                             "AdamW 3e-2 with a 40-step warm-up, inverse square root, 12 epochs",
                                             adamw(3e-2), 12, model=transformer(depth=3, norm_first=False)),
        "poisson_update_ratio_low_final_lr": base,
        "poisson_decayed_too_early_cut_in_steps": base,
        "poisson_underfitting_no_blocks": base,
        "poisson_train_longer_three_epochs": run("poisson_twin_adabound_1e-3", "count transformer, AdaBound 1e-3, "
                                               "warm-up then inverse square root, 12 epochs", adabound(1e-3), 12),
        "poisson_overfitting_few_records": healthy["poisson_healthy_adamw"],
    }
