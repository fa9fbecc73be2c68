"""A killed writer, and junk in the store, never break reading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.store.conftest import write_run

import traindoctor.store.files
from traindoctor.store.compact import compact_run
from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter

REPO = Path(__file__).resolve().parents[2]

# Records 10 steps per chunk, publishes, and says which steps are now published.
_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from traindoctor.store.segments import RunWriter
    writer = RunWriter(sys.argv[1], run_id="victim", flush_every_s=0.05, heartbeat_every_s=0.05)
    step = 0
    while True:
        steps = np.arange(step + 1, step + 11)
        writer.add_scalars(step=steps, name="loss", value=steps * 0.5)
        writer.flush()
        step += 10
        print(step, flush=True)
        time.sleep(0.01)
""")


@pytest.mark.slow
def test_sigkill_keeps_published_rows_and_shows_crashed(tmp_path):
    root = tmp_path / "runs"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(root)], cwd=REPO, stdout=subprocess.PIPE,
                             text=True)
    try:
        published = 0
        while published < 200:
            line = child.stdout.readline()
            assert line, "the writer process died on its own"
            published = int(line)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    store = Store(root)
    rows = store.scalars(["victim"], names=["loss"])
    steps = rows["step"].tolist()
    assert steps[:published] == list(range(1, published + 1))  # every published step, once each
    assert len(steps) == len(set(steps))
    assert (rows["value"] == rows["step"] * 0.5).all()
    # Any heartbeat is older than zero seconds: no sleep needed to see it stale.
    assert Store(root, stale_after_s=0).runs()["status"].tolist() == ["crashed"]
    assert Store(root, stale_after_s=3600).runs()["status"].tolist() == ["running"]


