"""The writer's background thread: timely flushes, errors that warn, never raise."""

from __future__ import annotations

import json
import shutil
import time
import warnings

import numpy as np
import pytest

from store.reader import Store
from store.segments import RunWriter, StoreError, check_run_id


def _visible(store: Store, run_id: str) -> int:
    return len(store.segment_files(run_id, "scalars"))


@pytest.mark.parametrize("flush_every_s", [0.3, 1.0])
def test_background_thread_publishes_within_flush_every_s(store_root, flush_every_s):
    store = Store(store_root)
    with RunWriter(store_root, run_id="r", flush_every_s=flush_every_s, heartbeat_every_s=60) as writer:
        writer.add_scalars(step=1, name="loss", value=1.0)
        added = time.monotonic()
        while _visible(store, "r") == 0:
            assert time.monotonic() - added < flush_every_s + 0.5, "not published in time"
            time.sleep(0.01)
        # Rows added later go out with the next flush, not at once.
        writer.add_scalars(step=2, name="loss", value=2.0)
        assert store.scalars(["r"])["step"].tolist() == [1]
        added = time.monotonic()
        while len(store.scalars(["r"])) < 2:
            assert time.monotonic() - added < flush_every_s + 0.5, "not published in time"
            time.sleep(0.01)


def test_heartbeat_is_refreshed_while_the_writer_lives(store_root):
    with RunWriter(store_root, run_id="r", heartbeat_every_s=0.1, flush_every_s=10):
        first = json.loads((store_root / "r" / "run.json").read_text())["heartbeat_at"]
        time.sleep(0.5)
        later = json.loads((store_root / "r" / "run.json").read_text())["heartbeat_at"]
        assert later > first
        assert Store(store_root, stale_after_s=0.3).runs()["status"].tolist() == ["running"]
    assert Store(store_root, stale_after_s=0.3).runs()["status"].tolist() == ["finished"]


def test_a_removed_run_folder_warns_in_the_background_and_close_does_not_raise(store_root):
    writer = RunWriter(store_root, run_id="r", flush_every_s=0.05, heartbeat_every_s=0.05)
    with pytest.warns(RuntimeWarning, match="writing run r failed") as caught:
        shutil.rmtree(store_root / "r")
        writer.add_scalars(step=1, name="loss", value=1.0)
        deadline = time.monotonic() + 5
        while not writer.errors and time.monotonic() < deadline:
            time.sleep(0.02)
        writer.add_scalars(step=2, name="loss", value=2.0)
        writer.close()  # must not raise
    assert writer.errors and writer.closed
    assert all("writing run r failed" in str(w.message) for w in caught)


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
        deadline = time.monotonic() + 5
        while _visible(store, "r") == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
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
