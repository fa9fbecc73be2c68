"""Fixtures for dashboard tests: a store of small runs and an AppTest on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from traindoctor.dashboard import serve
from traindoctor.diagnosis.finding import Finding
from tests.dashboard.factories import make_run

APP = str(serve.APP_PATH)
# AppTest runs the script in this process; the first run imports plotly and
# pandas-heavy modules, which on a loaded 2-core box can take several seconds.
APP_TIMEOUT_S = 60


def nan_divergence(run) -> list[Finding]:
    """A stand-in for the diagnosis engine: one critical finding where the loss turns NaN.

    Only the Streamlit side is under test here; the engine's own rules are
    tested in tests/diagnosis.
    """
    loss = run.series("loss")
    bad = loss[~np.isfinite(loss.to_numpy())]
    if bad.empty:
        return []
    first = int(bad.index[0])
    return [Finding(rule="divergence", severity="critical", title="Loss became NaN",
                    message=f"The training loss is NaN from step {first}.", advice="Lower the learning rate.",
                    step_start=first, step_end=int(loss.index[-1]), evidence={"first_nan_step": first},
                    source="seed 000")]


@pytest.fixture()
def fake_diagnosis(monkeypatch):
    import traindoctor.diagnosis

    monkeypatch.setattr(traindoctor.diagnosis, "diagnose", nan_divergence, raising=False)
    return nan_divergence


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """Three finished/crashed runs; the app reads this folder through TRAINDOCTOR_STORE."""
    root = tmp_path / "runs"
    ids = {
        "alpha": make_run(root, "alpha", config={"lr": 0.1, "batch_size": 32}, seed=1),
        "beta": make_run(root, "beta", config={"lr": 1.0, "batch_size": 32}, nan_from=150, status="crashed",
                         events=(("nan_loss", "loss is nan", 150),
                                 ("config_lint", '{"rule": "weight_decay_on_norm_and_bias", '
                                                 '"message": "weight decay on 4 norm/bias tensors", "params": []}', None)),
                         seed=2),
        "gamma": make_run(root, "gamma", config={"lr": 0.01, "batch_size": 64}, seed=3),
    }
    monkeypatch.setenv("TRAINDOCTOR_STORE", str(root))
    return root, ids


@pytest.fixture()
def app(store):
    from streamlit.testing.v1 import AppTest

    def open_page(page: str | None = None, **query: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=APP_TIMEOUT_S)
        at.run()
        if page:
            at.switch_page(page)
        for key, value in query.items():
            at.query_params[key] = value
        return at.run()

    return open_page
