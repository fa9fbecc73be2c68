"""Regenerate the labelled diagnosis corpus by really training small models on the CPU.

Each run trains a small model (seconds) on an sklearn bundled dataset or on
synthetic data made here, and records what the probe would record, per the
store schema (docs/design.md, "Store layout and schema"): train loss and batch
accuracy, lr per param group and global gradient norm every step; per-layer
grad_norm, weight_norm and update_ratio every ``LAYER_EVERY`` steps; val loss,
val accuracy and confusion counts at every evaluation. The probe is written
elsewhere; :class:`Recorder` computes the same statistics explicitly so that
the corpus does not depend on it. A run may instead be logged the way other
loggers do (:class:`Logging`: every N steps, window or epoch means, from a
late step on) and record its task kind as ``Probe(task=...)`` would.

Runs belong to program families (one training program: data, model kind and
loop style); the original runs are in ``ORIGINAL_FAMILIES``, the others in
the modules of ``tests/diagnosis/corpus/``, one per family. The diagnosis
benchmark holds out one family at a time (leave-one-family-out).

Labels (which rules each run must raise, roughly where, and which must stay
quiet) are written next to the store in ``corpus_labels.json``. They follow
from how the run was set up (an lr bump injected at step N, a frozen layer, a
decay at 10 % of training), never from what the diagnoser says.

Usage::

    python tests/diagnosis/make_corpus.py [--out tests/data/corpus] [--only NAME ...] [--family FAMILY ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.diagnosis.corpus import FAMILY_MODULES  # noqa: E402
from traindoctor.store.compact import compact_run  # noqa: E402
from traindoctor.store.reader import Store  # noqa: E402
from traindoctor.store.segments import RunWriter  # noqa: E402

DEFAULT_OUT = ROOT / "tests" / "data" / "corpus"
LABELS_FILE = "corpus_labels.json"
# Per-layer statistics every 5 steps: the probe's default cadence for the
# expensive statistics is "every N steps"; 5 keeps the corpus small (a few MB).
LAYER_EVERY = 5


# --------------------------------------------------------------------- data


@dataclass
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int


def _standardise(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = x_train.mean(0), x_train.std(0)
    # A feature (pixel) almost constant in a small training subset would be
    # blown up in the validation set; leave such features unscaled.
    std = np.where(std < 1e-2 * max(float(std.max()), 1e-12), 1.0, std)
    return (x_train - mean) / std, (x_val - mean) / std


def _split(x: np.ndarray, y: np.ndarray, seed: int, val_fraction: float = 0.3, standardise: bool = True,
           train_limit: int | None = None) -> Split:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    cut = int(len(x) * (1 - val_fraction))
    train, val = order[:cut], order[cut:]
    if train_limit is not None:
        train = train[:train_limit]
    x_train, x_val = x[train].astype(np.float32), x[val].astype(np.float32)
    if standardise:
        x_train, x_val = _standardise(x_train, x_val)
    return Split(torch.tensor(x_train, dtype=torch.float32), torch.tensor(y[train], dtype=torch.long),
                 torch.tensor(x_val, dtype=torch.float32), torch.tensor(y[val], dtype=torch.long),
                 int(y.max()) + 1)


def digits(seed: int = 0, **kwargs) -> Split:
    from sklearn.datasets import load_digits

    data = load_digits()
    return _split(data.data, data.target, seed, **kwargs)


def breast_cancer(seed: int = 0, **kwargs) -> Split:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return _split(data.data, data.target, seed, **kwargs)


def iris(seed: int = 0, **kwargs) -> Split:
    from sklearn.datasets import load_iris

    data = load_iris()
    return _split(data.data, data.target, seed, **kwargs)


def wine(seed: int = 0, **kwargs) -> Split:
    from sklearn.datasets import load_wine

    data = load_wine()
    return _split(data.data, data.target, seed, **kwargs)


def moons(seed: int = 0, n: int = 1500, noise: float = 0.2, **kwargs) -> Split:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return _split(x, y, seed, **kwargs)


def classification(seed: int = 0, n: int = 2000, features: int = 20, classes: int = 3, weights=None,
                   class_sep: float = 1.0, flip_y: float = 0.01, informative: int = 10, **kwargs) -> Split:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=features, n_informative=informative, n_redundant=2,
                               n_classes=classes, weights=weights, class_sep=class_sep, flip_y=flip_y,
                               random_state=seed)
    return _split(x, y, seed, **kwargs)


def random_labels(seed: int = 0, n: int = 1200, features: int = 10, weights=(0.75, 0.25), **kwargs) -> Split:
    """Features independent of the labels: nothing to learn beyond the class prior."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    y = rng.choice(len(weights), size=n, p=np.asarray(weights) / np.sum(weights))
    return _split(x, y, seed, **kwargs)


