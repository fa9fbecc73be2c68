"""The probe's default store is the CLI's: ``$TRAINDOCTOR_STORE``, else ``./traindoctor_runs``.

The probe and both callbacks defaulted to ``./traindoctor_runs`` whatever
``$TRAINDOCTOR_STORE`` said, while the CLI reads the variable: a run recorded
with it set (the README's multi-node set-up sets only it) landed where
``traindoctor runs`` did not look. Found by trying the probe as a new user.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from traindoctor.probe import Probe
from traindoctor.probe.core import default_store
from tests.probe.conftest import make_model


def _record(**kwargs) -> str:
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(run="env", handle_sigterm=False, **kwargs) as probe:
        probe.watch(model, optimizer)
        probe.step(loss=1.0)
    return probe.run_id


def test_the_probe_records_into_the_store_the_variable_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRAINDOCTOR_STORE", str(tmp_path / "team"))
    run_id = _record()
    assert (tmp_path / "team" / run_id / "run.json").is_file()
    assert not (tmp_path / "traindoctor_runs").exists()
    explicit = _record(store=tmp_path / "mine")  # an explicit store still wins
    assert (tmp_path / "mine" / explicit / "run.json").is_file()


def test_without_the_variable_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINDOCTOR_STORE", raising=False)
    run_id = _record(store=None)
    assert (tmp_path / "traindoctor_runs" / run_id / "run.json").is_file()


@pytest.mark.parametrize("module", ["lightning", "transformers"])
def test_the_callbacks_default_to_the_same_store(module, monkeypatch):
    integration = pytest.importorskip(f"traindoctor.probe.integrations.{module}")
    assert inspect.signature(integration.ProbeCallback).parameters["store"].default is None
    monkeypatch.setenv("TRAINDOCTOR_STORE", "s3://bucket/prefix")
    assert default_store(None) == "s3://bucket/prefix"


def test_a_store_that_cannot_be_written_is_one_line_naming_it(tmp_path):
    """It was the OS error on the run's scalars folder deep inside the store; it names the store now."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError, match=r"^\[Errno \d+\] Probe: cannot write into store .*a-file/st: ") as error:
        Probe(run="x", store=blocker / "st", handle_sigterm=False)
    assert "\n" not in str(error.value)
