"""Faults found by attacking the store (issue #18), one regression test per kind.

Stray files in a run, two writers of one rank, a store that cannot be
written for a while, names Parquet cannot encode, hostile run.json, glob
characters in the store path, configs run.json cannot hold, and a first
flush that paid pyarrow's start-up cost.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.store.conftest import write_run

import traindoctor.store.files
import traindoctor.store.segments
from traindoctor.store.compact import compact_run
from traindoctor.store.errors import StoreError
from traindoctor.store.format import WRITERS_FOLDER, clean_text, segment_names, writer_file_name
from traindoctor.store.reader import Store
from traindoctor.store.run_data import load_run
from traindoctor.store.segments import RunWriter

REPO = Path(__file__).resolve().parents[2]
STEPS = 20


def _messages(caught) -> list[str]:
    return [str(warning.message) for warning in caught]


def _loss_steps(store: Store, run_id: str) -> list[int]:
    return sorted(store.scalars([run_id], names=["loss"])["step"].tolist())


# ----------------------------------------------------------- stray files (1)

def _good_segment(root: Path) -> Path:
    return sorted((root / "good" / "scalars").glob("*.parquet"))[0]


def _scalars(run_id: str | pa.Array = "good", **overrides) -> pa.Table:
    """A one-row scalars table with the right names; ``overrides`` swap columns."""
    columns = {
        "run_id": pa.array([run_id]) if isinstance(run_id, str) else run_id, "rank": pa.array([0], pa.int32()), "attempt": pa.array([0], pa.int32()),
        "step": pa.array([5], pa.int64()), "split": pa.array(["train"]), "name": pa.array(["loss"]),
        "value": pa.array([1.0]),
    }
    return pa.table({**columns, **overrides})


STRAY_FILES = [
    pytest.param("scalars", lambda root: _scalars(value=pa.array([[1.0, 2.0]])), id="value-as-list"),
    pytest.param("scalars", lambda root: _scalars(value=pa.array(["0.5"])), id="value-as-text"),
    pytest.param("scalars", lambda root: _scalars(rank=pa.array(["0"])), id="rank-as-text"),
    pytest.param("scalars", lambda root: _scalars(step=pa.array(["5"])), id="step-as-text"),
    pytest.param("scalars", lambda root: _scalars(step=pa.array([5.0])), id="step-as-float"),
    pytest.param("scalars", lambda root: _scalars(rank=pa.array([0], pa.int64())), id="rank-as-int64"),
    pytest.param("scalars", lambda root: _scalars(run_id="other"), id="another-run-id"),
    pytest.param("scalars", lambda root: pq.read_table(next((root / "other" / "scalars").glob("*.parquet"))),
                 id="another-runs-segment"),
    pytest.param("scalars", lambda root: pa.concat_tables([_scalars(), _scalars(run_id="other")]),
                 id="mixed-run-ids"),
    pytest.param("scalars", lambda root: _scalars(run_id=pa.array([None], pa.string())), id="null-run-id"),
    pytest.param("events", lambda root: pa.table({"run_id": ["good"], "kind": pa.array([3])}), id="event-kind-as-int"),
    pytest.param("confusion", lambda root: pa.table({
        "run_id": ["good"], "step": pa.array([1], pa.int64()), "true_class": pa.array([0], pa.int32()),
        "pred_class": pa.array([0], pa.int32()), "count": pa.array([1.5])}), id="count-as-float"),
]


@pytest.mark.parametrize("table, stray", STRAY_FILES)
def test_a_stray_parquet_file_is_skipped_alone_and_the_run_reads_whole(store_root, table, stray):
    """Regression: a file with the right column names and another type made
    the reader blame and skip every good segment (the run read back empty),
    or crashed runs, diagnose and compact; one with another run_id was counted."""
    write_run(store_root, "good", steps=range(1, STEPS + 1), flushes=4, names=("loss", "accuracy"))
    write_run(store_root, "other", steps=range(1, 4))
    with RunWriter(store_root, run_id="good", background=False) as writer:  # an event, a confusion matrix
        writer.add_confusion(step=STEPS, counts=[[2, 1], [0, 3]])
    stray_path = store_root / "good" / table / "0-0-99999999.parquet"
    pq.write_table(stray(store_root), stray_path)

    store = Store(store_root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _loss_steps(store, "good") == list(range(1, STEPS + 1))
        assert store.confusion(["good"])["count"].sum() == 6
        assert store.events(["good"])["kind"].tolist() == ["resumed"]
        runs = store.runs().set_index("run_id")
        assert runs.loc["good", "last_step"] == STEPS and runs.loc["good", "num_steps"] == STEPS
        run = load_run(store, "good")
        assert len(run.series("loss")) == STEPS
        assert compact_run(store, "good")["scalars"] == 4  # the good files merge; a stray one stays aside
        assert _loss_steps(store, "good") == list(range(1, STEPS + 1))
        assert store.confusion(["good"])["count"].sum() == 6
        assert stray_path.exists()
    naming = [m for m in _messages(caught) if stray_path.name in m]
    assert len(naming) == 1 and "not a traindoctor" in naming[0], _messages(caught)
    assert not [m for m in _messages(caught) if "skipping" in m and stray_path.name not in m], _messages(caught)


@pytest.mark.parametrize("command", [["runs"], ["runs", "--json"], ["diagnose", "good"], ["compact"]],
                         ids=["runs", "runs-json", "diagnose", "compact"])
def test_a_stray_file_with_text_columns_does_not_crash_the_cli(store_root, command, capsys):
    """Regression: `rank`, `step` or `value` as text crashed runs, diagnose and compact."""
    from traindoctor.cli import main

    write_run(store_root, "good", steps=range(1, STEPS + 1), flushes=2)
    pq.write_table(_scalars(rank=pa.array(["0"]), step=pa.array(["5"]), value=pa.array(["x"])),
                   store_root / "good" / "scalars" / "0-0-99999999.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*command, "--store", str(store_root)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_a_type_clash_that_reaches_duckdb_never_gets_good_files_skipped(store_root, monkeypatch):
    """Regression: DuckDB names the file it was reading when another file's
    rows failed the cast; the reader skipped that good file, then the next."""
    write_run(store_root, "good", steps=range(1, STEPS + 1), flushes=4)
    pq.write_table(_scalars(value=pa.array([[1.0, 2.0]])), store_root / "good" / "scalars" / "0-0-99999999.parquet")
    monkeypatch.setattr(traindoctor.store.files, "schema_problem", lambda schema, table: None)
    store = Store(store_root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(duckdb.Error):
            store.scalars(["good"])
    assert not [m for m in _messages(caught) if "skipping" in m], _messages(caught)


# ------------------------------------------------------ same-rank writers (2)

def test_two_live_writers_of_one_rank_keep_every_row_and_name_each_other(store_root):
    """Regression: two writers of one run and rank (ranks sharing an id before
    init_process_group, a restarted job beside a live one) took the same
    segment names and overwrote each other's files."""
    write_run(store_root, "shared", steps=range(1, 2))  # rank 0 made the run
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = RunWriter(store_root, run_id="shared", rank=1, background=False)
        second = RunWriter(store_root, run_id="shared", rank=1, background=False)
        assert first.attempt == second.attempt == 0  # both found no files of rank 1
        for step in range(1, STEPS + 1):
            first.add_scalars(step=step, name="loss", value=1.0)
            second.add_scalars(step=step, name="loss", value=2.0)
            (first if step % 2 else second).flush()
        first.heartbeat()  # the older writer notices the newer one at its next heartbeat
        first.close()
        second.close()
    rows = Store(store_root).query(
        "SELECT value, count(*) AS n FROM scalars_raw WHERE rank = 1 GROUP BY value ORDER BY value")
    assert rows["n"].tolist() == [STEPS, STEPS]  # every row of both writers
    conflicts = [m for m in _messages(caught) if "is also recording rank 1" in m]
    assert len(conflicts) == 2
    assert first.token in conflicts[0] and second.token in conflicts[0]  # each warning names both
    events = Store(store_root).events(["shared"], kinds=["concurrent_writer"])
    assert len(events) == 2 and set(events["rank"]) == {1}
    assert not list((store_root / "shared" / WRITERS_FOLDER).iterdir())  # each removed its heartbeat file


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize(
    "host, pid, age_s, warns",
    [
        pytest.param("this", "dead", 0, False, id="killed-on-this-host"),
        pytest.param("this", "alive", 3 * 3600, False, id="silent-for-hours"),
        pytest.param("this", "alive", 0, True, id="alive-on-this-host"),
        pytest.param("other-host", "dead", 0, True, id="fresh-on-another-host"),
    ],
)
def test_only_a_live_writer_of_the_same_rank_is_named(store_root, host, pid, age_s, warns):
    write_run(store_root, "r", steps=range(1, 3))
    folder = store_root / "r" / WRITERS_FOLDER
    other = folder / writer_file_name(0, "0123456789abcdef")
    other.write_text(json.dumps({
        "rank": 0, "attempt": 0, "writer": "0123456789abcdef", "stale_after_s": 60.0,
        "pid": _dead_pid() if pid == "dead" else os.getpid(),
        "host": socket.gethostname() if host == "this" else host,
    }))
    os.utime(other, (time.time() - age_s, time.time() - age_s))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RunWriter(store_root, run_id="r", background=False).close()
    named = [m for m in _messages(caught) if "0123456789abcdef" in m]
    assert bool(named) == warns, _messages(caught)
    if not warns and host == "this":
        assert not other.exists()  # a dead writer's file is cleared away


