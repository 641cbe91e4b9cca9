"""Embedding columns: fixed-size lists of floats in Parquet <-> (rows x dim) numpy matrices.

`delt embed` writes one ``fixed_size_list<float16|float32>[dim]`` column per dataset;
the GOT-D scorer reads it back. Reading checks what the OT solve cannot survive:
a missing column (with the command that makes it), a non-vector type, nulls and
NaN/inf values, and (via `check_dims`) dimensions that differ between datasets.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from delt_cli.infra.errors import DeltError

MADE_BY = "made by `delt embed`"
DTYPES = {"float16": (pa.float16(), np.float16), "float32": (pa.float32(), np.float32)}


def to_arrow(matrix: np.ndarray, dtype: str = "float32") -> pa.FixedSizeListArray:
    """A (rows x dim) matrix as a fixed-size-list column of `dtype` ('float16' or 'float32')."""
    if dtype not in DTYPES:
        raise DeltError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    arrow_type, numpy_type = DTYPES[dtype]
    rows, dim = matrix.shape
    flat = pa.array(np.ascontiguousarray(matrix, dtype=numpy_type).reshape(-1), type=arrow_type)
    return pa.FixedSizeListArray.from_arrays(flat, dim)


def vector_dim(dtype: pa.DataType, *, column: str, where: str, flag: str) -> int:
    """The dimension of a vector column's type, or a DeltError saying why it is not one."""
    if pa.types.is_fixed_size_list(dtype) and pa.types.is_floating(dtype.value_type):
        return dtype.list_size
    if (pa.types.is_list(dtype) or pa.types.is_large_list(dtype)) and pa.types.is_floating(dtype.value_type):
        return -1  # variable-length lists: dimension checked when read
    raise DeltError(f"{flag} '{column}' in {where} has type {dtype}, not a list of floats ({MADE_BY})")


def column_dim(dataset, column: str, *, flag: str = "--embedding-column") -> int:
    """Check that `dataset` has the vector column and return its dimension (-1: variable lists)."""
    dtype = dataset.require(column, flag=flag, made_by=MADE_BY)
    return vector_dim(dtype, column=column, where=dataset.spec, flag=flag)


def to_numpy(values: pa.Array | pa.ChunkedArray, *, column: str, where: str, flag: str = "--embedding-column") -> np.ndarray:
    """A vector column as a float32 (rows x dim) matrix; nulls, ragged lists and NaN/inf are errors."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    dim = vector_dim(values.type, column=column, where=where, flag=flag)
    rows = len(values)
    if values.null_count:
        raise DeltError(f"{flag} '{column}' in {where} has {values.null_count} null row(s); re-run `delt embed`")
    if dim < 0:
        lengths = values.value_lengths().to_numpy(zero_copy_only=False)
        if rows and (lengths != lengths[0]).any():
            raise DeltError(f"{flag} '{column}' in {where}: vectors have different lengths ({lengths.min()} to {lengths.max()})")
        dim = int(lengths[0]) if rows else 0
    flat = values.flatten()
    if flat.null_count:
        raise DeltError(f"{flag} '{column}' in {where} has null values inside vectors")
    matrix = flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(rows, dim)  # a writable copy
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise DeltError(
            f"{flag} '{column}' in {where} has NaN or infinite values in {int(bad.sum())} row(s) "
            f"(first at row {int(np.flatnonzero(bad)[0])}); re-run `delt embed` or drop those rows"
        )
    return matrix


def check_dims(pool_dim: int, target_dim: int, *, column: str, pool: str, target: str) -> None:
    """Fail when the pool's and the target's vectors have different dimensions (both named)."""
    if pool_dim >= 0 and target_dim >= 0 and pool_dim != target_dim:
        raise DeltError(
            f"embedding dimensions differ: '{column}' has {pool_dim} dimensions in {pool} but {target_dim} "
            f"in --target {target}; embed both with the same `delt embed --model`"
        )
