"""Run a scorer over a dataset: per shard, atomic, resumable, split across processes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import pyarrow as pa

from delt_cli.console import info, progress, warn
from delt_cli.dataset import RunInfo, ShardwiseOutput, open_dataset, read_shard, run_shardwise
from delt_cli.distributed import Dist, get_dist
from delt_cli.errors import DeltError


def add_columns(table: pa.Table, columns: dict[str, pa.Array]) -> pa.Table:
    """Append (or replace) score columns, keeping every other column as it is."""
    for name, values in columns.items():
        if len(values) != table.num_rows:
            raise DeltError(f"scorer returned {len(values)} values for column '{name}' but the shard has {table.num_rows} rows")
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table


def score_dataset(
    input: str | Path,
    output: Path,
    scorer,
    *,
    run: Optional[RunInfo] = None,
    overwrite: bool = False,
    resume: bool = False,
    id_column: str = "id",
    text_column: str = "text",
    dist: Optional[Dist] = None,
) -> Optional[dict]:
    """Score every shard of `input` into `output`; returns the manifest on the main process (None elsewhere)."""
    dist = dist or get_dist()
    run = run or RunInfo(command="score", args={"method": scorer.name})
    ds = open_dataset(input, id_column=id_column, text_column=text_column)
    existing = [c for c in scorer.columns if c in ds.columns]
    if existing and dist.is_main:
        warn(f"column(s) {', '.join(existing)} already exist in {ds.spec}; they will be replaced")
    out = ShardwiseOutput(output, ds, run=run, overwrite=overwrite, resume=resume)
    out.check()
    started = time.time()
    scorer.prepare(ds, dist)
    rows_done = 0
    with progress() as bar:
        task = bar.add_task(f"scoring ({scorer.name})", total=sum(s.num_rows for i, s in enumerate(ds.shards) if i % dist.world == dist.rank))

        def score_shard(shard):
            table = read_shard(shard.path)
            return add_columns(table, scorer.score_table(table))

        def advance(shard, rows):
            nonlocal rows_done
            rows_done += rows
            bar.advance(task, rows)

        run.args.setdefault("scorer", scorer.provenance())
        run_shardwise(out, score_shard, rank=dist.rank, world=dist.world, barrier=dist.barrier, on_shard=advance)
    if not dist.is_main:
        return None
    elapsed = time.time() - started
    manifest = out.finish(extra={"scorer": {"method": scorer.name, "columns": scorer.columns, **scorer.provenance()}, "processes": dist.world})
    info(f"scored {ds.num_rows:,} rows with {scorer.name} in {elapsed:.1f}s ({dist.world} process(es))")
    return manifest
