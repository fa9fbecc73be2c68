"""A two-layer graph convolutional network (Kipf & Welling) classifying the nodes of one synthetic stochastic-block-model graph into 4 communities, full-batch, Adam (constant or ReduceLROnPlateau) / Lion / SGD momentum / RAdam, every step or every 5 steps (eleventh hold-out, healthy only).

The graph, made here: 800 nodes in 4 communities of 200; an edge joins two
nodes of one community with probability 0.02 and of two communities with
probability 0.004 (mean degree ~6.4, ~38 % of a node's edges leave its
community). Node features: 32 dimensions, the community's mean vector
(norm 1.2) plus standard Gaussian noise: one node's features alone classify
it poorly, its neighbourhood's well. Semi-supervised split: 200 labelled
training nodes (50 per community), 600 validation nodes.

The model: Â X W₁ → ReLU → dropout 0.5 → Â H W₂ with Â = D^-½ (A + I) D^-½
(dense, 800 × 800), hidden 16 (or 32), cross-entropy on the labelled nodes'
logits. One batch is the whole training set (the model computes every node
and returns the batch's rows): one step per epoch, val loss, accuracy and
confusion counts after every step. Weight decay 5e-4 on W₁ only, as in the
GCN paper.

Why these settings (quick check by final val loss, 2026-11-30, each base
run at its lr × 1/3, × 1, × 3; "best @" is the step of the lowest val loss):
- Adam 0.01 (the GCN paper's), 120 steps: × 1/3 0.6201 (still falling),
  × 1 0.5551 (best 0.5543 @ 100), × 3 0.5753 (best 0.5369 @ 27, then
  overfits). At 200 steps the val loss is flat from step ~60 on (0.555 to
  0.565), so the run stops at 120. With ReduceLROnPlateau on the val loss
  (× 0.5, patience 10), 150 steps, seed 1: × 1/3 0.5799, × 1 0.5498 (best
  0.5442 @ 65), × 3 0.5592 (best 0.5381 @ 26).
- Lion with cosine to 0, 200 steps: 1e-3 1.2066 and 3e-3 0.6463 (both
  still falling), 5e-3 0.5356 (best 0.5341 @ 147), 9e-3 0.5760 (best
  0.5319 @ 79, then overfits): 5e-3.
- SGD momentum 0.9, lr × 0.1 at 50 % and 75 %, 300 steps: 0.033 0.6039,
  0.1 0.5622 (best 0.5571 @ 115), 0.3 0.5689: 0.1.
- RAdam (hidden 32), 150 steps: 0.01 0.6064 (still falling), 0.03 0.5453
  (best at the last step), 0.09 0.5489 (best 0.5423 @ 58): 0.03.

Task kind not recorded (run.json has only num_classes, as the original
corpus). Eleventh hold-out (issue #12); see ``softmax_lbfgs_tabular.py``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.corpus import common
from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "gcn_sbm_nodes"
NODES, COMMUNITIES, FEATURES = 800, 4, 32


@functools.lru_cache(maxsize=None)
def sbm_graph(seed: int = 114) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normalised adjacency (N, N), features (N, F), communities (N,))."""
    rng = np.random.default_rng(seed)
    community = np.repeat(np.arange(COMMUNITIES), NODES // COMMUNITIES)
    same = community[:, None] == community[None, :]
    upper = np.triu(rng.random((NODES, NODES)) < np.where(same, 0.02, 0.004), 1)
    adjacency = (upper | upper.T).astype(np.float32) + np.eye(NODES, dtype=np.float32)
    scale = 1.0 / np.sqrt(adjacency.sum(1))
    normalised = adjacency * scale[:, None] * scale[None, :]
    means = rng.normal(size=(COMMUNITIES, FEATURES))
    means *= 1.2 / np.linalg.norm(means, axis=1, keepdims=True)
    features = (means[community] + rng.normal(size=(NODES, FEATURES))).astype(np.float32)
    return torch.tensor(normalised), torch.tensor(features), torch.tensor(community)


@functools.lru_cache(maxsize=None)
def node_split(seed: int = 114) -> Split:
    _, _, community = sbm_graph(seed)
    rng = np.random.default_rng(seed + 1)
    train = np.concatenate([rng.choice(np.flatnonzero(community.numpy() == c), 50, replace=False)
                            for c in range(COMMUNITIES)])
    val = np.setdiff1d(np.arange(NODES), train)
    train, val = torch.tensor(train), torch.tensor(val)
    return Split(train, community[train], val, community[val], COMMUNITIES)


class GCN(nn.Module):
    def __init__(self, hidden: int = 16, dropout: float = 0.5):
        super().__init__()
        self.adjacency, self.features, _ = sbm_graph()
        self.first = nn.Linear(FEATURES, hidden)
        self.second = nn.Linear(hidden, COMMUNITIES)
        self.dropout = dropout

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.adjacency @ self.first(F.dropout(self.features, self.dropout, self.training)))
        hidden = F.dropout(hidden, self.dropout, self.training)
        return (self.adjacency @ self.second(hidden))[nodes]


