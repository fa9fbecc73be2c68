"""`import tensorboard`: event files written by the real SummaryWriter, both value forms."""

from __future__ import annotations

import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from traindoctor.store.errors import StoreError
from traindoctor.store.importers import import_source
from traindoctor.store.importers.tensorboard import read_scalars
from traindoctor.store.importers.tfrecord import decode_simple_values, masked_crc32c
from traindoctor.store.reader import Store
from tests.importers.conftest import findings_of, imported_series, listing

torch = pytest.importorskip("torch")
SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2  # noqa: E402
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference_masked_crc32c  # noqa: E402
from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: E402

STEPS = 40


def loss_at(step: int) -> float:
    return 2.5 * math.exp(-step / 15) + 0.1


def write_log(folder: Path, steps: int = STEPS, *, first_step: int = 1) -> Path:
    """A training log in both value forms: simple_value (loss, lr-Adam, epoch) and tensor (grad_norm, val/acc)."""
    existing = set(folder.glob("events.out.tfevents.*"))
    with SummaryWriter(str(folder)) as writer:
        for step in range(first_step, first_step + steps):
            writer.add_scalar("train/loss", loss_at(step), step)
            writer.add_scalar("lr-Adam", 0.01, step)
            writer.add_scalar("epoch", step // 10, step)
            writer.add_scalar("grad_norm", 0.5 + step / 100, step, new_style=True)
            if step % 10 == 0:
                writer.add_scalar("val/acc", step / 100, step, new_style=True, double_precision=True)
            writer.add_histogram("weights", np.arange(5.0) * step, step)  # not a scalar: ignored
    [event_file] = set(folder.glob("events.out.tfevents.*")) - existing
    return event_file


def test_every_point_of_both_value_forms_is_imported(tmp_path, store_root):
    write_log(tmp_path / "logs")
    [result] = import_source("tensorboard", store_root, tmp_path / "logs")
    assert (result.name, result.skipped) == ("logs", False)
    steps = np.arange(1, STEPS + 1)

    loss = imported_series(store_root, result.run_id, "train", "loss")
    assert loss["step"].tolist() == steps.tolist()
    # simple_value is a float32 on disk.
    np.testing.assert_array_equal(loss["value"], np.float32([loss_at(s) for s in steps]))
    assert loss["epoch"].tolist() == (steps // 10).astype(float).tolist()

    lr = imported_series(store_root, result.run_id, "train", "lr", "group0")
    assert lr["value"].tolist() == [np.float32(0.01)] * STEPS
    grad_norm = imported_series(store_root, result.run_id, "train", "grad_norm")
    np.testing.assert_array_equal(grad_norm["value"], np.float32(0.5 + steps / 100))
    accuracy = imported_series(store_root, result.run_id, "val", "accuracy")
    assert accuracy["step"].tolist() == [10, 20, 30, 40]
    assert accuracy["value"].tolist() == [0.1, 0.2, 0.3, 0.4]  # double_precision keeps the float64
    assert result.rows == 3 * STEPS + 4
    meta = Store(store_root).run_meta(result.run_id)
    assert meta["source"]["kind"] == "tensorboard" and meta["source"]["rows"] == result.rows


def tensor_summary(tag: str, value: float, *, dtype: int, first: bool) -> summary_pb2.Summary:
    """The TF2 form: a 0-d tensor, the scalars plugin named only in a tag's first value."""
    if dtype == 2:
        tensor = tensor_pb2.TensorProto(dtype=2, tensor_shape=tensor_shape_pb2.TensorShapeProto(), tensor_content=struct.pack("<d", value))
    else:
        tensor = tensor_pb2.TensorProto(dtype=1, tensor_shape=tensor_shape_pb2.TensorShapeProto(), float_val=[value])
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")) if first else None
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata)])


def test_tf2_tensor_form_with_metadata_on_the_first_value_only(tmp_path, store_root):
    folder = tmp_path / "tf2"
    writer = EventFileWriter(str(folder))
    text = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
    for step in range(1, 6):
        writer.add_event(event_pb2.Event(step=step, wall_time=100.0 + step, summary=tensor_summary("loss", 1.0 / step, dtype=2, first=step == 1)))
        writer.add_event(event_pb2.Event(step=step, wall_time=100.0 + step, summary=tensor_summary("val_loss", 2.0 / step, dtype=1, first=step == 1)))
        # A text summary is a tensor too, of another plugin: not a scalar.
        note = summary_pb2.Summary.Value(tag="note", metadata=text if step == 1 else None,
                                         tensor=tensor_pb2.TensorProto(dtype=7, string_val=[b"hello"]))
        writer.add_event(event_pb2.Event(step=step, summary=summary_pb2.Summary(value=[note])))
    writer.close()
    [result] = import_source("tensorboard", store_root, folder)
    loss = imported_series(store_root, result.run_id, "train", "loss")
    assert loss["value"].tolist() == [1.0 / s for s in range(1, 6)]
    assert loss["wall_time"].tolist() == [100.0 + s for s in range(1, 6)]
    val = imported_series(store_root, result.run_id, "val", "loss")
    np.testing.assert_array_equal(val["value"], np.float32([2.0 / s for s in range(1, 6)]))
    assert set(Store(store_root).scalars([result.run_id])["name"]) == {"loss"}


