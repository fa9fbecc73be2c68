"""Writers, compaction and readers at once: no row seen twice, none lost."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.store.conftest import duplicate_rows, write_run

from traindoctor.store.compact import _LOCK_NAME, _merge, compact_if_fragmented, compact_run, compact_store
from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter

WRITERS = 4
CHUNKS = 30
STEPS_PER_CHUNK = 20
LAYERS = ("fc1.weight", "fc1.bias", "fc2.weight")
ROWS_PER_RUN = CHUNKS * STEPS_PER_CHUNK * (1 + len(LAYERS))

_COUNT_SQL = """
    SELECT run_id, count(*) AS n,
           count(DISTINCT (rank, step, split, name, coalesce(layer, '<global>'))) AS distinct_keys
    FROM scalars GROUP BY run_id ORDER BY run_id
"""


def _record(root: str, run_id: str) -> None:
    """One training process: chunks of steps, published by the background thread."""
    with RunWriter(root, run_id=run_id, name=run_id, flush_every_s=0.02) as writer:
        for chunk in range(CHUNKS):
            steps = np.arange(chunk * STEPS_PER_CHUNK + 1, (chunk + 1) * STEPS_PER_CHUNK + 1)
            writer.add_scalars(step=steps, name="loss", value=steps * 0.1)
            for step in steps:
                writer.add_scalars(step=int(step), name="grad_norm", layer=LAYERS, value=np.ones(len(LAYERS)))
            time.sleep(0.01)


@pytest.mark.slow
def test_four_writer_processes_and_a_polling_reader(store_root):
    store_root.mkdir()
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_record, args=(str(store_root), f"w{i}")) for i in range(WRITERS)]
    for process in writers:
        process.start()
    store = Store(store_root)
    seen: dict[str, int] = {}
    polls = 0
    try:
        while any(process.is_alive() for process in writers) or polls == 0:
            counts = store.query(_COUNT_SQL)
            polls += 1
            assert (counts["n"] == counts["distinct_keys"]).all(), counts
            for run_id, n in zip(counts["run_id"], counts["n"]):
                assert n >= seen.get(run_id, 0), f"{run_id} went from {seen[run_id]} rows to {n}"
                seen[run_id] = n
    finally:
        for process in writers:
            process.join(timeout=120)
    assert [process.exitcode for process in writers] == [0] * WRITERS
    final = store.query(_COUNT_SQL)
    assert final["run_id"].tolist() == [f"w{i}" for i in range(WRITERS)]
    assert final["n"].tolist() == [ROWS_PER_RUN] * WRITERS
    assert (final["distinct_keys"] == final["n"]).all()
    assert set(store.runs()["status"]) == {"finished"}
    assert polls > 1


def _poll_until(store: Store, done, published, started, errors: list) -> int:
    """Count rows until ``done``; every count must lie between what was
    surely published before it and what may have been by its end, with no
    key twice. Returns the polls made."""
    polls = 0
    while not done.is_set() or polls == 0:
        try:
            before = published()
            counts = store.query(_COUNT_SQL)
            after = started()
            total = int(counts["n"].sum())
            assert (counts["n"] == counts["distinct_keys"]).all(), f"duplicates: {counts}"
            assert before <= total <= after, f"saw {total} rows while {before}..{after} were published"
        except BaseException as error:  # reported by the main thread
            errors.append(error)
            return polls
        polls += 1
    return polls


@pytest.mark.slow
def test_compaction_while_a_reader_polls_loses_and_duplicates_nothing(store_root):
    run_ids = [f"run{i}" for i in range(5)]
    for run_id in run_ids:
        write_run(store_root, run_id, steps=range(1, 301), layers=LAYERS[:2], flushes=30)
    total = 5 * 300 * 3
    store = Store(store_root)
    done, errors = threading.Event(), []
    poller = threading.Thread(target=lambda: errors.append(("polls", _poll_until(
        Store(store_root), done, lambda: total, lambda: total, errors))))
    poller.start()
    try:
        for _ in range(3):  # compact repeatedly; the later rounds find one file per table
            for run_id in run_ids:
                compact_run(store, run_id)
    finally:
        done.set()
        poller.join(timeout=120)
    failures = [e for e in errors if isinstance(e, BaseException)]
    assert not failures, failures[0]
    assert all(len(store.segment_files(run_id, "scalars")) == 1 for run_id in run_ids)
    assert int(store.query(_COUNT_SQL)["n"].sum()) == total


@pytest.mark.slow
def test_compaction_of_a_running_run_loses_nothing(store_root):
    writer = RunWriter(store_root, run_id="live", background=False)
    published, started = [0], [0]
    done, errors = threading.Event(), []

    def train() -> None:
        for chunk in range(60):
            steps = np.arange(chunk * 10 + 1, chunk * 10 + 11)
            writer.add_scalars(step=steps, name="loss", value=steps * 1.0)
            started[0] += len(steps)
            writer.flush()
            published[0] += len(steps)
            time.sleep(0.005)
        writer.close()

    def compact_repeatedly() -> None:
        while not done.is_set():
            try:
                compact_run(Store(store_root), "live")
            except BaseException as error:
                errors.append(error)
                return

    trainer = threading.Thread(target=train)
    compactor = threading.Thread(target=compact_repeatedly)
    trainer.start()
    compactor.start()
    polls = _poll_until(Store(store_root), _Joined(trainer), lambda: published[0], lambda: started[0], errors)
    trainer.join()
    done.set()
    compactor.join()
    assert not errors, errors[0]
    compact_run(Store(store_root), "live")
    rows = Store(store_root).scalars(["live"])
    assert rows["step"].tolist() == list(range(1, 601))
    assert polls > 0


class _Joined:
    """``is_set()`` once the thread has finished (an Event for _poll_until)."""

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread

    def is_set(self) -> bool:
        return not self.thread.is_alive()


def test_a_merged_file_hides_its_pieces_before_they_are_deleted(store_root):
    # A compaction that crashed after publishing, before deleting the pieces.
    write_run(store_root, "r", steps=range(1, 31), flushes=3)
    store = Store(store_root)
    pieces = store.segment_files("r", "scalars")
    _merge(pieces, store_root / "r" / "scalars", "scalars")
    assert all(piece.exists() for piece in pieces)
    assert duplicate_rows(store).empty
    assert store.scalars(["r"])["step"].tolist() == list(range(1, 31))
    compact_run(store, "r")  # cleans the leftovers up
    assert not any(piece.exists() for piece in pieces)
    assert store.scalars(["r"])["step"].tolist() == list(range(1, 31))


def test_a_live_compaction_lock_is_respected_and_a_dead_one_taken_over(store_root):
    write_run(store_root, "r", steps=range(1, 31), flushes=3)
    store = Store(store_root)
    lock = store_root / "r" / "scalars" / _LOCK_NAME
    lock.write_text(f'{{"pid": {os.getpid()}, "host": "{os.uname().nodename}", "at": {time.time()}}}')
    assert compact_run(store, "r")["scalars"] == 0  # a live process holds it
    assert len(store.segment_files("r", "scalars")) == 3
    dead = multiprocessing.get_context("spawn").Process(target=os.getpid)
    dead.start()
    dead.join()
    lock.write_text(f'{{"pid": {dead.pid}, "host": "{os.uname().nodename}", "at": {time.time()}}}')
    assert compact_run(store, "r")["scalars"] == 3
    assert not lock.exists()
    assert store.scalars(["r"])["step"].tolist() == list(range(1, 31))


def test_compact_store_merges_every_run_and_keeps_the_rows(store_root):
    for run_id in ("a", "b"):
        write_run(store_root, run_id, steps=range(1, 51), names=("loss", "accuracy"), layers=LAYERS, flushes=5)
    store = Store(store_root)
    before = store.scalars(["a", "b"])
    assert compact_store(store) == {"a": {"scalars": 5, "confusion": 0, "events": 0},
                                    "b": {"scalars": 5, "confusion": 0, "events": 0}}
    after = store.scalars(["a", "b"])
    assert after.equals(before)


@pytest.mark.parametrize(("flushes", "merged"), [pytest.param(3, 0, id="few-files"), pytest.param(8, 8, id="many")])
def test_compact_if_fragmented_merges_only_fragmented_tables(store_root, flushes, merged):
    write_run(store_root, "r", steps=range(1, 81), flushes=flushes)
    store = Store(store_root)
    assert compact_if_fragmented(store, "r", min_files=8) == {"scalars": merged, "confusion": 0, "events": 0}
    assert store.scalars(["r"])["step"].tolist() == list(range(1, 81))


def test_compaction_keeps_the_rows_of_a_foreign_segment_with_fewer_columns(store_root):
    write_run(store_root, "r", steps=range(1, 11), flushes=2)
    pq.write_table(pa.table({"run_id": ["r", "r"], "step": [11, 12], "name": ["loss", "loss"], "value": [0.5, 0.25]}),
                   store_root / "r" / "scalars" / "imported.parquet")
    store = Store(store_root)
    before = store.scalars(["r"], rank=None)
    assert compact_run(store, "r")["scalars"] == 3
    after = store.scalars(["r"], rank=None)
    assert after["step"].tolist() == before["step"].tolist() == list(range(1, 13))
    assert after["value"].tolist()[-2:] == [0.5, 0.25] and after["rank"].isna().sum() == 2
