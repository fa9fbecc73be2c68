"""Attach to a PyTorch training loop and record what a run needs to be judged.

``from traindoctor.probe import Probe`` imports torch, numpy and the store's
writer only when ``Probe`` is first touched; the package itself imports
nothing heavy.

Example:
    >>> from traindoctor.probe import Probe                      # doctest: +SKIP
    >>> with Probe(run="mlp", store="traindoctor_runs", num_classes=10) as probe:
    ...     probe.watch(model, optimizer)
    ...     ...
"""

from __future__ import annotations

from typing import Any

__all__ = ["Probe", "ProbeError", "TrainingStopped"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        try:
            from traindoctor.probe import core
        except ModuleNotFoundError as error:
            if error.name != "torch":
                raise
            # Where runs are only looked at, traindoctor installs without torch.
            raise ModuleNotFoundError(
                "traindoctor.probe needs PyTorch: pip install 'traindoctor[torch]'", name="torch") from error
        return getattr(core, name)
    raise AttributeError(f"module 'traindoctor.probe' has no attribute {name!r}")
