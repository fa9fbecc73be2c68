"""A graph autoencoder (Kipf & Welling 2016: a GCN encoder over one synthetic latent-space graph, inner-product decoder) predicting held-out links with binary cross-entropy against sampled non-links, RMSprop / Adagrad / RAdam with ReduceLROnPlateau or a constant lr, logged as per-epoch means (sixteenth hold-out).

The graph made here: 500 nodes with hidden positions z ∈ R^4 (standard
normal); two nodes are linked with probability sigmoid(2 − 2.5‖z_u −
z_v‖²) (3,177 links, about 12.7 a node). Node features are a noisy view of
the positions: 2·tanh of z through a fixed random map to 16 dimensions
plus N(0, 0.3²) noise, standardised. 85 % of the links are training links
(the encoder's adjacency is built from them alone: Â = D^-1/2 (A + I)
D^-1/2), 15 % are
validation links; each set is paired with as many node pairs that are not
linked (drawn once). A record is a node pair (u, v) and its label (1: link,
0: none): 5,400 training and 954 validation pairs, batches of 256 (22
steps an epoch). The model: two graph convolutions over the whole
graph at every step (16 → 64, ReLU; 64 → 32), the logit of a pair the
inner product of its two embeddings; binary cross-entropy with logits (ln 2
= 0.693 for a constant guess). RMSprop (lr 3e-3) with ReduceLROnPlateau on
the val loss (factor 0.5, patience 2), 40 epochs; or Adagrad at a constant
lr, or RAdam.
Logged as one mean per epoch (loss, lr and the gradient norm of the
epoch's last step), per-layer statistics every 6 steps, val loss after
every epoch. There is no class: task kind unknown (nothing said).

Sixteenth hold-out: written on 2026-12-01 by an engineer who changes no rule
and never read them; kept out of ``FAMILY_MODULES`` and of
``tests/data/corpus`` (see ``tests/diagnosis/make_heldout.py heldout16``). Labels
come from how each run was built, checked against a healthy twin with
``tests/diagnosis/heldout_twins.py --family gae_link_prediction``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.diagnosis.make_corpus import Logging, Spec, Split

FAMILY = "gae_link_prediction"
LOGGING = Logging(per_epoch=True, layer_every=6)
NODES, LATENT, FEATURES = 500, 4, 16


@functools.lru_cache(maxsize=None)
def graph(seed: int = 163) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(features, training links, validation links, training non-links, validation non-links)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(NODES, LATENT))
    distance = ((z[:, None] - z[None]) ** 2).sum(-1)
    upper = np.triu(rng.random((NODES, NODES)) < 1 / (1 + np.exp(-(2 - 2.5 * distance))), 1)
    links = np.argwhere(upper)
    links = links[rng.permutation(len(links))]
    cut = int(0.85 * len(links))
    taken = {tuple(pair) for pair in links}
    pairs = []
    while len(pairs) < len(links):
        u, v = sorted(rng.integers(0, NODES, 2))
        if u != v and (u, v) not in taken:
            taken.add((u, v))
            pairs.append((u, v))
    pairs = np.asarray(pairs)
    features = np.tanh(z @ rng.normal(0, 1 / math.sqrt(LATENT), (LATENT, FEATURES))) * 2
    features = features + rng.normal(0, 0.3, features.shape)
    features = (features - features.mean(0)) / features.std(0)
    return features, links[:cut], links[cut:], pairs[:cut], pairs[cut:]


def adjacency(normalise: bool = True) -> torch.Tensor:
    """Â of the training links: D^-1/2 (A + I) D^-1/2, or A + I as is."""
    _, train_links, _, _, _ = graph()
    a = np.eye(NODES)
    a[train_links[:, 0], train_links[:, 1]] = a[train_links[:, 1], train_links[:, 0]] = 1.0
    if normalise:
        d = 1 / np.sqrt(a.sum(1))
        a = a * d[:, None] * d[None, :]
    return torch.tensor(a, dtype=torch.float32)


@functools.lru_cache(maxsize=None)
def pairs(train_fraction: float = 1.0, seed: int = 163) -> Split:
    """Node pairs (N, 2) and their link labels (N, 1); ``train_fraction`` of the training pairs kept."""
    _, train_links, val_links, train_none, val_none = graph()
    rng = np.random.default_rng(seed)

    def records(links: np.ndarray, none: np.ndarray, keep: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.concatenate([links, none])
        y = np.concatenate([np.ones(len(links)), np.zeros(len(none))])
        order = rng.permutation(len(x))[:int(round(keep * len(x)))]
        return torch.tensor(x[order], dtype=torch.long), torch.tensor(y[order], dtype=torch.float32)[:, None]

    x_train, y_train = records(train_links, train_none, train_fraction)
    x_val, y_val = records(val_links, val_none, 1.0)
    return Split(x_train, y_train, x_val, y_val, 1)


class GraphAutoencoder(nn.Module):
    def __init__(self, hidden: int = 64, embedding: int = 32, depth: int = 2, activation: str = "relu",
                 normalise: bool = True, identity_features: bool = False):
        super().__init__()
        features = torch.eye(NODES) if identity_features else torch.tensor(graph()[0], dtype=torch.float32)
        self.register_buffer("features", features)
        self.register_buffer("adjacency", adjacency(normalise))
        sizes = [features.shape[1]] + [hidden] * (depth - 1) + [embedding]
        self.convs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = torch.sigmoid if activation == "sigmoid" else torch.relu

    def embed(self) -> torch.Tensor:
        hidden = self.features
        for index, conv in enumerate(self.convs):
            hidden = self.adjacency @ conv(hidden)
            if index < len(self.convs) - 1:
                hidden = self.activation(hidden)
        return hidden

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        z = self.embed()
        return (z[pair[:, 0]] * z[pair[:, 1]]).sum(-1, keepdim=True)  # (B, 1) link logits


def gae(**kwargs):
    return lambda data: GraphAutoencoder(**kwargs)


def link_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, labels)


def rmsprop(lr: float):
    return lambda model: torch.optim.RMSprop(model.parameters(), lr=lr)


def adagrad(lr: float):
    return lambda model: torch.optim.Adagrad(model.parameters(), lr=lr)


def radam(lr: float):
    return lambda model: torch.optim.RAdam(model.parameters(), lr=lr)


def plateau(patience: int = 2, factor: float = 0.5):
    return lambda optimizer, total, per_epoch: (torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=factor, patience=patience), "plateau")


def first_bias(value: float):
    def prepare(model: nn.Module) -> None:
        with torch.no_grad():
            model.convs[0].bias.fill_(value)
    return prepare


def run(name: str, description: str, optimizer, epochs: int, **kwargs) -> Spec:
    settings = dict(family=FAMILY, objective="regression", task_kind="unknown", logging=LOGGING, batch_size=256,
                    probe_layout=True, loss=link_loss, scheduler=plateau())
    settings.update(kwargs)
    return Spec(name, description, settings.pop("data", pairs), settings.pop("model", gae()), optimizer, epochs,
                **settings)


def specs() -> list[Spec]:
    return [
        run("gae_healthy_rmsprop_plateau", "graph autoencoder (GCN 16-64-32, inner-product decoder) predicting "
            "held-out links of a synthetic latent-space graph, BCE against sampled non-links, RMSprop 3e-3, "
            "ReduceLROnPlateau (x0.5, patience 2), 40 epochs", rmsprop(3e-3), 40, healthy=True),
        run("gae_healthy_rmsprop_plateau_seed1", "graph autoencoder, RMSprop 3e-3, ReduceLROnPlateau, 40 epochs, "
            "seed 1", rmsprop(3e-3), 40, seed=1, healthy=True),
        run("gae_healthy_adagrad_constant", "graph autoencoder, Adagrad 1e-2 at a constant lr, 40 epochs, seed 2",
            adagrad(1e-2), 40, scheduler=None, seed=2, healthy=True),
        run("gae_healthy_radam_plateau", "graph autoencoder, RAdam 5e-3, ReduceLROnPlateau, 30 epochs, seed 3",
            radam(5e-3), 30, seed=3, healthy=True),
    ] + faults()


# What each fault run's twin check measured (tests/diagnosis/heldout_twins.py), quoted in its description.
CHECKED = {
    "gae_lr_too_low_rmsprop": (
        "final val 0.554 vs twin 0.490, 1.13x; val falling at every one of the 40 evaluations (0.658 to "
        "0.554); final train 0.540 vs 0.435"),
    "gae_dead_layers_negative_bias": (
        "the first convolution's weight and bias and the second's weight have no gradient at any step (only "
        "the last bias moves); val 0.692 = ln 2 at every evaluation vs twin 0.490, 1.41x"),
    "gae_underfitting_one_dimension": (
        "final val 0.606 vs twin 0.490, 1.24x; final train 0.599 vs the twin's 0.435, train and val close, "
        "flat from epoch 10"),
    "gae_overfitting_identity_features": (
        "val falls to 0.600 at step 14 then rises, noisily, to 1.38 at the end while the train loss goes to "
        "0.27; final val 2.2x the 0.624 of the twin on the node features with the same 30 % of the pairs"),
    "gae_vanishing_gradients_deep_sigmoid": (
        "median gradient norm of the first convolution 0.0046 vs 0.085 for the last (18x; the ReLU twin 0.054 "
        "vs 0.078), the middle ones 0.0022-0.0038; val stays at 0.68-0.71 until step 330 (15 epochs); final "
        "val 0.629 vs twin 0.576, 1.09x"),
}


def faults() -> list[Spec]:
    return [dataclasses.replace(spec, description=f"{spec.description} (checked: {CHECKED[spec.name]})")
            for spec in _faults()]


def _faults() -> list[Spec]:
    everywhere = None
    return [
        run("gae_lr_too_low_rmsprop", "graph autoencoder, RMSprop 3e-5 (100x below the working lr: an "
            "embedding fine-tuning recipe's lr), ReduceLROnPlateau, 40 epochs", rmsprop(3e-5), 40,
            expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
            allow=["train_longer", "underfitting", "update_ratio_out_of_band"]),
        run("gae_dead_layers_negative_bias", "graph autoencoder whose first graph convolution's bias was filled "
            "with -8 at init (a constant meant for a sparse gating layer): every ReLU after it is off, RMSprop "
            "3e-3, ReduceLROnPlateau, 40 epochs", rmsprop(3e-3), 40, prepare=first_bias(-8.0),
            expect={"dead_layers": everywhere}, allow=["underfitting", "vanishing_gradients"]),
        run("gae_underfitting_one_dimension", "graph autoencoder with 1-D node embeddings (hidden 4: the sizes of "
            "a debugging config), RMSprop 3e-3, ReduceLROnPlateau, 40 epochs", rmsprop(3e-3), 40,
            model=gae(hidden=4, embedding=1), expect={"underfitting": everywhere},
            forbid=["overfitting", "lr_too_low"]),
        run("gae_overfitting_identity_features", "graph autoencoder on one-hot node ids instead of the node "
            "features (a featureless GAE config: 500 x 64 free weights in the first layer) with 30 % of the "
            "training pairs, RMSprop 3e-3 at a constant lr, 60 epochs", rmsprop(3e-3), 60, scheduler=None,
            model=gae(identity_features=True), data=lambda: pairs(train_fraction=0.3),
            expect={"overfitting": everywhere, "best_epoch_not_last": everywhere},
            forbid=["underfitting", "train_longer"], allow=["update_ratio_out_of_band"]),
        run("gae_vanishing_gradients_deep_sigmoid", "graph autoencoder of 8 graph convolutions with sigmoid "
            "between them (a deep GCN config with the activation of an old paper), RMSprop 3e-3, "
            "ReduceLROnPlateau, 40 epochs", rmsprop(3e-3), 40, model=gae(depth=8, activation="sigmoid"),
            expect={"vanishing_gradients": everywhere},
            allow=["underfitting", "update_ratio_out_of_band", "best_epoch_not_last", "dead_layers"]),
    ]


def twins() -> dict[str, Spec]:
    """Each fault run's healthy twin (the same program with the fault removed): fault run name → twin spec."""
    healthy = {spec.name: spec for spec in specs() if spec.healthy}
    twins = {spec.name: healthy["gae_healthy_rmsprop_plateau"] for spec in faults()}
    twins["gae_overfitting_identity_features"] = run(
        "gae_twin_features_30pct", "graph autoencoder on the node features with 30 % of the training pairs, "
        "RMSprop 3e-3 at a constant lr, 60 epochs", rmsprop(3e-3), 60, scheduler=None,
        data=lambda: pairs(train_fraction=0.3))
    twins["gae_vanishing_gradients_deep_sigmoid"] = run(
        "gae_twin_depth8_relu", "graph autoencoder of 8 graph convolutions with ReLU between them, RMSprop 3e-3, "
        "ReduceLROnPlateau, 40 epochs", rmsprop(3e-3), 40, model=gae(depth=8))
    return twins
