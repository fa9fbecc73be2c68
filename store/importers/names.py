"""Map other tools' metric names onto the data contract's (split, name, layer).

TensorBoard tags, Lightning ``metrics.csv`` columns and HF Trainer
``log_history`` keys all pack the split (and sometimes a parameter group or a
layer) into one string: ``train/loss``, ``val_acc``, ``lr-Adam/pg2``,
``eval_loss``, ``grad_2.0_norm/fc.weight``. The store keeps dimensions as
columns, so importers unpack them here. Names the project knows (loss,
accuracy, lr, grad_norm) get the project's word; anything else stays a user
metric under its own name, with the split taken from a prefix or suffix when
there is one and ``user`` otherwise.

Example:
    >>> map_metric("val_acc")
    MetricKey(split='val', name='accuracy', layer=None)
    >>> map_metric("lr-Adam/pg2")
    MetricKey(split='train', name='lr', layer='group1')
    >>> map_metric("epoch") is EPOCH
    True
"""

from __future__ import annotations

import re
from typing import Iterable, NamedTuple

from traindoctor.store.format import OPTIMIZER_METRICS, lr_layer


class MetricKey(NamedTuple):
    split: str
    name: str
    layer: str | None = None


# The epoch counter is a column of every row, not a metric of its own.
EPOCH = MetricKey("", "epoch")

SPLIT_WORDS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "eval": "val", "evaluation": "val", "dev": "val",
    # Informer, Autoformer and the Time-Series-Library print "Train Loss: ... Vali Loss: ... Test Loss: ...".
    "vali": "val",
    "test": "test", "testing": "test",
}
KNOWN_NAMES = {
    "loss": "loss",
    # Megatron-LM prints and writes to TensorBoard its language-model loss as "lm loss".
    "lm loss": "loss", "lm_loss": "loss",
    # Detectron2, the TF Object Detection API and many YOLO ports print the summed training loss as total_loss
    # next to its parts (loss_cls, giou_loss, ...); a log that also has a plain "loss" keeps that one (map_metrics).
    "total_loss": "loss", "total loss": "loss",
    # A detection loop's sum of its loss dict, printed under the name the tutorials give it (``losses =
    # sum(loss for loss in loss_dict.values())``: maskrcnn-benchmark#497's "iteration : 6, losses : 1436176.25").
    "losses": "loss",
    # An epoch's mean loss as the PyTorch examples print it ("Test set: Average loss: 0.0490").
    "average_loss": "loss", "average loss": "loss", "avg_loss": "loss", "avg loss": "loss",
    "acc": "accuracy", "accuracy": "accuracy",
    "lr": "lr", "learning_rate": "lr", "learning-rate": "lr", "learningrate": "lr",
    "grad_norm": "grad_norm", "gradient_norm": "grad_norm", "grad-norm": "grad_norm",
    "grad_norm_total": "grad_norm", "total_grad_norm": "grad_norm", "global_grad_norm": "grad_norm",
    "grad norm": "grad_norm", "gnorm": "grad_norm",  # Megatron-LM, fairseq
    "learning rate": "lr",  # Megatron-LM
    # fairseq and Megatron-LM log the dynamic fp16 loss scale: GradScaler's scale.
    "loss_scale": "amp_scale", "loss scale": "amp_scale", "loss-scale": "amp_scale",
    "weight_norm": "weight_norm", "update_ratio": "update_ratio",
    "amp_scale": "amp_scale", "amp_skipped": "amp_skipped",
}
# Names recorded for the optimizer, never for an evaluation split.
TRAIN_ONLY = set(OPTIMIZER_METRICS)

# Lightning's LearningRateMonitor: "lr-Adam", "lr-Adam/pg2" (1-based groups),
# "lr-SGD-momentum"; a named group is "lr-Adam/<name>".
_LIGHTNING_LR = re.compile(r"^lr-(?P<optimizer>[A-Za-z0-9_.]+?)(?P<momentum>-momentum)?(?:/(?P<group>[^/]+))?$")
# lightning.pytorch.utilities.grad_norm: "grad_2.0_norm_total", "grad_2.0_norm/fc.weight".
_LIGHTNING_GRAD_NORM = re.compile(r"^grad_(?P<p>[0-9.]+|inf)_norm(?:_total|/(?P<layer>.+))$")
_AGGREGATE_SUFFIXES = ("_step", "_epoch")