def sequences(seed: int = 0, n: int = 3000, length: int = 12, vocab: int = 16, classes: int = 4, **kwargs) -> Split:
    """Token sequences; the class is (count of token 1 + position of token 2) mod ``classes``."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(n, length))
    first_two = np.argmax(x == 2, axis=1)
    y = ((x == 1).sum(1) + first_two) % classes
    data = _split(x, y, seed, standardise=False, **kwargs)
    data.x_train, data.x_val = data.x_train.long(), data.x_val.long()
    return data


# ------------------------------------------------------------------- models


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ReLU, init_gain: float | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(fan_in, fan_out)
        if init_gain is not None:
            nn.init.normal_(linear.weight, std=init_gain / math.sqrt(fan_in))
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if index < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 16, length: int = 12, width: int = 32, heads: int = 4, depth: int = 2,
                 classes: int = 4, norm_first: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.embed(x) + self.position)
        return self.head(hidden.mean(1))


class WithUnusedLayer(nn.Module):
    """An MLP with a branch that forward() never calls: its parameters never get a gradient."""

    def __init__(self, inputs: int, hidden: int, classes: int):
        super().__init__()
        self.body = mlp([inputs, hidden, classes])
        self.auxiliary = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


# ----------------------------------------------------------------- recorder


@dataclass(frozen=True)
class Logging:
    """How a run's training series are logged (optimizer steps).

    The default is the probe's: every step's value, per-layer statistics
    every ``LAYER_EVERY`` steps. Other loggers record every ``every`` steps
    (the value of that step, or with ``mean`` the mean since the previous
    record: HF Trainer's logged loss), or one mean per epoch (Keras,
    Lightning's ``on_epoch``), and may start late (``start``: a callback
    attached after step 1). With ``ema`` the loss recorded is the
    bias-corrected exponential moving average of every step's loss so far
    (fastai's smoothed loss, ``beta = ema``; no training accuracy is
    logged). Gradient norm and lr are logged with the loss, as the step's
    value.
    """

    every: int = 1
    mean: bool = False
    per_epoch: bool = False
    start: int = 1
    layer_every: int | None = LAYER_EVERY
    ema: float | None = None

    def __post_init__(self) -> None:
        if self.every < 1 or self.start < 1 or (self.layer_every is not None and self.layer_every < 1):
            raise ValueError(f"every, start and layer_every must be >= 1, got {self}")
        if self.ema is not None and not (0.0 < self.ema < 1.0 and not (self.mean or self.per_epoch)):
            raise ValueError(f"ema must be in (0, 1) and excludes mean and per_epoch, got {self}")


class Recorder:
    """Computes the probe's statistics explicitly and writes them through RunWriter."""

    def __init__(self, writer: RunWriter, model: nn.Module, optimizer: torch.optim.Optimizer,
                 logging: Logging = Logging(), objective: str = "classification"):
        self.writer = writer
        self.model = model
        self.optimizer = optimizer
        self.layer_every = logging.layer_every
        self.logging = logging
        self.objective = objective
        self.named = [(name, p) for name, p in model.named_parameters()]
        self.layer_names = tuple(name for name, _ in self.named)
        self.step = 0
        self._before: list[torch.Tensor] | None = None
        self._window: list[tuple[float, float | None]] = []
        self._smoothed = 0.0  # the uncorrected moving average of the loss (Logging.ema)

    def before_step(self) -> None:
        """Call after backward(), before optimizer.step()."""
        upcoming = self.step + 1
        grads = [p.grad for _, p in self.named if p.grad is not None]
        total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)) if grads else torch.tensor(0.0)
        self._global_grad = float(total)
        # The lr this step uses (a scheduler stepped after optimizer.step() has already moved it on).
        self._lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.layer_every is not None and upcoming % self.layer_every == 0:
            self._layer_grads = np.array(
                [float(p.grad.double().norm()) if p.grad is not None else 0.0 for _, p in self.named])
            self._before = [p.detach().clone() for _, p in self.named]
        else:
            self._before = None

    def after_step(self, loss: float, accuracy: float | None, epoch: int, epoch_end: bool = False) -> None:
        """Call after optimizer.step() (and the scheduler); ``epoch_end``: the epoch's last step."""
        self.step += 1
        step, writer, logging = self.step, self.writer, self.logging
        if logging.ema is not None:
            self._smoothed = logging.ema * self._smoothed + (1 - logging.ema) * loss
            loss, accuracy = self._smoothed / (1 - logging.ema ** step), None
        self._window.append((loss, accuracy))
        due = (epoch_end if logging.per_epoch else step % logging.every == 0) and step >= logging.start
        if due:
            if logging.mean or logging.per_epoch:
                loss = float(np.mean([value for value, _ in self._window]))
                accuracies = [value for _, value in self._window if value is not None]
                accuracy = float(np.mean(accuracies)) if accuracies else None
            self._window = []
            writer.add_scalars(step=step, name="loss", value=loss, epoch=epoch)
            if accuracy is not None:
                writer.add_scalars(step=step, name="accuracy", value=accuracy, epoch=epoch)
            writer.add_scalars(step=step, name="grad_norm", value=self._global_grad, epoch=epoch)
            writer.add_scalars(step=step, name="lr", value=np.array(self._lrs, dtype=float),
                               layer=tuple(f"group{i}" for i in range(len(self._lrs))), epoch=epoch)
        elif not (logging.mean or logging.per_epoch) or step < logging.start:
            self._window = []
        if self._before is not None:
            weights = np.array([float(p.detach().double().norm()) for _, p in self.named])
            deltas = np.array([float((p.detach() - old).double().norm()) for (_, p), old in zip(self.named, self._before)])
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = deltas / weights
            writer.add_scalars(step=step, name="grad_norm", value=self._layer_grads, layer=self.layer_names, epoch=epoch)
            writer.add_scalars(step=step, name="weight_norm", value=weights, layer=self.layer_names, epoch=epoch)
            writer.add_scalars(step=step, name="update_ratio", value=ratios, layer=self.layer_names, epoch=epoch)

    def evaluate(self, data: Split, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 epoch: int) -> float:
        """Val loss (and, for a classifier, accuracy and confusion counts) at the current step; returns the loss."""
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            logits = self.model(data.x_val)
            loss = float(criterion(logits, data.y_val))
        self.model.train(was_training)
        if self.objective != "classification":
            self.writer.add_scalars(step=self.step, name="loss", value=loss, split="val", epoch=epoch)
            return loss
        predicted = logits.argmax(1)
        accuracy = float((predicted == data.y_val).float().mean())
        counts = np.zeros((data.num_classes, data.num_classes), dtype=np.int64)
        np.add.at(counts, (data.y_val.numpy(), predicted.numpy()), 1)
        self.writer.add_scalars(step=self.step, name="loss", value=loss, split="val", epoch=epoch)
        self.writer.add_scalars(step=self.step, name="accuracy", value=accuracy, split="val", epoch=epoch)
        self.writer.add_confusion(step=self.step, counts=counts, split="val", epoch=epoch)
        return loss


