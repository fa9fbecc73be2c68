"""Arrow arrays to numpy columns and back, without pandas.

pyarrow imports pandas, when it is installed, on its first conversion:
``Array.to_numpy`` (its C++ converter looks up pandas' ``NaT``) and
``pa.array`` of an ndarray or a list (it asks whether the input is a pandas
Series), and so do ``pa.scalar`` of a Python value, ``fill_null`` and
``pq.read_table`` (through ``pyarrow.dataset``). That import is 0.3 s of CPU,
more than a command-line diagnosis of a short run costs in all. These
functions read and build arrays from their buffers instead; numbers without
nulls cost one copy.

What a column becomes (the numpy types a DuckDB query returns through
pandas, so both readings of a run are equal): integers stay integers of
their width, or float64 with NaN where any value is null; floats are float64
(null → NaN); strings are object arrays of ``str`` with None where null.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pyarrow as pa


def _numeric_dtype(kind: pa.DataType) -> np.dtype | None:
    if pa.types.is_integer(kind):
        return np.dtype(f"{'i' if pa.types.is_signed_integer(kind) else 'u'}{kind.bit_width // 8}")
    if pa.types.is_floating(kind) and kind.bit_width in (32, 64):
        return np.dtype(f"f{kind.bit_width // 8}")
    return None


def _valid(chunk: pa.Array) -> np.ndarray:
    """Which of ``chunk``'s values are not null, shape (len(chunk),)."""
    bitmap = chunk.buffers()[0]
    if bitmap is None or chunk.null_count == 0:
        return np.ones(len(chunk), dtype=bool)
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return bits[chunk.offset:chunk.offset + len(chunk)].astype(bool)


def _numbers(chunk: pa.Array, dtype: np.dtype) -> np.ndarray:
    """A numeric chunk's values (a copy), float64 with NaN at nulls when it has any."""
    data = chunk.buffers()[1]
    if len(chunk) == 0 or data is None:
        return np.empty(0, dtype=dtype)
    values = np.frombuffer(data, dtype=dtype, count=chunk.offset + len(chunk))[chunk.offset:]
    if chunk.null_count == 0:
        return values.copy()
    numbers = values.astype("float64")
    numbers[~_valid(chunk)] = np.nan
    return numbers


def _strings(chunk: pa.Array) -> np.ndarray:
    """A string or dictionary chunk as an object array of str, None at nulls."""
    if not pa.types.is_dictionary(chunk.type):
        if chunk.null_count == len(chunk):
            return np.full(len(chunk), None, dtype=object)
        chunk = chunk.dictionary_encode()  # each distinct string made a Python str once
    codes = _numbers(chunk.indices, _numeric_dtype(chunk.indices.type))
    words = np.empty(len(chunk.dictionary) + 1, dtype=object)
    words[:-1] = chunk.dictionary.to_pylist()  # words[-1] stays None: the code of a null
    if codes.dtype.kind == "f":
        codes = np.where(np.isnan(codes), -1, codes).astype(np.int64)
    return words[codes]


