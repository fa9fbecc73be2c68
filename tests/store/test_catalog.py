"""The run catalog (store/catalog.py): summaries that stay true to the run's files.

The oracle for every summary is the DuckDB view the reader has always
answered from (``Store.scalars``): what the catalog adds from footers must
equal what a scan of the rows says.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from traindoctor.store import catalog as catalog_module
from traindoctor.store.catalog import Catalog
from traindoctor.store.compact import compact_run
from traindoctor.store.format import FINDINGS_JSON, SUMMARY_JSON
from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter

from tests.store.conftest import write_run

SAMPLE_STORE = Path(__file__).resolve().parents[2] / "sample_runs" / "store"


def oracle(store: Store, run_id: str) -> dict:
    """last_step, num_steps and (split, name) -> (last, min, max) from a scan of rank 0's global rows."""
    rows = store.scalars([run_id], global_only=True, rank=0)
    series = {}
    for (split, name), group in rows.groupby(["split", "name"]):
        group = group.sort_values("step", kind="stable")
        finite = group["value"][np.isfinite(group["value"])]
        series[(split, name)] = (group["value"].iloc[-1], finite.min() if len(finite) else None,
                                 finite.max() if len(finite) else None, group["step"].nunique())
    train_loss = series.get(("train", "loss"))
    return {"last_step": int(rows["step"].max()) if len(rows) else None,
            "num_steps": train_loss[3] if train_loss else 0, "series": series}


def assert_matches_oracle(summary: dict, store: Store) -> None:
    expected = oracle(store, summary["run_id"])
    assert summary["last_step"] == expected["last_step"]
    assert summary["num_steps"] == expected["num_steps"]
    got = {(split, name): values for split, names in summary["metrics"].items() for name, values in names.items()}
    assert set(got) == set(expected["series"])
    for key, (last, low, high, count) in expected["series"].items():
        values = got[key]
        assert values["count"] == count, key
        assert (math.isnan(values["last"]) and math.isnan(last)) or values["last"] == pytest.approx(last), key
        best = low if values["goal"] == "min" else high
        assert values["best"] == (None if best is None else pytest.approx(best)), key


def summary_file(root: Path, run_id: str) -> dict:
    return json.loads((root / run_id / SUMMARY_JSON).read_text())


def live_writer(root: Path, run_id: str, steps: range, **kwargs) -> RunWriter:
    writer = RunWriter(root, run_id=run_id, background=False, **kwargs)
    writer.add_scalars(step=np.asarray(steps), name="loss", value=np.asarray(steps, dtype=float) / 10)
    writer.flush()
    return writer


@pytest.fixture(params=[False, True], ids=["listing", "stamp"])
def settled(request, monkeypatch):
    """Run each freshness test twice: with the settle window (a just-changed run
    is always listed again) and without it (the stat stamp alone must notice)."""
    if request.param:
        monkeypatch.setattr(catalog_module, "_SETTLE_NS", -10**12)
    return request.param


def test_a_closed_run_has_a_summary_equal_to_a_scan_of_its_rows(store_root):
    write_run(store_root, "r", steps=range(1, 41), names=("loss", "accuracy"), layers=("fc.weight",), flushes=3)
    assert (store_root / "r" / SUMMARY_JSON).exists()  # written at close, from footers
    store = Store(store_root)
    assert_matches_oracle(summary_file(store_root, "r"), store)
    assert_matches_oracle(store.catalog.summary("r"), store)


def listed_rows(root: Path, how: str) -> dict[str, dict]:
    catalog = Catalog(root)
    return {row["run_id"]: row for row in (catalog.summaries() if how == "summaries" else catalog.listing())}


@pytest.mark.parametrize("read", ["summaries", "listing"])
@pytest.mark.parametrize("how", ["live-writer", "resumed-attempt"])
def test_a_run_appended_to_after_its_summary_shows_its_new_steps_and_metrics(store_root, settled, how, read):
    """The issue's must-hold: the next listing after an append sees it (whole
    summaries, and the store-level index a table reads)."""
    if how == "live-writer":
        writer = live_writer(store_root, "r", range(1, 11))
        assert listed_rows(store_root, read)["r"]["last_step"] == 10  # summarised by the reader, kept
        assert (store_root / "r" / SUMMARY_JSON).exists()
        writer.add_scalars(step=np.arange(11, 26), name="loss", value=np.arange(11, 26) / 10)
        writer.flush()
    else:
        write_run(store_root, "r", steps=range(1, 11))
        assert listed_rows(store_root, read)["r"]["last_step"] == 10
        writer = live_writer(store_root, "r", range(11, 26))  # a new attempt continuing the run
    listed = listed_rows(store_root, read)["r"]
    assert listed["last_step"] == 25
    assert listed["num_steps"] == 25
    assert listed["metrics"]["train"]["loss"]["last"] == pytest.approx(2.5)
    assert summary_file(store_root, "r")["last_step"] == 25  # and kept
    assert_matches_oracle(Catalog(store_root).summary("r"), Store(store_root))
    writer.close()