@pytest.mark.parametrize("cut", [1, 5, 20], ids=["crc-byte", "mid-data", "into-header"])
def test_truncated_tail_is_skipped_with_a_warning(tmp_path, store_root, cut):
    event_file = write_log(tmp_path / "logs")
    data = event_file.read_bytes()
    event_file.write_bytes(data[:-cut])
    with pytest.warns(RuntimeWarning, match="truncated or corrupt record"):
        [result] = import_source("tensorboard", store_root, event_file)
    # The last record written is the last histogram; every scalar before it survives.
    assert len(imported_series(store_root, result.run_id, "train", "loss")) == STEPS


@pytest.mark.parametrize("offset", [1, len("train/loss") + 1], ids=["in-tag-undecodable", "in-value-decodes-but-crc-fails"])
def test_corrupt_record_inside_the_file_is_dropped_with_a_warning(tmp_path, offset):
    event_file = write_log(tmp_path / "logs")
    data = bytearray(event_file.read_bytes())
    target = data.find(b"train/loss")
    data[target + offset] ^= 0xFF  # one record's payload changed: its data CRC fails
    event_file.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="skipped 1 corrupt record"):
        columns = read_scalars(event_file)
    assert len(columns["train/loss"][0]) == STEPS - 1
    assert columns["train/loss"][0][0] == 2  # the first loss record was the corrupt one
    assert len(columns["lr-Adam"][0]) == STEPS


def test_every_folder_with_event_files_becomes_a_run(tmp_path, store_root):
    write_log(tmp_path / "logs" / "exp1", steps=5)
    write_log(tmp_path / "logs" / "exp2" / "version_0", steps=7)
    results = import_source("tensorboard", store_root, tmp_path / "logs")
    assert sorted((r.name, r.rows) for r in results) == [("exp1", 3 * 5), ("exp2/version_0", 3 * 7)]
    named = import_source("tensorboard", store_root / "other", tmp_path / "logs", run_name="sweep")
    assert sorted(r.name for r in named) == ["sweep/exp1", "sweep/exp2/version_0"]


def test_a_lightning_logger_version_folder_is_named_as_import_lightning_names_it(tmp_path, store_root):
    # tb_logs/my_model/version_0 imported as 'version_0' (from tb_logs/my_model or itself): every
    # experiment has a version_0, and `import lightning` names the same layout 'my_model/version_0'.
    for version in ("version_0", "version_1"):
        write_log(tmp_path / "tb_logs" / "my_model" / version, steps=3)
    results = import_source("tensorboard", store_root, tmp_path / "tb_logs" / "my_model")
    assert sorted(r.name for r in results) == ["my_model/version_0", "my_model/version_1"]
    [alone] = import_source("tensorboard", tmp_path / "store2", tmp_path / "tb_logs" / "my_model" / "version_0")
    assert alone.name == "my_model/version_0"


def test_add_hparams_folder_is_the_config_of_its_run_not_a_run_of_its_own(tmp_path, store_root):
    # SummaryWriter.add_hparams writes log_dir/<time.time()>/: it became a second run of 0 steps
    # ('NOTHING RECORDED') and the run itself had no config, so `runs --filter lr<...` missed it.
    folder = tmp_path / "logs" / "lr0.1"
    write_log(folder, steps=5)
    with SummaryWriter(str(folder)) as writer:
        writer.add_hparams({"lr": 0.1, "batch_size": 64, "optimizer": "adam", "nesterov": True}, {"hparam/acc": 0.9})
    write_log(folder / "trial2", steps=5)  # a run of its own nested in the folder: still one
    results = import_source("tensorboard", store_root, tmp_path / "logs")
    assert sorted((r.name, r.rows) for r in results) == [("lr0.1", 3 * 5 + 1), ("lr0.1/trial2", 3 * 5)]
    [run] = [r for r in results if r.name == "lr0.1"]
    meta = Store(store_root).run_meta(run.run_id)
    assert meta["config"] == {"lr": 0.1, "batch_size": 64, "optimizer": "adam", "nesterov": True}
    acc = imported_series(store_root, run.run_id, "user", "hparam/acc")
    assert acc["step"].tolist() == [5] and acc["value"].tolist() == pytest.approx([0.9])
    assert imported_series(store_root, run.run_id, "train", "loss")["step"].tolist() == [1, 2, 3, 4, 5]


