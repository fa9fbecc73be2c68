"""The bundled sample runs show what they were made to show, and the healthy ones stay quiet."""

from __future__ import annotations

import pytest

from traindoctor.store.run_data import load_run
from traindoctor.diagnosis import diagnose
from sample_runs.make_runs import ALSO, DEFAULT_STORE, LABELS, SCENARIOS
from traindoctor.store.reader import Store

LOUD = {"warning", "critical"}


@pytest.fixture(scope="module")
def committed():
    store = Store(DEFAULT_STORE)
    if not store.run_ids():
        pytest.fail(f"the sample store {DEFAULT_STORE} is missing: run python sample_runs/make_runs.py")
    return store


def rules(store: Store, name: str) -> tuple[set[str], set[str]]:
    """(every rule that fired, the rules that fired at warning or critical)."""
    findings = diagnose(load_run(store, name))
    return {f.rule for f in findings}, {f.rule for f in findings if f.severity in LOUD}


def test_committed_store_holds_every_scenario_once(committed):
    names = sorted(committed.runs()["name"])
    assert names == sorted(s.name for s in SCENARIOS)


def test_committed_store_is_compacted_and_small(committed):
    for table in DEFAULT_STORE.glob("*/*"):
        if table.is_dir():
            assert len(list(table.glob("*.parquet"))) <= 1, f"{table} is not compacted: run sample_runs/make_runs.py"
    assert sum(f.stat().st_size for f in DEFAULT_STORE.rglob("*")) < 8 * 2**20


@pytest.mark.parametrize("name", sorted(LABELS), ids=sorted(LABELS))
def test_sample_run_findings_match_what_it_was_made_to_show(committed, name):
    fired, loud = rules(committed, name)
    expected = set(LABELS[name])
    assert expected <= fired, f"{name}: expected {sorted(expected)}, found {sorted(fired)}"
    unexpected = loud - expected - set(ALSO[name])
    assert not unexpected, f"{name}: false alarms {sorted(unexpected)}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["healthy-mlp-adamw", "loss-spikes"])
def test_script_makes_the_committed_runs(tmp_path, committed, name):
    """Made again from the script, a run has the committed steps and findings."""
    from sample_runs.make_runs import make

    make(tmp_path, [name], quiet=True)
    fresh = Store(tmp_path)
    fresh_findings = sorted((f.rule, f.severity) for f in diagnose(load_run(fresh, name)))
    committed_findings = sorted((f.rule, f.severity) for f in diagnose(load_run(committed, name)))
    assert fresh_findings == committed_findings
    fresh_loss = fresh.scalars([fresh.resolve(name)], names=["loss"], splits=["train"], global_only=True)
    committed_loss = committed.scalars([committed.resolve(name)], names=["loss"], splits=["train"], global_only=True)
    assert list(fresh_loss["step"]) == list(committed_loss["step"])
    assert fresh_loss["value"].to_numpy() == pytest.approx(committed_loss["value"].to_numpy(), rel=1e-4, nan_ok=True)
