"""Make the bundled sample runs: small models trained on the CPU with the real probe.

Each scenario trains a small model on data that ships with scikit-learn or is
generated here (nothing is downloaded) and records it with ``traindoctor.Probe``.
``LABELS`` says what each run was made to show; ``tests/sample_runs`` checks
that the diagnosis finds exactly that and that healthy runs stay quiet.

    python sample_runs/make_runs.py                 # all runs into sample_runs/store
    python sample_runs/make_runs.py --only healthy-mlp-adam --store /tmp/s

Deterministic: one torch thread, fixed seeds, so a run made again gets the
same findings.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from traindoctor.probe import Probe  # noqa: E402
from traindoctor.store.compact import compact_store  # noqa: E402
from traindoctor.store.reader import Store  # noqa: E402

DEFAULT_STORE = Path(__file__).resolve().parent / "store"


@dataclass
class Dataset:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    class_names: list[str] | None = None


@dataclass
class Scenario:
    name: str
    description: str
    make: Callable[[Path, str], None]
    expect: set[str] = field(default_factory=set)  # rule ids the run was made to show
    # Findings that legitimately come with the problem (a diverging run also has
    # exploding gradients); any other warning is a false alarm.
    also: set[str] = field(default_factory=set)
    sweep: bool = False  # part of the lr sweep (Compare page)


def _standardise(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Pixels that are constant in the training set (the digits' corners) keep
    # scale 1: dividing by a ~0 std would blow an unseen value up to ~1e6.
    mean, std = train.mean(0), train.std(0)
    std = np.where(std < 1e-3, 1.0, std)
    return (train - mean) / std, (val - mean) / std


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices only, as HF's Trainer does (seed 001)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def digits(train_size: int | None = None, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8×8 digits: 1,797 images, 10 classes."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        data.data.astype(np.float32), data.target, test_size=0.3, random_state=seed, stratify=data.target)
    if train_size is not None:
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    x_train, x_val = _standardise(x_train, x_val)
    return Dataset(torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train), torch.tensor(x_val, dtype=torch.float32),
                   torch.tensor(y_val), 10, [str(i) for i in range(10)])


def moons(seed: int = 0) -> Dataset:
    """scikit-learn's two interleaving half-moons: not linearly separable."""
    from sklearn.datasets import make_moons
    from sklearn.model_selection import train_test_split

    x, y = make_moons(n_samples=3000, noise=0.25, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=seed)
    x_train, x_val = _standardise(x_train, x_val)
    return Dataset(torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train), torch.tensor(x_val, dtype=torch.float32),
                   torch.tensor(y_val), 2, ["upper", "lower"])


