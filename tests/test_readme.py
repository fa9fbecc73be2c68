"""The README's quick start and callback examples run as written (#17).

The fenced ``python`` blocks of the README's "Quick start" section are read
with markdown-it (CommonMark's own fence rules) and run unchanged in a fresh
interpreter, in an empty folder, each after a prelude that defines only what
the README says is the user's own: ``model``, ``optimizer``, ``criterion``,
``loader``, ``val_loader`` and ``epochs`` (a 64-32-10 MLP on scikit-learn's
digits, Adam at lr 3e-3, batches of 64, 10 epochs, as the README states), a
LightningModule's inner ``model``, and for the HF block ``hf_model``,
``train_dataset`` and ``eval_dataset`` (a one-layer BERT on random tokens).
The quick-start run must get no finding; the AMP block needs a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from traindoctor.cli import main

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Quick start: recording a run"

# One worker runs the README blocks once for every test that reads them (each worker ran them: ~12 s twice).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("readme")]


def quick_start_blocks() -> dict[str, str]:
    """The section's python blocks by what they import: quick_start, amp, lightning, hf."""
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    fences = [token.content for token in MarkdownIt("commonmark").parse(text[start:end if end > 0 else None])
              if token.type == "fence" and token.info.strip() == "python"]
    named: dict[str, str] = {}
    for block in fences:
        if "integrations.lightning" in block:
            named["lightning"] = block
        elif "integrations.transformers" in block:
            named["hf"] = block
        elif "GradScaler" in block:
            named["amp"] = block
        elif "from traindoctor import Probe" in block:
            named["quick_start"] = block
    assert sorted(named) == ["amp", "hf", "lightning", "quick_start"], f"README blocks found: {sorted(named)}"
    assert len(fences) == 4, "a python block of the quick start is not run by this test"
    return named


# What the README says the user brings, built small. Data: the digits, shuffled once.
DATA_PRELUDE = """
import torch
from sklearn.datasets import load_digits

torch.manual_seed(0)
_digits = load_digits()
_x = torch.tensor(_digits.data / 16.0, dtype=torch.float32)
_y = torch.tensor(_digits.target)
_order = torch.randperm(len(_x))
_x, _y = _x[_order], _y[_order]
_train = torch.utils.data.TensorDataset(_x[:1400], _y[:1400])
_val = torch.utils.data.TensorDataset(_x[1400:], _y[1400:])
loader = torch.utils.data.DataLoader(_train, batch_size=64, shuffle=True)
val_loader = torch.utils.data.DataLoader(_val, batch_size=256)
model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
"""
PRELUDES = {
    "quick_start": DATA_PRELUDE + """
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
criterion = torch.nn.CrossEntropyLoss()
epochs = 10
""",
    "amp": DATA_PRELUDE + """
model = model.cuda()
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
criterion = torch.nn.CrossEntropyLoss()
epochs = 3
""",
    "lightning": DATA_PRELUDE + """
epochs = 2
""",
    "hf": """
import torch
import transformers

torch.manual_seed(0)
_config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16, num_labels=2)
hf_model = transformers.BertForSequenceClassification(_config)
_rows = [{"input_ids": torch.randint(0, 40, (8,)), "labels": i % 2} for i in range(32)]
train_dataset, eval_dataset = _rows[:24], _rows[24:]
epochs = 1
""",
}

# Runs each block in its own namespace in one interpreter (one torch import
# for all), and prints {block: null or the traceback}.
RUNNER = """
import json, sys, traceback, warnings

warnings.simplefilter("ignore")
results = {}
for name, prelude, block in json.loads(sys.stdin.read()):
    try:
        namespace = {"__name__": "__main__"}
        exec(compile(prelude, f"<prelude of {name}>", "exec"), namespace)
        exec(compile(block, f"<README block {name}>", "exec"), namespace)
        results[name] = None
    except Exception:
        results[name] = traceback.format_exc()
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory) -> tuple[Path, dict[str, str | None], bool]:
    """The folder the blocks ran in, each block's traceback (None when it ran) and whether a GPU was there."""
    folder = tmp_path_factory.mktemp("readme_user")
    blocks = quick_start_blocks()
    import torch

    gpu = torch.cuda.is_available()
    chosen = [name for name in ("quick_start", "lightning", "hf", "amp") if name != "amp" or gpu]
    payload = json.dumps([(name, textwrap.dedent(PRELUDES[name]), blocks[name]) for name in chosen])
    result = subprocess.run([sys.executable, "-c", RUNNER], input=payload, cwd=folder, capture_output=True,
                            text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "TRAINDOCTOR_STORE": ""})
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, f"the README blocks did not run (exit {result.returncode}):\n{result.stderr[-3000:]}"
    return folder, json.loads(lines[-1][len("RESULTS "):]), gpu


@pytest.mark.parametrize("block", ["quick_start", "lightning", "hf", "amp"])
def test_the_readme_block_runs_as_written(readme_runs, block):
    _, results, gpu = readme_runs
    if block == "amp" and not gpu:
        pytest.skip("the fp16 AMP block needs a GPU")
    assert results[block] is None, results[block]


def test_the_quick_start_run_diagnoses_with_no_finding(readme_runs, capsys, monkeypatch):
    folder, results, _ = readme_runs
    assert results["quick_start"] is None, results["quick_start"]
    monkeypatch.chdir(folder)
    monkeypatch.delenv("TRAINDOCTOR_STORE", raising=False)
    # As the README says: `traindoctor diagnose my-model`, from the folder the loop ran in.
    code = main(["diagnose", "my-model", "--json", "--fail-on", "info"])
    report = json.loads(capsys.readouterr().out)
    (run,) = report["runs"]
    assert run["status"] == "finished"
    assert run["findings"] == [], [f"{f['rule']}: {f['message']}" for f in run["findings"]]
    assert code == 0


def test_the_callback_runs_are_recorded_in_the_default_store(readme_runs, capsys, monkeypatch):
    folder, results, _ = readme_runs
    monkeypatch.chdir(folder)
    monkeypatch.delenv("TRAINDOCTOR_STORE", raising=False)
    assert main(["runs", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    for name, block in (("my-model-lightning", "lightning"), ("my-model-hf", "hf")):
        if results[block] is None:
            assert rows[name]["status"] == "finished" and rows[name]["num_steps"] > 0, rows.get(name)
    assert rows["my-model-lightning"]["metrics"]["val"]["loss"]["count"] == 2  # one evaluation per epoch
    assert "adam_beta2" not in rows["my-model-hf"]["hyperparameters"]
