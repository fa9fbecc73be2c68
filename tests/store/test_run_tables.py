"""The direct read of a run (``store.run_tables``, what ``load_run`` uses) against its oracle, the DuckDB views.

Every run of every store in the repository, and small runs built here with
what makes the views work hard (resumed attempts on two ranks, a crash, a
compaction with its pieces left behind or run under the read, a corrupt or
truncated segment, a foreign file without the store's footer), must read
back with the same rows in the same order, column by column with the same
numpy types, as ``Store.scalars(rank=0)``, ``Store.confusion`` and
``Store.events``. One difference is by design: a missing string is None in
the direct read (the ``Table`` contract) where DuckDB through pandas 3 gives NaN.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import traindoctor.store.run_tables
from traindoctor.store.compact import compact_run
from traindoctor.store.files import StoreFiles
from traindoctor.store.frames import Table
from traindoctor.store.reader import Store
from traindoctor.store.run_data import load_run
from traindoctor.store.run_tables import run_tables
from traindoctor.store.segments import RunWriter

from .conftest import write_run

REPO = Path(__file__).resolve().parents[2]
STORES = ["tests/data/corpus", "tests/data/heldout3", "sample_runs/store", "tests/data/lr10x/store"]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _column_problem(direct: np.ndarray, oracle: np.ndarray) -> str | None:
    if direct.dtype != oracle.dtype:
        return f"dtype {direct.dtype}, DuckDB's {oracle.dtype}"
    if len(direct) != len(oracle):
        return f"{len(direct)} rows, DuckDB's {len(oracle)}"
    if direct.dtype.kind == "f":
        same = np.array_equal(direct, oracle, equal_nan=True)
    elif direct.dtype.kind == "O":
        if any(isinstance(value, float) for value in direct.tolist()):
            return "a missing string that is not None"
        same = all(a == b or (a is None and _missing(b)) for a, b in zip(direct.tolist(), oracle.tolist()))
    else:
        same = np.array_equal(direct, oracle)
    return None if same else "values or their order differ"


def _oracle(store: Store, run_id: str) -> dict[str, Table]:
    return {"scalars": Table.of(store.scalars([run_id], rank=0)), "confusion": Table.of(store.confusion([run_id])),
            "events": Table.of(store.events([run_id]))}


# The ORDER BY of each query. DuckDB's sort is not stable: rows that tie on these columns (a step
# logged twice) come in any order, and in another one from one query to the next.
ORDER_BY = {"scalars": ("run_id", "split", "name", "layer", "step"),
            "confusion": ("run_id", "split", "step", "true_class", "pred_class"),
            "events": ("run_id", "wall_time", "step")}


def _key(value):
    return "<missing>" if _missing(value) else repr(value)


def _tie_free(table: Table, order_by: tuple[str, ...]) -> Table:
    """``table`` with the rows of each run of ties (equal on ``order_by``) in one canonical order."""
    rows = list(zip(*(table[column].tolist() for column in table.columns)))
    positions = [table.columns.index(column) for column in order_by]
    canonical, start = [], 0
    for end in range(1, len(rows) + 1):
        if end == len(rows) or [_key(rows[end][i]) for i in positions] != [_key(rows[start][i]) for i in positions]:
            canonical += sorted(range(start, end), key=lambda row: [_key(value) for value in rows[row]])
            start = end
    return table[np.asarray(canonical, dtype=np.int64)] if rows else table


def _differences(direct: dict[str, Table], oracle: dict[str, Table]) -> list[str]:
    """Every column the same (types, values, row order; rows that tie on the query's ORDER BY compared as a set)."""
    problems = []
    for table in ("scalars", "confusion", "events"):
        if direct[table].columns != oracle[table].columns:
            problems.append(f"{table}: columns {direct[table].columns}, DuckDB's {oracle[table].columns}")
            continue
        mine, theirs = _tie_free(direct[table], ORDER_BY[table]), _tie_free(oracle[table], ORDER_BY[table])
        for column in oracle[table].columns:
            problem = _column_problem(mine[column], theirs[column])
            if problem:
                problems.append(f"{table}.{column}: {problem}")
    return problems


def _compare(root: Path, run_id: str) -> tuple[list[str], list[str], list[str]]:
    """(differences, the direct read's warnings, the views' warnings), each read by a fresh store."""
    with warnings.catch_warnings(record=True) as oracle_caught:
        warnings.simplefilter("always")
        oracle = _oracle(Store(root), run_id)
    with warnings.catch_warnings(record=True) as direct_caught:
        warnings.simplefilter("always")
        direct = run_tables(StoreFiles(root), run_id)
    return (_differences(direct, oracle), sorted({str(w.message) for w in direct_caught}),
            sorted({str(w.message) for w in oracle_caught}))


@pytest.mark.parametrize("folder", STORES)
def test_every_run_in_the_repository_reads_as_the_duckdb_views_give_it(folder):
    store, files = Store(REPO / folder), StoreFiles(REPO / folder)
    run_ids = store.run_ids()
    assert run_ids, f"no runs in {folder}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        differing = {run_id: problems for run_id in run_ids
                     if (problems := _differences(run_tables(files, run_id), _oracle(store, run_id)))}
    assert differing == {}


