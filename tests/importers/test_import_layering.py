"""Importers live in store/: importing or running them never pulls in torch, streamlit or plotly."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FORBIDDEN = ("torch", "streamlit", "plotly", "lightning", "transformers", "tensorflow")


def test_light_package_import(tmp_path):
    code = "import sys, json, store.importers; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                       cwd=Path(__file__).resolve().parents[2]).stdout)
    assert not set(loaded) & set(FORBIDDEN + ("duckdb", "pandas", "tensorboard"))


def test_running_every_importer_loads_no_training_framework(tmp_path):
    SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter
    with SummaryWriter(str(tmp_path / "tb")) as writer:
        writer.add_scalar("loss", 1.0, 1)
    (tmp_path / "run.csv").write_text("step,split,name,value\n1,train,loss,1.0\n")
    (tmp_path / "pl" / "version_0").mkdir(parents=True)
    (tmp_path / "pl" / "version_0" / "metrics.csv").write_text("epoch,step,train_loss\n0,0,1.0\n")
    (tmp_path / "pl" / "version_0" / "hparams.yaml").write_text("lr: 0.1\n")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "trainer_state.json").write_text('{"log_history": [{"loss": 1.0, "step": 1, "epoch": 0.1}]}')
    code = textwrap.dedent(f"""
        import json, sys
        from store.importers import import_source
        root = {str(tmp_path)!r}
        for kind, path in [("csv", "run.csv"), ("tensorboard", "tb"), ("lightning", "pl"), ("hf", "hf")]:
            [result] = import_source(kind, root + "/store", root + "/" + path, progress=False)
            assert result.rows == 1, (kind, result)
        print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))
    """)
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    assert completed.returncode == 0, completed.stderr
    assert not set(json.loads(completed.stdout)) & set(FORBIDDEN)
