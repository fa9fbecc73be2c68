"""DESIGN.md's layering: each package imported alone must not pull in what it may not use."""

import subprocess
import sys

import pytest

FORBIDDEN = {
    "probe": ["streamlit", "plotly", "duckdb"],
    "store": ["torch", "streamlit", "plotly"],
    "store.segments": ["torch", "streamlit", "plotly", "duckdb"],
    "store.reader": ["torch", "streamlit", "plotly"],
    "dashboard.diagnosis": ["torch", "streamlit", "duckdb", "plotly"],
    "dashboard.cli": ["torch", "streamlit", "plotly", "duckdb"],
    "dashboard.data": ["torch", "streamlit", "plotly"],
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN), ids=sorted(FORBIDDEN))
def test_import_does_not_pull_in_forbidden_modules(package):
    code = (
        "import importlib, sys, json; importlib.import_module(%r); "
        "print(json.dumps([m for m in %r if m in sys.modules]))" % (package, FORBIDDEN[package])
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"importing {package} pulled in {result.stdout.strip()}"