# Keys that count optimizer steps in record-by-record logs (JSONL, terminal
# logs, W&B histories), most specific first: fairseq's num_updates counts
# optimizer updates where its "epoch 001: 450 / 1891" counts batches, and
# litgpt prints "iter 76 step 38" (micro-batches, then optimizer steps).
STEP_KEYS = ("num_updates", "global_step", "train/global_step", "trainer/global_step", "step", "iteration", "iter",
             "it")
# Keys holding the wall-clock time of a record, in Unix seconds.
WALL_TIME_KEYS = ("wall_time", "_timestamp", "timestamp")
# W&B's wandb.watch() logs histograms of each parameter's gradient and value
# under these prefixes; a norm derived from one is the project's statistic.
HISTOGRAM_NORMS = {"gradients": "grad_norm", "parameters": "weight_norm"}


def _split_of(tag: str) -> tuple[str | None, str]:
    """The split named by a prefix or suffix of ``tag``, and the rest."""
    parts = tag.split("/")
    if len(parts) > 1:
        if parts[0].lower() in SPLIT_WORDS:
            return SPLIT_WORDS[parts[0].lower()], "/".join(parts[1:])
        if parts[-1].lower() in SPLIT_WORDS:  # "Loss/train", the PyTorch tutorial's form
            return SPLIT_WORDS[parts[-1].lower()], "/".join(parts[:-1])
    for separator in ("_", "-"):
        head, found, rest = tag.partition(separator)
        if found and rest and head.lower() in SPLIT_WORDS:
            return SPLIT_WORDS[head.lower()], rest
    return None, tag


def _lightning_lr(rest: str) -> MetricKey | None:
    match = _LIGHTNING_LR.match(rest)
    if not match:
        return None
    group = match.group("group")
    if group is None:
        layer = lr_layer(0)
    elif group.startswith("pg") and group[2:].isdigit():
        layer = lr_layer(int(group[2:]) - 1)
    else:
        layer = group
    return MetricKey("train", "momentum" if match.group("momentum") else "lr", layer)


def _lightning_grad_norm(rest: str) -> MetricKey | None:
    match = _LIGHTNING_GRAD_NORM.match(rest)
    if not match:
        return None
    if match.group("p") not in ("2", "2.0"):
        # Only the 2-norm is the project's grad_norm; keep other norms as they are.
        return MetricKey("train", rest.split("/")[0] if match.group("layer") else rest, match.group("layer"))
    return MetricKey("train", "grad_norm", match.group("layer"))


def map_metric(tag: str) -> MetricKey:
    """The (split, name, layer) for one tag, column or key; ``EPOCH`` for the epoch counter."""
    split, rest = _split_of(tag)
    lowered = rest.lower()
    if lowered == "epoch" and split in (None, "train"):
        return EPOCH
    special = _lightning_lr(rest) or _lightning_grad_norm(rest)
    if special is not None:
        return special
    if lowered in KNOWN_NAMES:
        name = KNOWN_NAMES[lowered]
        # The contract keys lr by parameter group; a single logged lr is group 0's.
        return MetricKey("train" if split is None or name in TRAIN_ONLY else split, name, lr_layer(0) if name == "lr" else None)
    for suffix in _AGGREGATE_SUFFIXES:
        base = lowered[: -len(suffix)]
        if lowered.endswith(suffix) and base in KNOWN_NAMES:
            # Lightning's on_step/on_epoch pair: for training the per-step value
            # is the curve and the epoch mean a summary; for evaluation splits
            # the epoch aggregate is the metric and per-batch values are noise.
            name = KNOWN_NAMES[base]
            split = split or "train"
            curve_suffix = "_step" if split == "train" else "_epoch"
            return MetricKey(split, name if suffix == curve_suffix else name + suffix)
    return MetricKey(split or "user", rest)