def test_a_resumed_attempt_over_recorded_steps_is_summarised_as_the_views_resolve_it(store_root):
    write_run(store_root, "r", steps=range(1, 21), value=1.0)
    write_run(store_root, "r", steps=range(11, 16), value=5.0)  # attempt 1 overrides steps 11.. of attempt 0
    store = Store(store_root)
    summary = store.catalog.summary("r")
    assert summary["last_step"] == 15
    assert summary["num_steps"] == 15
    assert summary["metrics"]["train"]["loss"]["last"] == 5.0
    assert_matches_oracle(summary, store)


def test_compaction_keeps_the_summary_and_changes_its_fingerprint(store_root):
    write_run(store_root, "r", steps=range(1, 31), names=("loss", "accuracy"), flushes=3)
    store = Store(store_root)
    before = store.catalog.summary("r")
    assert compact_run(store, "r")["scalars"] == 3
    after = summary_file(store_root, "r")  # rewritten by the compaction
    assert after["segments"]["scalars"][0].startswith("c-")
    assert after["fingerprint"] != before["fingerprint"]
    for key in ("last_step", "num_steps", "metrics"):
        assert after[key] == before[key]


@pytest.mark.parametrize("damage", ["missing", "corrupt", "other-format"])
def test_a_missing_or_corrupt_summary_is_rebuilt_with_a_warning_naming_it(store_root, damage):
    write_run(store_root, "good", steps=range(1, 6))
    write_run(store_root, "hurt", steps=range(1, 8))
    Catalog(store_root).listing()  # the store-level index holds both runs before the damage
    path = store_root / "hurt" / SUMMARY_JSON
    if damage == "missing":
        path.unlink()
    elif damage == "corrupt":
        path.write_text('{"summary_format": 1, "run_id": "hurt", "last_st')
    else:
        path.write_text(json.dumps({"summary_format": 0, "run_id": "hurt"}))
    with pytest.warns(RuntimeWarning) as caught:
        listed = {s["run_id"]: s for s in Catalog(store_root).listing()}
    assert listed["hurt"]["last_step"] == 7 and listed["good"]["last_step"] == 5
    messages = [str(w.message) for w in caught]
    assert any("hurt" in m for m in messages) and not any("good" in m for m in messages), messages
    assert summary_file(store_root, "hurt")["last_step"] == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt once: the next listing is quiet
        Catalog(store_root).summaries()
        Catalog(store_root).listing()


def test_runs_of_an_older_version_are_summarised_on_first_read_and_kept(tmp_path):
    """Files without series footers (the sample runs predate them): the exact query, once."""
    root = tmp_path / "runs"
    shutil.copytree(SAMPLE_STORE, root, ignore=shutil.ignore_patterns(SUMMARY_JSON, FINDINGS_JSON))
    store = Store(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # they are finished runs without summaries: one warning names them
        summaries = store.catalog.summaries()
    assert len(summaries) == len([path for path in SAMPLE_STORE.iterdir() if path.is_dir()])
    for summary in summaries[:4]:
        assert_matches_oracle(summary, store)
        assert (root / summary["run_id"] / SUMMARY_JSON).exists()


def test_a_read_only_catalog_computes_without_writing(store_root):
    write_run(store_root, "r", steps=range(1, 6))
    (store_root / "r" / SUMMARY_JSON).unlink()
    with pytest.warns(RuntimeWarning, match="r"):
        summary = Catalog(store_root, write=False).summary("r")
    assert summary["last_step"] == 5
    assert not (store_root / "r" / SUMMARY_JSON).exists()


def test_a_running_run_whose_heartbeat_stopped_lists_as_crashed(store_root):
    writer = live_writer(store_root, "r", range(1, 4))
    assert Catalog(store_root).summary("r")["status"] == "running"
    assert Catalog(store_root, stale_after_s=-1).summary("r")["status"] == "crashed"
    writer.close()
    assert Catalog(store_root, stale_after_s=-1).summary("r")["status"] == "finished"


def test_hyperparameters_are_flattened_and_the_runs_frame_comes_from_the_catalog(store_root):
    config = {"lr": 0.06796311435460393, "optimizer": {"name": "adam", "betas": [0.9, 0.99]}}
    write_run(store_root, "r", steps=range(1, 6), config=config)
    summary = Catalog(store_root).summary("r")
    assert summary["hyperparameters"] == {"lr": 0.06796311435460393, "optimizer.name": "adam",
                                          "optimizer.betas": "[0.9, 0.99]"}
    frame = Store(store_root).runs()
    assert frame.loc[0, "last_step"] == 5 and frame.loc[0, "final_train_loss"] == 5.0
    assert frame.loc[0, "config"] == config
