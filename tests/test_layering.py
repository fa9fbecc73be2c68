"""The layering contract (docs/design.md, "Layout"), read as a table.

Each row is a statement run in a fresh interpreter and the top-level modules
it must never pull in (and, where the statement exists to load one, the one it
must). The data flows probe → store → diagnosis → dashboard/CLI, and each
stage imports only the stages before it: the probe never pays for the
dashboard, the store never for torch, the rules never for DuckDB.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_STORE = REPO / "sample_runs" / "store"
CSV_LOG = REPO / "tests" / "data" / "cases" / "nan-grad-norm" / "synthetic.csv"
UI = ("streamlit", "plotly")
FRAMEWORKS = ("torch", "lightning", "transformers", "tensorflow")

# statement → (modules it must never import, modules it must import)
LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "import traindoctor": (FRAMEWORKS + UI + ("duckdb", "pandas", "pyarrow", "numpy"), ()),
    "import traindoctor.probe": (FRAMEWORKS + UI + ("duckdb", "pyarrow", "numpy"), ()),
    "from traindoctor import Probe": (UI + ("duckdb", "pandas", "lightning", "transformers"), ("torch",)),
    "import traindoctor.probe.integrations": (FRAMEWORKS, ()),
    "import traindoctor.store": (FRAMEWORKS + UI + ("duckdb",), ()),
    "import traindoctor.store.segments": (FRAMEWORKS + UI + ("duckdb",), ()),
    "import traindoctor.store.format": (FRAMEWORKS + UI + ("duckdb",), ()),
    "import traindoctor.store.reader": (FRAMEWORKS + UI, ("duckdb",)),
    "import traindoctor.store.importers": (FRAMEWORKS + UI + ("duckdb", "pandas", "tensorboard", "wandb", "mlflow"), ()),
    # The package, the reports and the findings cache load no rule (and no pandas):
    # a diagnosis answered from the cache prints without them.
    "import traindoctor.diagnosis, traindoctor.diagnosis.report, traindoctor.diagnosis.cache":
        (FRAMEWORKS + UI + ("duckdb", "pandas", "pyarrow", "numpy", "traindoctor.diagnosis.engine"), ()),
    # The rules and RunData: numpy only (store.frames), no pandas (0.3 s of a diagnosis's start-up).
    "from traindoctor.diagnosis import diagnose": (FRAMEWORKS + UI + ("duckdb", "pandas"), ()),
    # The catalog and its query language: standard library only.
    "import traindoctor.store.catalog, traindoctor.store.listing, traindoctor.numbers":
        (FRAMEWORKS + UI + ("duckdb", "pandas", "pyarrow", "numpy"), ()),
    "from traindoctor import diagnose, RunData": (FRAMEWORKS + UI + ("duckdb",), ()),
    "import traindoctor.cli": (FRAMEWORKS + UI + ("duckdb", "pandas"), ()),
    # The whole `diagnose` command, on a real run: the run read with pyarrow (store.run_tables) and
    # the rules, no app, no DuckDB, no pandas.
    "from traindoctor.cli import main; main(['diagnose', '--no-cache', '--store', %r, 'healthy-mlp-sgd'])"
    % str(SAMPLE_STORE): (FRAMEWORKS + UI + ("duckdb", "pandas"), ("pyarrow",)),
    # `import csv` writes the run and diagnoses it in the same process: the same contract.
    "import tempfile; from traindoctor.cli import main; "
    "main(['import', 'csv', %r, '--store', tempfile.mkdtemp(), '--no-progress'])"
    % str(CSV_LOG): (FRAMEWORKS + UI + ("duckdb", "pandas"), ("pyarrow", "traindoctor.diagnosis.engine")),
    # The public API's diagnosis of a stored run: the same loading as the command.
    "from traindoctor import diagnose; diagnose('healthy-mlp-sgd', store=%r)" % str(SAMPLE_STORE):
        (FRAMEWORKS + UI + ("duckdb", "pandas"), ()),
    "import traindoctor.dashboard": (FRAMEWORKS + UI + ("duckdb",), ()),
    "import traindoctor.dashboard.data": (FRAMEWORKS + UI, ()),
    "import traindoctor.dashboard.serve": (FRAMEWORKS + UI + ("duckdb",), ()),
    # Charts draw what they are given: no store, no Streamlit.
    "import traindoctor.dashboard.app.charts.curves, traindoctor.dashboard.app.charts.layers, "
    "traindoctor.dashboard.app.charts.classes, traindoctor.dashboard.app.charts.compare":
        (FRAMEWORKS + ("streamlit", "duckdb", "traindoctor.store.reader"), ("plotly",)),
}


def _loaded(statement: str, names: tuple[str, ...]) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps([m for m in {list(names)!r} if m in sys.modules]))"
    # Run from an empty folder, as a user would: nothing of the checkout on sys.path.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=REPO / "tests" / "data")
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("statement", list(LAYERS), ids=[s.split(";")[0][:60] for s in LAYERS])
def test_layering(statement):
    forbidden, required = LAYERS[statement]
    loaded = _loaded(statement, forbidden + required)
    assert loaded & set(forbidden) == set(), f"{statement!r} pulled in {sorted(loaded & set(forbidden))}"
    assert set(required) <= loaded, f"{statement!r} did not load {sorted(set(required) - loaded)}"


SOURCE_FOLDERS = ("traindoctor", "probe", "store", "diagnosis", "dashboard")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_every_import_of_our_code_goes_through_the_traindoctor_namespace():
    """The folders exist only in the checkout: `import store` would work in the
    tests and fail in a user's environment (or import the user's own `store`)."""
    wrong = []
    for folder in SOURCE_FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            wrong += [f"{path.relative_to(REPO)}: import {name}" for name in _imports(path)
                      if name.split(".")[0] in SOURCE_FOLDERS[1:]]
    assert wrong == []


def test_the_probe_without_torch_says_which_extra_to_install():
    """The dashboard and CLI install without torch; touching the probe there must say how to get it."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    from traindoctor import Probe\nexcept ModuleNotFoundError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=REPO / "tests" / "data")
    assert "pip install 'traindoctor[torch]'" in result.stdout, result.stderr