def imbalanced(seed: int = 0) -> Dataset:
    """A 5-class problem where two classes are rare (3 % and 2 % of samples)."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    x, y = make_classification(n_samples=4000, n_features=20, n_informative=8, n_redundant=4, n_classes=5,
                               n_clusters_per_class=2, weights=[0.55, 0.25, 0.15, 0.03, 0.02], class_sep=0.8,
                               flip_y=0.02, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=seed, stratify=y)
    x_train, x_val = _standardise(x_train, x_val)
    names = ["common", "frequent", "regular", "rare", "very rare"]
    return Dataset(torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train), torch.tensor(x_val, dtype=torch.float32),
                   torch.tensor(y_val), 5, names)


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU, dropout: float = 0.0, norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(sizes) - 2:
            if norm:
                layers.append(nn.LayerNorm(fan_out))
            layers.append(activation())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def train_classifier(
    probe: Probe,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int = 64,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    step_scheduler_per_batch: bool = False,
    forget_train_after_eval: bool = False,
    corrupt_steps: frozenset[int] = frozenset(),
    garbage_steps: frozenset[int] = frozenset(),
    clip: float | None = None,
    seed: int = 0,
) -> None:
    """A plain mini-batch loop with an evaluation every epoch, recorded by ``probe``; it ends early once
    ``probe.should_stop`` (never, unless the probe was made with ``stop_on``)."""
    criterion = nn.CrossEntropyLoss()
    probe.watch(model, optimizer)
    generator = torch.Generator().manual_seed(seed)
    step = 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(data.x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            inputs, targets = data.x_train[index], data.y_train[index]
            step += 1
            if step in corrupt_steps:  # a corrupt shard: its labels do not belong to its inputs
                targets = (targets + 1 + step % (data.num_classes - 1)) % data.num_classes
            if step in garbage_steps:  # unnormalised garbage, as a broken preprocessing step gives
                inputs = inputs * 1000.0
            loss = criterion(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            if scheduler is not None and step_scheduler_per_batch:
                scheduler.step()
            probe.step(loss=loss, epoch=epoch)
            if probe.should_stop:  # a live finding met Probe(stop_on=...): a doomed run ends here
                return
        if scheduler is not None and not step_scheduler_per_batch:
            scheduler.step()
        model.eval()
        with torch.no_grad(), probe.evaluate("val") as evaluation:
            for start in range(0, len(data.x_val), 256):
                logits = model(data.x_val[start:start + 256])
                evaluation.update(logits, data.y_val[start:start + 256], loss=criterion(logits, data.y_val[start:start + 256]))
        if not forget_train_after_eval:
            model.train()


def _probe(store: Path, name: str, config: dict, data: Dataset) -> Probe:
    return Probe(run=name, store=store, config=config, num_classes=data.num_classes, class_names=data.class_names,
                 project="sample-runs")


def _seed(seed: int = 0) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def digits_mlp(
    store: Path,
    name: str,
    *,
    seed: int,
    sizes: list[int],
    optimizer: type[torch.optim.Optimizer],
    lr: float,
    epochs: int,
    momentum: float = 0.0,
    label: str | None = None,
    activation: type[nn.Module] = nn.ReLU,
    dropout: float = 0.0,
    train_size: int | None = None,
    schedule: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler] | None = None,
    prepare: Callable[[nn.Module], None] | None = None,
    notes: dict | None = None,
    **train: object,
) -> None:
    """The common recipe: an MLP on the digits with one optimizer, recorded by the probe.

    The run's config is derived from the arguments; ``notes`` adds what they
    do not say (a schedule, clipping). ``prepare`` edits the fresh model's
    weights (a bad initialisation).
    """
    _seed(seed)
    data = digits(train_size=train_size, seed=seed)
    model = mlp(sizes, activation=activation, dropout=dropout)
    if prepare is not None:
        with torch.no_grad():
            prepare(model)
    extra = {"momentum": momentum} if momentum else {}
    step_optimizer = optimizer(model.parameters(), lr=lr, **extra)
    config = {"model": label or "mlp-" + "-".join(map(str, sizes[1:-1])), "optimizer": optimizer.__name__, "lr": lr,
              "epochs": epochs, **extra, **(notes or {})}
    if train_size is not None:
        config["train_size"] = train_size
    if "batch_size" in train:
        config["batch_size"] = train["batch_size"]
    scheduler = schedule(step_optimizer) if schedule is not None else None
    with _probe(store, name, config, data) as probe:
        train_classifier(probe, model, step_optimizer, data, epochs=epochs, scheduler=scheduler, **train)


# ----------------------------------------------------------------- scenarios


def healthy_mlp_adam(store: Path, name: str) -> None:
    _seed()
    data = digits()
    model = mlp([64, 128, 64, 10], dropout=0.1)
    optimizer = torch.optim.AdamW(decay_groups(model, 1e-2), lr=2e-3)
    epochs = 30
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    with _probe(store, name, {"model": "mlp-128-64", "optimizer": "AdamW", "lr": 2e-3, "weight_decay": 1e-2,
                              "epochs": epochs, "schedule": "cosine", "batch_size": 64}, data) as probe:
        train_classifier(probe, model, optimizer, data, epochs=epochs, scheduler=scheduler)


def healthy_mlp_sgd(store: Path, name: str) -> None:
    _seed(1)
    data = digits(seed=1)
    model = mlp([64, 96, 10])
    optimizer = torch.optim.SGD(decay_groups(model, 5e-4), lr=0.05, momentum=0.9)
    epochs = 30
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[20, 26], gamma=0.1)
    with _probe(store, name, {"model": "mlp-96", "optimizer": "SGD", "lr": 0.05, "momentum": 0.9,
                              "weight_decay": 5e-4, "epochs": epochs, "schedule": "step 20,26", "batch_size": 64}, data) as probe:
        train_classifier(probe, model, optimizer, data, epochs=epochs, scheduler=scheduler)


class SmallConvNet(nn.Module):
    """A LeNet-sized CNN for the 8×8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(inputs.view(-1, 1, 8, 8)).flatten(1))


