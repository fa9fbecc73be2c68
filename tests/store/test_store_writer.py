"""The writer's background thread: timely flushes, errors that warn, never raise."""

from __future__ import annotations

import json
import shutil
import time
import warnings

import numpy as np
import pytest

from traindoctor.store.errors import StoreError
from traindoctor.store.format import check_run_id
from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter


def _visible(store: Store, run_id: str) -> int:
    return len(store.segment_files(run_id, "scalars"))


# Waits are for conditions, with deadlines far beyond any flush period: a
# loaded CI machine (load average 12-16) can hold a thread back for seconds.
# Whether a flush is on time is measured by benchmarks/faults.py, not here.
DEADLINE_S = 60.0


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {DEADLINE_S} s"
        time.sleep(0.01)


@pytest.mark.parametrize("flush_every_s", [0.3, 1.0])
def test_background_thread_publishes_without_an_explicit_flush(store_root, flush_every_s):
    store = Store(store_root)
    with RunWriter(store_root, run_id="r", flush_every_s=flush_every_s, heartbeat_every_s=60) as writer:
        writer.add_scalars(step=1, name="loss", value=1.0)
        _wait_until(lambda: _visible(store, "r") > 0, "the first row was not published")
        writer.add_scalars(step=2, name="loss", value=2.0)
        _wait_until(lambda: len(store.scalars(["r"])) == 2, "a later row was not published")


def test_heartbeat_is_refreshed_while_the_writer_lives(store_root):
    def heartbeat() -> float:
        return json.loads((store_root / "r" / "run.json").read_text())["heartbeat_at"]

    with RunWriter(store_root, run_id="r", heartbeat_every_s=0.1, flush_every_s=10):
        first = heartbeat()
        _wait_until(lambda: heartbeat() > first, "the heartbeat was not refreshed")
        assert Store(store_root, stale_after_s=3600).runs()["status"].tolist() == ["running"]
    assert Store(store_root, stale_after_s=0).runs()["status"].tolist() == ["finished"]


def test_a_removed_run_folder_warns_in_the_background_and_close_does_not_raise(store_root):
    writer = RunWriter(store_root, run_id="r", flush_every_s=0.05, heartbeat_every_s=0.05)
    with pytest.warns(RuntimeWarning, match="writing run r failed") as caught:
        # Renamed away first: the writer's heartbeat may write into the folder while
        # rmtree empties it ("Directory not empty"); a rename is one atomic step.
        (store_root / "r").rename(store_root / "r-gone")
        shutil.rmtree(store_root / "r-gone")
        writer.add_scalars(step=1, name="loss", value=1.0)
        _wait_until(lambda: writer.errors, "the background thread reported nothing")
        writer.add_scalars(step=2, name="loss", value=2.0)
        writer.close()  # must not raise
    assert writer.errors and writer.closed
    messages = [str(w.message) for w in caught if str(w.message).startswith("traindoctor")]
    assert all("writing run r failed" in m or "run r: 2 scalars rows of steps 1-2" in m for m in messages), messages
    assert sum(record["rows"] for record in writer.dropped) == 2  # the loss is counted, not silent


def test_exception_in_the_with_block_marks_the_run_crashed_with_the_traceback(store_root):
    with pytest.raises(ZeroDivisionError):
        with RunWriter(store_root, run_id="r", background=False) as writer:
            writer.add_scalars(step=1, name="loss", value=1.0)
            1 / 0
    store = Store(store_root)
    assert store.runs()["status"].tolist() == ["crashed"]
    crash = store.events(["r"], kinds=["crash"])
    assert "ZeroDivisionError" in crash["detail"].iloc[0]
    assert store.scalars(["r"])["value"].tolist() == [1.0]


def test_max_buffered_rows_forces_a_flush(store_root):
    store = Store(store_root)
    with RunWriter(store_root, run_id="r", flush_every_s=3600, max_buffered_rows=100) as writer:
        writer.add_scalars(step=np.arange(1, 151), name="loss", value=np.ones(150))
        _wait_until(lambda: _visible(store, "r") > 0, "a full buffer was not published")
    assert len(store.scalars(["r"])) == 150


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"step": [1, 2], "value": [1.0]}, "differ in length", id="ragged-chunks"),
        pytest.param({"step": 1, "value": 1.0, "layer": ("a", "b", "c"), "name": "x"}, None, id="broadcast-ok"),
    ],
)
def test_add_scalars_checks_chunk_lengths(store_root, kwargs, message):
    with RunWriter(store_root, run_id="r", background=False) as writer:
        kwargs = {"name": "loss", **kwargs}
        if message:
            with pytest.raises(ValueError, match=message):
                writer.add_scalars(**kwargs)
        else:
            writer.add_scalars(**kwargs)
    if not message:
        assert Store(store_root).scalars(["r"])["layer"].tolist() == ["a", "b", "c"]


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "", ".hidden", "sp ace", "é"])
def test_unsafe_run_ids_are_refused(run_id):
    with pytest.raises(StoreError, match="invalid run id"):
        check_run_id(run_id)


def test_confusion_must_be_square(store_root):
    with RunWriter(store_root, run_id="r", background=False) as writer:
        with pytest.raises(ValueError, match="square"):
            writer.add_confusion(step=1, counts=[[1, 2, 3]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Store(store_root).confusion(["r"]).empty


def test_a_caller_refilling_its_buffer_does_not_change_buffered_rows(store_root):
    buffer = np.array([1.0, 2.0, 3.0])
    steps = np.array([1, 2, 3])
    with RunWriter(store_root, run_id="r", background=False) as writer:
        writer.add_scalars(step=steps, name="loss", value=buffer)
        buffer[:] = -1.0  # the probe reuses its host buffer for the next flush
        steps += 3
        writer.add_scalars(step=steps, name="loss", value=buffer)
    got = Store(store_root).scalars(["r"])
    assert list(zip(got["step"], got["value"])) == [(1, 1.0), (2, 2.0), (3, 3.0), (4, -1.0), (5, -1.0), (6, -1.0)]


def test_chunks_mixing_scalars_arrays_and_tuples_line_up(store_root):
    layers = ("a", "b")
    with RunWriter(store_root, run_id="r", background=False) as writer:
        writer.add_scalars(step=np.array([1, 2]), name="loss", value=np.array([10.0, 20.0]), epoch=0.5)
        writer.add_scalars(step=2, name="grad_norm", layer=layers, value=np.array([0.1, 0.2]), wall_time=7.0)
        writer.add_scalars(step=[3, 4], name=["x", "y"], value=5.0, split="val", epoch=[1, 2], layer=[None, "c"])
        writer.add_scalars(step=5, name="grad_norm", layer=layers, value=[0.3, 0.4])
    got = Store(store_root).scalars(["r"]).sort_values(["step", "name", "layer"], na_position="first")
    rows = [(int(s), sp, n, None if l is None or l != l else l, float(v), None if e != e else float(e))
            for s, sp, n, l, v, e in got[["step", "split", "name", "layer", "value", "epoch"]].itertuples(index=False)]
    assert rows == [
        (1, "train", "loss", None, 10.0, 0.5), (2, "train", "grad_norm", "a", 0.1, None),
        (2, "train", "grad_norm", "b", 0.2, None), (2, "train", "loss", None, 20.0, 0.5),
        (3, "val", "x", None, 5.0, 1.0), (4, "val", "y", "c", 5.0, 2.0),
        (5, "train", "grad_norm", "a", 0.3, None), (5, "train", "grad_norm", "b", 0.4, None),
    ]
    assert set(got.loc[got["name"] == "grad_norm", "wall_time"].head(2)) == {7.0}
