"""traindoctor: diagnose PyTorch training runs against the practitioners' rules of thumb.

The public face. Every name is loaded on first use, so ``import traindoctor``
costs nothing and pulls in no torch, DuckDB, Streamlit or plotly:

- :class:`Probe` (``traindoctor.probe``) records a run from a training loop;
  needs the ``torch`` extra.
- :class:`Store` (``traindoctor.store``) reads a store of runs with DuckDB.
- :func:`diagnose` (``traindoctor.diagnosis``) judges one run against the rules.
- :class:`RunData` and :class:`Finding` are the rules' input and output.

Example:
    >>> from traindoctor import Probe                                # doctest: +SKIP
    >>> with Probe(run="mlp", store="traindoctor-runs", num_classes=10) as probe:
    ...     probe.watch(model, optimizer)
    ...     ...
    >>> from traindoctor import diagnose
    >>> diagnose("mlp", store="traindoctor-runs")                   # doctest: +SKIP
    [Finding(rule='lr_too_high', severity='warning', ...)]
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public name → the module that defines it (imported on first access).
_EXPORTS = {
    "Probe": "traindoctor.probe",
    "ProbeError": "traindoctor.probe",
    "TrainingStopped": "traindoctor.probe",
    "Store": "traindoctor.store",
    "RunWriter": "traindoctor.store",
    "StoreError": "traindoctor.store",
    "UnknownRunError": "traindoctor.store",
    "RunData": "traindoctor.store.run_data",
    "Finding": "traindoctor.diagnosis.finding",
    "diagnose": "traindoctor.api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'traindoctor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
