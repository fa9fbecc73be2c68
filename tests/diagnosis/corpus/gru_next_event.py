"""A GRU reading event logs and classifying the next event among 6 kinds (cross-entropy), Signum, ReduceLROnPlateau, every 3 steps (ninth hold-out).

Event logs made here: sequences of 20 events over 6 kinds drawn from a
fixed random order-2 Markov chain (each pair of previous events has a
Dirichlet(0.3) distribution over the next kind); the target is the 21st
event. 10,000 training and 800 validation sequences, batches of 50 (200
steps per epoch). The model: an embedding of 16, a one-layer GRU of 48
and a linear head on the last hidden state. Signum (written here,
Bernstein et al. 2018: sign of the momentum, β 0.9) and Adam.
The schedule: ReduceLROnPlateau on the val loss (factor 0.3, patience 0).
Logged every 3 steps: the step's loss, training accuracy, lr and gradient
norm, per-layer statistics every 30 steps; val loss, accuracy and
confusion counts after every epoch. Task: classification, C = 6.

Ninth hold-out (issue #12): written by an engineer who changes no rule and
never reads them; labels come from how each run was built.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "gru_next_event"
LOGGING = Logging(every=3, layer_every=30)
KINDS, LENGTH = 6, 20


@functools.lru_cache(maxsize=None)
def event_logs(train: int = 10000, val: int = 800, rare: float | None = None, shuffled: bool = False,
               seed: int = 61) -> Split:
    rng = np.random.default_rng(seed)
    table = rng.dirichlet([0.3] * KINDS, size=(KINDS, KINDS))
    total = (train + val) * 3
    seqs = np.zeros((total, LENGTH + 1), dtype=np.int64)
    seqs[:, :2] = rng.integers(0, KINDS, (total, 2))
    for t in range(2, LENGTH + 1):
        cumulative = table[seqs[:, t - 2], seqs[:, t - 1]].cumsum(1)
        seqs[:, t] = (rng.random((total, 1)) > cumulative).sum(1).clip(max=KINDS - 1)
    if rare is not None:  # a sampler that kept only a fraction ``rare`` of the logs ending in kind 5
        keep = (seqs[:, -1] != KINDS - 1) | (rng.random(total) < rare)
        seqs = seqs[keep]
    seqs = seqs[:train + val]
    x, y = torch.tensor(seqs[:, :-1]), torch.tensor(seqs[:, -1])
    y_train = y[:train].clone()
    if shuffled:  # targets joined to the wrong logs in training (val intact)
        y_train = y_train[torch.randperm(train, generator=torch.Generator().manual_seed(seed))]
    return Split(x[:train], y_train, x[train:], y[train:], KINDS)


def few_logs() -> Split:
    data = event_logs()
    return Split(data.x_train[:150], data.y_train[:150], data.x_val, data.y_val, KINDS)


class NextEvent(nn.Module):
    def __init__(self, hidden: int = 48, frozen_gru: bool = False, sigmoid_layers: int = 0, head_bias: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(KINDS, 16)
        self.gru = nn.GRU(16, hidden, batch_first=True)
        self.frozen_gru = frozen_gru
        layers: list[nn.Module] = []
        for _ in range(sigmoid_layers):
            layers += [nn.Linear(hidden, hidden), nn.Sigmoid()]
        self.mid = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, KINDS)
        if head_bias:
            with torch.no_grad():
                self.head.bias[0] = head_bias

    def forward(self, events: torch.Tensor) -> torch.Tensor:
        if self.frozen_gru:
            with torch.no_grad():
                _, h = self.gru(self.embed(events))
        else:
            _, h = self.gru(self.embed(events))
        return self.head(self.mid(h[-1]))


def next_event(**kwargs):
    return lambda data: NextEvent(**kwargs)


class Signum(torch.optim.Optimizer):
    """Signum (Bernstein et al. 2018, "signSGD"): m ← β m + (1-β) g; w ← w - lr · sign(m)."""

    def __init__(self, params, lr: float = 1e-3, beta: float = 0.9):
        super().__init__(params, {"lr": lr, "beta": beta})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["m"] = torch.zeros_like(param)
                state["m"].mul_(group["beta"]).add_(param.grad, alpha=1 - group["beta"])
                param.add_(state["m"].sign(), alpha=-group["lr"])


def signum(lr: float):
    return lambda model: Signum(model.parameters(), lr=lr)


def adam(lr: float):
    return lambda model: torch.optim.Adam(model.parameters(), lr=lr)


def plateau(factor: float = 0.3, patience: int = 0):
    def build(optimizer, total, per_epoch):
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=factor, patience=patience), "plateau"
    return build


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="classification", task_kind="classification", logging=LOGGING,
                    batch_size=50, probe_layout=True, scheduler=plateau())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", event_logs), settings.pop("model", next_event()), optimizer,
                epochs, **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("gru_healthy_signum", "GRU next-event classifier, Signum 2e-3, ReduceLROnPlateau (0.3, patience 0), "
            "6 epochs (1,200 steps)", signum(2e-3), 6, healthy=True),
        run("gru_healthy_signum_seed1", "GRU next-event classifier, Signum 2e-3, ReduceLROnPlateau, 6 epochs, "
            "seed 1", signum(2e-3), 6, seed=1, healthy=True),
        run("gru_healthy_adam", "GRU next-event classifier, Adam 3e-3, ReduceLROnPlateau, 6 epochs", adam(3e-3), 6,
            healthy=True),
        run("gru_healthy_adam_64_seed2", "GRU 64 next-event classifier, Adam 2e-3, ReduceLROnPlateau, 6 epochs, "
            "seed 2", adam(2e-3), 6, model=next_event(hidden=64), seed=2, healthy=True),
        run("gru_lr_too_high_signum", "GRU next-event classifier, Signum 0.1 (50x the working lr: an SGD lr "
            "given to a sign optimizer), ReduceLROnPlateau, 6 epochs", signum(0.1), 6,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["update_ratio_out_of_band", "best_epoch_not_last", "underfitting", "loss_spike", "dead_layers",
                   "overfitting", "no_better_than_baseline", "underperforming_classes", "divergence"]),
        run("gru_bad_initial_loss_head_bias", "GRU next-event classifier whose head bias starts at +8 on kind 0 "
            "(a prior copied from a log where kind 0 was 99 % of events; Signum moves it by at most the lr a step, so it "
            "is never unlearnt in the run), Signum 2e-3, 6 epochs", signum(2e-3), 6,
            model=next_event(head_bias=8.0),
            expect={"bad_initial_loss": [1, 10]},
            allow=["loss_spike", "underfitting", "no_better_than_baseline", "underperforming_classes", "lr_too_low",
                   "train_longer", "best_epoch_not_last", "update_ratio_out_of_band"]),
        run("gru_no_better_than_baseline_shuffled_targets", "GRU next-event classifier trained on targets joined "
            "to the wrong logs (an unsorted merge; val intact), Signum 2e-3, 6 epochs", signum(2e-3), 6,
            data=lambda: event_logs(shuffled=True),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last"]),
        run("gru_class_imbalance_rare_kind", "GRU next-event classifier on logs from a sampler that kept 2 % of "
            "the logs ending in kind 5, Signum 2e-3, 6 epochs", signum(2e-3), 6,
            data=lambda: event_logs(rare=0.02),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere}),
        run("gru_vanishing_gradients_sigmoid_stack", "GRU next-event classifier with 8 sigmoid layers of 48 "
            "between the GRU and the head (an old config's 'deep head'), Signum 2e-3, 6 epochs", signum(2e-3), 6,
            model=next_event(sigmoid_layers=8),
            expect={"vanishing_gradients": everywhere},
            allow=["underfitting", "update_ratio_out_of_band", "lr_too_low", "train_longer", "dead_layers",
                   "no_better_than_baseline", "best_epoch_not_last", "underperforming_classes"]),
        run("gru_dead_layers_no_grad_encoder", "GRU next-event classifier whose embedding and GRU run under "
            "torch.no_grad() (a frozen-encoder snippet in a model never pre-trained): only the head learns, "
            "Signum 2e-3, 6 epochs", signum(2e-3), 6, model=next_event(frozen_gru=True),
            expect={"dead_layers": everywhere}, allow=["underfitting", "underperforming_classes"]),
        run("gru_overfitting_few_logs", "GRU 128 next-event classifier on 150 training logs (3 steps per epoch), "
            "Adam 3e-3, no plateau schedule, 150 epochs (450 steps)", adam(3e-3), 150, data=few_logs,
            model=next_event(hidden=128), scheduler=None,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    base = healthy["gru_healthy_signum"]
    return {
        "gru_lr_too_high_signum": base,
        "gru_bad_initial_loss_head_bias": base,
        "gru_no_better_than_baseline_shuffled_targets": base,
        "gru_class_imbalance_rare_kind": base,
        "gru_vanishing_gradients_sigmoid_stack": base,
        "gru_dead_layers_no_grad_encoder": base,
        "gru_overfitting_few_logs": healthy["gru_healthy_adam"],
    }