def test_a_restart_file_wins_where_steps_overlap(tmp_path, store_root):
    folder = tmp_path / "logs"
    # Writers number their files per process (….9, ….10): as text the restart would sort first.
    for _ in range(9):
        SummaryWriter(str(tmp_path / "other")).close()
    with SummaryWriter(str(folder), filename_suffix=".a") as writer:
        for step in range(1, 11):
            writer.add_scalar("loss", 1.0, step)
    with SummaryWriter(str(folder), filename_suffix=".b") as writer:  # resumed from step 6
        for step in range(6, 13):
            writer.add_scalar("loss", 2.0, step)
    [result] = import_source("tensorboard", store_root, folder)
    loss = imported_series(store_root, result.run_id, "train", "loss")
    assert loss["step"].tolist() == list(range(1, 13))
    assert loss["value"].tolist() == [1.0] * 5 + [2.0] * 7


@pytest.mark.parametrize("content", [b"", b"step,loss\n1,2.0\n", bytes(range(256)) * 4],
                         ids=["empty", "csv-text", "binary-noise"])
def test_not_an_event_file_is_a_one_line_error_and_store_unchanged(tmp_path, store_root, content):
    write_log(tmp_path / "good", steps=3)
    import_source("tensorboard", store_root, tmp_path / "good")
    before = listing(store_root)
    bad = tmp_path / "events.out.tfevents.123.host"
    bad.write_bytes(content)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the empty file warns before the error
        with pytest.raises(StoreError) as error:
            import_source("tensorboard", store_root, bad)
    expected = f"no scalar values found in {bad}" if not content else f"{bad} is not a TensorBoard event file"
    assert str(error.value) == expected
    assert listing(store_root) == before


def test_folder_without_event_files_is_an_error(tmp_path, store_root):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="^no TensorBoard event files under "):
        import_source("tensorboard", store_root, tmp_path / "empty")


def test_reimport_skips_and_a_grown_log_replaces(tmp_path, store_root):
    folder = tmp_path / "logs"
    write_log(folder, steps=10)
    [first] = import_source("tensorboard", store_root, folder)
    [again] = import_source("tensorboard", store_root, folder)
    assert again.skipped and again.run_id == first.run_id
    write_log(folder, steps=5, first_step=11)  # training went on: a second file
    [grown] = import_source("tensorboard", store_root, folder)
    assert (grown.run_id, grown.skipped) == (first.run_id, False)
    assert Store(store_root).run_ids() == [first.run_id]
    assert imported_series(store_root, first.run_id, "train", "loss")["step"].tolist() == list(range(1, 16))


@pytest.mark.parametrize("length", [0, 1, 8, 33, 300])
def test_masked_crc32c_matches_tensorboard(length):
    rng = np.random.default_rng(length)
    records = [rng.integers(0, 256, length, dtype=np.uint8).tobytes() for _ in range(5)]
    buffer = np.frombuffer(b"".join(records), dtype=np.uint8)
    starts = np.arange(5, dtype=np.int64) * length
    assert masked_crc32c(buffer, starts, length).tolist() == [reference_masked_crc32c(r) for r in records]


def test_progress_bar_on_request(tmp_path, store_root, capsys):
    write_log(tmp_path / "logs", steps=3)
    import_source("tensorboard", store_root, tmp_path / "logs", progress=True)
    assert "import tensorboard" in capsys.readouterr().err
    import_source("tensorboard", store_root / "quiet", tmp_path / "logs", progress=False)
    assert capsys.readouterr().err == ""


def test_diverging_log_is_diagnosed(tmp_path, store_root):
    with SummaryWriter(str(tmp_path / "diverged")) as writer:
        for step in range(1, 201):
            loss = 2.3 - step / 200 if step < 80 else (2.3 * 1.08 ** (step - 80) if step < 150 else math.nan)
            writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("lr", 3.0, step)
    [result] = import_source("tensorboard", store_root, tmp_path / "diverged", num_classes=10)
    assert "divergence" in {finding.rule for finding in findings_of(store_root, result.run_id)}


def record_offsets(data: bytes) -> list[int]:
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += 16 + struct.unpack_from("<Q", data, offset)[0]
    return offsets