def _chunk_to_numpy(chunk: pa.Array) -> np.ndarray:
    kind = chunk.type
    dtype = _numeric_dtype(kind)
    if dtype is not None:
        return _numbers(chunk, dtype)
    if pa.types.is_dictionary(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _strings(chunk)
    if pa.types.is_null(kind):
        return np.full(len(chunk), None, dtype=object)
    if pa.types.is_boolean(kind) and chunk.null_count == 0:
        bits = np.unpackbits(np.frombuffer(chunk.buffers()[1], dtype=np.uint8), bitorder="little")
        return bits[chunk.offset:chunk.offset + len(chunk)].astype(bool)
    values = np.empty(len(chunk), dtype=object)
    values[:] = chunk.to_pylist()
    return values


def empty_column(kind: pa.DataType) -> np.ndarray:
    """A column of no rows of ``kind`` (as :func:`to_numpy` would return it)."""
    dtype = _numeric_dtype(kind)
    return np.empty(0, dtype=dtype if dtype is not None else object)


def null_column(kind: pa.DataType, length: int) -> np.ndarray:
    """``length`` nulls of ``kind``: NaN for numbers (float64), None for anything else."""
    if _numeric_dtype(kind) is not None:
        return np.full(length, np.nan) if length else empty_column(kind)
    return np.full(length, None, dtype=object)


def to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One column as a numpy array (module doc), shape (len(column),).

    Example:
        >>> import pyarrow.parquet as pq                            # doctest: +SKIP
        >>> to_numpy(pq.ParquetFile(path).read(columns=["step"]).column(0))  # doctest: +SKIP
        array([1, 2, 3])
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [_chunk_to_numpy(chunk) for chunk in chunks if len(chunk)]
    if not parts:
        return empty_column(column.type)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def null_mask(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Which rows of ``column`` are null, shape (len(column),), from its validity bitmaps."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if not any(chunk.null_count for chunk in chunks):
        return np.zeros(len(column), dtype=bool)
    return np.concatenate([~_valid(chunk) for chunk in chunks])


def _validity(mask: np.ndarray | None) -> tuple[pa.Buffer | None, int]:
    if mask is None or not mask.any():
        return None, 0
    return pa.py_buffer(np.packbits(~mask, bitorder="little")), int(mask.sum())


def numbers_array(values: Any, kind: pa.DataType, mask: np.ndarray | None = None) -> pa.Array:
    """An Arrow array of ``kind`` (an integer or float type) from numbers, null where ``mask`` is True.

    Raises:
        ValueError: a value does not fit ``kind`` (a float with a fraction,
            an integer out of range), as ``pa.array(..., type=kind)`` would.
    """
    dtype = _numeric_dtype(kind)
    source = np.asarray(values)
    data = np.ascontiguousarray(source, dtype=dtype)
    if source.dtype != dtype and len(data):
        checked = data if mask is None else data[~mask]
        original = source if mask is None else source[~mask]
        with np.errstate(invalid="ignore"):
            lossless = np.array_equal(checked, original, equal_nan=dtype.kind == "f")
        if not lossless:
            raise ValueError(f"values do not fit {kind}")
    validity, null_count = _validity(None if mask is None else np.asarray(mask, dtype=bool))
    return pa.Array.from_buffers(kind, len(data), [validity, pa.py_buffer(data)], null_count=null_count)


def string_array(values: Sequence[str | None]) -> pa.Array:
    """An Arrow ``string`` array of Python strings, null where a value is None."""
    encoded = [b"" if value is None else value.encode("utf-8") for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(item) for item in encoded], out=offsets[1:])
    mask = np.fromiter((value is None for value in values), dtype=bool, count=len(encoded))
    validity, null_count = _validity(mask)
    if offsets[-1] < 2**31:
        return pa.Array.from_buffers(pa.string(), len(encoded), [validity, pa.py_buffer(offsets.astype(np.int32)),
                                                                  pa.py_buffer(b"".join(encoded))],
                                     null_count=null_count)
    array = pa.Array.from_buffers(pa.large_string(), len(encoded),
                                  [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
                                  null_count=null_count)
    return array.cast(pa.string())


def dictionary_array(codes: np.ndarray, words: Sequence[str]) -> pa.Array:
    """A dictionary-encoded string array: ``words[codes[i]]``, null where a code is negative."""
    codes = np.asarray(codes)
    mask = codes < 0
    indices = numbers_array(np.where(mask, 0, codes).astype(np.int32), pa.int32(), mask)
    return pa.DictionaryArray.from_arrays(indices, string_array(list(words)))


def read_segment(path: str | os.PathLike, columns: Sequence[str] | None = None) -> pa.Table:
    """The rows of one Parquet file (these columns, or all), decoded end to end.

    ``pq.ParquetFile`` rather than ``pq.read_table``: the latter goes through
    ``pyarrow.dataset``, whose import loads pandas (0.3 s of CPU).

    Raises:
        FileNotFoundError: the file is gone; any pyarrow error for a damaged one.
    """
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        return parquet.read(columns=None if columns is None else list(columns))
