"""`import probe` is light; `from probe import Probe` brings torch but no DuckDB, Streamlit or plotly."""

import json
import subprocess
import sys

import pytest

CASES = {
    "import probe": (["torch", "numpy", "pyarrow", "duckdb", "streamlit", "plotly"], []),
    "from probe import Probe": (["duckdb", "streamlit", "plotly", "lightning", "transformers", "pandas"], ["torch"]),
    "import probe.integrations": (["torch", "lightning", "transformers"], []),
}


@pytest.mark.parametrize("statement", list(CASES), ids=["package", "probe_class", "integrations"])
def test_imports_stay_light(statement):
    absent, present = CASES[statement]
    code = f"import sys, json; {statement}; print(json.dumps([m for m in {absent + present!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert loaded & set(absent) == set()
    assert set(present) <= loaded
