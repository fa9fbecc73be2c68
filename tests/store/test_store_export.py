"""export_duckdb writes what the views show into one file, atomically."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pandas as pd
import pytest
from tests.store.conftest import write_run

from traindoctor.store.errors import StoreError
from traindoctor.store.export import export_duckdb
from traindoctor.store.reader import Store, UnknownRunError
from traindoctor.store.segments import RunWriter


def _table(path, sql):
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).df()


def _populated(store_root):
    with RunWriter(store_root, run_id="a", name="alpha", config={"lr": 0.1}, task={"num_classes": 2},
                   background=False) as writer:
        writer.add_scalars(step=[1, 2, 3], name="loss", value=[1.0, math.nan, -math.inf], epoch=[0, 0, 1])
        writer.add_scalars(step=2, name="grad_norm", layer=("fc.weight",), value=[0.5])
        writer.add_scalars(step=3, name="grad_norm", layer=("fc.weight",), value=[0.4])  # superseded
        writer.add_confusion(step=2, counts=[[3, 1], [0, 2]])
        writer.add_event("nan_loss", "step 2", step=2)
    with RunWriter(store_root, run_id="a", background=False) as writer:  # resumed at step 3
        writer.add_scalars(step=[3, 4], name="loss", value=[0.7, 0.6])
    write_run(store_root, "b", steps=range(1, 6), names=("loss", "accuracy"))


def test_export_round_trip_matches_the_views(store_root, tmp_path):
    _populated(store_root)
    store = Store(store_root)
    target = tmp_path / "share.duckdb"
    counts = export_duckdb(store, target)
    assert counts == {"path": str(target), "runs": 2, "scalars": 4 + 1 + 10, "confusion": 3, "events": 2}
    for table, order in (("scalars", "run_id, name, layer, step"), ("confusion", "run_id, true_class, pred_class"),
                         ("events", "run_id, kind")):
        exported = _table(target, f"SELECT * FROM {table} ORDER BY {order}")
        expected = store.query(f"SELECT * FROM {table} ORDER BY {order}")
        pd.testing.assert_frame_equal(exported, expected, check_dtype=False)
    loss = _table(target, "SELECT step, attempt, value FROM scalars WHERE run_id = 'a' AND name = 'loss' ORDER BY step")
    assert loss["step"].tolist() == [1, 2, 3, 4] and loss["attempt"].tolist() == [0, 0, 1, 1]
    assert loss["value"].iloc[0] == 1.0 and np.isnan(loss["value"].iloc[1]) and loss["value"].iloc[2] == 0.7
    runs = _table(target, "SELECT run_id, name, status, config, num_classes FROM runs ORDER BY run_id")
    assert runs.values.tolist()[0] == ["a", "alpha", "finished", '{"lr": 0.1}', 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "share.duckdb"]  # no temporary left


def test_export_chosen_runs_by_id_or_name(store_root, tmp_path):
    _populated(store_root)
    counts = export_duckdb(Store(store_root), tmp_path / "one.duckdb", ["alpha"])
    assert counts["runs"] == 1
    assert _table(tmp_path / "one.duckdb", "SELECT DISTINCT run_id FROM scalars")["run_id"].tolist() == ["a"]
    with pytest.raises(UnknownRunError, match="nope"):
        export_duckdb(Store(store_root), tmp_path / "two.duckdb", ["nope"])
    assert not (tmp_path / "two.duckdb").exists()


def test_export_refuses_to_overwrite_unless_told(store_root, tmp_path):
    _populated(store_root)
    store = Store(store_root)
    target = tmp_path / "share.duckdb"
    target.write_bytes(b"precious")
    with pytest.raises(StoreError, match="already exists"):
        export_duckdb(store, target)
    assert target.read_bytes() == b"precious"
    assert export_duckdb(store, target, ["b"], overwrite=True)["runs"] == 1
    assert _table(target, "SELECT count(*) AS n FROM scalars")["n"].tolist() == [10]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "share.duckdb"]


def test_export_of_an_empty_store_has_the_four_tables(tmp_path):
    target = tmp_path / "empty.duckdb"
    assert export_duckdb(Store(tmp_path / "none"), target) == {
        "path": str(target), "runs": 0, "scalars": 0, "confusion": 0, "events": 0}
    columns = _table(target, "SELECT table_name, count(*) AS n FROM duckdb_columns() WHERE NOT internal "
                     "GROUP BY ALL ORDER BY ALL")
    assert columns.values.tolist() == [["confusion", 9], ["events", 7], ["runs", 13], ["scalars", 10]]


@pytest.mark.parametrize("name", ["it's.duckdb", "'; DROP TABLE x; --.duckdb", "ünï cödé.duckdb"])
def test_export_path_is_bound_not_pasted(store_root, tmp_path, name):
    write_run(store_root, "b", steps=range(1, 4))
    target = tmp_path / name
    assert export_duckdb(Store(store_root), target)["scalars"] == 3
    assert _table(target, "SELECT count(*) AS n FROM scalars")["n"].tolist() == [3]


def test_export_into_a_missing_folder_is_a_clear_error(store_root, tmp_path):
    write_run(store_root, "b", steps=range(1, 4))
    with pytest.raises(StoreError, match="does not exist"):
        export_duckdb(Store(store_root), tmp_path / "no" / "such" / "x.duckdb")
