"""Attach the probe to a Hugging Face ``Trainer`` with one callback.

    trainer = Trainer(model, args, ..., callbacks=[ProbeCallback(run="bert-sst2", store="traindoctor_runs", num_classes=2)])

Recorded: everything ``Probe`` records, with ``step`` = ``state.global_step``.
The run's config is the TrainingArguments changed from their defaults plus a
few always kept (:func:`training_hyperparameters`), not all ~110 of them.
The training loss is the one the model's forward returns (``outputs.loss``),
captured by a forward hook and averaged over the accumulated micro-batches.
Causal language models given ``num_items_in_batch`` (the Trainer passes it
under gradient accumulation) return each micro-batch's *share* of the step's
loss, so their losses are summed instead; ``loss_reduction="mean"|"sum"``
overrides this guess (``"auto"``). Evaluation metrics
(``eval_loss``, ``eval_accuracy``, …) are recorded with split ``val`` under
their names without the ``eval_`` prefix; a name the store cannot hold
(control characters, lone surrogates) is skipped with one warning naming it.

The loss-capturing forward hook and every callback that runs during training
do their work under the probe's guard: an error turns that statistic off with
one warning, and training goes on.

With ``stop_on="critical"`` (or ``"warning"``), a live finding at or above it
sets ``control.should_training_stop``: the Trainer stops after the current
step, and a ``training_stopped`` event names the finding.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping

try:
    from transformers import TrainerCallback
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "probe.integrations.transformers needs transformers: pip install 'traindoctor[transformers]'"
    ) from error

import torch

from traindoctor.probe.core import Probe
from traindoctor.probe.guard import check_name

# TrainingArguments kept in the run's config even at their defaults: what a
# reader compares runs by (the rest, ~110 fields, only when changed).
ALWAYS_KEPT = ("learning_rate", "per_device_train_batch_size", "num_train_epochs", "max_steps", "lr_scheduler_type",
               "warmup_ratio", "warmup_steps", "weight_decay", "seed", "gradient_accumulation_steps")
# Where the run's files go and who it reports to: not hyperparameters, and
# different for every run (they would fill the Runs page's columns).
_NOT_HYPERPARAMETERS = ("output_dir", "logging_dir", "run_name", "overwrite_output_dir", "resume_from_checkpoint",
                        "report_to", "hub_token", "hub_model_id", "hub_strategy", "hub_private_repo",
                        "push_to_hub_token", "push_to_hub_model_id", "push_to_hub_organization")
# Trainer bookkeeping in the metrics dict, not model quality.
_NOT_METRICS = {"runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time"}
# Heads whose Hugging Face loss divides a token sum by num_items_in_batch.
_SHARE_LOSS_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def training_hyperparameters(args: Any) -> dict[str, Any]:
    """The TrainingArguments worth keeping as a run's config: those set to
    something other than their declared default, plus :data:`ALWAYS_KEPT`.

    Defaults are the dataclass fields' own (an enum as its value, as
    ``to_dict()`` writes it). No second TrainingArguments is made to compare
    with: its ``__post_init__`` resets accelerate's state under a running
    Trainer. A field declared None that ``__post_init__`` resolved to False
    (``disable_tqdm``, ``gradient_checkpointing``) counts as unchanged. Only
    numbers, text, booleans and None are kept; paths, run names and Hub
    settings never are.

    Example:
        >>> training_hyperparameters(TrainingArguments("out", learning_rate=3e-5))  # doctest: +SKIP
        {'learning_rate': 3e-05, 'per_device_train_batch_size': 8, 'num_train_epochs': 3.0, 'max_steps': -1, ...}
    """
    defaults: dict[str, Any] = {}
    for field in dataclasses.fields(args):
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            continue
        defaults[field.name] = getattr(default, "value", default)

    def changed(key: str, value: Any) -> bool:
        if key not in defaults:
            return True
        default = defaults[key]
        return value != default and not (default is None and value is False)

    return {key: value for key, value in args.to_dict().items()
            if (isinstance(value, (int, float, str, bool)) or value is None) and key not in _NOT_HYPERPARAMETERS
            and (key in ALWAYS_KEPT or changed(key, value))}


class ProbeCallback(TrainerCallback):
    """Records a Hugging Face Trainer run into a traindoctor store.

    Args:
        run: the run's name; defaults to ``args.run_name`` or the model class.
        store: the store folder or URL (default ``$TRAINDOCTOR_STORE``, else ``./traindoctor_runs``).
        probe: an existing ``Probe`` to use instead of creating one.
        loss_reduction: how micro-batch losses combine into the step's loss:
            ``"mean"``, ``"sum"`` or ``"auto"`` (see the module docstring).
        **probe_kwargs: passed to ``Probe`` (``num_classes``, ``layer_every``, ``stop_on``,
            ``on_finding``, …; not ``raise_on_stop``: the callback stops the Trainer itself).
    """

    def __init__(self, run: str | None = None, store: Any = None, *, probe: Probe | None = None,
                 loss_reduction: str = "auto", **probe_kwargs: Any) -> None:
        if loss_reduction not in ("auto", "mean", "sum"):
            raise ValueError(f"loss_reduction must be 'auto', 'mean' or 'sum', got {loss_reduction!r}")
        if probe_kwargs.get("raise_on_stop"):
            raise ValueError("ProbeCallback stops the Trainer itself (control.should_training_stop): "
                             "leave raise_on_stop out")
        self.loss_reduction = loss_reduction
        self.run = run
        self.store = store
        self.probe = probe
        self.probe_kwargs = probe_kwargs
        self._owns_probe = probe is None
        self._losses: list[torch.Tensor] = []
        self._summed = False
        self._hook: Any = None
        self._skipped_names: set[str] = set()

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, **kwargs: Any) -> None:
        if model is None or optimizer is None:
            raise ValueError("ProbeCallback: the Trainer passed no model or optimizer to on_train_begin")
        module = getattr(model, "module", model)
        if self.probe is None:
            config = self.probe_kwargs.pop("config", None)
            if config is None:
                config = training_hyperparameters(args)
            run = self.run or (args.run_name if args.run_name and args.run_name != args.output_dir else None)
            self.probe = Probe(run=run or type(module).__name__, store=self.store, config=config, **self.probe_kwargs)
        # accelerate's AcceleratedOptimizer holds the GradScaler under fp16.
        self.probe.watch(module, optimizer, scaler=getattr(optimizer, "scaler", None))
        self._hook = module.register_forward_hook(self._capture_loss, with_kwargs=True)

    def _capture_loss(self, module: torch.nn.Module, args: Any, kwargs: Mapping[str, Any], output: Any) -> None:
        # A forward hook in the user's model: its errors must not reach the forward.
        if module.training and self.probe is not None and not self.probe.closed:
            self.probe.guard.guarded("loss", self._keep_loss, module, kwargs, output)

    def _keep_loss(self, module: torch.nn.Module, kwargs: Mapping[str, Any], output: Any) -> None:
        loss = None
        if isinstance(output, Mapping):
            loss = output.get("loss")
        elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor) and output[0].dim() == 0:
            loss = output[0]
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._losses.append(loss.detach().reshape(()).float())
            if self.loss_reduction == "auto":
                self._summed = (kwargs.get("num_items_in_batch") is not None
                                and type(module).__name__.endswith(_SHARE_LOSS_SUFFIXES))
            else:
                self._summed = self.loss_reduction == "sum"

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.probe is None or self.probe.closed:
            return
        loss = self.probe.guard.guarded("loss", self._step_loss)
        self._losses = []
        self.probe.guard.guarded("step", lambda: self.probe.step(loss=loss, epoch=state.epoch))
        if self.probe.should_stop and not control.should_training_stop:
            control.should_training_stop = True  # the Trainer stops after this step
            self.probe.guard.guarded("events", self.probe.record_stop, "transformers")

    def _step_loss(self) -> torch.Tensor | None:
        if not self._losses:
            return None
        stacked = torch.stack(self._losses)
        return stacked.sum() if self._summed else stacked.mean()

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if self.probe is None or self.probe.closed or not metrics:
            return
        values = {}
        for key, value in metrics.items():
            name = key[len("eval_"):] if isinstance(key, str) and key.startswith("eval_") else key
            if name not in _NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool):
                if self._storable(name):
                    values[name] = value
        if values:
            self.probe.guard.guarded("metrics", lambda: self.probe.log(values, split="val"))

    def _storable(self, name: Any) -> bool:
        """True for a name the store can hold; warns once per name it skips (probe.log would raise)."""
        try:
            check_name(name, "a metric name")
        except ValueError as error:
            if repr(name) not in self._skipped_names:
                self._skipped_names.add(repr(name))
                warnings.warn(f"traindoctor probe: evaluation metric {name!r} is not recorded: {error}",
                              RuntimeWarning, stacklevel=3)
            return False
        return True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.probe is not None and self._owns_probe:
            self.probe.close()
