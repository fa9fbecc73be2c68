"""What the probe's parts share: argument checks, and the guard that turns a failing statistic off.

``probe.core`` (the ``Probe``) and ``probe.evaluation`` (its evaluation
passes) both import this module; neither imports the other's internals.

- Checks raise at the call with a one-line message: a misuse is the user's
  to fix and is never swallowed.
- :class:`StatisticGuard` is the other rule, for errors inside the probe's own
  measuring: the statistic is turned off with one warning and training goes
  on (``strict=True`` raises instead, for tests).
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Callable

import torch


def check_name(value: Any, what: str) -> str:
    """``value`` when it is a non-empty string (a run, split or metric name)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def check_positive_int(value: Any, what: str) -> int:
    """``value`` as an int when it is an integer >= 1 (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def is_number(value: Any) -> bool:
    """True for a real Python or numpy number, False for bools and everything else."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validated_loss(loss: Any, *, where: str) -> torch.Tensor | None:
    """The loss as a tensor, None for a Python number; raises for anything else.

    Args:
        loss: a one-element real tensor or a number.
        where: the call named in the error message (``probe.step``, ``ev.update``).
    """
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"{where}: loss must be a scalar (one element), got a tensor of shape {tuple(loss.shape)}")
        if loss.is_complex():
            raise TypeError(f"{where}: loss must be real, got {loss.dtype}")
        return loss
    if is_number(loss):
        return None
    raise TypeError(f"{where}: loss must be a scalar tensor or a number, got {type(loss).__name__}")


class StatisticGuard:
    """Turns a statistic off after its first error, with one warning.

    Args:
        strict: raise the error instead (tests).

    Attributes:
        disabled: names of the statistics turned off. The probe's step path
            tests membership in this set directly: a method call per check
            would cost more than the check.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = bool(strict)
        self.disabled: set[str] = set()
        self._warned: set[str] = set()

    def fail(self, statistic: str, error: BaseException) -> None:
        """Record that ``statistic`` failed: turn it off and warn once (raise when strict)."""
        if self.strict:
            raise error
        self.disabled.add(statistic)
        if statistic not in self._warned:
            self._warned.add(statistic)
            warnings.warn(
                f"traindoctor probe: recording {statistic!r} failed ({type(error).__name__}: {error}); "
                "it is turned off for the rest of this run, training goes on",
                RuntimeWarning, stacklevel=3,
            )

    def guarded(self, statistic: str, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)``, or None when ``statistic`` is off or the call fails (which turns it off)."""
        if statistic in self.disabled:
            return None
        try:
            return function(*args)
        except Exception as error:
            self.fail(statistic, error)
            return None
