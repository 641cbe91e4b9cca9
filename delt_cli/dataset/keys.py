"""Vectorised keys for whole-dataset checks: 64-bit hashes of id values, integer group codes.

Both work on Arrow arrays with numpy, without a per-row Python loop and without
polars, so the data commands (select, order) need neither for their checks.

`hash64` of a string or binary value is a polynomial hash of its bytes (base
HASH_BASE, modulo 2**64, computed from the array's offset and data buffers),
mixed with the length by splitmix64's finaliser. Integers, floats and booleans
hash through the same finaliser, which is a bijection of 64-bit words, so equal
hashes there mean equal values. For strings, equal hashes only *suggest* equal
values: callers confirm on the values themselves (see Dataset.check_ids).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from delt_cli.errors import DeltError

HASH_BASE = np.uint64(0x100000001B3)  # odd, so multiplication by it is invertible modulo 2**64
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_powers = np.ones(1, dtype=np.uint64)


def is_stringlike(t: pa.DataType) -> bool:
    """String or binary, 32- or 64-bit offsets."""
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 that spreads every input bit."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _base_powers(n: int) -> np.ndarray:
    """HASH_BASE ** i modulo 2**64 for i < n (cached, grown on demand)."""
    global _powers
    if len(_powers) < n:
        grown = np.full(max(n, 2 * len(_powers)), HASH_BASE, dtype=np.uint64)
        grown[0] = 1
        _powers = np.cumprod(grown, dtype=np.uint64)
    return _powers[:n]


def _hash_bytes(array: pa.Array) -> np.ndarray:
    n = len(array)
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    _, offsets_buf, data_buf = array.buffers()[:3]
    offsets = np.frombuffer(offsets_buf, dtype=np.int64 if wide else np.int32)[array.offset : array.offset + n + 1].astype(np.int64)
    first, last = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buf, dtype=np.uint8)[first:last] if data_buf is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1] - first
    lengths = np.diff(offsets)
    sums = np.zeros(n, dtype=np.uint64)
    if len(data):
        position = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)
        terms = (data.astype(np.uint64) + np.uint64(1)) * _base_powers(int(lengths.max()))[position]
        nonempty = lengths > 0
        sums[nonempty] = np.add.reduceat(terms, starts[nonempty])
    return _mix(sums ^ _mix(lengths.astype(np.uint64)))


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


def group_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """Integer codes (distinct values in sorted order -> 0, 1, ...) per row, and the distinct values."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    distinct = pc.unique(column)
    distinct = distinct.take(pc.sort_indices(distinct))
    if len(column) == 0:
        return np.zeros(0, np.int64), distinct.to_pylist()
    codes = pc.index_in(column, value_set=distinct)
    return codes.to_numpy().astype(np.int64), distinct.to_pylist()