def healthy_cnn(store: Path, name: str) -> None:
    _seed(2)
    data = digits(seed=2)
    model = SmallConvNet()
    optimizer = torch.optim.AdamW(decay_groups(model, 5e-2), lr=2e-3)
    epochs = 20
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * math.ceil(len(data.x_train) / 64))
    with _probe(store, name, {"model": "cnn-16-32", "optimizer": "AdamW", "lr": 3e-3, "weight_decay": 5e-2,
                              "epochs": epochs, "schedule": "onecycle", "batch_size": 64}, data) as probe:
        train_classifier(probe, model, optimizer, data, epochs=epochs, scheduler=scheduler, step_scheduler_per_batch=True)


def lr_too_high(store: Path, name: str) -> None:
    digits_mlp(store, name, seed=3, sizes=[64, 128, 10], optimizer=torch.optim.SGD, lr=0.3, momentum=0.9, epochs=25)


def lr_too_low(store: Path, name: str) -> None:
    digits_mlp(store, name, seed=4, sizes=[64, 128, 10], optimizer=torch.optim.SGD, lr=1e-3, epochs=25)


def decayed_too_early(store: Path, name: str) -> None:
    digits_mlp(store, name, seed=5, sizes=[64, 128, 10], optimizer=torch.optim.SGD, lr=0.01, momentum=0.9, epochs=25,
               schedule=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.01),
               notes={"schedule": "step 2 x0.01"})


def overfitting(store: Path, name: str) -> None:
    digits_mlp(store, name, seed=6, sizes=[64, 512, 512, 10], optimizer=torch.optim.Adam, lr=1e-3, epochs=120,
               train_size=150, batch_size=32)


def underfitting(store: Path, name: str) -> None:
    _seed(7)
    data = moons(seed=7)
    model = nn.Linear(2, 2)  # a straight line cannot separate the two moons
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with _probe(store, name, {"model": "linear", "optimizer": "Adam", "lr": 1e-2, "epochs": 30, "data": "moons"}, data) as probe:
        train_classifier(probe, model, optimizer, data, epochs=30)


def too_few_epochs(store: Path, name: str) -> None:
    digits_mlp(store, name, seed=8, sizes=[64, 128, 10], optimizer=torch.optim.SGD, lr=5e-3, momentum=0.9, epochs=4)


def loss_spikes(store: Path, name: str) -> None:
    corrupt = frozenset(s for start in (140, 330, 460) for s in range(start, start + 4))
    digits_mlp(store, name, seed=9, sizes=[64, 128, 10], optimizer=torch.optim.Adam, lr=1e-3, epochs=25,
               corrupt_steps=corrupt, notes={"note": "three corrupt shards of 4 batches"})


def divergence(store: Path, name: str) -> None:
    # The lr is raised 60-fold mid-run, as a mistaken schedule would: loss goes to inf, then NaN.
    digits_mlp(store, name, seed=10, sizes=[64, 256, 256, 10], optimizer=torch.optim.SGD, lr=0.05, momentum=0.9, epochs=12,
               schedule=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0 if epoch < 6 else 60.0),
               notes={"schedule": "x60 at epoch 6"})


def exploding_gradients(store: Path, name: str) -> None:
    # Two stretches of unnormalised batches: the gradient norm (measured before
    # clipping) jumps a thousandfold; clipping at 1 keeps the run alive.
    garbage = frozenset(s for start in (150, 380) for s in range(start, start + 6))
    digits_mlp(store, name, seed=11, sizes=[64, 128, 64, 10], optimizer=torch.optim.SGD, lr=0.05, momentum=0.9, epochs=25,
               garbage_steps=garbage, clip=1.0, notes={"clip": 1.0, "note": "two stretches of unnormalised inputs"})


def vanishing_gradients(store: Path, name: str) -> None:
    digits_mlp(store, name, seed=12, sizes=[64] + [64] * 10 + [10], activation=nn.Sigmoid, label="sigmoid-10x64",
               optimizer=torch.optim.SGD, lr=0.05, epochs=15)


def bad_initial_loss(store: Path, name: str) -> None:
    def over_confident_head(model: nn.Module) -> None:
        model[-1].weight.mul_(40.0)  # logits at step 1 so large the loss is far above ln(10)

    digits_mlp(store, name, seed=13, sizes=[64, 128, 10], optimizer=torch.optim.Adam, lr=1e-3, epochs=20,
               prepare=over_confident_head, label="mlp-128, head init x40")


