"""A resumed run keeps every attempt on disk; queries show the newest one."""

from __future__ import annotations

import numpy as np
import pytest

from traindoctor.store.compact import compact_run
from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter


def _attempt(root, steps, value, *, rank=0, run_id="resumed", event_step=None, confusion_step=None):
    with RunWriter(root, run_id=run_id, rank=rank, world_size=2, background=False) as writer:
        steps = np.asarray(steps)
        writer.add_scalars(step=steps, name="loss", value=np.full(len(steps), value))
        if event_step is not None:
            writer.add_event("nan_loss", f"attempt {value}", step=event_step)
        if confusion_step is not None:
            writer.add_confusion(step=confusion_step, counts=[[int(value), 0], [0, 1]])
    return writer.attempt


def _oracle(attempts):
    """Newest attempt wins: an attempt's rows count below the first step of every later one."""
    expected = {}
    for index, (steps, value) in enumerate(attempts):
        later_starts = [min(s) for s, _ in attempts[index + 1:]]
        bound = min(later_starts) if later_starts else float("inf")
        for step in steps:
            if step < bound:
                expected[step] = value
    return sorted(expected.items())


@pytest.mark.parametrize(
    "attempts",
    [
        pytest.param([(range(1, 101), 0.0), (range(51, 151), 1.0)], id="resume-from-checkpoint"),
        pytest.param([(range(1, 101), 0.0), (range(51, 81), 1.0), (range(61, 201), 2.0)], id="three-attempts"),
        pytest.param([(range(1, 51), 0.0), (range(51, 101), 1.0)], id="no-overlap"),
        pytest.param([(range(10, 30), 0.0), (range(1, 5), 1.0)], id="restart-from-scratch"),
    ],
)
@pytest.mark.parametrize("compacted", [False, True], ids=["segments", "compacted"])
def test_newest_attempt_wins_and_every_attempt_stays_on_disk(store_root, attempts, compacted):
    for expected_attempt, (steps, value) in enumerate(attempts):
        assert _attempt(store_root, steps, value) == expected_attempt
    store = Store(store_root)
    if compacted:
        compact_run(store, "resumed")
        assert len(store.segment_files("resumed", "scalars")) == 1
    got = store.scalars(["resumed"], names=["loss"])
    assert list(zip(got["step"], got["value"])) == _oracle(attempts)
    raw = store.query("SELECT attempt, count(*) AS n FROM scalars_raw GROUP BY attempt ORDER BY attempt",
                      runs=["resumed"])
    assert raw["n"].tolist() == [len(steps) for steps, _ in attempts]
    series = store.series(["resumed"], names=["loss"], max_points=10_000)
    assert list(zip(series["step"], series["value"])) == _oracle(attempts)


def test_events_and_confusion_follow_the_scalars_attempt_bounds(store_root):
    _attempt(store_root, range(1, 101), 0, event_step=90, confusion_step=100)
    _attempt(store_root, range(51, 151), 3, event_step=120, confusion_step=150)
    store = Store(store_root)
    events = store.events(["resumed"])
    assert events["kind"].tolist() == ["resumed", "nan_loss"]  # step 90 of attempt 0 was superseded
    assert events["step"].isna().tolist() == [True, False] and events["step"].iloc[1] == 120
    confusion = store.confusion(["resumed"])
    assert confusion["step"].unique().tolist() == [150]


def test_each_rank_resolves_its_own_attempts_even_after_compaction(store_root):
    _attempt(store_root, range(1, 11), 0.0, rank=0)
    _attempt(store_root, range(1, 11), 10.0, rank=1)
    compact_run(Store(store_root), "resumed")
    # Regression: rank 1's attempt used to be read from file names and
    # run.json (rank 0's only), so after compaction it restarted at 0.
    assert _attempt(store_root, range(6, 11), 11.0, rank=1) == 1
    got = Store(store_root).scalars(["resumed"], names=["loss"], rank=None)
    by_rank = {rank: list(zip(frame["step"], frame["value"])) for rank, frame in got.groupby("rank")}
    assert by_rank[0] == [(s, 0.0) for s in range(1, 11)]
    assert by_rank[1] == [(s, 10.0) for s in range(1, 6)] + [(s, 11.0) for s in range(6, 11)]


def test_resumed_run_keeps_its_name_and_records_the_resume(store_root):
    with RunWriter(store_root, run_id="r", name="first-name", config={"lr": 0.1}, background=False) as writer:
        writer.add_scalars(step=1, name="loss", value=1.0)
    with RunWriter(store_root, run_id="r", background=False) as writer:
        writer.add_scalars(step=1, name="loss", value=2.0)
    store = Store(store_root)
    runs = store.runs()
    assert runs[["name", "status", "attempts"]].values.tolist() == [["first-name", "finished", {"0": 1}]]
    assert runs["config"][0] == {"lr": 0.1}
    assert store.scalars(["r"])["value"].tolist() == [2.0]
