"""A small reader of the TFRecord framing that TensorBoard event files use.

Each record is ``uint64 length, uint32 masked_crc32c(length), data[length],
uint32 masked_crc32c(data)``. Records are framed one by one; the costly
parts then work on the whole file at once with numpy: CRCs are computed for
all records of one length together
(one table lookup per byte position), and the most common event shape —
one ``simple_value`` scalar, as ``SummaryWriter.add_scalar`` and TF1's
``tf.summary.scalar`` write it — is decoded without protobuf
(:func:`decode_simple_values`). Other records go to the protobuf decoder in
:mod:`traindoctor.store.importers.tensorboard`.
"""

from __future__ import annotations

import struct
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from traindoctor.store.errors import StoreError

HEADER_BYTES = 12  # uint64 length + uint32 masked crc of the length
FOOTER_BYTES = 4   # uint32 masked crc of the data
# Decode the simple shape this many records at a time: the varint matrices
# cost 80 bytes a record, so memory stays under ~100 MB for any file.
_BLOCK_RECORDS = 1 << 20

# Protobuf wire bytes of the simple shape (field number << 3 | wire type).
_WALL_TIME_KEY = 0x09      # Event.wall_time, fixed64
_STEP_KEY = 0x10           # Event.step, varint (absent when 0)
_SUMMARY_KEY = 0x2A        # Event.summary, length-delimited
_VALUE_KEY = 0x0A          # Summary.value, length-delimited
_TAG_KEY = 0x0A            # Summary.Value.tag, length-delimited
_SIMPLE_VALUE_KEY = 0x15   # Summary.Value.simple_value, fixed32


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


def data_crc_ok(buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
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


def frame_records(path: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
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
    while offset + HEADER_BYTES <= size:
        length = unpack_length(data, offset)[0]
        if offset + HEADER_BYTES + length + FOOTER_BYTES > size:
            break
        offsets.append(offset)
        lengths.append(length)
        offset += HEADER_BYTES + length + FOOTER_BYTES
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
    return starts + HEADER_BYTES, np.array(lengths, dtype=np.int64)


def _gather(buffer: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Bytes at ``positions``, clipped into the buffer (garbage positions read garbage, never fail)."""
    return buffer[np.clip(positions, 0, len(buffer) - 1)]


def _varints(buffer: np.ndarray, positions: np.ndarray, max_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Protobuf varints at ``positions``: values (int64), their byte counts, and whether each ended in time."""
    matrix = _gather(buffer, positions[:, None] + np.arange(max_bytes))
    ends = matrix < 0x80
    count = np.argmax(ends, axis=1) + 1
    used = np.arange(max_bytes) < count[:, None]
    payload = (matrix & 0x7F).astype(np.uint64) << (7 * np.arange(max_bytes, dtype=np.uint64))
    value = np.where(used, payload, np.uint64(0)).sum(axis=1, dtype=np.uint64)
    return value.view(np.int64), count, ends.any(axis=1)


def _fixed(buffer: np.ndarray, positions: np.ndarray, dtype: str) -> np.ndarray:
    width = np.dtype(dtype).itemsize
    raw = _gather(buffer, positions[:, None] + np.arange(width))
    return np.ascontiguousarray(raw).view(dtype).reshape(-1)


def decode_simple_values(data: bytes, starts: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Decode records of the shape ``Event{wall_time, step, summary{value{tag, simple_value}}}``.

    Returns ``index`` (which records had that exact shape, in file order),
    and for those ``step``, ``wall_time``, ``value`` (float32 widened), and
    ``tag_start``/``tag_length`` (byte ranges of the tag in ``data``).
    Any other record (histograms, tensors, several values, extra fields) is
    left for the protobuf decoder; so is any record that only looks like
    this shape, as every length must add up to the record's end exactly.
    """
    parts = [_decode_block(data, starts[i:i + _BLOCK_RECORDS], lengths[i:i + _BLOCK_RECORDS], i)
             for i in range(0, len(starts), _BLOCK_RECORDS)]
    if not parts:
        empty_int, empty_float = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        return {"index": empty_int, "step": empty_int, "wall_time": empty_float, "value": empty_float,
                "tag_start": empty_int, "tag_length": empty_int}
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _decode_block(data: bytes, starts: np.ndarray, lengths: np.ndarray, offset: int) -> dict[str, np.ndarray]:
    buffer = np.frombuffer(data, dtype=np.uint8)
    ends = starts + lengths
    ok = (lengths >= 16) & (_gather(buffer, starts) == _WALL_TIME_KEY)
    position = starts + 9
    has_step = _gather(buffer, position) == _STEP_KEY
    step, count, ended = _varints(buffer, position + 1, 10)
    ok &= ~has_step | ended
    step = np.where(has_step, step, 0)
    position = np.where(has_step, position + 1 + count, position)
    # summary{ value{ tag, simple_value } }: each length must reach the record's end.
    for key in (_SUMMARY_KEY, _VALUE_KEY):
        ok &= _gather(buffer, position) == key
        length, count, ended = _varints(buffer, position + 1, 5)
        position = position + 1 + count
        ok &= ended & (position + length == ends)
    ok &= _gather(buffer, position) == _TAG_KEY
    tag_length, count, ended = _varints(buffer, position + 1, 5)
    tag_start = position + 1 + count
    position = tag_start + tag_length
    ok &= ended & (tag_length >= 0) & (_gather(buffer, position) == _SIMPLE_VALUE_KEY) & (position + 5 == ends)
    chosen = np.flatnonzero(ok)
    return {
        "index": chosen + offset,
        "step": step[chosen],
        "wall_time": _fixed(buffer, starts[chosen] + 1, "<f8").astype(np.float64),
        "value": _fixed(buffer, position[chosen] + 1, "<f4").astype(np.float64),
        "tag_start": tag_start[chosen],
        "tag_length": tag_length[chosen],
    }