def forgot_model_train(store: Path, name: str) -> None:
    digits_mlp(store, name, seed=14, sizes=[64, 128, 10], dropout=0.3, label="mlp-128 dropout 0.3",
               optimizer=torch.optim.Adam, lr=1e-3, epochs=15, forget_train_after_eval=True)


def weight_decay_everywhere(store: Path, name: str) -> None:
    _seed(15)
    data = digits(seed=15)
    model = mlp([64, 128, 64, 10], norm=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)  # biases and LayerNorm too
    epochs = 25
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    with _probe(store, name, {"model": "mlp-128-64 layernorm", "optimizer": "AdamW", "lr": 2e-3, "weight_decay": 0.1,
                              "epochs": epochs, "schedule": "cosine"}, data) as probe:
        train_classifier(probe, model, optimizer, data, epochs=epochs, scheduler=scheduler)


def imbalanced_classes(store: Path, name: str) -> None:
    _seed(16)
    data = imbalanced(seed=16)
    model = mlp([20, 64, 5])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    epochs = 25
    with Probe(run=name, store=store, num_classes=5, class_names=data.class_names, project="sample-runs",
               config={"model": "mlp-64", "optimizer": "Adam", "lr": 1e-3, "epochs": epochs,
                       "class_weights": "none"}) as probe:
        train_classifier(probe, model, optimizer, data, epochs=epochs)


SWEEP_EXPECT = {3e-4: {"lr_too_low"}, 3e-3: set(), 3e-2: set(), 3e-1: {"lr_too_high"}}
SWEEP_ALSO = {3e-4: {"underperforming_classes"}, 3e-3: set(), 3e-2: set(), 3e-1: {"loss_spike", "best_epoch_not_last"}}


def lr_sweep(lr: float) -> Callable[[Path, str], None]:
    def run(store: Path, name: str) -> None:
        digits_mlp(store, name, seed=20, sizes=[64, 128, 10], optimizer=torch.optim.SGD, lr=lr, momentum=0.9, epochs=20,
                   notes={"sweep": "lr"})
    return run


class TinyTransformer(nn.Module):
    """A 2-layer post-LN encoder that classifies which token is most frequent in a sequence."""

    def __init__(self, vocab: int = 16, width: int = 64, length: int = 24, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        # Post-LN (the original Transformer's): the variant that needs warmup most (seed 003).
        layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, dropout=0.0, batch_first=True,
                                           norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embed(tokens) + self.position)
        return self.head(hidden.mean(1))


