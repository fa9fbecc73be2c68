"""A per-run memo: what several rules derive from a run is computed once per :func:`diagnose` call.

Many rules start from the same intermediate results: the training loss,
its divergence onset, its spikes, its binned profile, the evaluation
losses, the last confusion matrix, per-layer frames. Each is a pure function
of the run, marked :func:`per_run`. Called on a plain
:class:`~traindoctor.store.run_data.RunData` it simply computes (a rule
called on its own still works); called on the :class:`MemoisedRun` that
``diagnose()`` hands to every rule, it computes once and the other rules
reuse the result. The memo lives as long as that one ``diagnose()`` call:
nothing is kept between calls, and nothing is stored on the caller's run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Any, Callable, TypeVar

from traindoctor.store.run_data import RunData

Result = TypeVar("Result")


@dataclass(eq=False)
class MemoisedRun(RunData):
    """A copy of a run's fields (the frames shared, not copied) with a memo of its intermediate results.

    Attributes:
        memo: (per-run function, its arguments) → result, filled by
            :func:`per_run` functions on first use.
    """

    memo: dict[tuple[Callable[..., Any], tuple[Any, ...]], Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, run: RunData) -> "MemoisedRun":
        """A fresh memo for ``run``: same data, nothing computed yet.

        Example:
            >>> run = RunData(run_id="r", name="r")
            >>> MemoisedRun.of(run).scalars is run.scalars
            True
        """
        return cls(**{item.name: getattr(run, item.name) for item in fields(RunData)})

    def seed(self, function: Callable[..., Any], args: tuple[Any, ...], result: Any) -> None:
        """Hand a :func:`per_run` function a result computed elsewhere, as if it had computed it.

        For a caller that holds an intermediate result already in the shape
        the function would build (the live history window holds the loss and
        the per-layer statistics as arrays): the rules skip building them from the long rows.
        ``result`` must equal ``function(self, *args)`` (a test compares them).

        Raises:
            TypeError: ``function`` is not marked :func:`per_run`.
        """
        if not is_per_run(function):
            raise TypeError(f"{getattr(function, '__name__', function)!r} is not a per_run function")
        self.memo[(function, tuple(args))] = result


def per_run(function: Callable[..., Result]) -> Callable[..., Result]:
    """Mark ``function(run, *args)`` as a shared intermediate result, computed once per memoised run.

    The result is handed to every rule that asks for it: callers treat it
    as read-only (copy before changing an array or frame in place). The
    arguments after ``run`` must be hashable and passed positionally.

    The computation is looked up on ``__wrapped__`` at each call (rather
    than bound once), so a test can count how often it really runs.

    Example:
        >>> @per_run
        ... def steps(run):
        ...     return len(run.scalars)
        >>> steps(RunData(run_id="r", name="r"))
        0
    """

    @functools.wraps(function)
    def memoised(run: RunData, *args: Any) -> Result:
        compute = memoised.__wrapped__
        if not isinstance(run, MemoisedRun):
            return compute(run, *args)
        key = (memoised, args)
        if key not in run.memo:
            run.memo[key] = compute(run, *args)
        return run.memo[key]

    memoised.per_run = True  # type: ignore[attr-defined]  # how tests find every shared intermediate
    return memoised


def is_per_run(value: Any) -> bool:
    """Whether ``value`` is a function marked :func:`per_run`."""
    return callable(value) and getattr(value, "per_run", False) is True
