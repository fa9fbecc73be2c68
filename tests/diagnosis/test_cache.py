"""The findings cache (diagnosis/cache.py): computed once, kept per run content and engine version."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from traindoctor.diagnosis import cache
from traindoctor.diagnosis.cache import Diagnosis, cached_diagnosis, diagnose_cached, engine_version, keep
from traindoctor.diagnosis.finding import Finding
from traindoctor.store.catalog import Catalog
from traindoctor.store.format import FINDINGS_JSON, RUN_JSON, SUMMARY_JSON
from traindoctor.store.segments import RunWriter


def spiky_run(root: Path, run_id: str = "r", *, steps: int = 400) -> str:
    """A run the rules have something to say about: a loss that jumps ten-fold for a few steps."""
    loss = 2.0 * np.exp(-np.arange(steps) / 150) + 0.1
    loss[200:204] *= 10
    writer = RunWriter(root, run_id=run_id, name=run_id, config={"lr": 0.1}, background=False)
    writer.add_scalars(step=np.arange(1, steps + 1), name="loss", value=loss)
    writer.close()
    return run_id


def diagnosed(root: Path, run_id: str = "r", **kwargs) -> Diagnosis:
    catalog = Catalog(root)
    return diagnose_cached(catalog, catalog.summary(run_id), **kwargs)


def test_a_run_is_diagnosed_once_then_answered_from_the_cache(tmp_path):
    spiky_run(tmp_path)
    first = diagnosed(tmp_path)
    assert not first.cached and first.findings, "the spike should give findings"
    assert (tmp_path / "r" / FINDINGS_JSON).exists()
    second = diagnosed(tmp_path)
    assert second.cached
    assert second.findings == first.findings
    # The counts reach the summary, so a listing shows them without reading the cache file.
    kept = json.loads((tmp_path / "r" / SUMMARY_JSON).read_text())["findings"]
    assert kept["counts"] == cache.severity_counts(first.findings)
    assert kept["rules"] == sorted({f.rule for f in first.findings})


def append_steps(root: Path) -> None:
    writer = RunWriter(root, run_id="r", background=False)
    writer.add_scalars(step=np.arange(401, 421), name="loss", value=np.full(20, 0.1))
    writer.close()


def edit_config(root: Path) -> None:
    meta = json.loads((root / "r" / RUN_JSON).read_text())
    meta["task"] = {"num_classes": 10}
    (root / "r" / RUN_JSON).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "change, engine",
    [(None, "other-engine"), (append_steps, None), (edit_config, None)],
    ids=["engine-version-changed", "run-appended", "task-edited"],
)
def test_a_changed_run_or_engine_misses_the_cache(tmp_path, change, engine):
    spiky_run(tmp_path)
    diagnosed(tmp_path)
    if change is not None:
        change(tmp_path)
    catalog = Catalog(tmp_path)
    summary = catalog.summary("r")
    assert cached_diagnosis(catalog, summary, engine) is None
    again = diagnose_cached(catalog, summary, engine=engine)
    assert not again.cached
    assert diagnose_cached(catalog, catalog.summary("r"), engine=engine).cached  # kept for the new key


@pytest.mark.parametrize("damage", ["truncated", "emptied", "removed"])
def test_a_segment_damaged_after_the_cache_was_written_is_read_again_with_a_warning(tmp_path, damage):
    """Segments are immutable, so the fingerprint is their names: a file cut short under its name (a
    partial copy, a full disk) kept answering from the cache, with no word of the damage."""
    spiky_run(tmp_path)
    assert not diagnosed(tmp_path).cached and diagnosed(tmp_path).cached
    [segment] = (tmp_path / "r" / "scalars").glob("*.parquet")
    if damage == "removed":
        segment.unlink()
    else:
        data = segment.read_bytes()
        segment.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    if damage == "removed":  # the listing changed: a new fingerprint, read again (nothing left to warn about)
        again = diagnosed(tmp_path)
    else:
        with pytest.warns(RuntimeWarning, match=f"unreadable segment .*{segment.name}"):
            again = diagnosed(tmp_path)
    assert not again.cached


def test_a_cache_written_for_other_content_is_not_trusted(tmp_path):
    spiky_run(tmp_path)
    catalog = Catalog(tmp_path)
    summary = catalog.summary("r")
    keep(catalog, Diagnosis(run_id="r", name="r", fingerprint="not-this-run", findings=[
        Finding(rule="divergence", severity="critical", title="t", message="m", advice="a")]))
    assert cached_diagnosis(catalog, summary) is None
    assert "findings" not in catalog.summary("r")  # the summary only takes counts for its own fingerprint


def test_no_cache_diagnoses_again(tmp_path):
    spiky_run(tmp_path)
    diagnosed(tmp_path)
    assert not diagnosed(tmp_path, use_cache=False).cached


def test_the_engine_version_follows_the_source_of_the_rules(tmp_path, monkeypatch):
    package = tmp_path / "fake_rules"
    package.mkdir()
    (package / "__init__.py").write_text("THRESHOLD = 3.0  # a rule's constant\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cache, "_ENGINE_PACKAGES", ("fake_rules",))
    monkeypatch.setattr(cache, "_ENGINE_MODULES", ())
    engine_version.cache_clear()
    try:
        before = engine_version()
        (package / "__init__.py").write_text("THRESHOLD = 4.0  # a rule's constant\n")
        engine_version.cache_clear()
        assert engine_version() != before
        assert "fake_rules" not in sys.modules  # read, never imported
    finally:
        engine_version.cache_clear()
