"""Import TensorBoard event files: every scalar point, both value forms.

The reader is our own: :mod:`traindoctor.store.importers.tfrecord` reads the TFRecord
framing (``uint64 length, uint32 masked_crc32c(length), data, uint32
masked_crc32c(data)``) and bulk-decodes the common one-``simple_value``
records with numpy; every other record is decoded by TensorBoard's compiled
``Event`` protobuf (``tensorboard.compat.proto``, upb-backed). Why not
TensorBoard's own loaders: ``EventAccumulator`` keeps a reservoir sample
(10,000 scalars and 10 tensors per tag by default; TF2 and ``new_style``
scalars are tensors), its record reader without TensorFlow checks CRCs in
pure Python one byte at a time (about 13,000 values/s against about 120,000
here on the same busy machine, see benchmarks/import_tensorboard.py), and it
stops quietly at the first bad record, so one corrupt record loses the rest
of the file. Here a truncated or corrupt tail is skipped with a warning, and
a corrupt record inside the file is dropped with a warning while the records
after it are kept.

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
from pathlib import Path
from typing import Any

import numpy as np

from traindoctor.store.errors import StoreError
from traindoctor.store.importers.common import ParsedRun, Progress, RunSource, checked_steps, series_from_columns
from traindoctor.store.importers.lightning import HPARAMS_FILE, logger_run_name, read_hparams
from traindoctor.store.importers.names import MetricKey, optimizer_from_tags
from traindoctor.store.importers.tfrecord import HEADER_BYTES, data_crc_ok, decode_simple_values, frame_records

# A first record longer than this is not a file_version event (~30 bytes).
_FIRST_RECORD_MAX_BYTES = 4096
# Update the progress bar every this many records (tqdm costs ~1 µs a call).
_PROGRESS_EVERY = 20_000
_EVENT_FILE_MARK = "tfevents"

# TensorProto dtypes (tensorflow/core/framework/types.proto).
_DT_FLOAT, _DT_DOUBLE, _DT_INT32, _DT_INT64, _DT_HALF, _DT_BFLOAT16 = 1, 2, 3, 9, 19, 14


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


def read_scalars(path: Path, progress: Progress | None = None) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every scalar point in one event file, in file order: tag → (steps, values, wall_times)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise StoreError(f"unreadable file {path}: {error.strerror or error}") from None
    if not data:
        warnings.warn(f"{path}: empty event file, nothing to import", RuntimeWarning, stacklevel=3)
        return {}
    starts, lengths = frame_records(path, data)
    buffer = np.frombuffer(data, dtype=np.uint8)
    if not data_crc_ok(buffer, starts[:1], lengths[:1])[0]:
        raise StoreError(f"{path} is not a TensorBoard event file")

    # The common one-simple_value records are decoded in bulk with numpy; the
    # rest (and always the first, the file_version check) through protobuf.
    simple = decode_simple_values(data, starts[1:], lengths[1:])
    simple["index"] += 1
    tags = _tags(data, simple)
    readable = np.array([t is not None for t in tags], dtype=bool)  # a tag that is not UTF-8: protobuf judges it
    others = np.setdiff1d(np.arange(len(starts)), simple["index"][readable], assume_unique=True)
    points, undecodable = _decode(path, data, starts, lengths, others, progress)
    points.append(tuple(column[readable] for column in (simple["index"], tags, simple["step"], simple["value"], simple["wall_time"])))

    record = np.concatenate([p[0] for p in points])
    tag = np.concatenate([p[1] for p in points])
    step, value, wall_time = (np.concatenate([p[i] for p in points]) for i in (2, 3, 4))

    # Only the records that gave scalars are CRC-checked, after decoding: they
    # are short, while images and histograms are long and each of its own
    # length, so checking them would cost more than the whole import.
    checked = np.unique(record)
    corrupt = checked[~data_crc_ok(buffer, starts[checked], lengths[checked])]
    if undecodable or len(corrupt):
        warnings.warn(f"{path}: skipped {undecodable + len(corrupt)} corrupt record(s)", RuntimeWarning, stacklevel=3)
    if progress is not None:
        progress.advance(path, len(data))
    return _by_tag(*(column[~np.isin(record, corrupt)] for column in (record, tag, step, value, wall_time)))


def _by_tag(record: np.ndarray, tag: np.ndarray, step: np.ndarray, value: np.ndarray, wall_time: np.ndarray) -> dict:
    """Split flat points into tag → (steps, values, wall_times), each in file order."""
    codes_of: dict[str, int] = {}
    codes = np.fromiter((codes_of.setdefault(t, len(codes_of)) for t in tag.tolist()), dtype=np.int64, count=len(tag))
    names = list(codes_of)
    order = np.lexsort((record, codes))
    columns = {}
    for rows in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1) if len(order) else []:
        columns[names[codes[rows[0]]]] = (step[rows], value[rows], wall_time[rows])
    return columns


def _tags(data: bytes, simple: dict[str, np.ndarray]) -> np.ndarray:
    """The tag of each bulk-decoded record (an object array of str; None where not UTF-8)."""
    names: dict[bytes, str | None] = {}
    tags = []
    for start, length in zip(simple["tag_start"].tolist(), simple["tag_length"].tolist()):
        raw = data[start:start + length]
        if raw not in names:
            try:
                names[raw] = raw.decode("utf-8")
            except UnicodeDecodeError:
                names[raw] = None
        tags.append(names[raw])
    return np.array(tags, dtype=object)


def _decode(path: Path, data: bytes, starts: np.ndarray, lengths: np.ndarray, records: np.ndarray,
            progress: Progress | None) -> tuple[list[tuple[np.ndarray, ...]], int]:
    """Decode ``records`` with protobuf: their scalar points as (record, tag, step, value,
    wall_time) arrays, and the number of records that did not decode."""
    from google.protobuf.message import DecodeError

    parse = _event_class().FromString
    found: tuple[list, list, list, list, list] = ([], [], [], [], [])
    record_of, tag_of, step_of, value_of, wall_of = (column.append for column in found)
    plugins: dict[str, str] = {}
    undecodable = 0
    for count, index in enumerate(records.tolist()):
        start, length = int(starts[index]), int(lengths[index])
        if progress is not None and count % _PROGRESS_EVERY == _PROGRESS_EVERY - 1:
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
        for value in event.summary.value:
            number = _scalar_of(value, plugins)
            if number is not None:
                record_of(index)
                tag_of(value.tag)
                step_of(event.step)
                value_of(number)
                wall_of(event.wall_time)
    points = (
        np.array(found[0], dtype=np.int64), np.array(found[1], dtype=object), np.array(found[2], dtype=np.int64),
        np.array(found[3], dtype=np.float64), np.array(found[4], dtype=np.float64),
    )
    return [points], undecodable


def _scalar_of(value, plugins: dict[str, str]) -> float | None:
    """The number a Summary.Value holds if it is a scalar (either form), else None."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return value.simple_value
    if kind != "tensor":
        return None
    tag = value.tag
    if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
        plugins[tag] = value.metadata.plugin_data.plugin_name
    # TF2 writes the metadata with a tag's first value only.
    if plugins.get(tag, "scalars") != "scalars":
        return None
    return _tensor_scalar(value.tensor)


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


