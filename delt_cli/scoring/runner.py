"""Run a scorer over a dataset: per shard, atomic, resumable, split across processes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import pyarrow as pa

from rich.progress import TextColumn

from delt_cli.console import info, is_main_process, progress, warn
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
    with ShardwiseOutput(output, ds, run=run, overwrite=overwrite, resume=resume, rank=dist.rank, world=dist.world) as out:
        return _score_into(out, ds, scorer, run, dist)


def _score_into(out: ShardwiseOutput, ds, scorer, run: RunInfo, dist: Dist) -> Optional[dict]:
    started = time.time()
    scorer.prepare(ds, dist)
    # Scorers with an `on_progress` attribute report (documents, tokens) inside a shard;
    # the others advance the bar by whole shards.
    in_shard = hasattr(scorer, "on_progress")
    with progress(TextColumn("{task.fields[tokens]}")) as bar:
        task = bar.add_task(
            f"scoring ({scorer.name})",
            total=sum(s.num_rows for i, s in enumerate(ds.shards) if i % dist.world == dist.rank),
            tokens="",
        )
        tokens_done = 0

        def report(documents: int, tokens: int) -> None:
            nonlocal tokens_done
            tokens_done += tokens
            rate = tokens_done / max(bar.tasks[task].elapsed or 0.0, 1e-9)
            bar.update(task, advance=documents, tokens=f"{tokens_done:,} tok {rate:,.0f} tok/s" if tokens_done else "")

        if in_shard:
            scorer.on_progress = report

        def score_shard(shard):
            table = read_shard(shard.path)
            return add_columns(table, scorer.score_table(table))

        def advance(shard, rows):
            if not in_shard:
                bar.advance(task, rows)

        run.args.setdefault("scorer", scorer.provenance())
        run_shardwise(out, score_shard, rank=dist.rank, world=dist.world, barrier=dist.barrier, on_shard=advance)
    summaries = dist.gather_objects(scorer.summary() if hasattr(scorer, "summary") else {})
    if not dist.is_main:
        return None
    elapsed = time.time() - started
    summary = merge_summaries(summaries)
    extra = {"scorer": {"method": scorer.name, "columns": scorer.columns, **scorer.provenance()}, "processes": dist.world}
    if summary:
        extra["summary"] = summary
    if hasattr(scorer, "report"):
        extra["report"] = scorer.report()
    # Scoring adds columns to every row and keeps the rows: ids checked upstream stay checked.
    carried = ds.id_column not in scorer.columns and ds.ids_verified()
    manifest = out.finish(extra=extra, unique_ids=ds.id_column if carried else None)
    info(f"scored {ds.num_rows:,} rows with {scorer.name} in {elapsed:.1f}s ({dist.world} process(es))")
    print_summary(f"{scorer.name}: this run", summary)
    return manifest


def merge_summaries(summaries: list[dict]) -> dict:
    """Sum numeric counters over processes (other values: the first process's)."""
    out: dict = {}
    for s in summaries:
        for k, v in (s or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(out.get(k, 0), (int, float)):
                out[k] = out.get(k, 0) + v
            else:
                out.setdefault(k, v)
    return out


def print_summary(title: str, summary: dict) -> None:
    """A two-column table on stderr (main process, not with --quiet)."""
    if not summary or not is_main_process():
        return
    from rich.table import Table

    from delt_cli.console import console, is_quiet

    if is_quiet():
        return
    table = Table(title=title, show_header=False, title_justify="left")
    for k, v in summary.items():
        table.add_row(str(k), f"{v:,}" if isinstance(v, int) else (f"{v:.4g}" if isinstance(v, float) else str(v)))
    console.print(table)