def test_corrupt_length_ends_the_file_with_a_warning(tmp_path):
    event_file = write_log(tmp_path / "logs")
    data = bytearray(event_file.read_bytes())
    offsets = record_offsets(bytes(data))
    data[offsets[len(offsets) // 2]] ^= 0x01  # the length is now off by one and fails its CRC
    event_file.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match=f"corrupt record at byte {offsets[len(offsets) // 2]}"):
        columns = read_scalars(event_file)
    assert 0 < len(columns["train/loss"][0]) < STEPS


def test_runs_without_scalars_are_left_out_with_a_warning(tmp_path, store_root):
    write_log(tmp_path / "logs" / "scalars", steps=3)
    with SummaryWriter(str(tmp_path / "logs" / "histograms_only")) as writer:
        writer.add_histogram("weights", np.arange(5.0), 1)
    with pytest.warns(RuntimeWarning, match="histograms_only: no scalar values, not imported"):
        results = import_source("tensorboard", store_root, tmp_path / "logs")
    assert [r.name for r in results] == ["scalars"]


def test_leftover_staging_of_a_killed_import_is_removed(tmp_path, store_root):
    import os
    import time

    stale = store_root / ".import-deadbeef" / "20260101-000000-abcdef"
    stale.mkdir(parents=True)
    old = time.time() - 2 * 3600
    os.utime(stale.parent, (old, old))
    write_log(tmp_path / "logs", steps=3)
    import_source("tensorboard", store_root, tmp_path / "logs")
    assert not stale.parent.exists()


def test_a_failed_write_undoes_the_whole_import(tmp_path, store_root, monkeypatch):
    import traindoctor.store.importers.common as common

    write_log(tmp_path / "logs" / "a", steps=3)
    write_log(tmp_path / "logs" / "b", steps=3)
    [first] = import_source("tensorboard", store_root, tmp_path / "logs" / "a")
    write_log(tmp_path / "logs" / "a", steps=2, first_step=4)  # a changed: this import replaces it
    before = listing(store_root)
    before_rows = len(Store(store_root).scalars([first.run_id]))

    class FailingSecondRun(common.RunWriter):
        def flush(self) -> None:
            if self.run_id != first.run_id:
                raise OSError(28, "No space left on device")
            super().flush()

    monkeypatch.setattr(common, "RunWriter", FailingSecondRun)
    with pytest.raises(StoreError, match="^cannot write into store .*: No space left on device$"):
        import_source("tensorboard", store_root, tmp_path / "logs")
    assert listing(store_root) == before
    assert len(Store(store_root).scalars([first.run_id])) == before_rows


def reference_points(event_file: Path) -> dict[str, list[tuple[int, float, float]]]:
    """Oracle: TensorBoard's own raw record loader, protobuf decoding and tensor_util, point by point."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.util import tensor_util

    points: dict[str, list[tuple[int, float, float]]] = {}
    plugins: dict[str, str] = {}
    for record in RawEventFileLoader(str(event_file)).Load():
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name:
                plugins[value.tag] = value.metadata.plugin_data.plugin_name
            if value.HasField("simple_value"):
                number = value.simple_value
            elif value.HasField("tensor") and plugins.get(value.tag) == "scalars":
                number = float(tensor_util.make_ndarray(value.tensor))
            else:
                continue
            points.setdefault(value.tag, []).append((event.step, number, event.wall_time))
    return points


def test_bulk_decoder_and_protobuf_agree_on_a_mixed_log(tmp_path):
    folder = tmp_path / "mixed"
    with SummaryWriter(str(folder)) as writer:
        for step in [0, 1, 2, 127, 128, 300, 2**21, 2**40, -5]:
            writer.add_scalar("loss", 1.0 / (abs(step) + 1), step)
            writer.add_scalar("ünïcode/ラベル", step * 0.5, step)
            writer.add_scalar("tensor_form", step * 2.0, step, new_style=True)
            writer.add_histogram("weights", np.arange(4.0), step)
        writer.add_scalar("loss", math.nan, 7)
        writer.add_scalar("loss", math.inf, 8)
        writer.add_scalar("x" * 300, 3.0, 9)  # a tag long enough for a 2-byte length varint
    [event_file] = folder.glob("events.out.tfevents.*")
    writer = EventFileWriter(str(folder))  # one event holding two values (TF1's merged summaries)
    writer.add_event(event_pb2.Event(step=10, wall_time=5.0, summary=summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag="loss", simple_value=0.25), summary_pb2.Summary.Value(tag="lr", simple_value=0.1)])))
    writer.close()
    [merged_file] = set(folder.glob("events.out.tfevents.*")) - {event_file}

    for file in (event_file, merged_file):
        expected = reference_points(file)
        got = read_scalars(file)
        assert sorted(got) == sorted(expected)
        for tag, columns in got.items():
            for column, reference in zip(columns, zip(*expected[tag])):
                np.testing.assert_array_equal(column, np.array(reference), err_msg=tag)  # NaN equals NaN here

    data = event_file.read_bytes()
    offsets = np.array(record_offsets(data), dtype=np.int64)
    lengths = np.array([struct.unpack_from("<Q", data, o)[0] for o in offsets], dtype=np.int64)
    bulk = decode_simple_values(data, offsets + 12, lengths)
    # Every simple_value record of SummaryWriter took the bulk path (all but file_version, histograms, tensors).
    assert len(bulk["index"]) == 9 * 2 + 3
