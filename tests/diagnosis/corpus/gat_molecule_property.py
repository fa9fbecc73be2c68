"""A graph attention network (GAT, Veličković et al. 2018: multi-head attention over each atom's bonded neighbours) regressing a property of synthetic molecule-like graphs (MSE on a standardised target), RMSprop, ReduceLROnPlateau, logged as per-epoch means (fourteenth hold-out, healthy only).

Graphs made here: 6-14 "atoms" of 5 kinds (weights 0.55 / 0.15 / 0.15 /
0.1 / 0.05, each with a valence of 4 / 3 / 2 / 2 / 1), bonded as a random
tree that respects the valences plus ring closures (0-2) between atoms with
free valence. The property is an additive-plus-interaction score, as
group-contribution estimates are: a per-kind contribution, a contribution
per bonded pair of kinds, one per ring, a saturating term in the size and
a term for atoms whose neighbours are all of kind 0; standardised over
the training set (the first loss is about 1, a model predicting the mean
scores 1). 3,000 training and 800 validation graphs, padded to 14 nodes:
each graph is a (14, 5 + 14 + 1) tensor (kind one-hot, adjacency row, a
node mask).

The model: a Linear embedding of the kinds (32), 3 GAT layers (4 heads of
8, concatenated, self-loops, LeakyReLU 0.2 scores, masked softmax over the
neighbours, ELU, a residual link), a masked sum + mean readout and an MLP
(64 → 64 → 1). The loss is the MSE.

The loop: batches of 64 (47 steps per epoch), 25 epochs (1,175 steps);
ReduceLROnPlateau (factor 0.5, patience 3) on the val loss after every
epoch. Logged like Keras: one mean of each epoch's training loss (and the
epoch's last lr and gradient norm), per-layer statistics every 50 steps;
val loss after every epoch.

Why these settings (quick check by final val loss, 2026-12-01, each base
run at its lr × 1/3, × 1, × 3): RMSprop 1e-3 0.18 (with 4,000 graphs and
30 epochs: 0.28 at the end, its val loss still jumping), 3e-3 0.168 (the
best at the last epoch), 9e-3 0.193 (a first-epoch mean of 14: the first
steps blow up before RMSprop's averages settle). RMSprop 1.5e-3 with
momentum 0.9 (effectively a larger step): 0.131. The plateau scheduler
halves the lr two or three times in 25 epochs.

Task kind recorded: regression. Fourteenth hold-out (issue #12, healthy
only); see ``tests/diagnosis/make_heldout.py heldout14``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "gat_molecule_property"
KINDS, MAX_NODES = 5, 14
VALENCE = np.array([4, 3, 2, 2, 1])
KIND_WEIGHTS = np.array([0.55, 0.15, 0.15, 0.1, 0.05])


def molecule(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One graph: kinds (n,) and a symmetric 0/1 adjacency (n, n)."""
    n = int(rng.integers(6, MAX_NODES + 1))
    kinds = rng.choice(KINDS, size=n, p=KIND_WEIGHTS)
    kinds[0] = 0  # a carbon-like root, so that the tree can grow
    adjacency = np.zeros((n, n), dtype=np.int64)
    free = VALENCE[kinds].copy()
    for atom in range(1, n):
        open_ = [other for other in range(atom) if free[other] > 0]
        if not open_:  # no valence left: the new atom becomes a valence-4 kind
            kinds[atom] = 0
            free[atom] = VALENCE[0]
            open_ = [other for other in range(atom) if free[other] > 0] or [atom - 1]
        other = int(rng.choice(open_))
        adjacency[atom, other] = adjacency[other, atom] = 1
        free[atom] -= 1
        free[other] -= 1
    for _ in range(int(rng.integers(0, 3))):
        candidates = [(i, j) for i in range(n) for j in range(i + 2, n)
                      if free[i] > 0 and free[j] > 0 and not adjacency[i, j]]
        if not candidates:
            break
        i, j = candidates[int(rng.integers(len(candidates)))]
        adjacency[i, j] = adjacency[j, i] = 1
        free[i] -= 1
        free[j] -= 1
    return kinds, adjacency


@functools.lru_cache(maxsize=None)
def molecules(train: int = 3000, val: int = 800, seed: int = 141) -> Split:
    rng = np.random.default_rng(seed)
    per_kind = np.array([0.5, -0.8, -1.0, 0.6, 0.2])
    pair = rng.normal(0.0, 0.5, size=(KINDS, KINDS))
    pair = (pair + pair.T) / 2
    count = train + val
    x = np.zeros((count, MAX_NODES, KINDS + MAX_NODES + 1), dtype=np.float32)
    y = np.zeros((count, 1))
    for index in range(count):
        kinds, adjacency = molecule(rng)
        n = len(kinds)
        bonds = np.argwhere(np.triu(adjacency))
        rings = len(bonds) - (n - 1)
        neighbours_all_zero = sum(1 for atom in range(n) if adjacency[atom].any()
                                  and (kinds[adjacency[atom] == 1] == 0).all() and kinds[atom] != 0)
        y[index, 0] = (per_kind[kinds].sum() + sum(pair[kinds[i], kinds[j]] for i, j in bonds) + 1.5 * rings
                       + 3.0 * math.tanh(n / 8) + 0.7 * neighbours_all_zero)
        x[index, :n, :KINDS] = np.eye(KINDS)[kinds]
        x[index, :n, KINDS:KINDS + n] = adjacency
        x[index, :n, -1] = 1.0
    y = (y - y[:train].mean()) / y[:train].std()
    x, y = torch.tensor(x), torch.tensor(y, dtype=torch.float32)
    return Split(x[:train], y[:train], x[train:], y[train:], 1)


