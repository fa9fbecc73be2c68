"""Every column written through RunWriter comes back exactly, odd names included."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter

ODD_NAMES = [
    pytest.param("ünïcödé/λ-损失", id="unicode"),
    pytest.param("it's \"quoted\"", id="quotes"),
    pytest.param("'; DROP TABLE scalars; --", id="sql-injection"),
    pytest.param("x\nnew line\ttab", id="control-chars"),
    pytest.param("? $1 :name", id="parameter-markers"),
]


def test_scalars_round_trip_every_column(tmp_path):
    root = tmp_path / "runs"
    values = np.array([0.5, np.nan, np.inf, -np.inf, -0.0, 1e-308, 5e-324, 1.7976931348623157e308])
    steps = np.arange(1, len(values) + 1, dtype=np.int64) * 1_000_000_007  # beyond int32
    epochs = np.array([0.0, 0.25, np.nan, 1.0, 2.5, 3.0, 4.0, 5.0])
    walls = 1.7e9 + np.arange(len(values)) / 7
    with RunWriter(root, run_id="r1", rank=0, background=False) as writer:
        writer.add_scalars(step=steps, name="loss", value=values, split="val", epoch=epochs, wall_time=walls)
        writer.add_scalars(step=3, name="grad_norm", value=2.5, layer=("fc.weight", "fc.bias")[0], epoch=None,
                           wall_time=12.5)
    got = Store(root).scalars(["r1"], names=["loss"])
    expected = pd.DataFrame({
        "run_id": "r1", "rank": 0, "attempt": 0, "step": steps, "epoch": epochs, "wall_time": walls,
        "split": "val", "name": "loss", "layer": None, "value": values,
    })
    assert list(got.columns) == list(expected.columns)
    for column in ("run_id", "split", "name"):
        assert list(got[column]) == list(expected[column]), column
    assert got["layer"].isna().all()
    for column in ("rank", "attempt", "step"):
        assert got[column].astype(np.int64).tolist() == expected[column].astype(np.int64).tolist(), column
    for column in ("epoch", "wall_time", "value"):
        got_values = got[column].to_numpy(dtype=float)
        want = expected[column].to_numpy(dtype=float)
        # Bit-exact, which also tells NaN, +Inf, -Inf and -0.0 apart.
        assert got_values.view(np.int64).tolist() == want.view(np.int64).tolist(), column
    layered = Store(root).scalars(["r1"], names=["grad_norm"])
    assert layered[["step", "layer", "value", "wall_time"]].values.tolist() == [[3, "fc.weight", 2.5, 12.5]]
    assert pd.isna(layered["epoch"].iloc[0])


def test_confusion_and_events_round_trip(tmp_path):
    root = tmp_path / "runs"
    counts = np.array([[5, 0, 1], [0, 7, 0], [2, 0, 9]])
    with RunWriter(root, run_id="r1", background=False) as writer:
        writer.add_confusion(step=40, counts=counts, split="val", epoch=2.0)
        writer.add_event("nan_loss", "loss was nan", step=12, wall_time=1234.5)
        writer.add_event("config_lint", '{"rule": "x", "message": "it\'s", "params": []}', step=None, wall_time=99.0)
    store = Store(root)
    confusion = store.confusion(["r1"])
    cells = {(t, p): c for t, p, c in confusion[["true_class", "pred_class", "count"]].itertuples(index=False)}
    assert cells == {(t, p): int(counts[t, p]) for t in range(3) for p in range(3) if counts[t, p]}
    assert set(confusion["step"]) == {40} and set(confusion["epoch"]) == {2.0} and set(confusion["split"]) == {"val"}
    assert set(confusion["run_id"]) == {"r1"} and set(confusion["rank"]) == {0}
    events = store.events(["r1"])
    assert events[["kind", "detail", "wall_time"]].values.tolist() == [
        ["config_lint", '{"rule": "x", "message": "it\'s", "params": []}', 99.0],
        ["nan_loss", "loss was nan", 1234.5],
    ]
    assert pd.isna(events["step"].iloc[0]) and events["step"].iloc[1] == 12


@pytest.mark.parametrize("odd", ODD_NAMES)
def test_odd_names_round_trip_as_values_never_as_sql(tmp_path, monkeypatch, odd):
    root = tmp_path / "runs"
    with RunWriter(root, run_id="odd-run", name=odd, project=odd, config={odd: odd}, background=False) as writer:
        writer.add_scalars(step=[1, 2], name=odd, value=[1.0, 2.0], split=odd, layer=(odd, odd + "2"))
        writer.add_scalars(step=[1, 2], name="loss", value=[3.0, 4.0])
        writer.add_event(odd, odd, step=1)
        writer.add_confusion(step=1, counts=[[1, 0], [0, 1]], split=odd)
    store = Store(root)
    statements = _record_sql(monkeypatch, store)

    assert store.resolve(odd) == "odd-run"
    got = store.scalars(["odd-run"], names=[odd], splits=[odd], layers=[odd])
    assert got[["name", "split", "layer", "value"]].values.tolist() == [[odd, odd, odd, 1.0]]
    assert store.series(["odd-run"], names=[odd], layers=[odd + "2"])[["step", "value"]].values.tolist() == [[2, 2.0]]
    heatmap = store.heatmap("odd-run", name=odd, split=odd)
    assert heatmap[["layer", "step", "value"]].values.tolist() == [[odd, 1, 1.0], [odd + "2", 2, 2.0]]
    assert store.events(["odd-run"], kinds=[odd])["detail"].tolist() == [odd]
    assert store.confusion(["odd-run"], split=odd)["count"].sum() == 2
    runs = store.runs()
    assert runs[["name", "project"]].values.tolist() == [[odd, odd]] and runs["config"][0] == {odd: odd}
    # The other rows are untouched: nothing was dropped or rewritten.
    assert store.scalars(["odd-run"], names=["loss"])["value"].tolist() == [3.0, 4.0]
    assert statements, "the recorder saw no SQL"
    assert not [sql for sql in statements if odd in sql]


def _record_sql(monkeypatch, store: Store) -> list[str]:
    """Record the text of every statement the store sends to DuckDB."""
    statements: list[str] = []
    make_connection = store._new_connection

    class Recorder:
        def __init__(self, con):
            self._con = con

        def execute(self, sql, *args, **kwargs):
            statements.append(sql)
            return self._con.execute(sql, *args, **kwargs)

        def sql(self, sql, *args, **kwargs):
            statements.append(sql)
            return self._con.sql(sql, *args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._con, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._con.close()

    monkeypatch.setattr(store, "_new_connection", lambda: Recorder(make_connection()))
    return statements


def test_connect_gives_the_four_views_for_user_sql(tmp_path):
    root = tmp_path / "runs"
    with RunWriter(root, run_id="r1", name="first", background=False) as writer:
        writer.add_scalars(step=[1, 2, 3], name="loss", value=[3.0, 2.0, math.nan])
        writer.add_confusion(step=3, counts=[[2, 1], [0, 4]])
        writer.add_event("nan_loss", "", step=3)
    with Store(root).connect() as con:
        views = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables() UNION ALL "
                                               "SELECT view_name FROM duckdb_views()").fetchall()}
        assert {"runs", "scalars", "confusion", "events"} <= views
        assert con.execute("SELECT name, status FROM runs").fetchall() == [("first", "finished")]
        assert con.execute("SELECT count(*), sum(value) FILTER (WHERE isfinite(value)) FROM scalars "
                           "WHERE name = $n", {"n": "loss"}).fetchall() == [(3, 5.0)]
        assert con.execute("SELECT sum(count) FROM confusion").fetchall() == [(7,)]
        assert con.execute("SELECT kind, step FROM events").fetchall() == [("nan_loss", 3)]


def test_connect_views_are_private_to_each_connection(tmp_path):
    root = tmp_path / "runs"
    for run_id, value in (("a", 1.0), ("b", 2.0)):
        with RunWriter(root, run_id=run_id, background=False) as writer:
            writer.add_scalars(step=1, name="loss", value=value)
    store = Store(root)
    with store.connect(["a"]) as only_a, store.connect(["b"]) as only_b:
        assert only_a.execute("SELECT value FROM scalars").fetchall() == [(1.0,)]
        assert only_b.execute("SELECT value FROM scalars").fetchall() == [(2.0,)]


def test_empty_store_and_empty_run_query_cleanly(tmp_path):
    store = Store(tmp_path / "missing")
    assert store.runs().empty
    RunWriter(tmp_path / "runs", run_id="empty", background=False).close()
    store = Store(tmp_path / "runs")
    assert store.scalars(["empty"]).empty and store.series(["empty"], names=["loss"]).empty
    assert store.runs()["status"].tolist() == ["finished"]


def test_one_run_id_as_a_string_is_one_run_not_its_characters(tmp_path):
    # store.scalars("20261130-...") iterated the id's characters: "unknown run '2' in store ...".
    from tests.store.conftest import write_run

    write_run(tmp_path, "run-a", steps=range(1, 4))
    store = Store(tmp_path)
    assert store.scalars("run-a")["step"].tolist() == [1, 2, 3]
    assert store.events("run-a").empty and store.names("run-a")["name"].tolist() == ["loss"]
    with store.connect("run-a") as con:
        assert con.execute("SELECT count(*) FROM scalars").fetchall() == [(3,)]
