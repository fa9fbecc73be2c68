"""Evaluation passes: loss, accuracy and confusion counts accumulated on the device.

``update`` only launches kernels (no ``.item()``, no ``bincount``, whose
output size depends on the data and so syncs on CUDA); the totals reach the
host with the probe's next flush.

This module does not know the ``Probe``: the probe hands each pass what it
needs (its guard and three callables), so the two modules import only
``probe.guard`` in common and never each other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from traindoctor.probe.guard import StatisticGuard, validated_loss

# Above this many classes (a language model's vocabulary) no confusion matrix
# is kept: 1024² int64 counts are 8 MiB, a 50k vocabulary's would be 20 GB.
MAX_CONFUSION_CLASSES = 1024


@dataclass
class EvaluationResult:
    """Device totals of one evaluation pass, recorded at ``step`` with the next flush."""

    split: str
    step: int
    epoch: float | None
    loss_sum: torch.Tensor | None  # sum of batch-mean losses weighted by batch size
    loss_weight: torch.Tensor | None
    loss_host: float  # Python-number losses, already on the host
    loss_host_weight: float
    correct: torch.Tensor | None
    count: torch.Tensor | None
    confusion: torch.Tensor | None  # [C, C] counts[true, pred]
    out_of_range: torch.Tensor | None = None  # targets >= the class count, left out of the counts
    # Float target rows of the logits' shape that do not sum to 1 (multi-hot: a multi-label problem);
    # any makes the pass's accuracy and confusion counts meaningless, and they are not written.
    multi_label: torch.Tensor | None = None


def _check_tensor(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"ev.update: {what} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _classes_last(logits: torch.Tensor, targets: torch.Tensor,
                  num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's loss layout, logits ``[N, C, d1, ...]``, moved to ``[N, d1, ..., C]``.

    ``cross_entropy`` (and a segmentation model) puts the classes in dim 1,
    with class-index targets ``[N, d1, ...]``; this module reads the last dim.
    Moved when the targets fit only that layout, when dim 1 is a binary
    channel (``[N, 1, H, W]`` with targets of the logits' shape, as for
    ``BCEWithLogitsLoss``; not with ``num_classes`` above 2, where
    ``[N, 1, C]`` is one position's scores), or when dim 1 alone holds ``num_classes``. Both
    layouts fit ``[N, C, L]`` with ``L == C``; then the last dim is kept.
    Views only: no copy, no sync.
    """
    if logits.dim() < 3:
        return logits, targets
    class_dim_first = logits.shape[:1] + logits.shape[2:]
    if targets.shape == logits.shape:  # probabilities, one-hot or binary targets
        binary_channel = logits.shape[1] == 1 != logits.shape[-1] and num_classes in (None, 2)
        move = binary_channel or (num_classes is not None and logits.shape[1] == num_classes != logits.shape[-1])
        return (logits.movedim(1, -1), targets.movedim(1, -1)) if move else (logits, targets)
    if targets.shape == class_dim_first and (targets.shape != logits.shape[:-1] or (
            num_classes is not None and logits.shape[1] == num_classes != logits.shape[-1])):
        return logits.movedim(1, -1), targets
    return logits, targets


