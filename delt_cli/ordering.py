"""Ordering: the permutation that becomes the training order.

Methods (all computed on one key column, returned as global row indices):

* ``shuffle``: a seeded uniform random permutation;
* ``sort``: stable ascending sort by the key (descending with ``descending=True``;
  ties keep dataset order either way);
* ``folding``: DELT's Folding Ordering with L folds: stable ascending sort s, then
  s[0::L] + s[1::L] + ... + s[L-1::L], i.e. L easy-to-hard sweeps, each a
  strided subsample of the whole score range, no row repeated. L=1 is sort.

With ``groups`` (`--group-by`, for sort and folding) rows are ranked inside their
group, and the groups are interleaved so the group mix is the same all along the
order: each row gets the relative position r / n_g (r its within-group rank, n_g
its group's size) and rows are merged by it. For folding, fold l takes from every
group the rows with r mod L == l, merged by r / n_g, so every fold is an
easy-to-hard sweep inside every group at once. Ties in relative position go to
the smaller group code, then to the smaller rank.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from delt_cli.infra.console import info
from delt_cli.infra.errors import UsageError
from delt_cli.selection import descending_key, stable_argsort

METHODS = ("shuffle", "sort", "folding")


def shuffle_order(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def sort_order(values: np.ndarray, *, descending: bool = False) -> np.ndarray:
    key = descending_key(values) if descending else values
    return stable_argsort(key).astype(np.int64)


def folding_order(values: np.ndarray, folds: int, *, descending: bool = False) -> np.ndarray:
    if folds < 1:
        raise UsageError(f"--folds {folds}: must be >= 1")
    s = sort_order(values, descending=descending)
    return np.concatenate([s[l::folds] for l in range(folds)]) if len(s) else s


def _within_group_ranks(values: np.ndarray, groups: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each row inside its group, size of each row's group)."""
    key = descending_key(values) if descending else values
    by_value = stable_argsort(key)
    by_group = by_value[np.argsort(groups[by_value], kind="stable")]  # grouped, value-sorted inside
    sizes = np.bincount(groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[by_group] = np.arange(len(values), dtype=np.int64) - starts[groups[by_group]]
    return ranks, sizes[groups]


def grouped_folding_order(values: np.ndarray, groups: np.ndarray, folds: int, *, descending: bool = False) -> np.ndarray:
    """Folding (sort when folds == 1) inside groups, groups interleaved by relative position."""
    if folds < 1:
        raise UsageError(f"--folds {folds}: must be >= 1")
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    ranks, sizes = _within_group_ranks(values, groups, descending)
    relative = ranks / sizes
    fold = ranks % folds
    # np.lexsort: last key is primary -> fold, then relative position, then group, then rank.
    return np.lexsort((ranks, groups, relative, fold)).astype(np.int64)


def compute_order(
    method: str,
    *,
    n: int,
    values: Optional[np.ndarray] = None,
    groups: Optional[np.ndarray] = None,
    folds: int = 3,
    descending: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """The permutation (indices into `values`) for `method`."""
    if method == "shuffle":
        if groups is not None:
            raise UsageError("--group-by applies to --method sort and folding, not shuffle")
        return shuffle_order(n, seed)
    if values is None:
        raise UsageError(f"--method {method} needs --by COLUMN")
    if method == "sort":
        return grouped_folding_order(values, groups, 1, descending=descending) if groups is not None else sort_order(values, descending=descending)
    if method == "folding":
        if groups is not None:
            return grouped_folding_order(values, groups, folds, descending=descending)
        return folding_order(values, folds, descending=descending)
    raise UsageError(f"--method {method}: expected one of {', '.join(METHODS)}")


def order_dataset(
    input: str | Path,
    output: Path,
    *,
    method: str,
    by: Optional[str] = None,
    folds: int = 3,
    descending: bool = False,
    seed: int = 0,
    shard_rows: Optional[int] = None,
    group_by: Optional[str] = None,
    drop_null: bool = False,
    id_column: str = "id",
    text_column: str = "text",
    run=None,
    overwrite: bool = False,
    resume: bool = False,
) -> dict:
    """Reorder a dataset and write it as shards named in the new order; return the manifest."""
    from delt_cli.dataset import StagedOutput, read_manifest
    from delt_cli.dataset.permute import write_permuted
    from delt_cli.dataset.provenance import RunInfo
    from delt_cli.dataset.selected import open_input
    from delt_cli.dataset.timing import phase, report

    started = time.perf_counter()
    if method not in METHODS:
        raise UsageError(f"--method {method}: expected one of {', '.join(METHODS)}")
    if folds < 1:
        raise UsageError(f"--folds {folds}: must be >= 1")
    if shard_rows is not None and shard_rows < 1:
        raise UsageError(f"--shard-rows {shard_rows}: must be >= 1")
    if method != "shuffle" and by is None:
        raise UsageError(f"--method {method} needs --by COLUMN")
    run = run or RunInfo(command="order", args={"method": method, "by": by, "folds": folds, "descending": descending, "seed": seed})
    with phase("open"):
        ds = open_input(input, id_column=id_column, text_column=text_column)
    ds.require(ds.id_column, flag="--id-column")
    # Ids not checked before are checked on the rows moved, as the permutation decodes them
    # (dataset/permute.py, IdCheck), not by a read of their own first.
    check = None if ds.ids_known_unique() else ds.id_column
    n = ds.num_rows
    rows = None  # the rows that take part (None: all); others are dropped (--drop-null)
    values = None
    with phase("keys"):
        if by is not None and method != "shuffle":
            values, valid = ds.read_numeric(by, drop_null=drop_null)
            if not valid.all():
                rows = np.flatnonzero(valid)
                values = values[rows]
        groups = ds.read_groups(group_by)[0] if group_by else None
        if groups is not None and rows is not None:
            groups = groups[rows]
        if groups is not None:
            groups = np.unique(groups, return_inverse=True)[1].astype(np.int64)
    if shard_rows is None:
        shard_rows = max(1, max((s.num_rows for s in ds.shards), default=1))
    with StagedOutput(output, [ds], run=run, overwrite=overwrite, resume=resume) as stage:
        if stage.finished:
            return read_manifest(Path(output)) or {}
        with phase("decide"):
            local = compute_order(method, n=n if rows is None else len(rows), values=values, groups=groups, folds=folds, descending=descending, seed=seed)
            order = local if rows is None else rows[local]
            values = groups = local = rows = None  # the keys go before the rows move (8 bytes per kept row: 400 MB at 100M rows)
        write_permuted(ds, order, stage.path, stage.metadata(), shard_rows=shard_rows, check_ids=check)
        extra = {"ordering": {"method": method, "by": by, "folds": folds if method == "folding" else None,
                              "descending": descending, "seed": seed if method == "shuffle" else None,
                              "group_by": group_by, "rows_in": n, "rows_out": int(len(order)), "shard_rows": shard_rows}}
        with phase("manifest"):
            manifest = stage.finish(extra=extra, unique_ids=ds.id_column)
    info(f"ordered {len(order):,} rows ({method}{' by ' + by if by and method != 'shuffle' else ''}"
         f"{', L=' + str(folds) if method == 'folding' else ''}{', grouped by ' + group_by if group_by else ''})")
    report("order", started)
    return manifest
