"""The format contract (traindoctor.store.format) checked against what the store really writes and reads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from traindoctor.store import format as contract
from traindoctor.store.compact import compact_run
from traindoctor.store.reader import Store
from traindoctor.store.segments import RunWriter

SAMPLE_STORE = Path(__file__).resolve().parents[2] / "sample_runs" / "store"
# What pyarrow keeps in every footer it writes (read_schema hides it); not the contract's.
ARROW_SCHEMA_KEY = b"ARROW:schema"
SQL_TYPES = {contract.STRING: "VARCHAR", contract.INT32: "INTEGER", contract.INT64: "BIGINT",
             contract.FLOAT64: "DOUBLE"}


def write_every_table(root: Path, run_id: str = "r", *, attempts: int = 1) -> tuple[float, float]:
    """One run with rows in every table (``attempts`` times, resuming);
    returns the Unix seconds before and after writing."""
    before = time.time()
    for attempt in range(attempts):
        with RunWriter(root, run_id=run_id, name="demo", background=False) as writer:
            writer.add_scalars(step=[1, 2], name="loss", value=[2.3, float("nan")], epoch=0.5)
            writer.add_scalars(step=2, name="grad_norm", value=[0.1, 0.2], layer=("fc.weight", "fc.bias"))
            writer.add_scalars(step=2, name="lr", value=0.1, layer=contract.lr_layer(0))
            writer.add_confusion(step=2, counts=[[3, 1], [0, 4]], split="val", epoch=1.0)
            writer.add_event("nan_loss", "training loss is nan at step 2", step=2)
            writer.flush()
    return before, time.time()


def files_of(root: Path, table: str, run_id: str = "r") -> list[Path]:
    folder = root / run_id / table
    return [folder / name for name in contract.segment_names(entry.name for entry in folder.iterdir())]


def logical_type(arrow_type: pa.DataType) -> pa.DataType:
    # The writer dictionary-encodes strings; the column's type is still string.
    return arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type


def declared(table: str) -> list[tuple[str, pa.DataType]]:
    # The contract's type names are pyarrow's factory names: pa.string(), pa.int32(), …
    return [(column.name, getattr(pa, column.type)()) for column in contract.COLUMNS[table]]


@pytest.mark.parametrize("compacted", [False, True], ids=["segments", "compacted"])
@pytest.mark.parametrize("table", contract.TABLES)
def test_files_have_exactly_the_declared_columns_types_and_footer_keys(tmp_path, table, compacted):
    write_every_table(tmp_path, attempts=2)
    if compacted:
        compact_run(Store(tmp_path), "r")
    files = files_of(tmp_path, table)
    assert len(files) == (1 if compacted else 2)
    for path in files:
        schema = pq.read_schema(path)
        assert [(field.name, logical_type(field.type)) for field in schema] == declared(table)
        assert set(schema.metadata or {}) - {ARROW_SCHEMA_KEY} == contract.footer_keys(table, compacted=compacted)


@pytest.mark.parametrize("table", contract.TABLES)
def test_sample_runs_recorded_by_the_probe_follow_the_contract(table):
    """Files the real probe wrote (and compacted) before this test existed:
    a contract edit that no longer describes them fails here, not in users' stores."""
    files = sorted(SAMPLE_STORE.glob(f"*/{table}/*.parquet"))
    assert files
    for path in files:
        schema = pq.read_schema(path)
        assert [(field.name, logical_type(field.type)) for field in schema] == declared(table), path
        compacted = path.name.startswith(contract.COMPACTED_PREFIX)
        assert set(schema.metadata or {}) - {ARROW_SCHEMA_KEY} == contract.footer_keys(table, compacted=compacted)
    # The probe records only the vocabulary's words (users may log others).
    vocabulary = {"scalars": ("name", contract.METRIC_NAMES), "events": ("kind", contract.EVENT_KINDS)}
    if table in vocabulary:
        column, words = vocabulary[table]
        assert set(pq.read_table(files, columns=[column])[column].to_pylist()) <= set(words)


def test_sample_runs_run_json_follows_the_contract():
    for path in sorted(SAMPLE_STORE.glob(f"*/{contract.RUN_JSON}")):
        meta = contract.read_run_json(path.parent)
        assert set(meta) <= set(contract.RUN_JSON_KEYS), path
        assert meta["status"] in contract.RUN_STATUSES and meta["run_id"] == path.parent.name
        assert meta["created_at"] <= meta["heartbeat_at"] <= meta["finished_at"]