def majority_token_data(seed: int, vocab: int = 16, length: int = 24, samples: int = 3000) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (samples, length), generator=generator)
    winners = torch.randint(0, vocab, (samples,), generator=generator)
    tokens[:, : length // 3] = winners[:, None]  # the winner appears at least a third of the time
    tokens = tokens[:, torch.randperm(length, generator=generator)]
    labels = torch.mode(tokens, dim=1).values
    split = int(samples * 0.8)
    return Dataset(tokens[:split], labels[:split], tokens[split:], labels[split:], vocab)


def transformer(warmup_steps: int) -> Callable[[Path, str], None]:
    def run(store: Path, name: str) -> None:
        _seed(30)
        data = majority_token_data(seed=30)
        model = TinyTransformer()
        lr = 5e-2
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        epochs, steps_per_epoch = 10, math.ceil(len(data.x_train) / 64)
        total = epochs * steps_per_epoch

        def schedule(step: int) -> float:
            if warmup_steps and step < warmup_steps:
                return (step + 1) / warmup_steps
            progress = (step - warmup_steps) / max(1, total - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        with _probe(store, name, {"model": "transformer-2x64", "optimizer": "Adam", "lr": lr, "warmup_steps": warmup_steps,
                                  "epochs": epochs, "schedule": "cosine", "layers": 2, "width": 64}, data) as probe:
            train_classifier(probe, model, optimizer, data, epochs=epochs, scheduler=scheduler, step_scheduler_per_batch=True)
    return run


SCENARIOS: list[Scenario] = [
    Scenario("healthy-mlp-adamw", "MLP on digits, AdamW + cosine: a healthy run", healthy_mlp_adam),
    Scenario("healthy-mlp-sgd", "MLP on digits, SGD momentum + late step decay: healthy", healthy_mlp_sgd),
    Scenario("healthy-cnn", "small CNN with BatchNorm, AdamW one-cycle, no decay on norms/biases: healthy", healthy_cnn),
    Scenario("lr-too-high", "SGD lr 0.3, momentum 0.9: fast early fall, then a high, thrashing plateau", lr_too_high,
             {"lr_too_high"}, {"loss_spike", "best_epoch_not_last"}),
    Scenario("lr-too-low", "SGD lr 1e-3, no momentum: slow, almost linear descent", lr_too_low, {"lr_too_low"}, {"underperforming_classes"}),
    Scenario("decayed-too-early", "lr cut 100x after 2 epochs: flat loss well above where it was heading",
             decayed_too_early, {"decayed_too_early"}, {"underperforming_classes", "update_ratio_out_of_band"}),
    Scenario("overfitting", "big MLP on 150 samples: val loss turns up while train loss falls", overfitting,
             {"overfitting", "best_epoch_not_last"}),
    Scenario("underfitting", "a linear model on two moons: loss plateaus high, train and val close", underfitting,
             {"underfitting"}),
    Scenario("too-few-epochs", "4 epochs: train and val loss still falling at the end", too_few_epochs, {"train_longer"}, {"underperforming_classes"}),
    Scenario("loss-spikes", "three corrupt shards (wrong labels for 4 batches): spikes that recover", loss_spikes,
             {"loss_spike"}),
    Scenario("divergence", "lr raised 60x mid-run: loss goes to NaN", divergence, {"divergence"}, {"exploding_gradients"}),
    Scenario("exploding-gradients", "unnormalised batches: gradient norm 1000x, clipping keeps the run alive",
             exploding_gradients, {"exploding_gradients"}, {"loss_spike"}),
    Scenario("vanishing-gradients", "10 sigmoid layers: early layers get almost no gradient", vanishing_gradients,
             {"vanishing_gradients"}, {"no_better_than_baseline", "update_ratio_out_of_band"}),
    Scenario("bad-initial-loss", "head initialised 40x too large: first loss far above ln(10)", bad_initial_loss,
             {"bad_initial_loss"}),
    Scenario("forgot-model-train", "model.eval() for validation and never model.train() again", forgot_model_train,
             {"eval_mode_during_training"}),
    Scenario("weight-decay-everywhere", "AdamW weight decay 0.1 on biases and LayerNorm weights too",
             weight_decay_everywhere, {"weight_decay_on_norm_and_bias"}),
    Scenario("imbalanced-classes", "two classes under 3 % of the data: their recall lags", imbalanced_classes,
             {"underperforming_classes", "class_imbalance"}),
    Scenario("transformer-no-warmup", "post-LN transformer, Adam 5e-2 from step 1: early blow-up, then stuck",
             transformer(0),
             {"missing_warmup"}),
    Scenario("transformer-warmup", "the same transformer with 100 warmup steps: it learns", transformer(100)),
] + [
    Scenario(f"sweep-lr-{lr:g}", f"lr sweep of one MLP: SGD momentum lr {lr:g}", lr_sweep(lr), SWEEP_EXPECT[lr], SWEEP_ALSO[lr],
             sweep=True)
    for lr in SWEEP_EXPECT
]

LABELS = {s.name: sorted(s.expect) for s in SCENARIOS}
ALSO = {s.name: sorted(s.also) for s in SCENARIOS}


def make(store: Path, only: list[str] | None = None, *, compact: bool = True, quiet: bool = False) -> list[str]:
    """Train the scenarios (all, or ``only``) into ``store``; returns their names."""
    torch.set_num_threads(1)
    chosen = [s for s in SCENARIOS if not only or s.name in only]
    unknown = set(only or []) - {s.name for s in SCENARIOS}
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    store.mkdir(parents=True, exist_ok=True)
    for scenario in chosen:
        started = time.perf_counter()
        scenario.make(store, scenario.name)
        if not quiet:
            print(f"{scenario.name:28s} {time.perf_counter() - started:5.1f} s  {scenario.description}")
    if compact:
        compact_store(Store(store))
    return [s.name for s in chosen]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--only", nargs="*", default=None, help="scenario names (default: all)")
    parser.add_argument("--keep", action="store_true", help="add to the store instead of replacing it")
    args = parser.parse_args(argv)
    if args.store.exists() and not args.keep and not args.only:
        shutil.rmtree(args.store)
    started = time.perf_counter()
    make(args.store, args.only)
    print(f"made {len(args.only or SCENARIOS)} runs in {time.perf_counter() - started:.0f} s into {args.store}")


if __name__ == "__main__":
    main()