def gcn(hidden: int = 16):
    return lambda data: GCN(hidden)


def first_layer_decay(kind, lr: float, weight_decay: float = 5e-4, **kwargs):
    """Weight decay on the first layer's weights only (the GCN paper's L2 on W₁)."""
    def build(model: GCN) -> torch.optim.Optimizer:
        rest = [p for name, p in model.named_parameters() if name != "first.weight"]
        return kind([{"params": [model.first.weight], "weight_decay": weight_decay},
                     {"params": rest, "weight_decay": 0.0}], lr=lr, **kwargs)
    return build


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): w ← w - lr (sign(β₁ m + (1-β₁) g) + λ w); m ← β₂ m + (1-β₂) g."""

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0):
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
                    state["m"] = torch.zeros_like(param)
                m = state["m"]
                update = (beta1 * m + (1 - beta1) * param.grad).sign()
                param.mul_(1 - group["lr"] * group["weight_decay"]).add_(update, alpha=-group["lr"])
                m.mul_(beta2).add_(param.grad, alpha=1 - beta2)


def multistep(milestones_fraction=(0.5, 0.75), gamma: float = 0.1):
    def build(optimizer, total, per_epoch):
        milestones = [int(f * total) for f in milestones_fraction]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma), "step"
    return build


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="classification", task_kind=None, batch_size=NODES,
                    logging=Logging(every=1, layer_every=5), probe_layout=True, healthy=True)
    settings.update(kwargs)
    return Spec(name, description, node_split, settings.pop("model", gcn()), optimizer, epochs, **settings)


def specs() -> list[Spec]:
    return [
        run("gcn_adam_kipf", "GCN 32-16-4 on an SBM graph, full batch, Adam 0.01, wd 5e-4 on W1, dropout 0.5, "
            "120 steps", first_layer_decay(torch.optim.Adam, 0.01), 120),
        run("gcn_adam_plateau_seed1", "GCN 32-16-4 on an SBM graph, Adam 0.01, wd 5e-4 on W1, ReduceLROnPlateau "
            "on the val loss (x0.5, patience 10), 150 steps, seed 1", first_layer_decay(torch.optim.Adam, 0.01), 150,
            scheduler=common.plateau(0.5, 10), seed=1),
        run("gcn_lion_cosine_seed2", "GCN 32-16-4 on an SBM graph, Lion 5e-3 (decoupled wd 0.05 on W1), cosine "
            "to 0, 200 steps, seed 2", first_layer_decay(Lion, 5e-3, weight_decay=0.05), 200,
            scheduler=common.cosine_to_zero(), seed=2),
        run("gcn_sgd_momentum_multistep_seed3", "GCN 32-16-4 on an SBM graph, SGD momentum 0.9 lr 0.1, wd 5e-4 on "
            "W1, lr x0.1 at 50 % and 75 %, 300 steps, every 5 steps, seed 3",
            first_layer_decay(torch.optim.SGD, 0.1, momentum=0.9), 300, scheduler=multistep(),
            seed=3, logging=Logging(every=5, layer_every=10)),
        run("gcn_radam_hidden32_seed4", "GCN 32-32-4 on an SBM graph, RAdam 0.03, wd 5e-4 on W1, 150 steps, "
            "every 5 steps, seed 4", first_layer_decay(torch.optim.RAdam, 0.03), 150, model=gcn(32), seed=4,
            logging=Logging(every=5, layer_every=10)),
    ]


def twins() -> dict[str, Spec]:
    """No fault runs in this family (a healthy-only hold-out): no twins."""
    return {}
