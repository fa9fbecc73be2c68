"""What each dashboard module pulls in when imported, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("module", "forbidden"), [
    ("dashboard.charts.curves", ("streamlit", "duckdb", "torch", "store")),
    ("dashboard.charts.layers", ("streamlit", "duckdb", "torch", "store")),
    ("dashboard.charts.classes", ("streamlit", "duckdb", "torch", "store")),
    ("dashboard.charts.compare", ("streamlit", "duckdb", "torch", "store")),
    ("dashboard.data", ("streamlit", "plotly", "torch")),
    ("dashboard.serve", ("streamlit", "plotly", "torch", "duckdb")),
], ids=["curves", "layers", "classes", "compare", "data", "serve"])
def test_module_imports_nothing_it_should_not(module, forbidden):
    code = (f"import sys, {module}; "
            f"print(','.join(m for m in {forbidden!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}, check=True)
    assert result.stdout.strip() == "", f"{module} imported {result.stdout.strip()}"


def test_no_pages_folder_beside_the_app():
    """Regression: with a ``pages/`` folder next to app.py, Streamlit served it as an
    old-style multipage app (sidebar of every module, no top navigation, no wide
    layout) instead of the pages ``st.navigation`` declares."""
    from pathlib import Path

    import dashboard

    assert not (Path(dashboard.__file__).parent / "pages").exists()