# The tag of the record SummaryWriter.add_hparams (and Lightning's log_hyperparams) write the
# hyperparameters in (tensorboard.plugins.hparams.metadata.SESSION_START_INFO_TAG).
_HPARAMS_TAG = b"_hparams_/session_start_info"
# An add_hparams folder is this small: one experiment, one session and a few metric values.
_HPARAMS_FOLDER_MAX_BYTES = 1 << 20


def read_hparams_session(path: Path) -> dict[str, Any]:
    """The hyperparameters an event file's hparams session records (``SummaryWriter.add_hparams``,
    Lightning's ``log_hyperparams``): name → number, text or bool; {} when it has none. Unreadable
    records are left to :func:`read_scalars` to report."""
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    if _HPARAMS_TAG not in data:  # one bytes search: most event files hold no session
        return {}
    from google.protobuf.message import DecodeError

    try:
        from tensorboard.plugins.hparams import plugin_data_pb2
        starts, lengths = frame_records(path, data)
    except (ImportError, StoreError):
        return {}
    parse_event, hparams = _event_class().FromString, {}
    for start, length in zip(starts.tolist(), lengths.tolist()):
        record = data[start:start + length]
        if _HPARAMS_TAG not in record:
            continue
        try:
            event = parse_event(record)
            for value in event.summary.value:
                if value.tag == _HPARAMS_TAG.decode():
                    session = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    for name, item in session.session_start_info.hparams.items():
                        kind = item.WhichOneof("kind")
                        if kind in ("number_value", "string_value", "bool_value"):
                            hparams[name] = getattr(item, kind)
        except DecodeError:
            continue
    return hparams


