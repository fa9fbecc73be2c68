"""The rules of thumb as pure functions over a run's data (no Streamlit, DuckDB or torch)."""

from dashboard.diagnosis.engine import RULES, diagnose
from dashboard.diagnosis.finding import SEVERITIES, Finding
from dashboard.diagnosis.run_data import RunData

__all__ = ["Finding", "RunData", "SEVERITIES", "RULES", "diagnose"]
