"""Import an HF ``Trainer`` run from its ``trainer_state.json``.

``log_history`` holds one entry per logging or evaluation call: training
entries (``loss``, ``grad_norm``, ``learning_rate``, ``epoch``, ``step``),
evaluation entries (``eval_loss``, ``eval_accuracy``, ``eval_*``) and, at the
end, a summary (``train_runtime``, ``train_loss`` = mean over the run, …).
HF's ``step`` is ``state.global_step``, already the 1-based count of
optimizer steps the store uses. Summary values go to split ``user`` so the
run's mean loss is never mistaken for a point of the loss curve.

Training arguments: ``training_args.bin`` is a pickle and is never read
(unpickling runs arbitrary code). A ``training_args.json`` next to the state
or in the output folder (``TrainingArguments.to_json_string()``) is read into
``config``, along with the state's own fields (batch size, epochs, max steps,
logging/eval/save cadence). The model's ``config.json``, when present, gives
the model type, its depth, and the task: a language model's vocabulary, a
classifier's classes (:mod:`traindoctor.store.importers.task`).

Steps, values and repeated steps follow the import rules of
:mod:`traindoctor.store.importers.common`: a step must be a whole number
(``NaN``, ``1e30`` or ``2.5`` stop the import), a value given as text must
read as a number, and entries that are not numbers at all (lists, objects,
true/false) are left out and counted. Every file read, side files included,
must be what it claims: an ``id2label`` whose keys are not the class indices
``0..n-1`` or a layer count that is not a whole number stops the import.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from traindoctor.store.errors import StoreError
from traindoctor.store.importers.common import (
    ImportInputError, ParsedRun, Progress, RunSource, load_json, number_of, path_text, quoted, series_from_columns,
    whole_step,
)
from traindoctor.store.importers.names import MetricKey
from traindoctor.store.importers.task import task_from_model_config

STATE_FILE = "trainer_state.json"
ARGS_FILE = "training_args.json"
PICKLED_ARGS_FILE = "training_args.bin"
MODEL_CONFIG_FILE = "config.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# trainer_state.json fields that describe the run's set-up, kept in config.
_STATE_CONFIG_FIELDS = (
    "train_batch_size", "num_train_epochs", "max_steps", "logging_steps", "eval_steps", "save_steps",
    "best_metric", "best_model_checkpoint", "best_global_step", "trial_name", "trial_params",
)
_SUMMARY_MARK = "train_runtime"
_OPTIMIZER_NAMES = {"adamw_torch": "AdamW", "adamw_torch_fused": "AdamW", "adamw_hf": "AdamW", "adamw": "AdamW",
                    "adafactor": "Adafactor", "sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop"}


def _newest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint-<step> folder with the highest step that holds a trainer state."""
    checkpoints = []
    for child in folder.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and (child / STATE_FILE).is_file():
            checkpoints.append((int(match.group(1)), child))
    return max(checkpoints)[1] if checkpoints else None


def _output_dir(state_folder: Path) -> Path:
    """The Trainer's output folder: the state's own folder, or its parent for a checkpoint."""
    state_folder = state_folder.resolve()
    return state_folder.parent if _CHECKPOINT.match(state_folder.name) else state_folder