# ------------------------------------------------------------ built stores

def _attempt(root: Path, steps, value: float, *, rank: int = 0, event_step=None, confusion_step=None) -> None:
    with RunWriter(root, run_id="r", rank=rank, world_size=2, background=False) as writer:
        steps = np.asarray(steps)
        writer.add_scalars(step=steps, name="loss", value=np.full(len(steps), value))
        writer.add_scalars(step=steps, name="grad_norm", value=steps * 0.5, layer="fc.weight")
        writer.add_scalars(step=steps[::10], name="loss", value=np.full(len(steps[::10]), value), split="val")
        if event_step is not None:
            writer.add_event("nan_loss", f"attempt {value}", step=event_step)
        if confusion_step is not None:
            writer.add_confusion(step=confusion_step, counts=[[int(value) + 1, 0], [1, 1]])
            writer.add_confusion(step=confusion_step, counts=[[1, 0], [0, 1]])  # the same cells again: summed


def _resumed(root: Path) -> None:
    """Three attempts of rank 0 (the second and third resume inside the first), two of rank 1."""
    _attempt(root, range(1, 101), 0.0, event_step=60, confusion_step=60)
    _attempt(root, range(51, 81), 1.0, event_step=70, confusion_step=70)
    _attempt(root, range(61, 201), 2.0, event_step=65, confusion_step=100)
    _attempt(root, range(1, 41), 3.0, rank=1, event_step=30, confusion_step=30)
    _attempt(root, range(21, 61), 4.0, rank=1, event_step=25, confusion_step=40)


def _resumed_and_compacted(root: Path) -> None:
    _resumed(root)
    compact_run(Store(root), "r")


def _restarted_from_scratch(root: Path) -> None:
    _attempt(root, range(10, 30), 0.0, event_step=12)
    _attempt(root, range(1, 5), 1.0, event_step=2)