# -------------------------------------------------------------------- specs


@dataclass
class Spec:
    """One corpus run: how it is trained and what the diagnoser must say about it.

    ``expect`` maps rule ids to a rough [first, last] step range where the
    problem is (None: anywhere in the run); ``forbid`` lists rules that must
    not fire; ``allow`` lists secondary findings the setup also produces (a
    diverged model is also no better than the baseline; a 1000× lr decay
    also puts update ratios below the band): neither required nor counted
    as false positives. Healthy runs must get no warning or critical finding.

    ``family`` names the training program (data, model kind, loop style) the
    run is a variant of; ``objective`` is what it trains (``classification``:
    cross-entropy on (B, C) logits; ``language_modelling``: next-token
    cross-entropy on (B, T, V) logits; ``regression``: MSE on (B, 1)
    outputs); ``task_kind`` is what run.json records, as ``Probe(task=...)``
    would (``unknown``: nothing said; None: only ``num_classes``, as the
    original corpus). ``scheduler`` builds a torch lr scheduler from
    (optimizer, total steps, steps per epoch) and says when it steps:
    ``step``, ``epoch`` or ``plateau`` (on the val loss at each evaluation).
    """

    name: str
    description: str
    data: Callable[[], Split]
    model: Callable[[Split], nn.Module]
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    epochs: int
    batch_size: int = 32
    lr_at: Callable[[int, int], float] | None = None  # (step, total_steps) -> multiplier of the base lr
    batch_hook: Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    prepare: Callable[[nn.Module], None] | None = None
    evals_per_epoch: int = 1
    seed: int = 0
    expect: dict[str, list[int] | None] = field(default_factory=dict)
    forbid: list[str] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)
    healthy: bool = False
    attention: bool = False
    family: str = ""
    objective: str = "classification"
    task_kind: str | None = None
    logging: Logging = Logging()
    scheduler: Callable[[torch.optim.Optimizer, int, int], tuple[Any, str]] | None = None
    eval_every: int | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # instead of the objective's own
    # run.json's env.model as the probe writes it since 6968efd: ``frozen`` (the optimizer's parameters
    # without requires_grad) and ``probe.core.parameter_layout`` (``shapes`` in model order, ``tied``).
    probe_layout: bool = False