def discover(path: Path, run_name: str | None) -> list[RunSource]:
    """A trainer_state.json, a checkpoint folder, or an output folder (its own state or newest checkpoint)."""
    if path.is_file():
        state = path
    elif (path / STATE_FILE).is_file():
        state = path / STATE_FILE
    else:
        checkpoint = _newest_checkpoint(path)
        if checkpoint is None:
            raise StoreError(f"no {STATE_FILE} in {path} or its checkpoint-* folders")
        state = checkpoint / STATE_FILE
    output_dir = _output_dir(state.parent)
    files = [state]
    for name in (ARGS_FILE, MODEL_CONFIG_FILE):
        for folder in dict.fromkeys([state.parent.resolve(), output_dir]):
            if (folder / name).is_file():
                files.append(folder / name)
                break
    # The source is the training run (its output folder), so importing a newer
    # checkpoint of the same run replaces the earlier import instead of adding one.
    return [RunSource(name=run_name or output_dir.name, path=output_dir, files=files)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _columns(state_path: Path, history: list) -> tuple[dict, np.ndarray, np.ndarray, list[str]]:
    """Metric → (steps, values, None), the epoch column, and the entries left out as not numbers."""
    columns: dict[Any, tuple[list, list, None]] = {}
    epoch_steps, epoch_values, left_out = [], [], []
    for position, entry in enumerate(history):
        if not isinstance(entry, dict) or not _is_number(entry.get("step")):
            raise StoreError(f"{state_path} is not a trainer_state.json (log_history entry {position} has no step)")
        where = f"{state_path} (log_history entry {position})"
        step = whole_step(entry["step"], where)
        epoch = number_of(entry.get("epoch"), where)
        if epoch is not None:
            epoch_steps.append(step)
            epoch_values.append(epoch)
        summary = _SUMMARY_MARK in entry
        for key, value in entry.items():
            if key in ("step", "epoch") or value is None:  # null: nothing logged
                continue
            number = number_of(value, f"{where}, {quoted(key)}")
            if number is None:
                left_out.append(f"{quoted(key)} at step {step}")
                continue
            # The end-of-training summary (runtime, mean train loss) is not a curve point.
            column = MetricKey("user", key) if summary else key
            steps, values, _ = columns.setdefault(column, ([], [], None))
            steps.append(step)
            values.append(number)
    return columns, np.array(epoch_steps, dtype=np.int64), np.array(epoch_values, dtype=np.float64), left_out


def _layer_count(model_config: dict[str, Any], path: Any) -> int | None:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = model_config.get(key)
        if _is_number(value):
            if isinstance(value, float) and not value.is_integer() or not 0 <= value < 2**31:
                raise ImportInputError(f"{path}: {key} {quoted(value)} is not a layer count")
            return int(value)
    return None


def _classes(labels: dict[Any, Any], path: Any) -> dict[str, Any]:
    """task.num_classes and class_names from id2label, whose keys must be "0" … "n-1".

    Whole-number keys count as their text (an id2label logged as an MLflow
    param and read back as a Python literal has ``int`` keys).
    """
    as_text = {str(key) if isinstance(key, int) and not isinstance(key, bool) else key: name
               for key, name in labels.items()}
    if len(as_text) != len(labels):
        raise ImportInputError(f"{path}: id2label holds a class index twice (as a number and as text)")
    labels = as_text
    indices = [str(index) for index in range(len(labels))]
    if set(labels) != set(indices):
        odd = next(key for key in labels if key not in indices)
        raise ImportInputError(f"{path}: id2label key {quoted(odd)} is not a class index 0..{len(labels) - 1}")
    return {"num_classes": len(labels), "class_names": [str(labels[index]) for index in indices]}


def model_meta(model_config: dict[str, Any], path: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """env.model and task from a model's config.json (or a config that holds one: W&B's, MLflow's params).

    env.model holds ``type`` (the first architecture), ``num_layers``,
    ``has_attention`` and, when config.json names one, ``name_or_path``: the
    checkpoint (hub id or folder) the model was loaded from.

    The task's kind comes from the head (:func:`traindoctor.store.importers.task.task_from_model_config`):
    a ``*ForCausalLM`` gives ``language_modelling`` with ``vocab_size``, a
    ``*ForSequenceClassification`` with ``id2label`` gives ``classification``
    with its classes, ``problem_type: regression`` gives ``regression``.

    ``path`` names the input in an ``ImportInputError`` for a config the store
    cannot take (an ``id2label`` whose keys are not ``0..n-1``, a layer count
    that is not a whole number).
    """
    architectures = model_config.get("architectures") or []
    if not isinstance(architectures, list):
        raise ImportInputError(f"{path}: architectures is not a list")
    model: dict[str, Any] = {"type": architectures[0] if architectures else model_config.get("model_type")}
    layers = _layer_count(model_config, path)
    if layers is not None:
        model["num_layers"] = layers
    model["has_attention"] = any(k in model_config for k in ("num_attention_heads", "n_head", "num_heads"))
    # transformers writes the hub id or folder that from_pretrained() loaded as
    # ``_name_or_path`` ("" for a model built from a config object): a named
    # checkpoint means pre-trained weights, unless only its config was loaded.
    origin = model_config.get("_name_or_path")
    if isinstance(origin, str) and origin.strip():
        model["name_or_path"] = origin.strip()
    classes: dict[str, Any] = {}
    labels = model_config.get("id2label")
    if isinstance(labels, dict) and any(str(a).endswith(("ForSequenceClassification", "ForImageClassification"))
                                        for a in architectures):
        classes = _classes(labels, path)
    return model, task_from_model_config(model_config, classes)


def optimizer_meta(args: dict[str, Any]) -> dict[str, Any] | None:
    if "learning_rate" not in args:
        return None
    optim = str(args.get("optim", "adamw_torch")).lower()
    group = {"lr": args.get("learning_rate"), "weight_decay": args.get("weight_decay")}
    if "adam" in optim:
        group["betas"] = [args.get("adam_beta1"), args.get("adam_beta2")]
        group["eps"] = args.get("adam_epsilon")
    return {"type": _OPTIMIZER_NAMES.get(optim, optim), "param_groups": [group]}


def parse(source: RunSource, progress: Progress) -> ParsedRun:
    state_path = source.files[0]
    state = load_json(state_path, "a trainer_state.json")
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise StoreError(f"{state_path} is not a trainer_state.json (no log_history)")
    columns, epoch_steps, epoch_values, left_out = _columns(state_path, state["log_history"])

    config = {k: state[k] for k in _STATE_CONFIG_FIELDS if state.get(k) is not None}
    env: dict[str, Any] = {"logger": "transformers.Trainer"}
    task: dict[str, Any] = {}
    notes = []
    if any((folder / PICKLED_ARGS_FILE).is_file() for folder in (state_path.parent, source.path)):
        notes.append(f"{PICKLED_ARGS_FILE} not read: it is a pickle")
    for file in source.files[1:]:
        # A side file is input like the state: one that is not what it claims
        # stops the import, and the message says how to import without it.
        try:
            loaded = load_json(file, f"a {file.name}")
            if not isinstance(loaded, dict):
                raise ImportInputError(f"{file} is not a {file.name} (not a JSON object)")
            if file.name == ARGS_FILE:
                config.update(loaded)
                optimizer = optimizer_meta(loaded)
                if optimizer:
                    env["optimizer"] = optimizer
                notes.append(f"training arguments from {file.name}")
            elif file.name == MODEL_CONFIG_FILE:
                env["model"], task = model_meta(loaded, file)
        except ImportInputError as error:
            raise ImportInputError(f"{error}; move {file.name} aside to import without it") from None
    progress.update(sum(f.stat().st_size for f in source.files))
    series = series_from_columns(columns, epoch_steps=epoch_steps if len(epoch_steps) else None, epoch_values=epoch_values)
    return ParsedRun(
        source=source, series=series, config=config, env=env, task=task, left_out=left_out,
        extra_source={"state_file": path_text(state_path.resolve()), "notes": notes},
    )
