"""Import TensorBoard event files: every scalar point, both value forms.

The reader is our own (about a hundred lines) over the TFRecord framing —
``uint64 length, uint32 masked_crc32c(length), data, uint32
masked_crc32c(data)`` — with each record decoded by TensorBoard's compiled
``Event`` protobuf (``tensorboard.compat.proto``, upb-backed). Why not
TensorBoard's own loaders: ``EventAccumulator`` keeps a reservoir sample
(10,000 scalars and 10 tensors per tag by default; TF2 and
``new_style`` scalars are tensors), its record reader without TensorFlow
checks CRCs in pure Python one byte at a time (about 14,000 values/s against
about 200,000 here, see benchmarks/import_tensorboard.py), and it stops
quietly at the first bad record, so one corrupt record loses the rest of the
file. Here the CRCs are checked with numpy, one vectorised table lookup per
byte position over all records of the same length; a truncated or corrupt
tail is skipped with a warning, and a corrupt record inside the file is
dropped with a warning while the records after it are kept.

Scalars come in two forms and both are read: the old ``simple_value`` and
the tensor form (TF2 ``tf.summary.scalar``, ``SummaryWriter.add_scalar(...,
new_style=True)``) where a 0-d tensor carries the value and the metadata
names the ``scalars`` plugin.
"""

from __future__ import annotations

import math
import re
import struct
import warnings
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from store.importers.common import ParsedRun, Progress, RunSource, last_per_step, series_from_columns
from store.importers.lightning import HPARAMS_FILE, read_hparams
from store.importers.names import optimizer_from_tags
from store.segments import StoreError

_HEADER_BYTES = 12  # uint64 length + uint32 masked crc of the length
_FOOTER_BYTES = 4   # uint32 masked crc of the data
# A first record longer than this is not a file_version event (~30 bytes).
_FIRST_RECORD_MAX_BYTES = 4096
# Update the progress bar every this many records (tqdm costs ~1 µs a call).
_PROGRESS_EVERY = 20_000
_EVENT_FILE_MARK = "tfevents"

# TensorProto dtypes (tensorflow/core/framework/types.proto).
_DT_FLOAT, _DT_DOUBLE, _DT_INT32, _DT_INT64, _DT_HALF, _DT_BFLOAT16 = 1, 2, 3, 9, 19, 14


