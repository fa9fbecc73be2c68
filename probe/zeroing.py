"""Gradients never zeroed between optimizer steps: the probe's check, run at the first backward after each step.

A loop without ``optimizer.zero_grad()`` (or ``model.zero_grad()``, or
``p.grad = None``) adds every backward into the gradients of all earlier
steps, so each optimizer step applies their sum: the gradient norm climbs
and the loss thrashes as if the lr were too high. The check tells it from
a healthy loop by one parameter's values, not by which call cleared them:

- a *witness* parameter (the smallest of the optimizer's dense floating
  tensors, replaced by the next smallest if it gets no gradient for
  ``WITNESS_MISSES`` steps in a row) gets a tensor hook, which sees the
  gradient a backward brings before autograd adds it into ``.grad``, and a
  post-accumulate-grad hook, which sees ``.grad`` after;
- at the first backward after an optimizer step, ``.grad`` still None means
  it was cleared (``zero_grad()``'s default ``set_to_none=True``,
  ``model.zero_grad()``, ``p.grad = None``): nothing is measured. Otherwise
  two norms go into a device slot: ``||grad - incoming||`` and
  ``||grad||``. Zeroing in place (``zero_grad(set_to_none=False)``,
  ``p.grad.zero_()``, ``p.grad.data.zero_()``) makes them 0 and
  ``||incoming||`` exactly (0 + g = g); a ``.grad`` that kept the earlier
  steps' sum does not;
- later backwards before the next optimizer step are looked at too (up to
  ``MAX_LOOKS``), and one that finds ``.grad`` cleared, or zeroed in place
  (the smallest ratio of the step is kept, on the device), makes the step a
  healthy one: a GAN's generator backward runs through the discriminator
  after the discriminator's step and before its ``zero_grad()``, so the
  discriminator's first backward after its step finds last step's
  gradients, legitimately (PyTorch's DCGAN example). Accumulating over
  micro-batches and zeroing after the step is healthy, as it is: the first
  backward finds the gradients cleared.

No host-device sync: the hooks read only ``.grad is None`` and launch three
small kernels on the witness (only when ``.grad`` was kept between steps);
the two norms reach the host with the flush's copy (8 bytes per measured
step) and are judged there: ``GRADS_NOT_ZEROED_STEPS`` measured steps in a
row whose ratio ``||grad - incoming|| / ||grad||`` exceeds
``GRADS_NOT_ZEROED_RATIO`` make one ``grads_not_zeroed`` event, at the first
of them, and the check then stops. It also stops, its hooks removed, once
``GRADS_ZEROED_STEPS`` steps in a row showed the gradients cleared (at once,
on the host) or zeroed in place (at the flush that brings their norms): a
loop's code does not change as it runs, so a healthy run pays for the check
only over its first steps (``benchmarks/zero_grad_check.py``). Every hook
runs under the probe's guard: an error turns the check off with one warning.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import torch

from traindoctor.probe.guard import StatisticGuard
from traindoctor.probe.statistics import norm32

# The guard's name for this check (what a failure turns off and warns about).
STATISTIC = "zero_grad_check"
# The event the check records (DESIGN.md's events table), read by the exploding_gradients rule.
EVENT = "grads_not_zeroed"
# ||grad - incoming|| / ||grad|| above this at a step's first backward: .grad
# held earlier gradients. Zeroed gradients give exactly 0 (0 + g = g, and a
# gradient set to None is the incoming one or its copy); kept ones give
# ||old|| / ||old + g||, about 0.5-1 in runs without zero_grad (a sum of many
# steps against one more), so any margin far above float rounding works.
GRADS_NOT_ZEROED_RATIO = 1e-3
# Measured steps in a row that must show kept gradients before the event is
# recorded (persistence, RULES.md's lessons): a run without zero_grad shows
# it at every step from its second on.
GRADS_NOT_ZEROED_STEPS = 3
# Steps in a row whose first backward found the gradients cleared (None) or
# zeroed in place before the check stops looking: the loop zeroes them, and
# a loop's code does not change as it runs. Until then it costs a few
# microseconds of Python a step, and three small kernels where .grad is kept.
GRADS_ZEROED_STEPS = 8
# A witness that got no gradient at this many steps in a row, while other
# parameters did (unused in forward(), frozen later), is replaced.
WITNESS_MISSES = 3
# Candidate witnesses kept, smallest first.
MAX_WITNESSES = 8
# Backwards examined between two optimizer steps (each one where .grad was kept
# costs a few small kernels); a zero_grad() comes before the first few.
MAX_LOOKS = 4

# Per-step flags on the host: what the step's first backward showed.
_UNKNOWN, _CLEARED, _MEASURED = 0, 1, 2


def witness_candidates(params: Sequence[torch.Tensor], device: torch.device) -> list[int]:
    """Indices into ``params`` of up to MAX_WITNESSES dense floating tensors on ``device``, smallest first."""
    usable = [index for index, param in enumerate(params)
              if param.requires_grad and param.is_floating_point() and param.layout == torch.strided
              and param.device == device and param.numel() > 0]
    return sorted(usable, key=lambda index: params[index].numel())[:MAX_WITNESSES]


class ZeroGradCheck:
    """The check for one probe (module docstring): hooks on a witness, a device buffer, a judgement at flush.

    Args:
        params: the optimizer's parameters at ``watch()``, in the probe's order.
        names: their ``named_parameters()`` names, same order.
        device: the probe's device (the buffers live there).
        capacity: rows of the per-step buffer (the probe's ``flush_every_steps``).
        guard: the probe's guard; a failure turns ``STATISTIC`` off.

    Attributes:
        measuring: whether the hooks still look at backwards (False once the
            loop was seen to zero its gradients, or the event was recorded,
            or no witness is left).
        done: whether the event was recorded (nothing more is judged).
    """

    def __init__(self, params: Sequence[torch.Tensor], names: Sequence[str], device: torch.device,
                 capacity: int, guard: StatisticGuard) -> None:
        self._guard = guard
        self._candidates = [(params[index], names[index]) for index in witness_candidates(params, device)]
        self._position = -1
        self._handles: list[Any] = []
        # [||grad - incoming||, ||grad||] of the current step, float32 on the device.
        self._slot = torch.full((2,), float("nan"), dtype=torch.float32, device=device)
        self._slot_views = self._slot.unbind(0)
        self._scratch = torch.empty((2,), dtype=torch.float32, device=device)  # a later backward's two norms
        self._scratch_views = self._scratch.unbind(0)
        self._looks = 0  # backwards examined since the last optimizer step
        self._values = torch.full((capacity, 2), float("nan"), dtype=torch.float32, device=device)  # [steps, 2]
        self._rows = self._values.unbind(0)  # views made once: indexing costs microseconds a step
        self._flags = np.zeros(capacity, dtype=np.int8)
        self._difference: torch.Tensor | None = None  # grad - incoming, the witness's shape (out= buffer)
        self._armed = False  # an optimizer step ran since the witness last saw a backward
        self._was_armed = False  # ... as it stood when the current step's backward started
        self._seen = False
        self._cleared = False
        self._measured = False
        self._incoming: torch.Tensor | None = None
        self._measured_by: str | None = None  # the witness of the latest measured step
        self._misses = 0
        self._cleared_in_a_row = 0  # steps whose .grad was None, in a row (known on the host at once)
        self._carried = 0  # measured steps in a row with kept gradients (across flushes)
        self._carried_from: int | None = None
        self._carried_ratios: list[float] = []
        self._zeroed = 0  # judged steps in a row with cleared or zeroed gradients (across flushes)
        self.done = False
        self.measuring = bool(self._candidates)
        if self.measuring:
            self._next_witness()

    @property
    def witness(self) -> str | None:
        """The name of the parameter being watched, None when there is none."""
        return self._candidates[self._position][1] if self.measuring else None

    def _next_witness(self) -> None:
        self._remove_hooks()
        self._position += 1
        self._incoming = None
        self._misses = 0
        if self._position >= len(self._candidates):
            self.stop()
            return
        param = self._candidates[self._position][0]
        self._difference = torch.empty_like(param) if param.dtype != torch.float64 else None
        self._handles = [param.register_hook(self._before_accumulation),
                         param.register_post_accumulate_grad_hook(self._after_accumulation)]

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def stop(self) -> None:
        """Stop looking at backwards (hooks removed); steps already flushed are still judged."""
        self.measuring = False
        self._armed = False
        self._incoming = None
        self._difference = None
        self._remove_hooks()

    def _off(self) -> bool:
        return not self.measuring or STATISTIC in self._guard.disabled

    def arm(self) -> None:
        """After an optimizer step: look at the witness's next backward."""
        if self.measuring:
            self._armed = True
            self._looks = 0

    def _before_accumulation(self, incoming: torch.Tensor) -> None:
        # A tensor hook: returning None leaves the gradient as autograd computed it.
        if self._armed and not self._off():
            self._guard.guarded(STATISTIC, self._look, incoming)

    def _look(self, incoming: torch.Tensor) -> None:
        self._seen = True
        self._looks += 1
        if self._looks >= MAX_LOOKS:
            self._armed = False
        held = self._candidates[self._position][0].grad
        if held is None:
            self._cleared = True
            self._armed = False  # cleared since the optimizer step: this step is a healthy one
        elif not (held.is_sparse or incoming.is_sparse):
            self._incoming = incoming

    def _after_accumulation(self, param: torch.Tensor) -> None:
        if self._incoming is not None and not self._off():
            self._guard.guarded(STATISTIC, self._measure, param)

    def _measure(self, param: torch.Tensor) -> None:
        incoming, self._incoming = self._incoming, None
        grad = param.grad
        later = self._measured  # a later backward of the step: kept only if it shows a smaller ratio
        target = self._scratch if later else self._slot
        difference, (gap, size) = self._difference, (self._scratch_views if later else self._slot_views)
        if difference is not None and difference.shape == grad.shape and difference.dtype == grad.dtype:
            # Three small kernels into buffers made once: no allocation.
            torch.sub(grad, incoming, out=difference)
            torch.linalg.vector_norm(difference, dtype=torch.float32, out=gap)
            torch.linalg.vector_norm(grad, dtype=torch.float32, out=size)
        else:  # float64 (norm32 casts after), or a gradient of another shape than its parameter
            gap.copy_(norm32(grad - incoming))
            size.copy_(norm32(grad))
        if later:  # gap/size < kept gap/size, compared without a division and without a sync
            kept_gap, kept_size = self._slot_views
            smaller = gap * kept_size < kept_gap * size
            self._slot.copy_(torch.where(smaller, target, self._slot))
        self._measured = True

    def close_step(self, row: int, any_fired: bool) -> None:
        """At ``probe.step()``: keep what this step's first backward showed in ``row``; replace a silent witness."""
        if not self.measuring:
            return
        if self._cleared:  # any backward of the step found .grad cleared: healthy, whatever the others showed
            self._flags[row] = _CLEARED
            self._cleared_in_a_row += 1
        elif self._measured:
            self._rows[row].copy_(self._slot)
            self._flags[row] = _MEASURED
            self._measured_by = self._candidates[self._position][1]
            self._cleared_in_a_row = 0
        if self._seen:
            self._misses = 0
        elif self._was_armed and any_fired and not self._off():
            self._misses += 1
            if self._misses >= WITNESS_MISSES:
                self._next_witness()
        self._seen = self._cleared = self._measured = False
        self._was_armed = self._armed
        if self._cleared_in_a_row >= GRADS_ZEROED_STEPS:
            self.stop()  # zero_grad() as by default: seen on the host at once, nothing was measured

    def snapshot(self, rows: int) -> tuple[np.ndarray, torch.Tensor | None]:
        """The flags of the first ``rows`` steps and, when any step was measured, their device values (``[rows, 2]``).

        The caller copies the values to the host, then calls :meth:`reset`
        (the reset is queued after that copy on the same stream).
        """
        flags = self._flags[:rows].copy()
        self._flags[:rows] = _UNKNOWN
        return flags, (self._values[:rows] if (flags == _MEASURED).any() else None)

    def reset(self, rows: int) -> None:
        """Clear the device rows a snapshot handed out (after their copy was queued)."""
        self._values[:rows].fill_(float("nan"))

    def judge(self, steps: np.ndarray, flags: np.ndarray, values: np.ndarray | None) -> tuple[int, str] | None:
        """At a flush, on the host: the event's step and detail (JSON) once kept gradients persist; else None.

        Steps that show the gradients cleared or zeroed, GRADS_ZEROED_STEPS of
        them in a row, stop the measuring (:meth:`stop`).

        Args:
            steps: the optimizer steps of the flushed rows.
            flags: their flags from :meth:`snapshot`.
            values: their ``[rows, 2]`` norms on the host, None when no row was measured.
        """
        if self.done:
            return None
        for index, step in enumerate(steps):
            if flags[index] == _UNKNOWN:
                continue
            difference = norm = float("nan")
            if flags[index] == _MEASURED and values is not None:
                difference, norm = float(values[index, 0]), float(values[index, 1])
            known = np.isfinite(difference) and np.isfinite(norm) and norm > 0
            carried = known and difference > GRADS_NOT_ZEROED_RATIO * norm
            if not carried:
                self._carried, self._carried_from, self._carried_ratios = 0, None, []
                zeroed = flags[index] == _CLEARED or known
                self._zeroed = self._zeroed + 1 if zeroed else self._zeroed
                if self._zeroed >= GRADS_ZEROED_STEPS and self.measuring:
                    self.stop()
                continue
            self._zeroed = 0
            if self._carried == 0:
                self._carried_from = int(step)
            self._carried += 1
            self._carried_ratios.append(difference / norm)
            if self._carried >= GRADS_NOT_ZEROED_STEPS:
                return self._found(int(step))
        return None

    def _found(self, step: int) -> tuple[int, str]:
        name = self._measured_by or self.witness or "?"
        first = self._carried_from if self._carried_from is not None else step
        ratio = float(np.median(self._carried_ratios))
        self.done = True
        self.stop()
        detail = {
            "message": (f"the gradients were not zeroed between optimizer steps: at steps {first}-{step}, "
                        f"{name!r} still held the earlier steps' gradient when the next backward added to it "
                        f"(||grad - new gradient|| / ||grad|| = {ratio:.2f}, 0 when zeroed)"),
            "parameter": name, "first_step": first, "last_step": step, "steps": self._carried, "ratio": ratio,
        }
        return first, json.dumps(detail)

    def remove(self) -> None:
        """Remove the hooks (the probe's close)."""
        self.stop()