def objective_loss(objective: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss a program of this objective minimises (mean over the batch, and over tokens)."""
    if objective == "classification":
        return F.cross_entropy
    if objective == "language_modelling":
        return lambda logits, targets: F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    if objective == "regression":
        return lambda outputs, targets: F.mse_loss(outputs.reshape(targets.shape), targets)
    raise ValueError(f"objective must be classification, language_modelling or regression, got {objective!r}")


def task_record(spec: Spec, data: Split) -> dict[str, Any]:
    """run.json's task, as the probe writes it for ``Probe(task=spec.task_kind, num_classes=..., vocab_size=...)``."""
    from traindoctor.probe.core import _task_kind

    names = [str(i) for i in range(data.num_classes)]
    if spec.task_kind is None:
        return {"num_classes": data.num_classes, "class_names": names}
    if spec.task_kind == "unknown":
        return {"kind": _task_kind(None, None, None), "num_classes": None, "class_names": None}
    classes = data.num_classes if spec.task_kind == "classification" else None
    vocab = data.num_classes if spec.task_kind == "language_modelling" else None
    task: dict[str, Any] = {"kind": _task_kind(spec.task_kind, classes, vocab), "num_classes": classes,
                            "class_names": names if classes else None}
    if vocab is not None:
        task["vocab_size"] = vocab
    if classes:
        task["expected_initial_loss"] = math.log(classes)
    return task


def train(spec: Spec, out: Path) -> str:
    torch.manual_seed(spec.seed)
    data = spec.data()
    model = spec.model(data)
    if spec.prepare is not None:
        spec.prepare(model)
    optimizer = spec.optimizer(model)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    criterion = spec.loss or objective_loss(spec.objective)
    n_train = len(data.y_train)
    steps_per_epoch = math.ceil(n_train / spec.batch_size)
    total_steps = steps_per_epoch * spec.epochs
    eval_every = spec.eval_every or max(1, steps_per_epoch // spec.evals_per_epoch)
    scheduler, scheduler_steps = (spec.scheduler(optimizer, total_steps, steps_per_epoch) if spec.scheduler
                                  else (None, None))
    generator = torch.Generator().manual_seed(spec.seed)
    env = {
        "torch": torch.__version__, "device": "cpu",
        "optimizer": {"type": type(optimizer).__name__, "param_groups": [
            {key: (list(value) if isinstance(value, tuple) else value) for key, value in group.items()
             if key in ("lr", "weight_decay", "betas", "eps", "momentum")}
            | {"num_params": sum(p.numel() for p in group["params"]), "num_tensors": len(group["params"])}
            for group in optimizer.param_groups]},
        "model": {"type": type(model).__name__, "num_params": sum(p.numel() for p in model.parameters()),
                  "has_attention": spec.attention, "num_layers": sum(1 for _ in model.modules()) - 1},
        "amp": {"dtype": None, "scaler": False},
    }
    if spec.probe_layout:
        from traindoctor.probe.core import escaped_name, parameter_layout

        names = {id(p): escaped_name(name) for name, p in model.named_parameters()}
        env["model"]["frozen"] = [names[id(p)] for group in optimizer.param_groups for p in group["params"]
                                  if not p.requires_grad and id(p) in names]
        env["model"].update(parameter_layout(model))
    task = task_record(spec, data)
    config = {"description": spec.description, "epochs": spec.epochs, "batch_size": spec.batch_size,
              "lr": base_lrs[0], "seed": spec.seed}
    if spec.family:
        config["family"] = spec.family
    source: dict[str, Any] = {"kind": "corpus"}
    if spec.logging.every > 1:
        source["logging_every"] = spec.logging.every
    with RunWriter(out, name=spec.name, run_id=spec.name, config=config, env=env, task=task,
                   probe_settings={"layer_every": spec.logging.layer_every}, source=source,
                   background=False) as writer:
        recorder = Recorder(writer, model, optimizer, spec.logging, spec.objective)
        # As the probe does from watch() to the first optimizer step (env.model.discarded_outputs).
        discarded = None
        if spec.probe_layout:
            from traindoctor.probe.core import DiscardedOutputs

            discarded = DiscardedOutputs(model)
        model.train()
        step = 0
        for epoch in range(spec.epochs):
            order = torch.randperm(n_train, generator=generator)
            for start in range(0, n_train, spec.batch_size):
                index = order[start:start + spec.batch_size]
                x, y = data.x_train[index], data.y_train[index]
                if spec.batch_hook is not None:
                    x, y = spec.batch_hook(step + 1, x, y)
                if spec.lr_at is not None:
                    multiplier = spec.lr_at(step + 1, total_steps)
                    for group, base in zip(optimizer.param_groups, base_lrs):
                        group["lr"] = base * multiplier
                logits = model(x)
                loss = criterion(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if discarded is not None:
                    names = discarded.names([p for group in optimizer.param_groups for p in group["params"]])
                    discarded = None
                    if names:
                        writer.update_meta(env={"model": {**env["model"], "discarded_outputs": names}})
                recorder.before_step()
                optimizer.step()
                if scheduler_steps == "step":
                    scheduler.step()
                accuracy = (float((logits.detach().argmax(1) == y).float().mean())
                            if spec.objective == "classification" else None)
                epoch_end = start + spec.batch_size >= n_train
                recorder.after_step(float(loss.detach()), accuracy, epoch, epoch_end)
                step += 1
                if step % eval_every == 0 or (epoch_end and spec.evals_per_epoch == 1 and spec.eval_every is None):
                    val_loss = recorder.evaluate(data, criterion, epoch)
                    if scheduler_steps == "plateau":
                        scheduler.step(val_loss)
            if scheduler_steps == "epoch":
                scheduler.step()
    compact_run(Store(out), spec.name)
    return spec.name


# ------------------------------------------------------------- run recipes


def warmup_cosine(warmup_fraction: float) -> Callable[[int, int], float]:
    def schedule(step: int, total: int) -> float:
        warmup = max(1, int(total * warmup_fraction))
        if step <= warmup:
            return step / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))
    return schedule


def step_decay(at_fraction: float, factor: float) -> Callable[[int, int], float]:
    return lambda step, total: factor if step > at_fraction * total else 1.0


def bump(at: int, length: int, factor: float) -> Callable[[int, int], float]:
    """A transient lr bump (a schedule bug): ``factor`` × lr for ``length`` steps from ``at``."""
    return lambda step, total: factor if at <= step < at + length else 1.0


def glitch_batch(at: int, scale: float) -> Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """One corrupted batch (inputs scaled by ``scale``): a data-pipeline glitch."""
    def hook(step: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x * scale, y) if step == at else (x, y)
    return hook


def adam(lr: float, **kwargs) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda model: torch.optim.Adam(model.parameters(), lr=lr, **kwargs)


def adamw(lr: float, weight_decay: float = 1e-2, **kwargs) -> Callable[[nn.Module], torch.optim.Optimizer]:
    """AdamW with the usual two groups: no weight decay on biases and normalisation weights (seed 001)."""
    def make(model: nn.Module) -> torch.optim.Optimizer:
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
        exempt = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, **kwargs)
    return make


def sgd(lr: float, momentum: float = 0.0, **kwargs) -> Callable[[nn.Module], torch.optim.Optimizer]:
    return lambda model: torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, **kwargs)


def width_mlp(hidden: list[int], activation: type[nn.Module] = nn.ReLU, init_gain: float | None = None):
    return lambda data: mlp([data.x_train.shape[1], *hidden, data.num_classes], activation, init_gain)


def scale_last_layer(factor: float) -> Callable[[nn.Module], None]:
    def prepare(model: nn.Module) -> None:
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.weight.mul_(factor)
    return prepare


def biased_last_layer(bias: float) -> Callable[[nn.Module], None]:
    def prepare(model: nn.Module) -> None:
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.bias.zero_()
            last.bias[0] = bias
    return prepare


def freeze_first_layer(model: nn.Module) -> None:
    first = [m for m in model.modules() if isinstance(m, nn.Linear)][0]
    for parameter in first.parameters():
        parameter.requires_grad_(False)


def kill_relu_layer(model: nn.Module) -> None:
    """A large negative bias on the second hidden layer: every ReLU there is dead from the start."""
    second = [m for m in model.modules() if isinstance(m, nn.Linear)][1]
    with torch.no_grad():
        second.bias.fill_(-50.0)