@lru_cache(maxsize=1)
def _crc32c_table() -> np.ndarray:
    """The 256-entry table of CRC-32C (Castagnoli, reflected polynomial 0x82F63B78)."""
    table = np.zeros(256, dtype=np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table[byte] = crc
    return table


def masked_crc32c(buffer: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """TFRecord's masked CRC-32C of ``buffer[s:s+length]`` for every start ``s`` at once."""
    table = _crc32c_table()
    crc = np.full(len(starts), 0xFFFFFFFF, dtype=np.uint32)
    for offset in range(length):
        crc = table[(crc ^ buffer[starts + offset]) & 0xFF] ^ (crc >> np.uint32(8))
    crc ^= np.uint32(0xFFFFFFFF)
    return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)


def _stored_crcs(buffer: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The little-endian uint32 stored at each offset."""
    return (
        buffer[offsets].astype(np.uint32)
        | (buffer[offsets + 1].astype(np.uint32) << np.uint32(8))
        | (buffer[offsets + 2].astype(np.uint32) << np.uint32(16))
        | (buffer[offsets + 3].astype(np.uint32) << np.uint32(24))
    )


def _data_crc_ok(buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Whether each record's data matches its stored CRC (grouped by length, vectorised)."""
    ok = np.ones(len(starts), dtype=bool)
    if not len(starts):
        return ok
    order = np.argsort(lengths, kind="stable")
    for members in np.split(order, np.flatnonzero(np.diff(lengths[order])) + 1):
        length = int(lengths[members[0]])
        computed = masked_crc32c(buffer, starts[members], length)
        ok[members] = computed == _stored_crcs(buffer, starts[members] + length)
    return ok


def _frame(path: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Data offsets and lengths of the records whose framing is intact.

    A truncated record or a length whose CRC fails ends the usable part of
    the file (nothing after a bad length can be located): a warning names
    the bytes skipped. Raises ``StoreError`` when the very first record is
    not valid TFRecord framing.
    """
    unpack_length = struct.Struct("<Q").unpack_from
    size = len(data)
    offsets: list[int] = []
    lengths: list[int] = []
    offset = 0
    while offset + _HEADER_BYTES <= size:
        length = unpack_length(data, offset)[0]
        if offset + _HEADER_BYTES + length + _FOOTER_BYTES > size:
            break
        offsets.append(offset)
        lengths.append(length)
        offset += _HEADER_BYTES + length + _FOOTER_BYTES
    buffer = np.frombuffer(data, dtype=np.uint8)
    starts = np.array(offsets, dtype=np.int64)
    header_ok = masked_crc32c(buffer, starts, 8) == _stored_crcs(buffer, starts + 8)
    if not header_ok.all():
        first_bad = int(np.argmin(header_ok))
        offset = int(starts[first_bad])
        starts = starts[:first_bad]
        lengths = lengths[:first_bad]
    if offset < size:
        if not len(starts):
            raise StoreError(f"{path} is not a TensorBoard event file")
        warnings.warn(
            f"{path}: truncated or corrupt record at byte {offset}; skipped the last {size - offset} bytes",
            RuntimeWarning, stacklevel=4,
        )
    return starts + _HEADER_BYTES, np.array(lengths, dtype=np.int64)


def _tensor_scalar(tensor) -> float | None:
    """The value of a 0-d (or one-element) numeric tensor, None otherwise."""
    dims = tensor.tensor_shape.dim
    if dims and any(d.size != 1 for d in dims):
        return None
    dtype = tensor.dtype
    content = tensor.tensor_content
    if dtype == _DT_FLOAT:
        return tensor.float_val[0] if tensor.float_val else (struct.unpack("<f", content[:4])[0] if len(content) >= 4 else None)
    if dtype == _DT_DOUBLE:
        return tensor.double_val[0] if tensor.double_val else (struct.unpack("<d", content[:8])[0] if len(content) >= 8 else None)
    if dtype == _DT_INT32:
        return float(tensor.int_val[0]) if tensor.int_val else (float(struct.unpack("<i", content[:4])[0]) if len(content) >= 4 else None)
    if dtype == _DT_INT64:
        return float(tensor.int64_val[0]) if tensor.int64_val else (float(struct.unpack("<q", content[:8])[0]) if len(content) >= 8 else None)
    if dtype == _DT_HALF:
        raw = np.array(tensor.half_val[:1], dtype=np.uint16).tobytes() if tensor.half_val else content[:2]
        return float(np.frombuffer(raw, dtype=np.float16)[0]) if len(raw) == 2 else None
    if dtype == _DT_BFLOAT16:
        raw = np.array(tensor.half_val[:1], dtype=np.uint16) if tensor.half_val else np.frombuffer(content[:2], dtype=np.uint16)
        return float((raw.astype(np.uint32) << 16).view(np.float32)[0]) if len(raw) == 1 else None
    return None


def _event_class():
    try:
        from tensorboard.compat.proto import event_pb2
    except ImportError:
        raise StoreError("importing TensorBoard logs needs the tensorboard package: pip install 'traindoctor[tensorboard]'") from None
    return event_pb2.Event


def read_scalars(path: Path, progress: Progress | None = None) -> dict[str, tuple[list, list, list]]:
    """Every scalar point in one event file: tag → (steps, values, wall_times)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise StoreError(f"unreadable file {path}: {error.strerror or error}") from None
    if not data:
        warnings.warn(f"{path}: empty event file, nothing to import", RuntimeWarning, stacklevel=3)
        return {}
    starts, lengths = _frame(path, data)
    buffer = np.frombuffer(data, dtype=np.uint8)
    if not _data_crc_ok(buffer, starts[:1], lengths[:1])[0]:
        raise StoreError(f"{path} is not a TensorBoard event file")
    columns, scalar_records, undecodable = _decode(path, data, starts, lengths, progress)

    # Only the records that gave scalars are CRC-checked, after decoding: they
    # are short, while images and histograms are long and each of its own
    # length, so checking them would cost more than the whole import.
    checked = np.array(scalar_records, dtype=np.int64)
    corrupt = checked[~_data_crc_ok(buffer, starts[checked], lengths[checked])]
    if len(corrupt):
        columns = _without_records(columns, set(corrupt.tolist()))
    if undecodable or len(corrupt):
        warnings.warn(f"{path}: skipped {undecodable + len(corrupt)} corrupt record(s)", RuntimeWarning, stacklevel=3)
    return {tag: column[:3] for tag, column in columns.items()}


def _decode(path: Path, data: bytes, starts: np.ndarray, lengths: np.ndarray, progress: Progress | None):
    """Decode every record: tag → (steps, values, wall_times, record indexes), the records
    that held scalars, and the number that did not decode."""
    from google.protobuf.message import DecodeError

    parse = _event_class().FromString
    columns: dict[str, tuple[list, list, list, list]] = defaultdict(lambda: ([], [], [], []))
    plugins: dict[str, str] = {}
    scalar_records: list[int] = []
    undecodable = 0
    for index, (start, length) in enumerate(zip(starts.tolist(), lengths.tolist())):
        if progress is not None and index % _PROGRESS_EVERY == _PROGRESS_EVERY - 1:
            progress.advance(path, start)
        try:
            event = parse(data[start:start + length])
        except DecodeError:
            if index == 0:
                raise StoreError(f"{path} is not a TensorBoard event file") from None
            undecodable += 1
            continue
        if index == 0 and not event.file_version.startswith("brain.Event"):
            raise StoreError(f"{path} is not a TensorBoard event file")
        values = event.summary.value
        if not values:
            continue
        step = event.step
        wall_time = event.wall_time
        found = False
        for value in values:
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                number = value.simple_value
            elif kind == "tensor":
                tag = value.tag
                if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
                    plugins[tag] = value.metadata.plugin_data.plugin_name
                # TF2 writes the metadata with a tag's first value only.
                if plugins.get(tag, "scalars") != "scalars":
                    continue
                number = _tensor_scalar(value.tensor)
                if number is None:
                    continue
            else:
                continue
            column = columns[value.tag]
            column[0].append(step)
            column[1].append(number)
            column[2].append(wall_time)
            column[3].append(index)
            found = True
        if found:
            scalar_records.append(index)
    if progress is not None:
        progress.advance(path, len(data))
    return columns, scalar_records, undecodable


def _without_records(columns: dict, corrupt: set[int]) -> dict:
    kept = {}
    for tag, (steps, values, walls, records) in columns.items():
        keep = [i for i, record in enumerate(records) if record not in corrupt]
        kept[tag] = ([steps[i] for i in keep], [values[i] for i in keep], [walls[i] for i in keep], [records[i] for i in keep])
    return kept


def _merge_files(per_file: list[dict[str, tuple[list, list, list]]]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One run's files in order; a later file wins a tag's steps from its first step on.

    A training job restarted from a checkpoint writes a new event file that
    repeats steps; like the store's attempts, the newest file wins where they
    overlap and every other point is kept.
    """
    merged: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for columns in per_file:
        for tag, (steps, values, walls) in columns.items():
            new = (np.array(steps, dtype=np.int64), np.array(values, dtype=np.float64), np.array(walls, dtype=np.float64))
            if tag in merged and len(new[0]):
                old = merged[tag]
                keep = old[0] < new[0].min()
                new = tuple(np.concatenate([o[keep], n]) for o, n in zip(old, new))
            merged[tag] = new
    return merged


def is_event_file(path: Path) -> bool:
    return path.is_file() and _EVENT_FILE_MARK in path.name


def discover(path: Path, run_name: str | None) -> list[RunSource]:
    """One run per folder holding event files (named by its path relative to ``path``)."""
    if path.is_file():
        return [RunSource(name=run_name or path.resolve().parent.name, path=path, files=[path, *_hparams(path.parent)])]
    if not path.is_dir():
        raise StoreError(f"unreadable file {path}: no such file or folder")
    folders: dict[Path, list[Path]] = defaultdict(list)
    for file in path.rglob(f"*{_EVENT_FILE_MARK}*"):
        if file.is_file():
            folders[file.parent].append(file)
    if not folders:
        raise StoreError(f"no TensorBoard event files under {path}")
    sources = []
    for folder in sorted(folders):
        relative = folder.relative_to(path).as_posix()
        if relative == ".":
            name = run_name or path.resolve().name
        else:
            name = f"{run_name}/{relative}" if run_name else relative
        files = sorted(folders[folder], key=_file_order) + _hparams(folder)
        sources.append(RunSource(name=name, path=folder, files=files))
    return sources


def _hparams(folder: Path) -> list[Path]:
    """Lightning's TensorBoardLogger writes hparams.yaml next to its event files."""
    return [folder / HPARAMS_FILE] if (folder / HPARAMS_FILE).is_file() else []


def _file_order(file: Path) -> tuple:
    """Event files in the order they were started.

    The name's creation time (events.out.tfevents.<seconds>.<host>.<pid>.<n>)
    has one-second resolution, so ties are broken by the wall time of the
    file's first event (sub-second), then by the name with its numbers
    compared as numbers (writer 10 after writer 9).
    """
    natural = tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", file.name))
    return (_first_wall_time(file), natural)


def _first_wall_time(file: Path) -> float:
    try:
        with open(file, "rb") as handle:
            header = handle.read(_HEADER_BYTES)
            if len(header) < _HEADER_BYTES:
                return math.inf
            length = struct.unpack("<Q", header[:8])[0]
            if length > _FIRST_RECORD_MAX_BYTES:
                return math.inf
            event = _event_class().FromString(handle.read(length))
    except Exception:  # any unreadable start sorts last; read_scalars reports it properly
        return math.inf
    return event.wall_time if event.wall_time else math.inf


def parse(source: RunSource, progress: Progress) -> ParsedRun:
    """One run folder (or file); a folder with Lightning's hparams.yaml is a Lightning run.

    Lightning logs ``step`` as the optimizer steps taken before the logged
    batch, with TensorBoardLogger as with CSVLogger; its steps get the same
    +1 and last-value-per-step as in :mod:`store.importers.lightning`, and
    hparams.yaml becomes the config.
    """
    event_files = [f for f in source.files if f.name != HPARAMS_FILE]
    hparams = [f for f in source.files if f.name == HPARAMS_FILE]
    columns = _merge_files([read_scalars(file, progress) for file in event_files])
    env: dict = {"logger": "tensorboard"}
    config: dict = {}
    if hparams:
        # Lightning repeats some values at one step (see store.importers.lightning): last one wins.
        columns = {tag: last_per_step(steps + 1, values, walls) for tag, (steps, values, walls) in columns.items()}
        config = read_hparams(hparams[0])
        env["logger"] = "lightning.TensorBoardLogger"
    optimizer = optimizer_from_tags(columns)
    if optimizer:
        env["optimizer"] = {"type": optimizer}
    return ParsedRun(source=source, series=series_from_columns(columns), config=config, env=env)
