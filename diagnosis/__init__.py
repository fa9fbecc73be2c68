"""The rules of thumb as pure functions over a run's data (no Streamlit, DuckDB or torch).

Names are loaded on first use, so a module of this package that needs none
of the rules (the findings cache, the text and JSON reports, the finding
type) is imported without pandas or the rule modules: a ``traindoctor
diagnose`` answered from the cache never pays for them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Public name → the module that defines it (imported on first access).
_EXPORTS = {
    "Finding": "traindoctor.diagnosis.finding",
    "SEVERITIES": "traindoctor.diagnosis.finding",
    "RunData": "traindoctor.store.run_data",
    "RECORDS": "traindoctor.diagnosis.engine",
    "RULES": "traindoctor.diagnosis.engine",
    "diagnose": "traindoctor.diagnosis.engine",
}

__all__ = ["Finding", "RunData", "SEVERITIES", "RECORDS", "RULES", "diagnose"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'traindoctor.diagnosis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