def transformer(norm_first: bool = False, depth: int = 2, width: int = 32):
    return lambda data: TinyTransformer(width=width, depth=depth, classes=data.num_classes, norm_first=norm_first)


def healthy_specs() -> list[Spec]:
    return [
        # ---- healthy runs of different kinds
        Spec("healthy_digits_adam", "MLP 64-128-10 on digits, Adam 1e-3, 20 epochs",
             digits, width_mlp([128]), adam(1e-3), epochs=20, healthy=True),
        Spec("healthy_iris_adam", "MLP 4-16-3 on iris, AdamW 1e-2 wd 0.1, batches of 16",
             iris, width_mlp([16]), adamw(1e-2, weight_decay=0.1), epochs=40, batch_size=16, healthy=True),
        Spec("healthy_cancer_logistic", "logistic regression on breast_cancer, SGD 0.05 momentum 0.9",
             breast_cancer, width_mlp([]), sgd(0.05, momentum=0.9), epochs=30, healthy=True),
        Spec("healthy_moons_sgd_cosine", "MLP 2-32-32-2 on moons, SGD momentum 0.9 lr 0.1, cosine",
             moons, width_mlp([32, 32]), sgd(0.1, momentum=0.9), epochs=25, lr_at=warmup_cosine(0.02),
             healthy=True),
        Spec("healthy_classification_adamw", "MLP 20-64-64-3 on make_classification, AdamW 1e-3 wd 1e-2",
             classification, width_mlp([64, 64]), adamw(1e-3, weight_decay=1e-2), epochs=15,
             healthy=True),
        Spec("healthy_wine_adam", "MLP 13-32-3 on wine, AdamW 1e-3 wd 0.1",
             wine, width_mlp([32]), adamw(1e-3, weight_decay=0.1), epochs=25, batch_size=16, healthy=True),
        Spec("healthy_transformer_warmup", "2-layer transformer on token sequences, AdamW 1e-3, 10% warmup + cosine",
             sequences, transformer(norm_first=True), adamw(1e-3, betas=(0.9, 0.98)), epochs=12, lr_at=warmup_cosine(0.1),
             attention=True, healthy=True),
        Spec("healthy_digits_sgd_step_decay", "MLP 64-64-10 on digits, SGD momentum 0.9 lr 0.02, lr x0.1 at 70%",
             digits, width_mlp([64]), sgd(0.02, momentum=0.9), epochs=15, lr_at=step_decay(0.7, 0.1), healthy=True),
        Spec("healthy_cancer_mlp_rmsprop", "MLP 30-32-2 on breast_cancer, RMSprop 1e-3, two evals per epoch",
             breast_cancer, width_mlp([32]), lambda model: torch.optim.RMSprop(model.parameters(), lr=1e-3),
             epochs=12, evals_per_epoch=2, healthy=True),
        Spec("healthy_classification_tanh_warmup", "tanh MLP 20-128-128-3 on make_classification, AdamW 3e-3, warmup+cosine",
             classification, width_mlp([128, 128], nn.Tanh), adamw(3e-3), epochs=12,
             lr_at=warmup_cosine(0.05), healthy=True),
    ]


DIVERGED_ALLOW = ["dead_layers", "loss_spike", "update_ratio_out_of_band", "no_better_than_baseline",
                  "best_epoch_not_last", "underperforming_classes", "underfitting", "lr_too_high"]


