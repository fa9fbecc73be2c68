"""Message passing (GIN) classifying small synthetic graphs into 60 classes with Lion, logged every step (fourth hold-out).

Graphs made here: each of 60 classes has three node types (feature centres
uniform in [-1, 1]^8, class-specific type weights); a graph has 12 nodes,
each of a type drawn from its class's weights, with features its type's
centre plus Gaussian noise (σ = 0.8, so one node says little); two nodes
are joined with probability 0.5 when they share a type, 0.04 otherwise (so
averaging over neighbours removes the noise). 30 training and 10
validation graphs per class, batches of 64 (29 steps per epoch). A Graph
Isomorphism Network on dense adjacency matrices: a linear node embedding
(width 48), three GIN layers (h ← MLP((1 + ε) h + A h), two linear layers
with ReLU, a learnable ε, a residual sum), mean and sum readout
concatenated, a linear head; cross-entropy. Lion (sign of an interpolated
momentum; written here, Chen et al. 2023, as torch has none), RAdam and
SGD with Nesterov momentum; triangular2 cyclic (CyclicLR), warm-up + cosine,
constant and linear-decay schedules. Logged as the probe does: every step's
loss, training accuracy, lr and gradient norm, per-layer statistics every
10 steps, val loss, accuracy and confusion counts every 50 steps. Task:
classification with C = 60 (one run says nothing).

Added with ``vae_glyphs`` and ``seq2seq_transduction`` as a fourth held-out
test (issue #12): written by an engineer who changes no rule, labelled
from how each run was built, each fault checked against its healthy twin
(``tests/diagnosis/heldout_twins.py``), and committed before any of these
runs was diagnosed. The runs are stored in ``tests/data/heldout4`` (not the
tuning corpus), run.json carrying the probe's parameter layout
(``env.model.shapes``, ``tied``, ``frozen``), and this module is not in
``FAMILY_MODULES``: ``python tests/diagnosis/make_heldout.py heldout4`` trains them.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from tests.diagnosis.corpus.common import make, warmup_cosine
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "gin_graph_motifs"
LOGGING = Logging(layer_every=10)
EVAL_EVERY = 50
CLASSES, NODES, FEATURES, TYPES, NOISE = 60, 12, 8, 3, 0.8


@functools.lru_cache(maxsize=None)
def graphs(train_per_class: int = 60, val_per_class: int = 10, long_tail: bool = False,
           misaligned_labels: bool = False, seed: int = 71) -> Split:
    """Graphs as (N, NODES, FEATURES + NODES) float32 (node features, then the adjacency row) and classes (N,).

    ``long_tail``: class k keeps a share ∝ 1/(k+1) of the graphs (train and val; at least 2 and 1);
    ``misaligned_labels``: the training labels shuffled apart from their graphs (a loader bug; val intact).
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-1, 1, size=(CLASSES, TYPES, FEATURES))
    weights = rng.dirichlet(np.full(TYPES, 1.5), size=CLASSES)
    if long_tail:
        share = 1.0 / np.arange(1, CLASSES + 1)
        train_counts = np.maximum(2, np.round(4 * train_per_class * share)).astype(int)
        val_counts = np.maximum(1, np.round(4 * val_per_class * share)).astype(int)
    else:
        train_counts, val_counts = np.full(CLASSES, train_per_class), np.full(CLASSES, val_per_class)

    def draw(counts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        labels = np.repeat(np.arange(CLASSES), counts)
        kinds = (rng.random((len(labels), NODES, 1)) > weights[labels].cumsum(1)[:, None, :]).sum(-1).clip(0, TYPES - 1)
        features = centres[labels[:, None], kinds] + NOISE * rng.normal(size=(len(labels), NODES, FEATURES))
        same = kinds[:, :, None] == kinds[:, None, :]
        edges = rng.random((len(labels), NODES, NODES)) < np.where(same, 0.5, 0.04)
        edges = np.triu(edges, 1)
        adjacency = (edges | edges.transpose(0, 2, 1)).astype(np.float64)
        return (torch.tensor(np.concatenate([features, adjacency], -1), dtype=torch.float32),
                torch.tensor(labels))

    x_train, y_train = draw(train_counts)
    x_val, y_val = draw(val_counts)
    if misaligned_labels:
        y_train = y_train[torch.tensor(rng.permutation(len(y_train)))]
    return Split(x_train, y_train, x_val, y_val, CLASSES)


class GINLayer(nn.Module):
    """h ← h + MLP((1 + ε) h + A h): (B, N, W) node states and (B, N, N) adjacency → (B, N, W)."""

    def __init__(self, width: int, activation: type[nn.Module] = nn.ReLU, residual: bool = True):
        super().__init__()
        self.eps = nn.Parameter(torch.zeros(1))
        self.mlp = nn.Sequential(nn.Linear(width, width), activation(), nn.Linear(width, width), activation())
        self.residual = residual

    def forward(self, hidden: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        update = self.mlp((1 + self.eps) * hidden + adjacency @ hidden)
        return hidden + update if self.residual else update


class GIN(nn.Module):
    """(B, N, F + N) graphs → (B, C) logits; ``edge_gate``: a layer meant to weight the edges, never called."""

    def __init__(self, classes: int = CLASSES, width: int = 48, depth: int = 3,
                 activation: type[nn.Module] = nn.ReLU, residual: bool = True, edge_gate: bool = False):
        super().__init__()
        self.embed = nn.Linear(FEATURES, width)
        if edge_gate:
            self.edge_gate = nn.Linear(2 * width, 1)
        self.layers = nn.ModuleList(GINLayer(width, activation, residual) for _ in range(depth))
        self.head = nn.Linear(2 * width, classes)

    def forward(self, graphs: torch.Tensor) -> torch.Tensor:
        features, adjacency = graphs[..., :FEATURES], graphs[..., FEATURES:]
        hidden = self.embed(features)
        for layer in self.layers:
            hidden = layer(hidden, adjacency)
        return self.head(torch.cat([hidden.mean(1), hidden.sum(1) / NODES], -1))


def gin(**kwargs):
    return lambda data: GIN(data.num_classes, **kwargs)


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of β1·m + (1-β1)·g as
    the update, decoupled weight decay, m ← β2·m + (1-β2)·g."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["exp_avg"] = torch.zeros_like(param)
                average = state["exp_avg"]
                param.mul_(1 - group["lr"] * group["weight_decay"])
                param.add_((beta1 * average + (1 - beta1) * param.grad).sign_(), alpha=-group["lr"])
                average.mul_(beta2).add_(param.grad, alpha=1 - beta2)


def lion(lr: float, weight_decay: float = 0.5):
    return make(Lion, lr, weight_decay=weight_decay)


def radam(lr: float):
    return make(torch.optim.RAdam, lr)


def nesterov(lr: float):
    return make(torch.optim.SGD, lr, momentum=0.9, nesterov=True, weight_decay=1e-4)


def cyclic(cycles: int = 4):
    """CyclicLR triangular2 between 10 % of the lr and the lr, ``cycles`` cycles over the run (no momentum cycling)."""
    def build(optimizer, total, per_epoch):
        top = [group["lr"] for group in optimizer.param_groups]
        half = max(1, total // (2 * cycles))
        return torch.optim.lr_scheduler.CyclicLR(optimizer, [0.1 * lr for lr in top], top, step_size_up=half,
                                                 mode="triangular2", cycle_momentum=False), "step"
    return build


def linear_decay():
    """LinearLR from the lr down to 1 % of it over the run."""
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.01, total_iters=total), "step")


def glitch(at: int, scale: float):
    """One batch whose node features are × ``scale`` at step ``at`` (the adjacency untouched)."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if step != at:
            return x, y
        x = x.clone()
        x[..., :FEATURES] *= scale
        return x, y
    return hook


def biased_head(bias: float):
    """The head's bias on class 0 set to ``bias`` at init (a prior copied from another task)."""
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.head.bias.zero_()
            model.head.bias[0] = bias
    return prepare


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, task_kind="classification", logging=LOGGING, eval_every=EVAL_EVERY,
                    batch_size=64, probe_layout=True)
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", graphs), settings.pop("model", gin()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    everywhere = None
    return [
        run("gin_healthy_lion_cyclic", "GIN, Lion 6e-4 wd 0.5, CyclicLR triangular2 (4 cycles), 15 epochs",
            lion(6e-4), 15, scheduler=cyclic(4), healthy=True),
        run("gin_healthy_lion_warmup_cosine", "GIN, Lion 3e-4 wd 0.5, 5% warm-up + cosine to 0, 15 epochs",
            lion(3e-4), 15, scheduler=warmup_cosine(0.05), healthy=True),
        run("gin_healthy_radam_constant", "GIN, RAdam 3e-3 constant, 15 epochs", radam(3e-3), 15, healthy=True),
        run("gin_healthy_sgd_linear_decay", "GIN, SGD Nesterov momentum 0.9 lr 0.05 wd 1e-4, linear decay to 1%, "
            "15 epochs", nesterov(0.05), 15, scheduler=linear_decay(), healthy=True),
        run("gin_healthy_lion_long_unknown_task", "GIN, Lion 1e-4 wd 0.5, 5% warm-up + cosine to 0, 50 epochs "
            "(2,850 steps), no task kind", lion(1e-4), 50, scheduler=warmup_cosine(0.05), task_kind="unknown",
            eval_every=150, healthy=True),
        run("gin_lr_too_high_lion", "GIN, Lion 1e-2 wd 0.5 constant (33x the working lr; Lion's updates are the lr "
            "itself per weight), 15 epochs", lion(1e-2), 15,
            expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
            allow=["loss_spike", "update_ratio_out_of_band", "best_epoch_not_last", "overfitting", "underfitting",
                   "exploding_gradients", "underperforming_classes", "no_better_than_baseline", "dead_layers"]),
        run("gin_lr_too_low_lion", "GIN, Lion 3e-6 wd 0.5 (1/100 of the working lr), 5% warm-up + cosine to 0, "
            "15 epochs", lion(3e-6), 15, scheduler=warmup_cosine(0.05),
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band", "no_better_than_baseline",
                   "underperforming_classes"]),
        run("gin_update_ratio_low_lion", "GIN, Lion 3e-7 wd 0.5 (1/1000 of the working lr: every weight moves by "
            "3e-7 a step, about 1e-6 of its size), 5% warm-up + cosine to 0, 15 epochs", lion(3e-7), 15,
            scheduler=warmup_cosine(0.05),
            expect={"update_ratio_out_of_band": everywhere},
            allow=["lr_too_low", "no_better_than_baseline", "underfitting", "underperforming_classes",
                   "train_longer"]),
        run("gin_bad_initial_loss_biased_head", "GIN, RAdam 3e-3 constant, 15 epochs, the head's bias on class 0 set "
            "to 20 at init", radam(3e-3), 15, prepare=biased_head(20.0),
            expect={"bad_initial_loss": [1, 30]},
            allow=["underperforming_classes", "loss_spike", "exploding_gradients"]),
        run("gin_class_imbalance_long_tail", "GIN, RAdam 3e-3 constant, 45 epochs (18 steps each), class k keeps a "
            "share 1/(k+1) of the graphs (240 down to 4 training graphs; val alike)", radam(3e-3), 45,
            data=lambda: graphs(long_tail=True),
            expect={"class_imbalance": everywhere, "underperforming_classes": everywhere},
            allow=["overfitting", "best_epoch_not_last", "no_better_than_baseline"]),
        run("gin_no_better_than_baseline_misaligned_labels", "GIN, RAdam 3e-3 constant, 15 epochs, the training "
            "labels shuffled apart from their graphs (a loader bug; val labels intact)", radam(3e-3), 15,
            data=lambda: graphs(misaligned_labels=True),
            expect={"no_better_than_baseline": everywhere},
            allow=["underfitting", "underperforming_classes", "overfitting", "best_epoch_not_last", "class_imbalance",
                   "train_longer", "lr_too_low"]),
        run("gin_dead_layers_dead_relu", "GIN whose three layers' first linear bias is -50 at init (every hidden ReLU "
            "of the message MLPs dead), RAdam 3e-3 constant, 15 epochs", radam(3e-3), 15, prepare=dead_messages,
            expect={"dead_layers": everywhere},
            allow=["underfitting", "vanishing_gradients", "update_ratio_out_of_band", "underperforming_classes",
                   "no_better_than_baseline"]),
        run("gin_vanishing_gradients_deep_sigmoid", "GIN with 10 sigmoid layers and no residual sums, SGD Nesterov "
            "momentum 0.9 lr 0.05 constant, 15 epochs", nesterov(0.05), 15,
            model=gin(depth=10, activation=nn.Sigmoid, residual=False),
            expect={"vanishing_gradients": everywhere},
            allow=["underfitting", "update_ratio_out_of_band", "lr_too_low", "train_longer", "dead_layers",
                   "no_better_than_baseline", "underperforming_classes"]),
        run("gin_loss_spike_glitch", "GIN, RAdam 3e-3 constant, one batch with node features x30 at step 500, "
            "15 epochs", radam(3e-3), 15, batch_hook=glitch(500, 30.0),
            expect={"loss_spike": [495, 530], "exploding_gradients": [495, 505]}, forbid=["divergence"],
            allow=["exploding_gradients", "best_epoch_not_last", "update_ratio_out_of_band", "train_longer"]),
        run("gin_overfitting_few_graphs", "GIN width 128 on 4 graphs per class (240 graphs, 4 steps per epoch), "
            "RAdam 3e-3 constant, 200 epochs, val every 20 steps", radam(3e-3), 200,
            data=lambda: graphs(train_per_class=4), model=gin(width=128), eval_every=20,
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band", "underperforming_classes"]),
        run("gin_train_longer", "GIN, RAdam 5e-4 constant, stopped after 3 of 15 epochs, val every 20 steps",
            radam(5e-4), 3, eval_every=20,
            expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
            allow=["lr_too_low", "underperforming_classes"]),
        run("gin_underfitting_width_2", "GIN of width 2 (embedding, layers), RAdam 3e-3 constant, 15 epochs",
            radam(3e-3), 15, model=gin(width=2),
            expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"],
            allow=["underperforming_classes"]),
    ]