def _is_hparams_folder(folder: Path, files: list[Path]) -> bool:
    """Whether ``folder`` is what ``SummaryWriter.add_hparams`` makes beside a run's events: an
    hparams session and at most one value per metric (``log_dir/<time.time()>``)."""
    try:
        if sum(file.stat().st_size for file in files) > _HPARAMS_FOLDER_MAX_BYTES:
            return False
    except OSError:
        return False
    if not any(read_hparams_session(file) for file in files):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return all(len(steps) <= 1 for file in files for steps, _, _ in read_scalars(file).values())
    except StoreError:
        return False


def discover(path: Path, run_name: str | None) -> list[RunSource]:
    """One run per folder holding event files (named by its path relative to ``path``).

    A folder ``SummaryWriter.add_hparams`` wrote inside a run's folder (its hyperparameters and
    the metric values given with them) is part of that run, not a run of its own: its
    hyperparameters become the run's config (``handle["hparams_files"]``).
    """
    if path.is_file():
        return [RunSource(name=run_name or logger_run_name(path.parent), path=path, files=[path, *_hparams(path.parent)])]
    if not path.is_dir():
        raise StoreError(f"unreadable file {path}: not a file or folder")
    folders: dict[Path, list[Path]] = defaultdict(list)
    for file in path.rglob(f"*{_EVENT_FILE_MARK}*"):
        if file.is_file():
            folders[file.parent].append(file)
    if not folders:
        raise StoreError(f"no TensorBoard event files under {path}")
    hparams_of: dict[Path, list[Path]] = defaultdict(list)
    for folder in sorted(folders):
        if folder.parent in folders and _is_hparams_folder(folder, folders[folder]):
            hparams_of[folder.parent] += sorted(folders.pop(folder), key=_file_order)
    sources = []
    for folder in sorted(folders):
        relative = folder.relative_to(path).as_posix()
        if relative == ".":
            name = run_name or logger_run_name(path)
        elif run_name:
            name = f"{run_name}/{relative}"
        else:
            # Lightning's TensorBoardLogger writes <name>/version_<n>: named as `import lightning` names it.
            name = logger_run_name(folder) if "/" not in relative else relative
        files = sorted(folders[folder], key=_file_order) + _hparams(folder)
        sources.append(RunSource(name=name, path=folder, files=files + hparams_of[folder],
                                 handle={"hparams_files": hparams_of[folder]}))
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
            header = handle.read(HEADER_BYTES)
            if len(header) < HEADER_BYTES:
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
    +1 as in :mod:`traindoctor.store.importers.lightning`, and hparams.yaml
    becomes the config. Otherwise the config is the hparams session of the
    run's event files and of its add_hparams folder (see :func:`discover`),
    whose metric values are kept at the run's last step as user metrics. A
    step repeated within the merged files keeps its last value, as for every
    importer.
    """
    session_files = list((source.handle or {}).get("hparams_files") or [])
    event_files = [f for f in source.files if f.name != HPARAMS_FILE and f not in session_files]
    hparams = [f for f in source.files if f.name == HPARAMS_FILE]
    columns = _merge_files([read_scalars(file, progress) for file in event_files])
    env: dict = {"logger": "tensorboard"}
    config: dict = {}
    for file in event_files + session_files:
        config.update(read_hparams_session(file))
    if hparams:
        columns = {tag: (checked_steps(steps, source.path, offset=1), values, walls)
                   for tag, (steps, values, walls) in columns.items()}
        config = read_hparams(hparams[0])  # Lightning's own record of them, nested as given
        env["logger"] = "lightning.TensorBoardLogger"
    last_step = max((int(steps.max()) for steps, _, _ in columns.values() if len(steps)), default=None)
    for file in session_files:
        # The metric values given to add_hparams describe the finished run: kept at its last
        # step as user metrics (as a W&B summary is), out of the training curves.
        for tag, (steps, values, walls) in read_scalars(file, progress).items():
            if last_step is not None and len(values) and tag not in columns:
                columns[MetricKey("user", tag)] = (np.array([last_step]), values[-1:], walls[-1:])
    optimizer = optimizer_from_tags([tag for tag in columns if isinstance(tag, str)])
    if optimizer:
        env["optimizer"] = {"type": optimizer}
    return ParsedRun(source=source, series=series_from_columns(columns), config=config, env=env)
