"""The rules of thumb as pure functions over a run's data (no Streamlit, DuckDB or torch)."""

from traindoctor.diagnosis.engine import RECORDS, RULES, diagnose
from traindoctor.diagnosis.finding import SEVERITIES, Finding
from traindoctor.store.run_data import RunData

__all__ = ["Finding", "RunData", "SEVERITIES", "RECORDS", "RULES", "diagnose"]