def map_histogram(tag: str) -> MetricKey | None:
    """The per-layer norm a W&B histogram tag stands for (``gradients/fc.weight`` →
    grad_norm of ``fc.weight``), or None for any other histogram."""
    prefix, _, layer = tag.partition("/")
    if prefix in HISTOGRAM_NORMS and layer:
        return MetricKey("train", HISTOGRAM_NORMS[prefix], layer)
    return None


# A named eval set is a split of its own, val_<set> (test_<set>): HF
# Trainer logs eval_<set>_<metric> for each set of an eval_dataset dict,
# Lightning val/<set>/<metric>. A prefix is a set only when the set's loss is
# logged too (HF always logs it), so eval_top5_accuracy stays a metric.
_EVAL_SET_SEPARATORS = ("_", "/")


def _named_eval_sets(tags: set[str]) -> dict[str, tuple[str, str, str]]:
    """Tag → (split word as written, separator, set) for the tags of named eval sets."""
    sets: dict[tuple[str, str], set[str]] = {}
    for tag in tags:
        for separator in _EVAL_SET_SEPARATORS:
            head, found, rest = tag.partition(separator)
            if not (found and SPLIT_WORDS.get(head.lower()) in ("val", "test")):
                continue
            for loss in ("loss", "loss_epoch"):
                suffix = separator + loss
                if rest.lower().endswith(suffix) and len(rest) > len(suffix):
                    sets.setdefault((head, separator), set()).add(rest[: -len(suffix)])
    found_sets: dict[str, tuple[str, str, str]] = {}
    for tag in tags:
        for (head, separator), names in sets.items():
            prefix = head + separator
            # The longest set name that prefixes the tag ("g0_a" before "g0").
            for name in sorted(names, key=len, reverse=True):
                if tag.startswith(prefix + name + separator) and len(tag) > len(prefix + name + separator):
                    found_sets[tag] = (head, separator, name)
                    break
    return found_sets


def _eval_set_key(tag: str, head: str, separator: str, name: str) -> MetricKey:
    """``eval_g0_loss`` → (val_g0, loss): the metric mapped as the main eval split's, the split named for the set."""
    metric = tag[len(head + separator + name + separator):]
    key = map_metric(head + separator + metric)
    return MetricKey(f"{key.split}_{name}", key.name, key.layer)


def map_metrics(tags: Iterable[str]) -> dict[str, MetricKey]:
    """``map_metric`` for many tags at once, keeping the result one-to-one.

    When two tags map to the same key (``loss`` and ``train/loss`` in one
    log), the first in sorted order gets it and the other keeps its own tag
    as a user metric name, so no two series are merged. Tags of a named eval
    set (``eval_<set>_loss``, ``val/<set>/loss``) go to split ``val_<set>``.

    Example:
        >>> map_metrics(["eval_g0_loss", "eval_g0_runtime", "eval_top5_accuracy"])["eval_g0_loss"]
        MetricKey(split='val_g0', name='loss', layer=None)
    """
    mapping: dict[str, MetricKey] = {}
    taken: set[MetricKey] = set()
    unique = set(tags)
    named_sets = _named_eval_sets(unique)
    for tag in sorted(unique):
        key = _eval_set_key(tag, *named_sets[tag]) if tag in named_sets else map_metric(tag)
        if key is not EPOCH and key in taken:
            key = MetricKey(key.split, tag, key.layer)
        if key is EPOCH and EPOCH in taken:
            key = MetricKey("user", tag)
        taken.add(key)
        mapping[tag] = key
    return mapping


def optimizer_from_tags(tags: Iterable[str]) -> str | None:
    """The optimizer class Lightning's LearningRateMonitor named in its tags (``lr-AdamW`` → ``AdamW``)."""
    for tag in sorted(tags):
        match = _LIGHTNING_LR.match(_split_of(tag)[1])
        if match:
            return match.group("optimizer")
    return None
