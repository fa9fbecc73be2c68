"""``--json`` output is strict JSON whatever a run holds (found by trying the CLI as a new user)."""

from __future__ import annotations

import json
import math

import numpy as np

from traindoctor.cli import main, strict_json
from traindoctor.store.segments import RunWriter


def test_runs_json_with_a_non_finite_hyperparameter_is_strict_json(capsys, tmp_path):
    """``Probe(config={"max_grad_norm": float("inf")})`` made ``runs --json`` stop with a traceback
    (``Out of range float values are not JSON compliant``): the config went out unsanitised."""
    writer = RunWriter(tmp_path, name="clip-off", background=False,
                       config={"lr": 0.1, "max_grad_norm": math.inf, "nested": {"eps": [math.nan, 1e-8]}})
    writer.add_scalars(step=np.arange(1, 6), name="loss", value=np.linspace(2, 1, 5))
    writer.close("finished")
    assert main(["runs", "--store", str(tmp_path), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)  # strict: json.loads accepts NaN, so check the text too
    assert row["config"]["max_grad_norm"] is None
    assert row["config"]["nested"]["eps"] == [None, 1e-8]
    assert row["config"]["lr"] == 0.1
    assert main(["diagnose", "clip-off", "--store", str(tmp_path), "--json"]) == 0
    text = capsys.readouterr().out
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)


def test_strict_json_nulls_every_non_finite_float():
    assert strict_json({"a": [1.0, math.nan, {"b": -math.inf}], "c": (math.inf, "nan"), "d": 3}) == {
        "a": [1.0, None, {"b": None}], "c": [None, "nan"], "d": 3}
