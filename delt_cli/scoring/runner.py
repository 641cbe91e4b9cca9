"""Run a scorer: fit once, then transform shard by shard (atomic, resumable, split across processes).

* `fit_dataset` (`delt fit`): the scorer's fit on the whole input, saved as an artifact directory.
* `score_dataset` (`delt score`): with ``fit=FIT`` every shard is transformed with that artifact;
  without, the scorer is fitted first in the same command. A fit that reads the whole input
  (gotd, dsir, lqs) is then kept inside the output (``OUT/.delt-fit``): ``--resume`` reuses it,
  ``--overwrite`` refits. Processes of one torchrun/accelerate launch fit together and split
  the shards; independent ranks (``--rank/--world-size``, Slurm arrays) only transform their
  shards and leave a rank record for `delt finish`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import pyarrow as pa
from rich.progress import TextColumn

from delt_cli.infra.console import info, is_main_process, progress, warn
from delt_cli.dataset import RunInfo, ShardwiseOutput, open_dataset, read_shard, run_shardwise
from delt_cli.dataset.writer import check_output_location, run_key
from delt_cli.infra.distributed import Dist, get_dist
from delt_cli.infra.errors import DeltError, UsageError
from delt_cli.infra.guard import OutputGuard
from delt_cli.scoring import artifact
from delt_cli.scoring.base import Fitted, Scorer


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


# -- fit ---------------------------------------------------------------------------------------


def fit_dataset(
    input: str | Path,
    output: Path,
    scorer: Scorer,
    *,
    run: Optional[RunInfo] = None,
    overwrite: bool = False,
    resume: bool = False,
    id_column: str = "id",
    text_column: str = "text",
    dist: Optional[Dist] = None,
) -> Optional[dict]:
    """Fit `scorer` on `input` and save the artifact `output`; returns its fit.json (main process)."""
    dist = dist or get_dist()
    if dist.independent:
        raise UsageError("delt fit reads the whole input once: --rank/--world-size (or a Slurm array) do not apply; run it as one job")
    run = run or RunInfo(command="fit", args={"method": scorer.name, **scorer.options_dict()})
    output = Path(output)
    started = time.time()
    ds = open_dataset(input, id_column=id_column, text_column=text_column)
    scorer.check(ds)
    check_output_location(output, [ds])
    guard = OutputGuard(output, overwrite=overwrite, resume=resume, foreign=artifact.foreign_entries, run_key=run_key(run, ds.describe(False), dist.world), rank=dist.rank, world=dist.world)
    with guard:
        if output.is_dir() and any(output.iterdir()):
            previous = _quiet_manifest(output)
            if resume and artifact.same_fit(previous, scorer, ds):
                info(f"{output}: already fitted with the same options and input; nothing to do")
                return previous
            if not (overwrite or resume):
                raise UsageError(f"--output {output}: exists and is not empty; pass --overwrite to replace it")
            guard.refuse_foreign()
        fitted = scorer.fit(ds, dist)
        manifest = None
        if dist.is_main:
            manifest = artifact.write(output, scorer, fitted, ds, argv=run.argv)
            info(f"fitted {scorer.name} on {ds.num_rows:,} rows of {ds.spec} in {time.time() - started:.1f}s: {output}")
        dist.barrier()
    return manifest


def _quiet_manifest(directory: Path) -> Optional[dict]:
    try:
        return artifact.read_manifest(directory)
    except DeltError:
        return None


def attach_fit(scorer: Scorer, fit: Path, dataset) -> dict:
    """Give `scorer` the fitted state of the artifact `fit` (checked: method, references); its fit.json."""
    manifest = artifact.read_manifest(fit)
    if manifest["method"] != scorer.name:
        raise DeltError(f"--fit {fit}: fitted for --method {manifest['method']}, not {scorer.name}")
    artifact.check_references(manifest, scorer, fit)
    scorer.fitted = artifact.load(fit, manifest)
    return manifest


# -- score (fit if needed, then transform) ----------------------------------------------------------


def score_dataset(
    input: str | Path,
    output: Path,
    scorer: Scorer,
    *,
    fit: Optional[Path] = None,
    run: Optional[RunInfo] = None,
    overwrite: bool = False,
    resume: bool = False,
    id_column: str = "id",
    text_column: str = "text",
    dist: Optional[Dist] = None,
) -> Optional[dict]:
    """Score every shard of `input` into `output`; returns the manifest when this process wrote it
    (the main process of a run; None on other processes and on independent ranks)."""
    dist = dist or get_dist()
    run = run or RunInfo(command="score", args={"method": scorer.name, **scorer.options_dict()})
    ds = open_dataset(input, id_column=id_column, text_column=text_column)
    scorer.check(ds)
    fit_manifest = None
    if fit is not None:
        fit_manifest = attach_fit(scorer, Path(fit), ds)
    elif scorer.global_fit and dist.independent:
        raise UsageError(
            f"--rank/--world-size: --method {scorer.name} fits on the whole input, which a rank does not see; "
            f"run `delt fit IN -o FIT --method {scorer.name} ...` once and give every rank --fit FIT"
        )
    elif not scorer.global_fit:
        scorer.fitted = scorer.fit(ds, dist)  # references only (a model and its fingerprint): cheap, the same everywhere
    if scorer.fitted is not None:
        run.args["scorer"] = scorer.provenance()
    existing = [c for c in scorer.columns if c in ds.columns]
    if existing and dist.is_main:
        warn(f"column(s) {', '.join(existing)} already exist in {ds.spec}; they will be replaced")
    with ShardwiseOutput(output, ds, run=run, overwrite=overwrite, resume=resume, rank=dist.rank, world=dist.world, independent=dist.independent) as out:
        return _score_into(out, ds, scorer, run, dist, fit, fit_manifest)


def _fit_into_output(out: ShardwiseOutput, ds, scorer: Scorer, dist: Dist) -> tuple[Fitted, bool]:
    """The fit of a one-command run: reused from OUT/.delt-fit with --resume when it is the same, else made."""
    where = out.output / artifact.IN_OUTPUT
    reused = None
    if dist.is_main and out.resume and artifact.same_fit(_quiet_manifest(where), scorer, ds):
        try:
            reused = artifact.load(where, artifact.read_manifest(where))
        except DeltError as exc:
            warn(f"{where}: not reused ({exc})")
    reused = dist.broadcast_object(reused)
    if reused is not None:
        info(f"{scorer.name}: fit reused from {where} (--resume)")
        return reused, False
    return scorer.fit(ds, dist), True


def _score_into(out: ShardwiseOutput, ds, scorer: Scorer, run: RunInfo, dist: Dist, fit: Optional[Path], fit_manifest: Optional[dict]) -> Optional[dict]:
    started = time.time()
    save_fit = False
    if scorer.fitted is None:
        scorer.fitted, save_fit = _fit_into_output(out, ds, scorer, dist)
        run.args["scorer"] = scorer.provenance()
    scorer.prepare(dist)  # loads models: a bad one fails here, before anything is written
    dist.barrier()
    if dist.is_main or dist.independent:
        out.prepare()
        if save_fit and dist.is_main:
            artifact.write(out.output / artifact.IN_OUTPUT, scorer, scorer.fitted, ds, argv=run.argv)
    dist.barrier()
    with progress(TextColumn("{task.fields[tokens]}")) as bar:
        task = bar.add_task(
            f"scoring ({scorer.name})",
            total=sum(s.num_rows for i, s in enumerate(ds.shards) if i % dist.world == dist.rank),
            tokens="",
        )
        tokens_done = 0
        reported = False

        def report(documents: int, tokens: int) -> None:
            nonlocal tokens_done, reported
            reported = True
            tokens_done += tokens
            rate = tokens_done / max(bar.tasks[task].elapsed or 0.0, 1e-9)
            bar.update(task, advance=documents, tokens=f"{tokens_done:,} tok {rate:,.0f} tok/s" if tokens_done else "")

        scorer.on_progress = report

        def score_shard(shard):
            table = read_shard(shard)  # the Shard, not its path: derived ids (reader.derived_ids) are written too
            return add_columns(table, scorer.transform(table))

        def advance(shard, rows):
            if not reported:  # scorers that report inside a shard advance the bar themselves
                bar.advance(task, rows)

        run_shardwise(out, score_shard, rank=dist.rank, world=dist.world, barrier=dist.barrier, on_shard=advance)
    extra = {"scorer": {"method": scorer.name, "columns": scorer.columns, **scorer.provenance()}, "processes": dist.world}
    if fit is not None:
        extra["fit"] = {"path": str(fit), "input": (fit_manifest or {}).get("input")}
    elif save_fit or scorer.global_fit:
        extra["fit"] = {"path": artifact.IN_OUTPUT}
    report_ = scorer.report()
    if report_:
        extra["report"] = report_
    # Scoring adds columns to every row and keeps the rows: ids checked upstream stay checked.
    carried = ds.id_column not in scorer.columns and ds.ids_verified()
    unique_ids = ds.id_column if carried else None
    if dist.independent:
        out.finish_rank(extra=extra, summary=scorer.summary(), unique_ids=unique_ids)
        info(f"rank {dist.rank} of {dist.world}: scored its shards in {time.time() - started:.1f}s; `delt finish {out.output}` once every rank is done")
        return None
    summaries = dist.gather_objects(scorer.summary())
    if not dist.is_main:
        return None
    summary = merge_summaries(summaries)
    if summary:
        extra["summary"] = summary
    manifest = out.finish(extra=extra, unique_ids=unique_ids)
    info(f"scored {ds.num_rows:,} rows with {scorer.name} in {time.time() - started:.1f}s ({dist.world} process(es))")
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

    from delt_cli.infra.console import console, is_quiet

    if is_quiet():
        return
    table = Table(title=title, show_header=False, title_justify="left")
    for k, v in summary.items():
        table.add_row(str(k), f"{v:,}" if isinstance(v, int) else (f"{v:.4g}" if isinstance(v, float) else str(v)))
    console.print(table)