def test_segment_names_and_attempt_footers_say_who_wrote_the_rows(tmp_path):
    write_every_table(tmp_path, attempts=2)
    writers = set()
    for path in files_of(tmp_path, "scalars"):
        rank, attempt = contract.segment_rank_attempt(path.name)
        rows = pq.read_table(path)
        assert set(rows["rank"].to_pylist()) == {rank} and set(rows["attempt"].to_pylist()) == {attempt}
        # The footer's first_step is the smallest step >= 0 of the file's rows.
        assert contract.decode_attempts(pq.read_schema(path).metadata) == ((rank, attempt, 1),)
        writer = contract.segment_writer(path.name)
        # Each writer numbers its own segments and signs them with its token.
        assert path.name == contract.segment_name(rank, attempt, 0, writer)
        writers.add(writer)
    assert len(writers) == 2  # one token per writer


@pytest.mark.parametrize(
    "name, parsed",
    [
        ("0-1-00000007-5f1c0a93d2e84b76.parquet", (0, 1, "5f1c0a93d2e84b76")),
        ("3-0-00000000.parquet", (3, 0, None)),  # written before writer tokens
        ("c-01795348061910987853.parquet", (None, None)),
        (".tmp-0-1-00000007-5f1c0a93d2e84b76.parquet", (None, None)),
        ("0-1-00000007-NOTHEX.parquet", (None, None)),
    ],
    ids=["with-token", "before-tokens", "compacted", "temporary", "bad-token"],
)
def test_segment_names_parse_with_and_without_the_writer_token(name, parsed):
    rank_attempt = contract.segment_rank_attempt(name)
    assert (rank_attempt, contract.segment_writer(name)) == (
        (None, None) if parsed[0] is None else (parsed[:2], parsed[2]))


def test_compacted_file_footer_lists_the_pieces_and_every_attempt(tmp_path):
    write_every_table(tmp_path, attempts=2)
    pieces = [path.name for path in files_of(tmp_path, "scalars")]
    compact_run(Store(tmp_path), "r")
    (merged,) = files_of(tmp_path, "scalars")
    assert merged.name.startswith(contract.COMPACTED_PREFIX)
    metadata = pq.read_schema(merged).metadata
    assert contract.decode_covers(metadata) == tuple(pieces)
    assert contract.decode_attempts(metadata) == ((0, 0, 1), (0, 1, 1))


@pytest.mark.parametrize("table", contract.TABLES)
def test_reader_views_have_the_declared_columns_and_sql_types(tmp_path, table):
    write_every_table(tmp_path)
    with Store(tmp_path).connect() as con:
        described = con.execute(f"DESCRIBE {table}").fetchall()
    assert [(row[0], row[1]) for row in described] == [
        (column.name, SQL_TYPES[column.type]) for column in contract.COLUMNS[table]]


def test_run_json_keys_statuses_and_unix_seconds(tmp_path):
    before, after = write_every_table(tmp_path, attempts=2)
    meta = contract.read_run_json(tmp_path / "r")
    assert set(meta) <= set(contract.RUN_JSON_KEYS)
    assert meta["status"] in contract.RUN_STATUSES
    for key in ("created_at", "heartbeat_at", "finished_at"):
        assert before <= meta[key] <= after, key
    scalars = pq.read_table(files_of(tmp_path, "scalars")[0])
    assert all(before <= wall_time <= after for wall_time in scalars["wall_time"].to_pylist())
    # The kinds the writer records itself belong to the vocabulary.
    events = [pq.read_table(path)["kind"].to_pylist() for path in files_of(tmp_path, "events")]
    written = {kind for kinds in events for kind in kinds}
    assert written == {"nan_loss", "resumed"}
    assert written <= set(contract.EVENT_KINDS)


@pytest.mark.parametrize(
    "value, footer",
    [([(0, 0, 1)], b"[[0, 0, 1]]"), ([(2, 3, None)], b"[[2, 3, null]]"), ([], b"[]")],
    ids=["first-step", "no-step", "empty"],
)
def test_attempt_footer_encoding_round_trips(value, footer):
    assert contract.encode_attempts(value) == footer
    assert contract.decode_attempts({contract.ATTEMPTS_KEY: footer}) == tuple(value)
    assert json.loads(footer) == [list(entry) for entry in value]