class Evaluation:
    """Accumulates one evaluation pass; made by ``probe.evaluate(split)``.

    Args:
        split: the split the pass records under (``val``, ``test``, …).
        num_classes: the task's classes; None takes them from the first logits.
        guard: turns ``evaluation`` off when accumulating fails.
        position: returns (step, epoch) to record the pass at, read when it ends.
        on_first_update: called with ``split`` at the first ``update``
            (the probe checks the model is in eval mode).
        on_finish: receives the pass's result when the block ends without an exception.
        on_narrow_logits: called with ``split`` and a description of the logits (``"logits for 4 classes"``)
            at an ``update`` whose logits have fewer classes than ``num_classes`` (the probe warns once).

    ``update(logits, targets, loss=None)``:

    - ``logits``: ``[N, C]`` (or ``[..., C]``, flattened) class scores, or ``[N]`` /
      ``[N, 1]`` binary logits (class 1 when > 0). PyTorch's loss layout
      ``[N, C, d1, ...]`` (segmentation) is read too (``_classes_last``).
      More classes than ``num_classes`` raise ValueError; fewer get one
      warning (the missing classes can never be predicted: a wrong
      ``num_classes`` or head size) and are recorded as they are.
    - ``targets``: class indices ``[N]`` (negative ones, e.g. -100, are ignored),
      or probabilities/one-hot of the logits' shape (their argmax is used).
      Float rows that do not sum to 1 (multi-hot targets of a multi-label
      problem, ``BCEWithLogitsLoss``) have no one class: a pass with any
      records its loss but no accuracy or confusion counts, with one warning.
      A target at or above the class count (1-based labels, a wrong
      ``num_classes``) is ignored too: counting it would index past the
      confusion buffer, which on a GPU is a device-side assert that ends the
      training process. Checking for it costs a host-device sync, so only
      CPU tensors are checked, with one warning.
    - Confusion counts are kept for up to ``MAX_CONFUSION_CLASSES`` classes;
      above that only loss and accuracy.
    - ``loss``: the batch's *mean* loss (tensor or number); weighted by the
      number of counted targets, so the recorded loss is the per-example mean.
    """

    def __init__(
        self,
        split: str,
        *,
        num_classes: int | None,
        guard: StatisticGuard,
        position: Callable[[], tuple[int, float | None]],
        on_first_update: Callable[[str], None],
        on_finish: Callable[[EvaluationResult], None],
        on_narrow_logits: Callable[[str, str], None] | None = None,
    ) -> None:
        self.split = split
        self._num_classes = num_classes
        self._guard = guard
        self._position = position
        self._on_first_update = on_first_update
        self._on_finish = on_finish
        self._confusion: torch.Tensor | None = None
        self._correct: torch.Tensor | None = None
        self._count: torch.Tensor | None = None
        self._loss_sum: torch.Tensor | None = None
        self._loss_weight: torch.Tensor | None = None
        self._loss_host = 0.0
        self._loss_host_weight = 0.0
        self._checked_mode = False
        self._out_of_range: torch.Tensor | None = None
        self._multi_label: torch.Tensor | None = None
        self._on_narrow_logits = on_narrow_logits
        self._active = False

    def __enter__(self) -> "Evaluation":
        self._active = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._active = False
        if exc_type is None:
            self._on_finish(self.result())

    def result(self) -> EvaluationResult:
        """The pass's device totals so far, at the probe's current step and epoch."""
        step, epoch = self._position()
        return EvaluationResult(
            split=self.split, step=step, epoch=epoch,
            loss_sum=self._loss_sum, loss_weight=self._loss_weight,
            loss_host=self._loss_host, loss_host_weight=self._loss_host_weight,
            correct=self._correct, count=self._count, confusion=self._confusion, out_of_range=self._out_of_range,
            multi_label=self._multi_label,
        )

    def update(self, logits: torch.Tensor | None = None, targets: torch.Tensor | None = None, *, loss: Any = None) -> None:
        """Add one batch (see the class docstring)."""
        if not self._active:
            raise RuntimeError("ev.update() called outside its `with probe.evaluate(...)` block")
        if (logits is None) != (targets is None):
            raise ValueError("ev.update: give logits and targets together (or neither, with loss=)")
        if logits is None and loss is None:
            raise ValueError("ev.update: nothing to record (give logits and targets, or loss=)")
        weight = None
        if logits is not None:
            _check_tensor(logits, "logits")
            _check_tensor(targets, "targets")
            prepared = self._prepare(logits, targets)
            classes = prepared[2]
            if (self._on_narrow_logits is not None and self._num_classes is not None
                    and classes < self._num_classes):
                binary = logits.dim() == 1 or logits.shape[-1] == 1 or (logits.dim() > 2 and logits.shape[1] == 1)
                self._on_narrow_logits(self.split, "binary logits (2 classes)" if binary and classes == 2
                                       else f"logits for {classes} classes")
            weight = self._guard.guarded("evaluation", self._update_counts, *prepared)
        if loss is not None:
            loss_tensor = validated_loss(loss, where="ev.update")
            self._guard.guarded("evaluation", self._update_loss, loss_tensor, loss, weight)
        if not self._checked_mode:
            self._checked_mode = True
            self._on_first_update(self.split)

    @torch.no_grad()
    def _prepare(self, logits: torch.Tensor, targets: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
        """(predictions, class-index targets, classes, the count of float target rows that do not sum to 1
        or None); raises on shapes that do not match."""
        logits, targets = _classes_last(logits.detach(), targets.detach(), self._num_classes)
        binary = logits.dim() == 1 or logits.shape[-1] == 1
        spread = None
        if binary:
            logits = logits.reshape(-1)
            predictions = (logits > 0).long()
            classes = 2
            if targets.is_floating_point():
                targets = (targets.reshape(-1) > 0.5).long()
            targets = targets.reshape(-1)
        else:
            classes = logits.shape[-1]
            logits = logits.reshape(-1, classes)
            predictions = logits.argmax(dim=-1)
            if targets.is_floating_point() and targets.dim() > 1 and targets.shape[-1] == classes:
                rows = targets.reshape(-1, classes)
                # On the device, read with the flush: a distribution (one-hot, smoothed, mixed) sums to 1.
                spread = ((rows.sum(dim=-1, dtype=torch.float32) - 1).abs() > 1e-2).sum()
                targets = rows.argmax(dim=-1)
            elif targets.is_floating_point():
                # .long() would truncate them (torch.rand(5) -> all class 0) and count nonsense.
                raise ValueError(
                    f"ev.update: float targets of shape {tuple(targets.shape)} for {classes}-class logits: give class "
                    f"indices as an integer tensor (targets.long()) or one row of {classes} probabilities per example")
            targets = targets.reshape(-1).long()
        if targets.shape[0] != predictions.shape[0]:
            raise ValueError(f"ev.update: {predictions.shape[0]} predictions but {targets.shape[0]} targets")
        if self._num_classes is not None and classes > self._num_classes:
            raise ValueError(f"ev.update: logits have {classes} classes but num_classes={self._num_classes}")
        return predictions, targets, classes, spread

    @torch.no_grad()
    def _update_counts(self, predictions: torch.Tensor, targets: torch.Tensor, classes: int,
                       spread: torch.Tensor | None = None) -> torch.Tensor:
        if self._correct is None:
            if self._num_classes is None:
                self._num_classes = classes
            size = self._num_classes
            device = predictions.device
            self._correct = torch.zeros((), dtype=torch.int64, device=device)
            self._count = torch.zeros((), dtype=torch.int64, device=device)
            self._out_of_range = torch.zeros((), dtype=torch.int64, device=device)
            if size <= MAX_CONFUSION_CLASSES:
                # One spare cell at the end collects ignored targets, so no mask-dependent shapes.
                self._confusion = torch.zeros(size * size + 1, dtype=torch.int64, device=device)
        if spread is not None:
            if self._multi_label is None:
                self._multi_label = torch.zeros((), dtype=torch.int64, device=predictions.device)
            self._multi_label.add_(spread.to(predictions.device))
        size = self._num_classes
        targets = targets.to(predictions.device)
        valid = (targets >= 0) & (targets < size)
        # Counted on the device (no read here); the probe warns when the count lands with the flush.
        self._out_of_range.add_((targets >= size).sum())
        if self._confusion is not None:
            cells = torch.where(valid, targets * size + predictions, size * size)
            self._confusion.index_add_(0, cells, torch.ones_like(cells))
        self._correct.add_(((predictions == targets) & valid).sum())
        counted = valid.sum()
        self._count.add_(counted)
        return counted

    @torch.no_grad()
    def _update_loss(self, loss_tensor: torch.Tensor | None, loss: Any, weight: torch.Tensor | None) -> None:
        if loss_tensor is None and weight is None:  # a number, no targets: stays on the host
            self._loss_host += float(loss)
            self._loss_host_weight += 1.0
            return
        if loss_tensor is None:
            # torch.full is a fill kernel; torch.tensor(number, device=gpu) would copy from pageable memory (a sync).
            value = torch.full((), float(loss), dtype=torch.float64, device=weight.device)
        else:
            value = loss_tensor.detach().reshape(()).to(torch.float64)
        if weight is None:
            weight = torch.ones((), dtype=torch.float64, device=value.device)
        weight = weight.to(value.device, torch.float64)
        if self._loss_sum is None:
            self._loss_sum = torch.zeros((), dtype=torch.float64, device=value.device)
            self._loss_weight = torch.zeros((), dtype=torch.float64, device=value.device)
        self._loss_sum.add_(value * weight)
        self._loss_weight.add_(weight)
