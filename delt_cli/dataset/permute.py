"""Moving full rows after a global decision, with bounded memory.

Global steps decide on thin key arrays (one value per row); this module then
moves the full rows:

* `write_filtered` keeps a boolean mask of rows, shard by shard (order kept);
  memory: one input shard.
* `write_permuted` writes the rows in a new order, `shard_rows` per output
  shard, in two streaming passes. Pass 1 reads each input shard once, sorts
  its rows by destination and appends them to a bucket file in which each
  output shard's rows form their own row group. Pass 2 builds each output
  shard from its row groups in the bucket files and puts them in final order.
  Memory: about one input shard in pass 1 and one output shard in pass 2,
  plus 8 bytes per row for the destination index.
"""

from __future__ import annotations

import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from delt_cli.console import progress
from delt_cli.dataset.reader import Dataset, read_shard
from delt_cli.dataset.writer import shard_name, write_shard

POS = "__delt_pos"
MetadataFn = Callable[[int, int], dict]


def write_filtered(dataset: Dataset, keep: np.ndarray, directory: Path, metadata: dict[bytes, bytes]) -> list[Path]:
    """Write the rows where `keep` is true, one output shard per input shard that keeps any row.

    Output shards take the input shard names, so dataset order is preserved. When no
    row is kept, a single empty shard with the full schema is written.
    """
    offsets = dataset.offsets
    written: list[Path] = []
    with progress() as bar:
        task = bar.add_task("writing", total=len(dataset.shards))
        for i, shard in enumerate(dataset.shards):
            mask = keep[offsets[i] : offsets[i + 1]]
            if mask.any():
                table = read_shard(shard.path)
                if not mask.all():
                    table = table.filter(pa.array(mask))
                path = directory / shard.name
                write_shard(table, path, metadata)
                written.append(path)
            bar.advance(task)
    if not written:
        written.append(_write_empty(dataset, directory / shard_name(0, 1), metadata))
    return written


def _write_empty(dataset: Dataset, path: Path, metadata: dict[bytes, bytes]) -> Path:
    write_shard(dataset.schema.empty_table(), path, metadata)
    return path


class _FileCache:
    """A few open ParquetFile handles (re-parsing footers for every row group is slow)."""

    def __init__(self, limit: int = 256):
        self.limit = limit
        self._files: OrderedDict[Path, pq.ParquetFile] = OrderedDict()

    def get(self, path: Path) -> pq.ParquetFile:
        pf = self._files.pop(path, None) or pq.ParquetFile(path)
        self._files[path] = pf
        if len(self._files) > self.limit:
            _, old = self._files.popitem(last=False)
            old.close()
        return pf

    def close(self) -> None:
        for pf in self._files.values():
            pf.close()
        self._files.clear()


def write_permuted(
    dataset: Dataset,
    order: np.ndarray,
    directory: Path,
    metadata: dict[bytes, bytes],
    *,
    shard_rows: int,
    scratch: Path | None = None,
) -> list[Path]:
    """Write rows `order[0], order[1], ...` (global row indices) as shards of `shard_rows` rows.

    Rows not in `order` are dropped. Output shards are named part-00000, part-00001, ...
    so that name order is the new dataset order.
    """
    total = int(len(order))
    n_out = max(1, -(-total // shard_rows))
    if total == 0:
        return [_write_empty(dataset, directory / shard_name(0, 1), metadata)]
    dest = np.full(dataset.num_rows, -1, dtype=np.int64)
    dest[order] = np.arange(total, dtype=np.int64)
    scratch = Path(scratch) if scratch is not None else directory / ".buckets"
    scratch.mkdir(parents=True, exist_ok=True)
    offsets = dataset.offsets
    # groups[j] = list of (bucket file, row group index) holding rows of output shard j
    groups: list[list[tuple[Path, int]]] = [[] for _ in range(n_out)]
    try:
        with progress() as bar:
            task = bar.add_task("bucketing", total=len(dataset.shards))
            for i, shard in enumerate(dataset.shards):
                d = dest[offsets[i] : offsets[i + 1]]
                rows = np.flatnonzero(d >= 0)
                if len(rows):
                    by_dest = rows[np.argsort(d[rows], kind="stable")]
                    positions = d[by_dest]
                    table = read_shard(shard.path).take(pa.array(by_dest))
                    table = table.append_column(POS, pa.array(positions, type=pa.int64()))
                    cuts = np.searchsorted(positions, np.arange(n_out + 1, dtype=np.int64) * shard_rows)
                    path = scratch / f"bucket-{i:06d}.parquet"
                    with pq.ParquetWriter(path, table.schema, compression="none") as writer:
                        rg = 0
                        for j in range(n_out):
                            lo, hi = int(cuts[j]), int(cuts[j + 1])
                            if hi > lo:
                                writer.write_table(table.slice(lo, hi - lo), row_group_size=hi - lo)
                                groups[j].append((path, rg))
                                rg += 1
                    del table
                bar.advance(task)
            files = _FileCache()
            written: list[Path] = []
            task = bar.add_task("writing", total=n_out)
            for j in range(n_out):
                pieces = [files.get(path).read_row_group(rg) for path, rg in groups[j]]
                table = pa.concat_tables(pieces)
                pos = table.column(POS).to_numpy()
                table = table.drop_columns([POS])
                if not np.all(pos[1:] > pos[:-1]):
                    table = table.take(pa.array(np.argsort(pos, kind="stable")))
                path = directory / shard_name(j, n_out)
                write_shard(table, path, metadata)
                written.append(path)
                bar.advance(task)
            files.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return written
