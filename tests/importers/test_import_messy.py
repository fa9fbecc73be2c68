"""Importers on messy but valid input a user hands over (issues found by trying them as a new user)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from traindoctor.store.errors import StoreError
from traindoctor.store.importers import import_source
from tests.importers.conftest import imported_series, listing


def test_lightning_keeps_nan_and_inf_it_logged(tmp_path: Path, store_root: Path) -> None:
    """Lightning writes a diverged loss as ``nan``/``inf``: a logged value, not an empty cell.

    pandas' default NA parsing read ``nan`` as missing, so the import dropped
    the very values that show a divergence.
    """
    folder = tmp_path / "version_0"
    folder.mkdir()
    (folder / "metrics.csv").write_text(
        "epoch,step,train_loss,val_acc\n"
        "0,9,2.0,\n"
        "0,19,nan,0.5\n"
        "0,29,NaN,\n"
        "1,39,inf,\n"
        "1,49,-Infinity,\n"
    )
    [result] = import_source("lightning", store_root, folder, progress=False)
    loss = imported_series(store_root, result.run_id, "train", "loss")
    assert loss["step"].tolist() == [10, 20, 30, 40, 50]
    values = loss["value"].tolist()
    assert values[0] == 2.0 and math.isnan(values[1]) and math.isnan(values[2])
    assert values[3] == math.inf and values[4] == -math.inf
    # An empty cell is still "not logged by this call".
    assert imported_series(store_root, result.run_id, "val", "accuracy")["step"].tolist() == [20]


def test_lightning_text_that_is_no_number_still_stops(tmp_path: Path, store_root: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.csv").write_text("epoch,step,train_loss\n0,9,abc\n")
    with pytest.raises(StoreError, match="non-numeric value 'abc'"):
        import_source("lightning", store_root, folder, progress=False)
    assert listing(store_root) == []


def test_tidy_csv_takes_whole_float_steps(tmp_path: Path, store_root: Path) -> None:
    """pandas writes a float step column as ``1.0``; the import rules take a whole float step."""
    path = tmp_path / "metrics.csv"
    path.write_text("step,split,name,value\n1.0,train,loss,2.5\n2.0,train,loss,2.0\n1e3,train,loss,1.0\n")
    [result] = import_source("csv", store_root, path, progress=False)
    loss = imported_series(store_root, result.run_id, "train", "loss")
    assert loss["step"].tolist() == [1, 2, 1000]
    assert loss["value"].tolist() == [2.5, 2.0, 1.0]


@pytest.mark.parametrize(("step", "reason"), [
    ("1.5", "needs whole numbers, got '1.5'"),
    ("99999999999999999999", "needs whole numbers within int64, got '99999999999999999999'"),
    ("abc", "needs whole numbers, got 'abc'"),
])
def test_tidy_csv_bad_steps_say_why(tmp_path: Path, store_root: Path, step: str, reason: str) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(f"step,split,name,value\n1,train,loss,2.5\n{step},train,loss,2.0\n")
    with pytest.raises(StoreError, match=reason) as error:
        import_source("csv", store_root, path, progress=False)
    assert "data row 2" in str(error.value)
    assert listing(store_root) == []


def test_two_lightning_layout_csvs_in_one_folder_are_two_runs(tmp_path: Path, store_root: Path) -> None:
    """A CSV of metrics.csv's layout by another name was identified by its folder, so importing a
    second one from the same folder replaced the first run (its data gone from the store)."""
    (tmp_path / "a.csv").write_text("epoch,step,train_loss\n0,9,2.0\n")
    (tmp_path / "b.csv").write_text("epoch,step,train_loss\n0,9,3.0\n0,19,2.5\n")
    [first] = import_source("lightning", store_root, tmp_path / "a.csv", progress=False)
    [second] = import_source("lightning", store_root, tmp_path / "b.csv", progress=False)
    assert first.run_id != second.run_id
    assert imported_series(store_root, first.run_id, "train", "loss")["value"].tolist() == [2.0]
    assert imported_series(store_root, second.run_id, "train", "loss")["value"].tolist() == [3.0, 2.5]
    [again] = import_source("lightning", store_root, tmp_path / "b.csv", progress=False)
    assert again.run_id == second.run_id and again.skipped


def test_a_version_folder_and_its_metrics_csv_are_one_source(tmp_path: Path, store_root: Path) -> None:
    folder = tmp_path / "lightning_logs" / "version_3"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("epoch,step,train_loss\n0,9,2.0\n")
    [first] = import_source("lightning", store_root, folder / "metrics.csv", progress=False)
    [again] = import_source("lightning", store_root, folder, progress=False)
    assert first.name == "lightning_logs/version_3"
    assert again.run_id == first.run_id and again.skipped


def test_reimport_with_a_corrected_task_is_not_skipped(tmp_path: Path, store_root: Path) -> None:
    """``import csv m.csv`` then ``import csv m.csv --num-classes 10`` said "already imported" and
    kept the run without its task: the correction the user made was silently ignored."""
    path = tmp_path / "m.csv"
    path.write_text("step,split,name,value\n1,train,loss,2.3\n2,train,loss,2.0\n")
    [first] = import_source("csv", store_root, path, progress=False)
    [same] = import_source("csv", store_root, path, progress=False)
    assert same.skipped
    [corrected] = import_source("csv", store_root, path, num_classes=10, progress=False)
    assert not corrected.skipped and corrected.run_id == first.run_id
    task = json.loads((store_root / first.run_id / "run.json").read_text())["task"]
    assert task["kind"] == "classification" and task["num_classes"] == 10
    [again] = import_source("csv", store_root, path, task="classification:10", progress=False)
    assert again.skipped  # the same task, said the other way
    assert sorted(p.name for p in store_root.iterdir() if not p.name.startswith(".")) == [first.run_id]


def test_reimport_of_a_log_with_another_cadence_is_not_skipped(tmp_path: Path, store_root: Path) -> None:
    path = tmp_path / "train.log"
    path.write_text("".join(f"{{'loss': {2.0 - i / 10}, 'learning_rate': 0.001, 'epoch': {i / 10}}}\n"
                            for i in range(5)))
    [first] = import_source("log", store_root, path, progress=False)
    [cadence] = import_source("log", store_root, path, log_every=10, progress=False)
    assert not cadence.skipped and cadence.run_id == first.run_id
    assert imported_series(store_root, first.run_id, "train", "loss")["step"].tolist() == [10, 20, 30, 40, 50]
    [again] = import_source("log", store_root, path, log_every=10, progress=False)
    assert again.skipped


def test_a_blank_run_name_is_refused(tmp_path: Path, store_root: Path) -> None:
    """``--run ''`` was taken silently as "no name given", and ``--run '  '`` named a run with blanks."""
    path = tmp_path / "m.csv"
    path.write_text("step,split,name,value\n1,train,loss,2.3\n2,train,loss,2.0\n")
    for blank in ("", "   "):
        with pytest.raises(StoreError, match="--run needs a name"):
            import_source("csv", store_root, path, run_name=blank, progress=False)
    assert listing(store_root) == []


def test_mlflow_without_a_uri_creates_no_database(tmp_path: Path, store_root: Path, monkeypatch) -> None:
    """``import mlflow`` with no TRACKING_URI opened MLflow's default ``sqlite:///mlflow.db``, which
    created a ~1 MB empty database in the current folder before saying it held no run."""
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(StoreError, match="mlflow.db does not exist"):
        import_source("mlflow", store_root, None, run_id="abc", progress=False)
    assert not (tmp_path / "mlflow.db").exists()
    assert listing(store_root) == []
