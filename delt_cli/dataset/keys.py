"""Vectorised keys for whole-dataset checks: 64-bit hashes of id values, integer group codes.

Both work on Arrow arrays with numpy, without a per-row Python loop and without
polars, so the data commands (select, order) need neither for their checks.

`hash64` of a string or binary value chains splitmix64's finaliser over its
length and then its bytes, 8 at a time (read straight from the array's offset
and data buffers). Integers, floats and booleans hash through the same
finaliser, which is a bijection of 64-bit words, so equal hashes there mean
equal values. For strings, equal hashes only *suggest* equal
values: callers confirm on the values themselves (see Dataset.check_ids).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from delt_cli.infra.errors import DeltError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def is_stringlike(t: pa.DataType) -> bool:
    """String or binary, 32- or 64-bit offsets."""
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 that spreads every input bit.

    Computed in place on one new array with one scratch array (the expression form made eight
    temporaries of the input's size: at 1M ids ~64 MB of fresh pages per call)."""
    z = x + _GOLDEN
    t = np.empty_like(z)
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        np.right_shift(z, np.uint64(shift), out=t)
        z ^= t
        z *= np.uint64(factor)
    np.right_shift(z, np.uint64(31), out=t)
    z ^= t
    return z


def _hash_bytes(array: pa.Array) -> np.ndarray:
    """Hash each value 8 bytes at a time: h = mix(len), then h = mix(h ^ word) for each
    little-endian 8-byte word of the value (the last one zero-padded). Work is proportional
    to the bytes plus the rows, with a few numpy passes per word position."""
    n = len(array)
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    _, offsets_buf, data_buf = array.buffers()[:3]
    if offsets_buf is None:  # an empty array may come without buffers
        return np.zeros(0, dtype=np.uint64)
    offsets = np.frombuffer(offsets_buf, dtype=np.int64 if wide else np.int32)[array.offset : array.offset + n + 1].astype(np.int64)
    first, last = int(offsets[0]), int(offsets[-1])
    lengths = np.diff(offsets)
    if n and last - first == n * int(lengths[0]) and (lengths == lengths[0]).all():
        return _hash_fixed(np.frombuffer(data_buf, dtype=np.uint8)[first:last], n, int(lengths[0]))
    h = _mix(lengths.astype(np.uint64))
    if last == first:
        return h
    padded = np.zeros(last - first + 8, dtype=np.uint8)
    padded[: last - first] = np.frombuffer(data_buf, dtype=np.uint8)[first:last]
    # word_at[p]: the 8 bytes starting at byte p, as a little-endian integer (unaligned view).
    word_at = np.ndarray(shape=(last - first + 1,), dtype="<u8", buffer=padded, strides=(1,))
    starts = offsets[:-1] - first
    rows = np.flatnonzero(lengths > 0)
    k = 0
    while len(rows):
        left = lengths[rows] - k  # bytes of each value from this word on (>= 1)
        word = word_at[starts[rows] + k].astype(np.uint64, copy=False)
        short = left < 8
        if short.any():  # the last word of a value: keep only its own bytes
            word[short] &= (np.uint64(1) << (np.uint64(8) * left[short].astype(np.uint64))) - np.uint64(1)
        h[rows] = _mix(h[rows] ^ word)
        k += 8
        rows = rows[left > 8]
    return h


def _hash_fixed(data: np.ndarray, n: int, width: int) -> np.ndarray:
    """`_hash_bytes` of n values of `width` bytes each, stored back to back (zero-padded ids,
    hex digests, UUIDs: the usual ids): the values are rows of a matrix, padded with zeros to
    whole words, so each word position is one strided column and no index arrays are built
    (1M ids of 13 bytes: ~2x faster). The same hashes as the general path."""
    h = np.full(n, width, dtype=np.uint64)
    h = _mix(h)
    if width == 0:
        return h
    words = -(-width // 8)
    padded = np.zeros((n, words * 8), dtype=np.uint8)
    padded[:, :width] = data.reshape(n, width)
    columns = padded.view("<u8")
    for k in range(words):
        h ^= columns[:, k]
        h = _mix(h)
    return h


def hash64(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One uint64 per value (nulls are the caller's business: check null_count first)."""
    if isinstance(array, pa.ChunkedArray):
        parts = [hash64(chunk) for chunk in array.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    t = array.type
    if pa.types.is_dictionary(t):
        array, t = array.cast(t.value_type), t.value_type
    if pa.types.is_null(t):  # only nulls (the caller rejects them), or an empty column of unknown type
        return np.zeros(len(array), dtype=np.uint64)
    with np.errstate(over="ignore"):
        if is_stringlike(t):
            return _hash_bytes(array)
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t):
            if pa.types.is_boolean(t):
                array = array.cast(pa.uint8())
            values = array.to_numpy(zero_copy_only=False)
            bits = values.astype(np.int64) if values.dtype.itemsize < 8 or values.dtype.kind == "b" else values
            return _mix(np.ascontiguousarray(bits).view(np.uint64))
    raise DeltError(f"cannot use a column of type {t} as ids (use strings or integers)")


def repeated(hashes: np.ndarray) -> np.ndarray:
    """The values that occur more than once in `hashes`, each once, ascending. Sorts `hashes` in
    place (equal values become neighbours) rather than copying it: 8 bytes per row at the peak."""
    hashes.sort()
    again = hashes[1:][hashes[1:] == hashes[:-1]]
    return again[np.concatenate([[True], again[1:] != again[:-1]])] if len(again) else again


def group_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """Integer codes (distinct values in sorted order -> 0, 1, ...) per row, and the distinct values."""
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    distinct = pc.unique(column)
    distinct = distinct.take(pc.sort_indices(distinct))
    if len(column) == 0:
        return np.zeros(0, np.int64), distinct.to_pylist()
    codes = pc.index_in(column, value_set=distinct)
    return codes.to_numpy().astype(np.int64), distinct.to_pylist()