class GATLayer(nn.Module):
    def __init__(self, width: int, heads: int = 4):
        super().__init__()
        self.heads, self.head_width = heads, width // heads
        self.project = nn.Linear(width, width, bias=False)
        self.score_self = nn.Parameter(torch.randn(heads, self.head_width) * 0.1)
        self.score_other = nn.Parameter(torch.randn(heads, self.head_width) * 0.1)
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, hidden: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        batch, nodes, width = hidden.shape
        projected = self.project(hidden).view(batch, nodes, self.heads, self.head_width)
        own = (projected * self.score_self).sum(-1)  # (B, N, H)
        other = (projected * self.score_other).sum(-1)
        scores = F.leaky_relu(own.unsqueeze(2) + other.unsqueeze(1), 0.2)  # (B, N, N, H)
        scores = scores.masked_fill(~neighbours.unsqueeze(-1), float("-inf"))
        weights = torch.softmax(scores, dim=2)
        out = torch.einsum("bijh,bjhd->bihd", weights, projected).reshape(batch, nodes, width)
        return F.elu(out + self.bias) + hidden


class GAT(nn.Module):
    def __init__(self, width: int = 32, depth: int = 3):
        super().__init__()
        self.embed = nn.Linear(KINDS, width)
        self.layers = nn.ModuleList(GATLayer(width) for _ in range(depth))
        self.readout = nn.Sequential(nn.Linear(2 * width, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, graphs: torch.Tensor) -> torch.Tensor:
        kinds, adjacency, mask = graphs[..., :KINDS], graphs[..., KINDS:KINDS + MAX_NODES], graphs[..., -1]
        # Self-loops on every node, padding too (a padded node attends to itself only and is masked at the readout).
        neighbours = (adjacency > 0) | torch.eye(MAX_NODES, dtype=torch.bool)
        hidden = self.embed(kinds)
        for layer in self.layers:
            hidden = layer(hidden, neighbours)
        hidden = hidden * mask.unsqueeze(-1)
        total = hidden.sum(1)
        mean = total / mask.sum(1, keepdim=True).clamp(min=1.0)
        return self.readout(torch.cat([total / MAX_NODES, mean], -1))


def gat(width: int = 32, depth: int = 3):
    return lambda data: GAT(width, depth)


def rmsprop(lr: float, **kwargs):
    return lambda model: torch.optim.RMSprop(model.parameters(), lr=lr, **kwargs)


def plateau(factor: float = 0.5, patience: int = 3):
    return lambda optimizer, total, per_epoch: (
        torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=factor, patience=patience), "plateau")


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="regression", batch_size=64, attention=True,
                    logging=Logging(per_epoch=True, layer_every=50), scheduler=plateau(), healthy=True)
    settings.update(kwargs)
    return Spec(name, description, molecules, settings.pop("model", gat()), optimizer, epochs, **settings)


LR = 3e-3


def specs() -> list[Spec]:
    return [
        run("gat_rmsprop_plateau", f"3-layer GAT (4 heads, width 32) regressing a molecule-like graph property, "
            f"RMSprop {LR:g}, ReduceLROnPlateau (0.5, patience 3), 25 epochs (1,175 steps), per-epoch means",
            rmsprop(LR), 25),
        run("gat_rmsprop_plateau_seed1", f"3-layer GAT regressing a graph property, RMSprop {LR:g}, "
            "ReduceLROnPlateau, 25 epochs, per-epoch means, seed 1", rmsprop(LR), 25, seed=1),
        run("gat_rmsprop_momentum_seed2", f"3-layer GAT regressing a graph property, RMSprop {LR / 2:g} with "
            "momentum 0.9, ReduceLROnPlateau, 25 epochs, per-epoch means, seed 2",
            rmsprop(LR / 2, momentum=0.9), 25, seed=2),
        run("gat_wide_seed3", f"3-layer GAT (width 48) regressing a graph property, RMSprop {LR:g}, "
            "ReduceLROnPlateau, 25 epochs, per-epoch means, seed 3", rmsprop(LR), 25, seed=3, model=gat(48)),
        run("gat_deep_batch32_seed4", f"4-layer GAT regressing a graph property, batches of 32, RMSprop {LR:g}, "
            "ReduceLROnPlateau (0.5, patience 2), 15 epochs (1,410 steps), per-epoch means, seed 4",
            rmsprop(LR), 15, seed=4, model=gat(32, 4), batch_size=32, scheduler=plateau(0.5, 2)),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