def _crashed(root: Path) -> None:
    """A writer that never closed (a killed process), and a segment cut off mid-write."""
    writer = RunWriter(root, run_id="r", background=False)
    for step in range(1, 31):
        writer.add_scalars(step=step, name="loss", value=1.0 / step)
        if step % 10 == 0:
            writer.flush()
    writer.add_event("nan_loss", "never flushed", step=31)  # lost with the process
    folder = root / "r" / "scalars"
    good = sorted(folder.glob("*.parquet"))[0]
    (folder / "0-0-99999998.parquet").write_bytes(good.read_bytes()[: good.stat().st_size // 2])


def _compacted_with_pieces_left(root: Path) -> None:
    """A compaction that published its merged file and died before deleting the pieces."""
    write_run(root, "r", steps=range(1, 41), names=("loss", "accuracy"), layers=("a", "b"), flushes=4)
    pieces = root / "pieces"
    shutil.copytree(root / "r" / "scalars", pieces)
    compact_run(Store(root), "r")
    for piece in pieces.glob("*.parquet"):
        shutil.copy(piece, root / "r" / "scalars" / piece.name)
    shutil.rmtree(pieces)


def _corrupt_pages(root: Path) -> None:
    """Pages overwritten behind an intact footer: only reading the rows finds the damage."""
    write_run(root, "r", steps=range(1, 31), flushes=3)
    corrupt = sorted((root / "r" / "scalars").glob("*.parquet"))[-1]
    data = bytearray(corrupt.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    data[4:footer_start] = b"\xab" * (footer_start - 4)
    corrupt.write_bytes(bytes(data))


def _foreign_file(root: Path) -> None:
    """A file without the store's footer (its attempts are scanned) that lacks epoch, wall_time and layer."""
    write_run(root, "r", steps=range(1, 21), layers=("fc",))
    pq.write_table(pa.table({
        "run_id": ["r"] * 3, "rank": pa.array([0, 0, 1], pa.int32()), "attempt": pa.array([1, 1, 0], pa.int32()),
        "step": pa.array([15, 16, 3], pa.int64()), "split": ["train"] * 3, "name": ["loss"] * 3,
        "value": [9.0, 9.5, 1.0],
    }), root / "r" / "scalars" / "0-1-00000000.parquet")


def _repeated_steps_and_missing_values(root: Path) -> None:
    """A step logged twice in one attempt (its rows tie in the order), NaN and infinite values, events
    with the same wall time and one without a step, and a user split."""
    with RunWriter(root, run_id="r", background=False) as writer:
        writer.add_scalars(step=[1, 2, 3, 3, 4], name="loss", value=[1.0, np.nan, 2.0, 3.0, np.inf])
        writer.add_scalars(step=[2, 2], name="loss", value=[5.0, 6.0], split="val_ema")
        writer.add_event("nan_loss", "first", step=2)
        writer.add_event("config_lint", "second", step=None)
        writer.flush()
        writer.add_scalars(step=[3, 5], name="loss", value=[7.0, 8.0])
        writer.add_scalars(step=[5], name="ünïcode", value=[1.0])


def _empty(root: Path) -> None:
    RunWriter(root, run_id="r", background=False).close()


BUILT = [
    pytest.param(_resumed, (), id="resumed-two-ranks"),
    pytest.param(_resumed_and_compacted, (), id="resumed-and-compacted"),
    pytest.param(_restarted_from_scratch, (), id="restarted-from-scratch"),
    pytest.param(_crashed, ("99999998",), id="crashed-with-a-truncated-segment"),
    pytest.param(_compacted_with_pieces_left, (), id="compaction-pieces-left"),
    pytest.param(_corrupt_pages, ("skipping unreadable segment",), id="corrupt-pages-behind-a-footer"),
    pytest.param(_foreign_file, (), id="foreign-file-without-footer"),
    pytest.param(_repeated_steps_and_missing_values, (), id="repeated-steps-and-missing-values"),
    pytest.param(_empty, (), id="no-rows"),
]


def test_rows_that_tie_keep_the_files_order(store_root):
    """A step logged twice: the direct read keeps the rows in the order they were written (DuckDB's
    unstable sort gives any order), so RunData.series keeps the value logged last, every time."""
    _repeated_steps_and_missing_values(store_root)
    scalars = run_tables(StoreFiles(store_root), "r")["scalars"]
    train_loss = (scalars["split"] == "train") & (scalars["name"] == "loss")
    assert scalars["step"][train_loss].tolist() == [1, 2, 3, 3, 3, 4, 5]
    assert scalars["value"][train_loss][2:5].tolist() == [2.0, 3.0, 7.0]
    assert load_run(StoreFiles(store_root), "r").series("loss").loc[3] == 7.0


@pytest.mark.parametrize("build, warned", BUILT)
def test_a_built_run_reads_as_the_duckdb_views_give_it(store_root, build, warned):
    build(store_root)
    differences, direct_warnings, oracle_warnings = _compare(store_root, "r")
    assert differences == []
    for text in warned:  # a bad file is skipped with a warning naming it, as the views skip it
        assert any(text in message for message in direct_warnings), direct_warnings
        assert any(text in message for message in oracle_warnings), oracle_warnings


def test_a_compaction_under_the_read_makes_it_list_and_read_again(store_root, monkeypatch):
    write_run(store_root, "r", steps=range(1, 41), flushes=4, layers=("fc",))
    files = StoreFiles(store_root)
    read = traindoctor.store.run_tables.read_segment
    calls = []

    def compacted_first(path, columns=None):
        calls.append(Path(path).name)
        if len(calls) == 1:
            compact_run(Store(store_root), "r")  # the pieces listed a moment ago are gone now
        return read(path, columns)

    monkeypatch.setattr(traindoctor.store.run_tables, "read_segment", compacted_first)
    direct = run_tables(files, "r")
    # The first piece vanished under the read: the run was listed again and only the merged file read.
    assert len(calls) == 2 and calls[0].startswith("0-0-") and calls[1].startswith("c-")
    assert _differences(direct, _oracle(Store(store_root), "r")) == []


def test_load_run_reads_the_direct_rows(store_root):
    _resumed(store_root)
    run = load_run(StoreFiles(store_root), "r")
    tables = run_tables(StoreFiles(store_root), "r")
    assert run.scalars.columns == ["step", "epoch", "wall_time", "split", "name", "layer", "value"]
    assert np.array_equal(run.scalars["step"], tables["scalars"]["step"])
    assert set(tables["confusion"]["rank"].tolist()) == {0, 1}
    # Rank 0's newest attempt's cells only (the older attempts' evaluations are overridden), summed per cell.
    assert run.confusion["step"].tolist() == [100] * 3 and run.confusion["count"].tolist() == [4, 1, 2]
    assert run.series("loss").index.tolist() == list(range(1, 201))
    assert run.series("loss").loc[51:60].tolist() == [1.0] * 10 and run.series("loss").loc[61:].tolist() == [2.0] * 140