def problem_specs() -> list[Spec]:
    everywhere = None
    return [
        # ---- learning rate
        Spec("lr_too_high_sgd_noisy_classification", "MLP on make_classification (10% flipped labels), plain SGD lr 2",
             noisy_classification, width_mlp([64, 64]), sgd(2.0), epochs=15,
             expect={"lr_too_high": everywhere, "update_ratio_out_of_band": everywhere}, forbid=["lr_too_low", "train_longer"],
             allow=["overfitting", "update_ratio_out_of_band", "best_epoch_not_last", "underfitting"]),
        Spec("lr_too_high_adam_noisy_classification", "same data, Adam lr 0.05 (default 1e-3)",
             noisy_classification, width_mlp([64, 64]), adam(0.05), epochs=15,
             expect={"lr_too_high": everywhere}, forbid=["lr_too_low", "train_longer"],
             allow=["overfitting", "update_ratio_out_of_band", "best_epoch_not_last", "underfitting"]),
        Spec("lr_too_low_sgd_digits", "MLP 64-128-10 on digits, plain SGD lr 3e-4",
             digits, width_mlp([128]), sgd(3e-4), epochs=15,
             expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
             allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes"]),
        Spec("lr_too_low_adam_cancer", "MLP 30-32-2 on breast_cancer, Adam lr 3e-5",
             breast_cancer, width_mlp([32]), adam(3e-5), epochs=25, batch_size=16,
             expect={"lr_too_low": everywhere}, forbid=["lr_too_high"],
             allow=["train_longer", "underfitting", "update_ratio_out_of_band", "underperforming_classes"]),
        Spec("decayed_too_early_sgd_digits", "MLP on digits, SGD 0.05, lr x0.001 after 8% of training",
             digits, width_mlp([128]), sgd(0.05), epochs=15, lr_at=step_decay(0.08, 1e-3),
             expect={"decayed_too_early": [40, 80]}, forbid=["lr_too_high"],
             allow=["update_ratio_out_of_band", "underperforming_classes", "underfitting"]),
        Spec("decayed_too_early_adam_classification", "MLP on make_classification, Adam 1e-3, lr x0.001 after 10%",
             classification, width_mlp([64, 64]), adam(1e-3), epochs=15, lr_at=step_decay(0.10, 1e-3),
             expect={"decayed_too_early": [50, 90], "update_ratio_out_of_band": [50, 660]}, forbid=["lr_too_high"],
             allow=["underperforming_classes", "underfitting"]),
        # ---- divergence and spikes
        Spec("divergence_nan_sgd_momentum_digits", "MLP on digits, SGD momentum 0.9 lr 3: weights overflow to inf, loss NaN",
             digits, width_mlp([128]), sgd(3.0, momentum=0.9), epochs=6,
             expect={"divergence": everywhere, "exploding_gradients": everywhere},
             allow=DIVERGED_ALLOW),
        # The gradient norm's median only grows ~5x here (dead ReLUs follow the blow-up): exploding
        # gradients are possible (single-step peaks) but not a property of the setup.
        Spec("divergence_rise_adam_lr_growth", "6-layer MLP on digits, Adam lr 0.1 growing x1.02 per step (lr range test left running)",
             digits, width_mlp([64] * 5), adam(0.1), epochs=8, lr_at=lambda step, total: 1.02 ** step,
             expect={"divergence": everywhere}, allow=DIVERGED_ALLOW + ["exploding_gradients"]),
        Spec("divergence_rise_sgd_moons", "MLP on moons, SGD momentum 0.99 lr 2 (loss climbs above its start and stays)",
             moons, width_mlp([32, 32]), sgd(2.0, momentum=0.99), epochs=10,
             expect={"divergence": everywhere, "exploding_gradients": everywhere}, allow=DIVERGED_ALLOW),
        Spec("loss_spike_lr_bump_digits", "MLP on digits, Adam 1e-3 with an lr x300 bump for 3 steps at step 400",
             digits, width_mlp([128]), adam(1e-3), epochs=20, lr_at=bump(400, 3, 300.0),
             expect={"loss_spike": [398, 420]}, forbid=["divergence"],
             allow=["exploding_gradients", "best_epoch_not_last"]),
        Spec("loss_spike_glitch_classification", "MLP on make_classification, one batch with inputs x100 at step 300",
             classification, width_mlp([64, 64]), adam(2e-3), epochs=15, batch_hook=glitch_batch(300, 100.0),
             expect={"loss_spike": [298, 320], "exploding_gradients": [298, 305]}, forbid=["divergence"]),
        # ---- generalisation
        Spec("overfitting_digits_small", "wide MLP on 150 digits, Adam 3e-3, 150 epochs, eval per epoch",
             lambda: digits(train_limit=150), width_mlp([512, 512]), adam(3e-3), epochs=150,
             expect={"overfitting": everywhere, "best_epoch_not_last": everywhere}, forbid=["underfitting", "train_longer"],
             allow=["update_ratio_out_of_band"]),
        Spec("overfitting_noisy_classification", "wide MLP on 300 noisy make_classification samples (15% flipped labels)",
             lambda: classification(n=600, flip_y=0.15, train_limit=300, class_sep=0.8), width_mlp([256, 256]),
             adam(3e-3), epochs=120,
             expect={"overfitting": everywhere, "best_epoch_not_last": everywhere}, forbid=["underfitting", "train_longer"],
             allow=["update_ratio_out_of_band"]),
        Spec("underfitting_moons_linear", "logistic regression on moons (a linear model on a non-linear boundary)",
             lambda: moons(noise=0.1), width_mlp([]), adam(1e-2), epochs=25,
             expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        Spec("underfitting_digits_width1", "MLP 64-1-10 on digits (a 1-unit bottleneck), Adam 1e-2",
             digits, width_mlp([1]), adam(1e-2), epochs=40,
             expect={"underfitting": everywhere}, forbid=["overfitting", "lr_too_low"]),
        Spec("train_longer_digits", "MLP on digits, Adam 3e-4, stopped after 3 epochs",
             digits, width_mlp([128]), adam(3e-4), epochs=3, evals_per_epoch=4,
             expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
             allow=["lr_too_low", "underperforming_classes"]),
        Spec("train_longer_classification", "MLP on make_classification, Adam 1e-3, stopped after 3 epochs",
             classification, width_mlp([64, 64]), adam(1e-3), epochs=3, evals_per_epoch=5,
             expect={"train_longer": everywhere}, forbid=["overfitting", "best_epoch_not_last"],
             allow=["lr_too_low", "underperforming_classes"]),
        # ---- initialisation and baselines
        Spec("bad_initial_loss_scaled_head_digits", "MLP on digits with the last layer's weights x30 at init",
             digits, width_mlp([128]), adam(1e-3), epochs=10, prepare=scale_last_layer(30.0),
             expect={"bad_initial_loss": [1, 1]}),
        Spec("bad_initial_loss_biased_head_iris", "MLP on iris with last-layer bias 12 on class 0 at init",
             iris, width_mlp([16]), adam(1e-2), epochs=30, batch_size=16, prepare=biased_last_layer(12.0),
             expect={"bad_initial_loss": [1, 1]}),
        Spec("no_better_than_baseline_random_labels", "MLP on features unrelated to 75/25 labels",
             random_labels, width_mlp([32]), adam(1e-3), epochs=10,
             expect={"no_better_than_baseline": everywhere}, allow=["underfitting", "underperforming_classes"]),
        Spec("no_better_than_baseline_imbalanced_weak", "logistic regression, 90/10 classes, hardly separable",
             lambda: classification(n=1500, classes=2, weights=[0.9, 0.1], class_sep=0.05, flip_y=0.3, informative=2,
                                    features=5),
             width_mlp([]), adam(1e-2), epochs=10,
             expect={"no_better_than_baseline": everywhere}, allow=["underfitting", "underperforming_classes"]),
        # ---- transformers without warm-up
        Spec("missing_warmup_transformer_preln", "4-layer pre-LN transformer width 64, Adam lr 2e-2 from step 1 (no warmup)",
             sequences, transformer(norm_first=True, depth=4, width=64), adam(2e-2), epochs=4, attention=True,
             expect={"missing_warmup": [1, 60]},
             allow=["adam_hyperparameters", "lr_too_high", "best_epoch_not_last", "no_better_than_baseline",
                    "underfitting", "underperforming_classes"]),
        Spec("missing_warmup_transformer_postln", "2-layer post-LN transformer width 32, Adam lr 5e-2, no warmup",
             sequences, transformer(norm_first=False, depth=2, width=32), adam(5e-2), epochs=4, attention=True,
             expect={"missing_warmup": [1, 60]},
             allow=["adam_hyperparameters", "lr_too_high", "best_epoch_not_last", "no_better_than_baseline",
                    "underfitting", "underperforming_classes"]),
        # ---- gradients
        Spec("vanishing_gradients_deep_sigmoid", "12-layer sigmoid MLP on digits, SGD 0.1",
             digits, width_mlp([64] * 11, nn.Sigmoid), sgd(0.1), epochs=8,
             expect={"vanishing_gradients": everywhere},
             allow=["no_better_than_baseline", "underfitting", "underperforming_classes", "best_epoch_not_last",
                    "update_ratio_out_of_band"]),
        Spec("vanishing_gradients_tanh_small_init", "12-layer tanh MLP on make_classification, init gain 0.25",
             classification, width_mlp([64] * 11, nn.Tanh, init_gain=0.25), sgd(0.05), epochs=8,
             expect={"vanishing_gradients": everywhere},
             allow=["no_better_than_baseline", "underfitting", "underperforming_classes", "best_epoch_not_last",
                    "update_ratio_out_of_band"]),
        Spec("update_ratio_low_adam_wine", "MLP on wine, Adam 1e-6 (updates ~1e-5 of the weights)",
             wine, width_mlp([32]), adam(1e-6), epochs=30, batch_size=16,
             expect={"update_ratio_out_of_band": everywhere},
             allow=["lr_too_low", "no_better_than_baseline", "underfitting", "underperforming_classes"]),
        Spec("dead_layers_frozen_first", "MLP on digits whose first layer was frozen by mistake",
             digits, width_mlp([128, 64]), adam(1e-3), epochs=8, prepare=freeze_first_layer,
             expect={"dead_layers": everywhere},
             allow=["no_better_than_baseline", "underfitting", "underperforming_classes", "vanishing_gradients"]),
        Spec("dead_layers_unused_branch", "MLP on iris with an auxiliary head never used in forward()",
             iris, lambda data: WithUnusedLayer(4, 16, 3), adam(1e-2), epochs=30, batch_size=16,
             expect={"dead_layers": everywhere},
             allow=["no_better_than_baseline", "underfitting", "underperforming_classes", "vanishing_gradients"]),
        Spec("dead_layers_dead_relu", "MLP on make_classification whose second ReLU layer is dead (bias -50)",
             classification, width_mlp([64, 64]), adam(1e-3), epochs=8, prepare=kill_relu_layer,
             expect={"dead_layers": everywhere},
             allow=["no_better_than_baseline", "underfitting", "underperforming_classes", "vanishing_gradients"]),
        # ---- per-class
        Spec("class_imbalance_classification", "make_classification with class weights 0.8/0.15/0.05",
             lambda: classification(n=3000, weights=[0.8, 0.15, 0.05], class_sep=0.6), width_mlp([64]),
             adam(1e-3), epochs=10,
             expect={"class_imbalance": everywhere, "underperforming_classes": everywhere}),
        Spec("class_imbalance_digits", "digits where classes 5-9 keep 8% of their samples (train and val)",
             imbalanced_digits, width_mlp([32]), adam(1e-3), epochs=12,
             expect={"class_imbalance": everywhere, "underperforming_classes": everywhere}),
        Spec("underperforming_classes_rare_digits", "digits with classes 3 and 8 cut to 12 training samples each (val balanced)",
             lambda: rare_digits((3, 8), 12), width_mlp([32]), adam(1e-3), epochs=12,
             expect={"underperforming_classes": everywhere}, forbid=["class_imbalance"]),
        Spec("underperforming_classes_overlap", "make_classification where classes 1 and 2 overlap (balanced)",
             overlapping_classes, width_mlp([64]), adam(1e-3), epochs=10,
             expect={"underperforming_classes": everywhere}, forbid=["class_imbalance"]),
    ]


def noisy_classification() -> Split:
    return classification(flip_y=0.1, class_sep=0.7)


def rare_digits(rare: tuple[int, ...], keep: int) -> Split:
    data = digits()
    labels = data.y_train.numpy()
    mask = np.ones(len(labels), dtype=bool)
    for cls in rare:
        mask[np.flatnonzero(labels == cls)[keep:]] = False
    data.x_train, data.y_train = data.x_train[mask], data.y_train[mask]
    return data


def imbalanced_digits(keep_fraction: float = 0.08) -> Split:
    """Digits where classes 5-9 keep only ``keep_fraction`` of their samples (before the split)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(1)
    keep = (data.target < 5) | (rng.random(len(data.target)) < keep_fraction)
    return _split(data.data[keep], data.target[keep], 1)


def overlapping_classes() -> Split:
    """Four well separated Gaussian blobs, except that classes 1 and 2 share one centre half the time."""
    rng = np.random.default_rng(3)
    centres = np.array([[4, 0], [0, 4], [0.6, 4.3], [-4, -4]], dtype=float)
    y = rng.integers(0, 4, size=2400)
    x = centres[y] + rng.normal(size=(len(y), 2))
    return _split(x, y, 3)


# The original runs' families: one training program each (data, model kind, loop style).
ORIGINAL_FAMILIES = {
    "digits_mlp": ("healthy_digits_adam", "healthy_digits_sgd_step_decay", "lr_too_low_sgd_digits",
                   "decayed_too_early_sgd_digits", "divergence_nan_sgd_momentum_digits",
                   "divergence_rise_adam_lr_growth", "loss_spike_lr_bump_digits", "overfitting_digits_small",
                   "underfitting_digits_width1", "train_longer_digits", "bad_initial_loss_scaled_head_digits",
                   "vanishing_gradients_deep_sigmoid", "dead_layers_frozen_first", "class_imbalance_digits",
                   "underperforming_classes_rare_digits"),
    "synthetic_mlp": ("healthy_classification_adamw", "healthy_classification_tanh_warmup",
                      "lr_too_high_sgd_noisy_classification", "lr_too_high_adam_noisy_classification",
                      "decayed_too_early_adam_classification", "loss_spike_glitch_classification",
                      "overfitting_noisy_classification", "train_longer_classification",
                      "no_better_than_baseline_random_labels", "no_better_than_baseline_imbalanced_weak",
                      "vanishing_gradients_tanh_small_init", "dead_layers_dead_relu", "class_imbalance_classification",
                      "underperforming_classes_overlap"),
    "small_tabular_mlp": ("healthy_iris_adam", "healthy_cancer_logistic", "healthy_moons_sgd_cosine",
                          "healthy_wine_adam", "healthy_cancer_mlp_rmsprop", "lr_too_low_adam_cancer",
                          "divergence_rise_sgd_moons", "underfitting_moons_linear", "bad_initial_loss_biased_head_iris",
                          "update_ratio_low_adam_wine", "dead_layers_unused_branch"),
    "sequence_transformer": ("healthy_transformer_warmup", "missing_warmup_transformer_preln",
                             "missing_warmup_transformer_postln"),
}


def original_specs() -> list[Spec]:
    """The original runs, each with its family."""
    family_of = {name: family for family, names in ORIGINAL_FAMILIES.items() for name in names}
    return [dataclasses.replace(spec, family=family_of[spec.name]) for spec in healthy_specs() + problem_specs()]


def all_specs() -> list[Spec]:
    """Every corpus run: the original ones and each family module's (``tests/diagnosis/corpus``).

    Raises:
        ValueError: two runs share a name, or a run has no family.
    """
    return checked_specs(original_specs() + family_specs(FAMILY_MODULES))


def family_specs(module_names) -> list[Spec]:
    """The runs of these family modules (``tests/diagnosis/corpus/<name>.py``), each with its family."""
    specs = []
    for module_name in module_names:
        module = importlib.import_module(f"tests.diagnosis.corpus.{module_name}")
        specs += [dataclasses.replace(spec, family=spec.family or module.FAMILY) for spec in module.specs()]
    return specs


def checked_specs(specs: list[Spec]) -> list[Spec]:
    """``specs``, once every name is unique and every run has a family.

    Raises:
        ValueError: two runs share a name, or a run has no family.
    """
    names = [spec.name for spec in specs]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated or any(not spec.family for spec in specs):
        raise ValueError(f"corpus runs need unique names and a family; duplicated: {duplicated}")
    return specs


def main(argv: list[str] | None = None) -> int:
    return train_cli(argv, all_specs, DEFAULT_OUT, __doc__)


def train_cli(argv: list[str] | None, specs_of: Callable[[], list[Spec]], default_out: Path, doc: str) -> int:
    """Train the runs ``specs_of()`` lists into ``--out`` (all, ``--only`` some, ``--family`` some families'
    or the ``--missing`` ones) and write every run's labels there: ``main`` of this module and of
    ``make_heldout``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--only", nargs="*", help="regenerate only these runs (others are kept)")
    parser.add_argument("--family", nargs="*", help="regenerate only these families' runs (others are kept)")
    parser.add_argument("--missing", action="store_true", help="train only the runs not in --out yet")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.nice(10)  # a background job: the machine's other users keep their share
    specs = specs_of()
    chosen = [s for s in specs if (not args.only or s.name in args.only) and (not args.family or s.family in args.family)
              and not (args.missing and (args.out / s.name / "run.json").is_file())]
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in chosen:
        shutil.rmtree(args.out / spec.name, ignore_errors=True)
        started = time.process_time()
        train(spec, args.out)
        print(f"trained {spec.name} ({spec.family}) in {time.process_time() - started:.1f} s CPU", flush=True)
    write_labels(specs, args.out)
    return 0


def write_labels(specs: list, folder: Path) -> None:
    """The labels of ``specs`` as ``folder/corpus_labels.json`` (read by the tests and the benchmark)."""
    labels = {spec.name: {"description": spec.description, "healthy": spec.healthy, "family": spec.family,
                          "expect": spec.expect, "forbid": spec.forbid, "allow": spec.allow}
              for spec in specs}
    (folder / LABELS_FILE).write_text(json.dumps(labels, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    # Run as a script, this file is __main__; the family modules import tests.diagnosis.make_corpus,
    # so the main below is that module's (one Spec class).
    from tests.diagnosis import make_corpus

    raise SystemExit(make_corpus.main())