# ------------------------------------------------------------ failed flushes (3)

def Outage(kind: str, run_dir: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: N802 (stands for the class)
    """benchmarks/faults.py's outage of one run's store, installed for this test only."""
    outage = _faults_benchmark().Outage(kind, run_dir)
    monkeypatch.setattr(traindoctor.store.segments, "pq", outage.proxy)
    return outage


OUTAGES = ["file-in-place-of-folder", "disk-full", "read-only", "permission-denied"]


def _add_steps(writer: RunWriter, steps: range) -> None:
    writer.add_scalars(step=np.array(steps), name="loss", value=np.array(steps, dtype=float))


@pytest.mark.parametrize("kind", OUTAGES)
def test_rows_of_a_failed_flush_are_kept_and_published_when_the_store_is_back(store_root, monkeypatch, kind):
    """Regression: each failed flush threw its rows away; the run closed as
    finished with an unmarked gap."""
    writer = RunWriter(store_root, run_id="r", background=False)
    outage = Outage(kind, writer.run_dir, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _add_steps(writer, range(1, 6))
        writer.flush()
        outage.start()
        for chunk in (range(6, 11), range(11, 16)):
            _add_steps(writer, chunk)
            with pytest.raises(StoreError, match="cannot be written"):
                writer.flush()
        outage.end()
        _add_steps(writer, range(16, 21))
        writer.flush()
        writer.close()
    assert _loss_steps(Store(store_root), "r") == list(range(1, 21))
    assert writer.dropped == [] and Store(store_root).events(["r"], kinds=["rows_dropped"]).empty
    assert [m for m in _messages(caught) if "written again" in m and "no rows were lost" in m]
    assert not [p for p in (store_root / "r" / "scalars").iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("kind", OUTAGES)
def test_rows_beyond_the_unpublished_budget_are_dropped_and_recorded_in_the_run(store_root, monkeypatch, kind):
    """Regression: lost rows left no mark in the run; now each loss is an
    event and a run.json entry that say how many rows of which steps."""
    writer = RunWriter(store_root, run_id="r", background=False, max_unpublished_rows=10)
    outage = Outage(kind, writer.run_dir, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _add_steps(writer, range(1, 6))
        writer.flush()
        outage.start()
        for first in (6, 11, 16, 21):  # 20 rows wait; the budget keeps the newest 10
            _add_steps(writer, range(first, first + 5))
            with pytest.raises(StoreError):
                writer.flush()
        outage.end()
        writer.flush()
        writer.close()
    store = Store(store_root)
    assert _loss_steps(store, "r") == [*range(1, 6), *range(16, 26)]
    dropped = [(record["first_step"], record["last_step"], record["rows"]) for record in writer.dropped]
    assert dropped == [(6, 10, 5), (11, 15, 5)]
    events = load_run(store, "r").events
    details = events["detail"][events["kind"] == "rows_dropped"].tolist()
    assert len(details) == 2 and "5 scalars rows of steps 6-10" in details[0] and "11-15" in details[1]
    meta = store.run_meta("r")
    assert [(entry["first_step"], entry["rows"]) for entry in meta["rows_dropped"]] == [(6, 5), (11, 5)]
    assert meta["status"] == "finished"
    assert [m for m in _messages(caught) if "5 scalars rows of steps 6-10" in m]


def test_close_retries_a_broken_store_then_records_what_it_dropped(store_root, monkeypatch):
    writer = RunWriter(store_root, run_id="r", background=False, close_timeout_s=0.3)
    outage = Outage("file-in-place-of-folder", writer.run_dir, monkeypatch)
    _add_steps(writer, range(1, 6))
    writer.flush()
    outage.start()
    _add_steps(writer, range(6, 11))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer.close()  # never raises
    assert [(r["first_step"], r["last_step"]) for r in writer.dropped] == [(6, 10)]
    assert [m for m in _messages(caught) if "5 scalars rows of steps 6-10" in m]
    outage.end()
    meta = Store(store_root).run_meta("r")
    assert meta["status"] == "finished" and meta["rows_dropped"][0]["rows"] == 5


def test_the_background_thread_backs_off_from_a_broken_store(store_root, monkeypatch):
    """A store that keeps failing is retried at doubling intervals, not at every tick."""
    writer = RunWriter(store_root, run_id="r", flush_every_s=0.02, heartbeat_every_s=3600)
    outage = Outage("disk-full", writer.run_dir, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outage.start()
        _add_steps(writer, range(1, 6))
        started = time.monotonic()
        deadline = started + 60
        while outage.attempts < 5:
            assert time.monotonic() < deadline, "the writer stopped retrying"
            time.sleep(0.01)
        # Four waits of 0.02, 0.04, 0.08 and 0.16 s at least (a loaded machine only adds).
        assert time.monotonic() - started >= 0.02 + 0.04 + 0.08 + 0.16
        outage.end()
        writer.close()
    assert _loss_steps(Store(store_root), "r") == list(range(1, 6))


# ---------------------------------------------------------------- bad names (4)

BAD_NAMES = [
    pytest.param({"name": "acc_\udcff"}, id="lone-surrogate-name"),
    pytest.param({"name": "acc\x00"}, id="nul-in-name"),
    pytest.param({"split": "val_\ud800"}, id="lone-surrogate-split"),
    pytest.param({"layer": ("fc.weight", "fc\udcff.bias")}, id="lone-surrogate-layer"),
]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_name_parquet_cannot_encode_loses_only_itself(store_root, bad):
    """Regression: one such name failed the whole flush: every row of it was lost."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with RunWriter(store_root, run_id="r", background=False) as writer:
            _add_steps(writer, range(1, 51))
            columns = {"name": "acc", "split": "train", "layer": None, **bad}
            length = len(columns["layer"]) if isinstance(columns["layer"], tuple) else 1
            writer.add_scalars(step=50, value=np.full(length, 0.5), **columns)
            writer.add_event("nan_loss\udcff", "detail quoting /data/\udcff.txt", step=3)
            writer.add_confusion(step=50, counts=[[1, 0], [0, 1]], split="val\x00")
    store = Store(store_root)
    assert _loss_steps(store, "r") == list(range(1, 51))
    stored = store.scalars(["r"], rank=0)
    stored = stored[stored["step"].eq(50) & stored["name"].ne("loss")]
    expected = {key: (tuple(clean_text(v) for v in value) if isinstance(value, tuple) else clean_text(value))
                for key, value in bad.items()}
    for key, value in expected.items():
        got = tuple(stored[key]) if isinstance(value, tuple) else stored[key].iloc[0]
        assert got == value
    assert store.events(["r"])["kind"].tolist() == ["nan_loss\ufffd"]
    assert store.confusion(["r"])["split"].unique().tolist() == ["val\ufffd"]
    given = next(v for value in bad.values() for v in (value if isinstance(value, tuple) else (value,))
                 if clean_text(v) != v)
    assert len([m for m in _messages(caught) if repr(given) in m]) == 1, _messages(caught)


# -------------------------------------------- run.json, store paths, configs (13)

def test_a_lone_surrogate_in_run_json_does_not_break_listing(store_root):
    """Regression: JSON's \\udcff escape (how `import hf` stored a non-UTF-8
    folder name) decoded to a string nothing downstream could encode."""
    write_run(store_root, "r", steps=range(1, 4))
    meta_path = store_root / "r" / "run.json"
    meta = json.loads(meta_path.read_text())
    meta.update(name="run-\udcff", config={"path\udcff": "/data/\udcff"})
    meta_path.write_text(json.dumps(meta))  # ensure_ascii: the escape, as the importer wrote it
    store = Store(store_root)
    runs = store.runs()
    assert runs["name"].tolist() == ["run-\ufffd"] and runs["config"][0] == {"path\ufffd": "/data/\ufffd"}
    with store.connect() as con:
        assert con.execute("SELECT name FROM runs").fetchall() == [("run-\ufffd",)]
    assert store.resolve("run-\ufffd") == "r"
    assert load_run(store, "r").name == "run-\ufffd"


def test_a_folder_name_that_is_not_utf8_is_skipped_with_a_warning(store_root):
    write_run(store_root, "good", steps=range(1, 4))
    bad = os.path.join(os.fsencode(store_root), b"bad-\xff")
    os.mkdir(bad)
    with open(os.path.join(bad, b"run.json"), "w") as handle:
        handle.write('{"name": "x"}')
    store = Store(store_root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.runs()["run_id"].tolist() == ["good"]
    assert [m for m in _messages(caught) if "bad-" in m and "not a run id" in m]


HOSTILE_META = [
    pytest.param({"heartbeat_at": "soon", "status": "running"}, id="text-heartbeat"),
    pytest.param({"created_at": "yesterday"}, id="text-created-at"),
    pytest.param({"task": {"num_classes": "ten"}}, id="text-num-classes"),
    pytest.param({"task": {"num_classes": 10**30}}, id="huge-num-classes"),
    pytest.param({"config": [1, 2], "env": "x", "attempts": 3}, id="lists-for-objects"),
    pytest.param({"name": 5, "status": None}, id="number-name"),
]


@pytest.mark.parametrize("fields", HOSTILE_META)
def test_run_json_with_values_of_the_wrong_type_still_lists(store_root, fields):
    write_run(store_root, "odd", steps=range(1, 4))
    write_run(store_root, "good", steps=range(1, 4))
    meta_path = store_root / "odd" / "run.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), **fields}))
    store = Store(store_root)
    runs = store.runs()
    assert sorted(runs["run_id"]) == ["good", "odd"]
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM runs").fetchall() == [(2,)]
    assert len(load_run(store, "odd").scalars) == 3


@pytest.mark.parametrize(
    "folder, sibling",
    [("runs*", "runs-copy"), ("runs?", "runsX"), ("runs[1]", "runs1"), ("a[*]b", "a*b")],
    ids=["star", "question-mark", "bracket", "bracket-star"],
)
def test_glob_characters_in_the_store_path_read_only_that_folder(tmp_path, folder, sibling):
    """Regression: DuckDB expanded the store path as a pattern, so a matching
    sibling folder's copy of the run doubled every row."""
    root = tmp_path / folder
    write_run(root, "r", steps=range(1, STEPS + 1), flushes=3)
    shutil.copytree(root, tmp_path / sibling)
    for path in (tmp_path / sibling / "r" / "scalars").glob("*.parquet"):  # same names, other steps
        table = pq.read_table(path)
        steps = pa.array(table["step"].to_numpy() + 1000)
        pq.write_table(table.set_column(table.schema.get_field_index("step"), "step", steps), path)
    store = Store(root)
    assert _loss_steps(store, "r") == list(range(1, STEPS + 1))
    compact_run(store, "r")
    assert _loss_steps(store, "r") == list(range(1, STEPS + 1))
    (merged,) = segment_names(p.name for p in (root / "r" / "scalars").iterdir())
    assert pq.read_metadata(root / "r" / "scalars" / merged).num_rows == STEPS


def _self_containing() -> dict:
    config = {"a": 1}
    config["self"] = config
    return config


@pytest.mark.parametrize(
    "config",
    [{("a", "b"): 1}, {1: "x", "a": "y"}, _self_containing()],
    ids=["tuple-key", "unsortable-keys", "contains-itself"],
)
def test_a_config_run_json_cannot_hold_fails_before_any_folder_is_made(store_root, config):
    """Regression: RunWriter (and so Probe) raised, but left a run folder behind."""
    with pytest.raises(TypeError, match="config"):
        RunWriter(store_root, name="x", config=config, background=False)
    assert not store_root.exists()


# ------------------------------------------------------------ first flush (15)

_FIRST_FLUSH = textwrap.dedent("""
    import sys
    from traindoctor.store.segments import RunWriter
    writer = RunWriter(sys.argv[1], run_id="r", flush_every_s=3600, heartbeat_every_s=3600)
    before = set(sys.modules)
    writer.add_scalars(step=1, name="loss", value=1.0)
    writer.add_confusion(step=1, counts=[[1, 0], [0, 1]])
    writer.add_event("nan_loss", "x", step=1)
    writer.flush()
    print(sorted(set(sys.modules) - before))
    writer.close()
""")


def test_the_first_flush_imports_nothing_so_it_lands_on_the_flush_clock(tmp_path):
    """Regression: pyarrow imported pandas inside the first flush (0.6 s idle,
    seconds under load): the first segment came ~3 s after step 1, not 2 s."""
    result = subprocess.run([sys.executable, "-c", _FIRST_FLUSH, str(tmp_path / "runs")], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------- fault matrix

def _faults_benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("faults_benchmark", REPO / "benchmarks" / "faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_reduced_fault_matrix_loses_nothing_unrecorded(tmp_path):
    """benchmarks/faults.py, smaller: kills, a 1 s outage of each kind, a small
    budget, two same-rank writers, four writers beside a compacting reader.

    Structure only (no gap, no row twice, every loss recorded): how late a
    killed writer's last flush may be is the benchmark's to measure, so the
    kills get a slack no loaded machine exceeds.
    """
    faults = _faults_benchmark()
    results = faults.run_matrix(tmp_path, kills=3, outage_s=1.0, writers=4, flush_every_s=0.2, budget_rows=200,
                                slack_s=60.0, report=lambda result: None)
    table = "\n".join([faults.HEADER, *map(faults.format_row, results)])
    assert all(result.ok for result in results), table
    budget = next(result for result in results if "budget" in result.case)
    assert budget.lost == budget.recorded, table