def dead_messages(model: nn.Module) -> None:
    """Every GIN layer's first linear bias set to -50: its hidden ReLUs never fire (a bad init copied over)."""
    with torch.no_grad():
        for layer in model.layers:
            layer.mlp[0].bias.fill_(-50.0)


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    radam_constant = healthy["gin_healthy_radam_constant"]
    return {
        "gin_lr_too_high_lion": run("gin_twin_lion_constant", "GIN, Lion 3e-4 wd 0.5 constant, 15 epochs",
                                    lion(3e-4), 15),
        "gin_lr_too_low_lion": healthy["gin_healthy_lion_warmup_cosine"],
        "gin_update_ratio_low_lion": healthy["gin_healthy_lion_warmup_cosine"],
        "gin_bad_initial_loss_biased_head": radam_constant,
        "gin_class_imbalance_long_tail": radam_constant,
        "gin_no_better_than_baseline_misaligned_labels": radam_constant,
        "gin_dead_layers_dead_relu": radam_constant,
        "gin_vanishing_gradients_deep_sigmoid": run("gin_twin_deep_sigmoid_residual", "GIN with 10 sigmoid layers "
                                                    "and residual sums, SGD Nesterov momentum 0.9 lr 0.05 constant, "
                                                    "15 epochs", nesterov(0.05), 15,
                                                    model=gin(depth=10, activation=nn.Sigmoid)),
        "gin_loss_spike_glitch": radam_constant,
        "gin_overfitting_few_graphs": run("gin_twin_wide_all_graphs", "GIN width 128 on all the graphs, RAdam 3e-3 "
                                          "constant, 15 epochs, val every 20 steps", radam(3e-3), 15,
                                          model=gin(width=128), eval_every=20),
        "gin_train_longer": run("gin_twin_radam_5e-4", "GIN, RAdam 5e-4 constant, 15 epochs, val every 20 steps",
                                radam(5e-4), 15, eval_every=20),
        "gin_underfitting_width_2": radam_constant,
    }
