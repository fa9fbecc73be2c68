"""Attach the probe to a Lightning ``Trainer`` with one callback.

    trainer = lightning.Trainer(callbacks=[ProbeCallback(run="resnet", store="traindoctor_runs", num_classes=10)])

Recorded: everything ``Probe`` records, with ``step`` = Lightning's
``global_step`` (optimizer steps) and the training loss averaged over the
accumulated micro-batches. For validation loss, accuracy and confusion
counts, let ``validation_step`` return ``{"loss": loss, "logits": logits,
"targets": y}`` (returning just the loss records the loss only).

Every callback that runs during fitting does its work under the probe's
guard: an error (an output it cannot read, targets that do not match the
logits) turns that statistic off with one warning, and the fit goes on.

With ``stop_on="critical"`` (or ``"warning"``), a live finding at or above it
sets ``trainer.should_stop``: the fit ends after the current step, the run
is recorded as ``finished``, and a ``training_stopped`` event names the
finding.
"""

from __future__ import annotations

import traceback
from typing import Any, Mapping

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - depends on the environment
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError:
        raise ImportError(
            "probe.integrations.lightning needs Lightning: pip install 'traindoctor[lightning]'"
        ) from error

import torch

from traindoctor.probe.core import Probe
from traindoctor.probe.evaluation import Evaluation


class ProbeCallback(pl.Callback):
    """Records a Lightning run into a traindoctor store.

    Args:
        run: the run's name; defaults to the LightningModule's class name.
        store: the store folder or URL (default ``$TRAINDOCTOR_STORE``, else ``./traindoctor_runs``).
        probe: an existing ``Probe`` to use instead of creating one.
        **probe_kwargs: passed to ``Probe`` (``config``, ``num_classes``, ``layer_every``,
            ``stop_on``, ``on_finding``, …; not ``raise_on_stop``: the callback stops the trainer itself).
    """

    def __init__(self, run: str | None = None, store: Any = None, *, probe: Probe | None = None, **probe_kwargs: Any) -> None:
        if probe_kwargs.get("raise_on_stop"):
            raise ValueError("ProbeCallback stops the trainer itself (trainer.should_stop): leave raise_on_stop out")
        super().__init__()
        self.run = run
        self.store = store
        self.probe = probe
        self.probe_kwargs = probe_kwargs
        self._owns_probe = probe is None
        self._last_global_step = 0
        self._losses: list[Any] = []
        self._evaluation: Evaluation | None = None

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.probe is None:
            config = self.probe_kwargs.pop("config", None)
            if config is None and getattr(pl_module, "hparams", None):
                config = dict(pl_module.hparams)
            self.probe = Probe(run=self.run or type(pl_module).__name__, store=self.store, config=config,
                               **self.probe_kwargs)
        if not trainer.optimizers:
            raise ValueError("ProbeCallback: the LightningModule configured no optimizer")
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.probe.watch(pl_module, trainer.optimizers[0], scaler=scaler)
        self._last_global_step = trainer.global_step

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.probe is None or self.probe.closed:
            return
        guard = self.probe.guard
        guard.guarded("loss", self._collect_loss, outputs)
        if trainer.global_step != self._last_global_step:
            self._last_global_step = trainer.global_step
            step_loss = guard.guarded("loss", self._step_loss, getattr(trainer, "accumulate_grad_batches", 1))
            self._losses = []
            guard.guarded("step", lambda: self.probe.step(loss=step_loss, epoch=trainer.current_epoch))
            if self.probe.should_stop and not trainer.should_stop:
                trainer.should_stop = True  # the fit loop ends after this step
                guard.guarded("events", self.probe.record_stop, "lightning")

    def _collect_loss(self, outputs: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            # Lightning has divided it by accumulate_grad_batches (undone in _step_loss).
            self._losses.append(loss.detach())

    def _step_loss(self, accumulate_grad_batches: int) -> torch.Tensor | None:
        """The mean loss of the step's micro-batches.

        Lightning divides every micro-batch loss by ``accumulate_grad_batches``,
        also in an epoch's last, shorter group, so the sum of the collected
        losses is the mean only for a full group; scaled by
        ``accumulate_grad_batches / collected`` it is the mean for any group.
        """
        if not self._losses:
            return None
        return torch.stack(self._losses).sum() * (accumulate_grad_batches / len(self._losses))

    def on_validation_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.sanity_checking or self.probe is None or self.probe.closed:
            return
        self._evaluation = self.probe.guard.guarded("evaluation", lambda: self.probe.evaluate("val").__enter__())

    def on_validation_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._evaluation is None:
            return
        self.probe.guard.guarded("evaluation", self._update_evaluation, outputs, batch)

    def _update_evaluation(self, outputs: Any, batch: Any) -> None:
        if isinstance(outputs, Mapping):
            logits, targets, loss = outputs.get("logits"), outputs.get("targets"), outputs.get("loss")
            if logits is not None and targets is None and isinstance(batch, (tuple, list)) and len(batch) > 1:
                targets = batch[1]
            if logits is None or targets is None:
                logits = targets = None
            if logits is not None:
                try:
                    self._evaluation.update(logits, targets, loss=loss)
                    return
                except ValueError as error:  # not class scores and labels (a regression's outputs, say)
                    self.probe._warn_once("lightning_eval_logits", f"traindoctor probe: validation outputs' logits and "
                                          f"targets not recorded ({error}); the validation loss still is")
            if loss is not None:
                self._evaluation.update(loss=loss)
        elif isinstance(outputs, torch.Tensor):
            self._evaluation.update(loss=outputs)

    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._evaluation is not None:
            evaluation, self._evaluation = self._evaluation, None
            self.probe.guard.guarded("evaluation", evaluation.__exit__, None, None, None)

    def on_fit_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.probe is not None and self._owns_probe:
            self.probe.close()

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        if self.probe is not None and self._owns_probe:
            detail = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
            self.probe.close("crashed", detail=detail)
