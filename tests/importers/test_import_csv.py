"""`import csv`: a tidy file with step,split,name,value[,epoch,layer,wall_time]."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traindoctor.store.errors import StoreError
from traindoctor.store.importers import import_source
from traindoctor.store.reader import Store
from tests.importers.conftest import imported_series, listing


def tidy_frame(steps: int = 30) -> pd.DataFrame:
    """A small run: train loss every step (with NaN and ±Inf), lr for two groups, val accuracy."""
    rows = []
    for step in range(1, steps + 1):
        loss = 2.0 / step
        if step == 7:
            loss = math.nan
        elif step == 8:
            loss = math.inf
        elif step == 9:
            loss = -math.inf
        rows.append({"step": step, "split": "train", "name": "loss", "value": loss, "epoch": step // 10,
                     "layer": None, "wall_time": 1000.0 + step})
        for group in range(2):
            rows.append({"step": step, "split": "train", "name": "lr", "value": 0.1 / (group + 1),
                         "epoch": step // 10, "layer": f"group{group}", "wall_time": 1000.0 + step})
        if step % 10 == 0:
            rows.append({"step": step, "split": "val", "name": "accuracy", "value": step / 100,
                         "epoch": step // 10, "layer": None, "wall_time": 1000.5 + step})
    return pd.DataFrame(rows)


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_round_trip_of_every_column_keeps_nan_and_inf(tmp_path, store_root):
    frame = tidy_frame()
    [result] = import_source("csv", store_root, write_csv(tmp_path / "my run.csv", frame), num_classes=10)
    assert (result.name, result.rows, result.skipped) == ("my run", len(frame), False)
    stored = Store(store_root).scalars([result.run_id])
    key = ["split", "name", "layer", "step"]
    expected = frame.assign(layer=frame["layer"].where(frame["layer"].notna(), None)).sort_values(key, na_position="first")
    stored = stored.sort_values(key, na_position="first")
    for column in ("step", "split", "name", "epoch", "wall_time"):
        assert stored[column].tolist() == expected[column].tolist(), column
    assert stored["layer"].fillna("-").tolist() == expected["layer"].fillna("-").tolist()
    np.testing.assert_array_equal(stored["value"].to_numpy(), expected["value"].to_numpy())  # NaN == NaN here
    assert Store(store_root).run_meta(result.run_id)["task"]["num_classes"] == 10


def test_first_non_finite_training_loss_is_a_nan_loss_event(tmp_path, store_root):
    [result] = import_source("csv", store_root, write_csv(tmp_path / "run.csv", tidy_frame()))
    events = Store(store_root).events([result.run_id])
    assert events[["kind", "step"]].values.tolist() == [["nan_loss", 7]]


def test_optional_columns_may_be_missing(tmp_path, store_root):
    frame = pd.DataFrame({"step": [1, 2, 3], "split": "train", "name": "loss", "value": [3.0, 2.0, 1.0]})
    [result] = import_source("csv", store_root, write_csv(tmp_path / "run.csv", frame))
    stored = Store(store_root).scalars([result.run_id]).sort_values("step")
    assert stored["value"].tolist() == [3.0, 2.0, 1.0]
    assert stored["layer"].isna().all() and stored["epoch"].isna().all()


def test_header_names_with_spaces_around_them_are_the_columns(tmp_path, store_root):
    path = tmp_path / "run.csv"
    path.write_text("step , split,name ,value\n1,train,loss,3.0\n2.0,train,loss,2.0\n3,train,loss,1.0\n")
    [result] = import_source("csv", store_root, path)
    stored = Store(store_root).scalars([result.run_id]).sort_values("step")
    assert stored["step"].tolist() == [1, 2, 3] and stored["value"].tolist() == [3.0, 2.0, 1.0]


def test_a_csv_saved_by_excel_with_a_byte_order_mark_and_crlf_is_read(tmp_path, store_root):
    # Excel's "CSV UTF-8" starts the file with a BOM; the header reader kept it ('\ufeffstep': "missing column 'step'").
    path = tmp_path / "run.csv"
    path.write_bytes(b"\xef\xbb\xbfstep,split,name,value\r\n1,train,loss,3.0\r\n2,train,loss,2.0\r\n")
    [result] = import_source("csv", store_root, path)
    stored = Store(store_root).scalars([result.run_id]).sort_values("step")
    assert stored["step"].tolist() == [1, 2] and stored["value"].tolist() == [3.0, 2.0]


@pytest.mark.parametrize("missing", ["step", "split", "name", "value"])
def test_missing_required_column_is_a_one_line_error_and_store_unchanged(tmp_path, store_root, missing):
    import_source("csv", store_root, write_csv(tmp_path / "good.csv", tidy_frame(5)))
    before = listing(store_root)
    bad = write_csv(tmp_path / "bad.csv", tidy_frame(5).drop(columns=[missing]))
    with pytest.raises(StoreError) as error:
        import_source("csv", store_root, bad)
    assert str(error.value).startswith(f"missing column {missing!r} in {bad}; its columns are ")
    assert listing(store_root) == before


@pytest.mark.parametrize(("text", "hint"), [
    ("step,name,loss\n1,loss,2.3\n",
     "its columns are step, name, loss: import csv reads a tidy file, one value a row, "
     "with columns step,split,name,value"),
    ("step;split;name;value\n1;train;loss;2.3\n",
     "its header reads as one column 'step;split;name;value': import csv reads comma-separated files"),
], ids=["half-tidy", "semicolon-separated"])
def test_missing_column_says_what_the_file_holds(tmp_path, store_root, text, hint):
    # "missing column 'split'" alone, for a file that has a column per metric or other separators.
    path = tmp_path / "run.csv"
    path.write_text(text)
    with pytest.raises(StoreError) as error:
        import_source("csv", store_root, path)
    missing = "split" if text.startswith("step,") else "step"
    assert str(error.value) == f"missing column {missing!r} in {path}; {hint}"


@pytest.mark.parametrize(("text", "message"), [
    ("step,split,name,value\n1,train,loss,abc\n", "column 'value' in {path} has a non-numeric value 'abc' (data row 1)"),
    ("step,split,name,value\n1.5,train,loss,1.0\n", "column 'step' in {path} needs whole numbers, got '1.5' (data row 1)"),
    ("step,split,name,value\n1,,loss,1.0\n", "column 'split' in {path} is empty in data row 1"),
    ("step,split,name,value\n", "{path} has no data rows"),
    ("", "unreadable CSV {path}: Empty CSV file"),
    ("step,split,name,value\n,train,loss,1.0\n", "column 'step' in {path} needs whole numbers, got '' (data row 1)"),
    ("step,split,name,value\n1,train,loss,1\n2,train,loss,x\n", "column 'value' in {path} has a non-numeric value 'x' (data row 2)"),
    # pyarrow's parse error quoted the file's bytes: NULs and control characters on the terminal.
    (bytes(range(256)) * 12, "{path} is a binary file, not a CSV"),
    (b"\x1f\x8b\x08\x00" + b"\x00" * 32, "{path} is a binary file, not a CSV (gzip: decompress it first)"),
    ("step,train_loss\r\n1,2.3\r\n".encode("utf-16"), "{path} is UTF-16 text: import csv reads UTF-8 (save it as CSV UTF-8)"),
], ids=["text-value", "fractional-step", "empty-split", "header-only", "empty-file", "empty-step", "text-in-row-2",
        "binary", "gzip", "utf16"])
def test_malformed_csv_is_a_one_line_error(tmp_path, store_root, text, message):
    """Bad content, including a file that is not CSV text at all, is one line naming the file; nothing is stored."""
    path = tmp_path / "bad.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(StoreError) as error:
        import_source("csv", store_root, path)
    assert str(error.value) == message.format(path=path)
    assert "\n" not in str(error.value)
    assert listing(store_root) == []


def test_unreadable_path_is_a_one_line_error(tmp_path, store_root):
    with pytest.raises(StoreError, match="^unreadable file .*missing.csv: no such file"):
        import_source("csv", store_root, tmp_path / "missing.csv")
    assert listing(store_root) == []


def test_reimport_of_the_same_file_is_skipped(tmp_path, store_root):
    path = write_csv(tmp_path / "run.csv", tidy_frame())
    [first] = import_source("csv", store_root, path)
    [second] = import_source("csv", store_root, path)
    assert second == type(first)(first.run_id, first.name, first.rows, True, first.source)
    assert Store(store_root).run_ids() == [first.run_id]


def test_changed_file_replaces_the_earlier_import_under_the_same_run_id(tmp_path, store_root):
    path = write_csv(tmp_path / "run.csv", tidy_frame(30))
    [first] = import_source("csv", store_root, path)
    shorter = tidy_frame(10)
    write_csv(path, shorter)
    [second] = import_source("csv", store_root, path)
    assert (second.run_id, second.skipped, second.rows) == (first.run_id, False, len(shorter))
    store = Store(store_root)
    assert store.run_ids() == [first.run_id]
    assert len(store.scalars([first.run_id])) == len(shorter)
    assert [p for p in listing(store_root) if p.startswith(".")] == []


def test_unknown_kind_is_rejected(tmp_path, store_root):
    with pytest.raises(StoreError, match="unknown import kind 'aim'"):
        import_source("aim", store_root, tmp_path)


@pytest.mark.parametrize(("text", "expected", "steps"), [
    # DataFrame.to_csv of a training history: a column per metric, a step column, empty cells.
    ("global_step,train/loss,val_loss,lr,loss_epoch\n10,2.3,,0.1,\n20,2.1,2.2,0.1,\n20,,,,2.2\n",
     {("train", "loss", None): [(10, 2.3), (20, 2.1)], ("val", "loss", None): [(20, 2.2)],
      ("train", "lr", "group0"): [(10, 0.1), (20, 0.1)], ("train", "loss_epoch", None): [(20, 2.2)]},
     "logged"),
    # Only epochs: the rows are numbered, the epoch is the epoch column.
    ("epoch,train_loss,val_loss\n0,2.3,2.4\n1,1.9,2.0\n2,1.5,1.9\n",
     {("train", "loss", None): [(1, 2.3), (2, 1.9), (3, 1.5)], ("val", "loss", None): [(1, 2.4), (2, 2.0), (3, 1.9)]},
     "row numbers: no column holds a step"),
], ids=["steps", "epochs-only"])
def test_a_column_per_metric_is_read_row_by_row(tmp_path, store_root, text, expected, steps):
    # It was refused ("missing column 'split'"): the commonest CSV a training script writes.
    path = tmp_path / "history.csv"
    path.write_text(text)
    [result] = import_source("csv", store_root, path)
    for (split, name, layer), points in expected.items():
        frame = imported_series(store_root, result.run_id, split, name, layer)
        assert list(zip(frame["step"].tolist(), frame["value"].tolist())) == points, (split, name)
    assert Store(store_root).run_meta(result.run_id)["source"]["steps"] == steps
    if text.startswith("epoch"):
        assert imported_series(store_root, result.run_id, "train", "loss")["epoch"].tolist() == [0, 1, 2]


def test_a_column_per_metric_leaves_text_out_with_one_warning_and_refuses_a_ragged_row(tmp_path, store_root):
    path = tmp_path / "history.csv"
    path.write_text("step,loss,note\n1,2.3,warm-up\n2,2.1,\n3,1.9,decay\n")
    with pytest.warns(RuntimeWarning, match="left out 2 entries that are not numbers: 'note' at step 1"):
        [result] = import_source("csv", store_root, path)
    assert imported_series(store_root, result.run_id, "train", "loss")["value"].tolist() == [2.3, 2.1, 1.9]
    before = listing(store_root)
    path.write_text("step,loss\n1,2.3\n2,2.1,7\n")
    with pytest.raises(StoreError, match=r"history\.csv data row 2 has 3 cells, the header 2$"):
        import_source("csv", store_root, path)
    assert listing(store_root) == before