def _truncated_segment(folder: Path) -> None:
    good = next(folder.glob("*.parquet"))
    (folder / "0-0-99999998.parquet").write_bytes(good.read_bytes()[: good.stat().st_size // 2])


def _garbage_segment(folder: Path) -> None:
    (folder / "0-0-99999998.parquet").write_bytes(b"PAR1" + os.urandom(500) + b"PAR1")


def _empty_segment(folder: Path) -> None:
    (folder / "0-0-99999998.parquet").write_bytes(b"")


def _foreign_parquet(folder: Path) -> None:
    pq.write_table(pa.table({"something": [1, 2]}), folder / "0-0-99999998.parquet")


def _stray_text_file(folder: Path) -> None:
    (folder / "notes.txt").write_text("not a segment")


def _leftover_temporary(folder: Path) -> None:
    (folder / ".tmp-0-0-99999998.parquet").write_bytes(b"PAR1half")


@pytest.mark.parametrize(
    ("damage", "warns"),
    [
        pytest.param(_truncated_segment, True, id="truncated-segment"),
        pytest.param(_garbage_segment, True, id="garbage-segment"),
        pytest.param(_empty_segment, True, id="empty-file"),
        pytest.param(_foreign_parquet, True, id="foreign-parquet"),
        pytest.param(_stray_text_file, False, id="stray-text-file"),
        pytest.param(_leftover_temporary, False, id="leftover-temporary-file"),
    ],
)
@pytest.mark.parametrize("table", ["scalars", "events"])
def test_bad_file_in_a_run_is_skipped_with_a_warning_naming_it(store_root, damage, warns, table):
    write_run(store_root, "good", steps=range(1, 11))
    write_run(store_root, "other", steps=range(1, 4))
    with RunWriter(store_root, run_id="good", background=False) as writer:  # a resumed attempt: an event
        writer.add_event("nan_loss", "", step=4)
    folder = store_root / "good" / table
    damage(folder)
    store = Store(store_root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.scalars(["good"], names=["loss"])["step"].tolist() == list(range(1, 11))
        assert len(store.scalars(["good", "other"])) == 13
        assert store.events(["good", "other"])["kind"].tolist() == ["resumed", "nan_loss"]
        assert len(store.runs()) == 2
    named = [str(w.message) for w in caught if "99999998" in str(w.message)]
    assert bool(named) == warns, [str(w.message) for w in caught]


def test_garbage_run_json_and_stray_folders_are_skipped(store_root):
    write_run(store_root, "good", steps=range(1, 6))
    (store_root / "broken").mkdir()
    (store_root / "broken" / "run.json").write_text("{not json")
    (store_root / "broken" / "scalars").mkdir()
    (store_root / "not-a-run").mkdir()
    (store_root / "not-a-run" / "photo.jpg").write_bytes(b"\xff\xd8")
    (store_root / ".hidden").mkdir()
    (store_root / "loose-file.txt").write_text("hello")
    store = Store(store_root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.runs()["run_id"].tolist() == ["good"]
        with store.connect() as con:
            assert con.execute("SELECT count(*) FROM scalars").fetchall() == [(5,)]
            assert con.execute("SELECT run_id FROM runs").fetchall() == [("good",)]
    messages = [str(w.message) for w in caught]
    assert any("broken" in m and "run.json" in m for m in messages), messages
    assert any("not-a-run" in m for m in messages), messages
    assert not any(".hidden" in m or "loose-file" in m for m in messages), messages


def test_corrupt_data_behind_a_valid_footer_is_skipped_inside_the_query(store_root):
    """Regression: pages overwritten behind an intact footer failed the whole query with
    a DuckDB error naming no file; the old test's file lacked a rank column, so its rows
    were filtered out either way and the failure never showed."""
    writer = RunWriter(store_root, run_id="good", name="good", background=False)
    writer.add_scalars(step=[1, 2, 3, 4, 5], name="loss", value=[1.0] * 5)
    writer.flush()
    writer.add_scalars(step=[7, 8, 9], name="loss", value=[1.0, 2.0, 3.0])
    writer.flush()
    writer.close()
    corrupt = sorted((store_root / "good" / "scalars").glob("*.parquet"))[-1]
    data = bytearray(corrupt.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    data[4:footer_start] = b"\xab" * (footer_start - 4)  # every page garbage, footer intact
    corrupt.write_bytes(bytes(data))
    pq.read_schema(corrupt)  # the footer still reads: only a query finds the damage

    store = Store(store_root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps = store.scalars(["good"], names=["loss"])["step"].tolist()
    assert steps == [1, 2, 3, 4, 5]
    assert any(corrupt.name in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_a_mistake_in_user_sql_is_raised_not_blamed_on_a_file(store_root):
    write_run(store_root, "good", steps=range(1, 6))
    with pytest.raises(duckdb.Error):
        Store(store_root).query("SELECT no_such_column FROM scalars", runs=["good"])


def test_a_run_being_created_is_silently_not_listed_yet(store_root):
    for table in ("scalars", "confusion", "events"):
        (store_root / "starting" / table).mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Store(store_root).run_ids() == []


def test_run_json_heartbeat_decides_running_or_crashed(store_root):
    write_run(store_root, "r1")
    meta_path = store_root / "r1" / "run.json"
    meta = json.loads(meta_path.read_text())
    meta.update(status="running", heartbeat_at=time.time() - 100)
    meta_path.write_text(json.dumps(meta))
    assert Store(store_root, stale_after_s=50).runs()["status"].tolist() == ["crashed"]
    assert Store(store_root, stale_after_s=500).runs()["status"].tolist() == ["running"]


def test_the_footer_cache_forgets_deleted_files(store_root, monkeypatch):
    monkeypatch.setattr(traindoctor.store.files, "_MAX_CHECKED_FILES", 3)
    write_run(store_root, "r", steps=range(1, 41), flushes=4)
    reader = Store(store_root)
    assert len(reader.scalars(["r"])) == 40
    compact_run(reader, "r")
    assert len(reader.scalars(["r"])) == 40
    write_run(store_root, "s", steps=range(1, 3))
    assert len(reader.scalars(["s"])) == 2
    assert all(Path(key.path).exists() for key in reader._checked)
