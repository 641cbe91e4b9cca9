"""`delt prepare --rank R --world-size W`: the conversion split among independent ranks.

Rank r converts the sources i with i % W == r, each into its own shards
`part-<i>-<j>.parquet` of at least one and at most `--shard-rows` rows (an empty source gives one
empty shard), so no two ranks write the same file and the names sort in source order. Nothing
global happens in a rank: each learns the columns as one process would (the first source with
records decides: `prepare.reference_schema` reads it, to its end for JSON lines), writes its
shards and leaves a record listing them. `delt finish OUT` checks that every rank's record and
shard is there, that the ids are unique, and writes the manifest (`writer.finish_ranks`).

The shards hold the rows, ids and columns of a one-process `delt prepare` in the same order; only
the cut into shards differs (per source instead of across sources), and it is the same for any W,
so `--world-size 3` and `--world-size 1` give byte-identical outputs.

A rank's inputs are told apart by a listing (path, size, mtime of every source; cheap and the same
on every rank); each shard's metadata holds the content hash of its own source. A rank that runs
again (Slurm requeue, `--resume`) and finds its record from the same run does nothing; without
the record it converts its sources again, replacing their shards.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Optional

import pyarrow as pa

from delt_cli.dataset.prepare import ID, TEXT, _Accumulator, _convert, reference_schema
from delt_cli.dataset.prepare_sources import Source
from delt_cli.dataset.provenance import (
    MANIFEST_NAME,
    RunInfo,
    sha256_file,
    write_json_atomic,
)
from delt_cli.dataset.reader import Dataset, Shard
from delt_cli.dataset.remote import RemotePath, is_remote, uri
from delt_cli.dataset.writer import (
    RANK_RECORD_PREFIX,
    _provenance,
    _read_json,
    check_output_location,
    entries_of_other_runs,
    foreign_dataset_entries,
    run_key,
    write_shard,
)
from delt_cli.infra.atomic import HOST, remove
from delt_cli.infra.console import info
from delt_cli.infra.errors import UsageError
from delt_cli.infra.guard import OutputGuard, probe_writable


def sources_listing(specs, srcs: list[Source]) -> Dataset:
    """The sources as a dataset fingerprinted by path, size and mtime (no file is read)."""
    shards = []
    for src in srcs:
        if isinstance(src.path, RemotePath):
            info = src.path.info()
            size, mtime = int(info.size), info.mtime_ns
        else:
            st = src.path.stat()
            size, mtime = st.st_size, st.st_mtime_ns
        digest = hashlib.sha256(f"{src.path}\0{size}\0{mtime}".encode()).hexdigest()[:32]
        shards.append(Shard(path=src.path, num_rows=-1, num_bytes=size, fingerprint=digest))
    roots = [Path(s) for s in specs if Path(s).is_dir()]
    return Dataset(spec=" ".join(map(str, specs)), shards=shards, schema=pa.schema([]), roots=roots)


class _SourceShards(_Accumulator):
    """Each source into its own shards part-<i>-<j>.parquet, written atomically straight into the output."""

    def __init__(self, directory: Path, shard_rows: int, run: RunInfo, listing: Dataset, width: int, empty: pa.Schema):
        super().__init__(directory, shard_rows, {})
        self.run, self.listing, self.width, self.empty = run, listing, width, empty
        self.index, self.chunk, self.names = 0, 0, []

    def begin(self, index: int, src: Source) -> None:
        self.index, self.chunk, self.pending, self.pending_rows = index, 0, [], 0
        self.metadata = self.run.shard_metadata(
            {"dataset": self.listing.fingerprint, "source": {"path": str(src.path), "fingerprint": sha256_file(src.path)[:32]}}
        )

    def _flush(self, rows: int) -> None:
        merged = pa.concat_tables(self.pending) if self.pending else self.empty.empty_table()
        head, tail = merged.slice(0, rows), merged.slice(rows)
        name = f"part-{self.index:0{self.width}d}-{self.chunk:05d}.parquet"
        write_shard(head.combine_chunks(), self.directory / name, self.metadata)
        self.names.append(name)
        self.chunk += 1
        self.pending = [tail] if tail.num_rows else []
        self.pending_rows = tail.num_rows

    def end(self, index: int, src: Source) -> None:
        if self.pending_rows or not self.chunk:
            self._flush(self.pending_rows)


def _mine(name: str, own: set[int]) -> bool:
    """Is `name` a shard of one of the source indices in `own`?"""
    parts = name.removesuffix(".parquet").split("-")
    return len(parts) == 3 and parts[0] == "part" and parts[1].isdigit() and int(parts[1]) in own


def prepare_rank(specs, srcs: list[Source], output: Path, *, rank: int, world: int, run: RunInfo, shard_rows: int,
                 options: dict, overwrite: bool = False, resume: bool = False) -> Optional[dict]:
    """Convert this rank's sources; return its record (None when the same run's record was there)."""
    if overwrite and resume:
        raise UsageError("--overwrite and --resume: pass at most one")
    if is_remote(output):
        raise UsageError(f"--output {uri(output)}: independent ranks (--rank/--world-size) need an output on a shared filesystem for `delt finish`; write there and copy it to the bucket")
    listing = sources_listing(specs, srcs)
    check_output_location(output, [listing])
    key = run_key(run, listing.describe(False), world)
    own = {i for i in range(len(srcs)) if i % world == rank}
    record_path = output / f"{RANK_RECORD_PREFIX}{rank:05d}-of-{world:05d}.json"
    with OutputGuard(output, overwrite=overwrite, resume=resume, foreign=foreign_dataset_entries, run_key=key, rank=rank, world=world):
        if output.is_dir() and not overwrite:
            if _read_json(record_path).get("run_key") == key:
                info(f"{output}: rank {rank} of {world} already finished (its record is there)")
                return None
            others = entries_of_other_runs(output, run, listing.fingerprint, key)
            if others and not resume:
                raise UsageError(
                    f"--output {output}: holds files of another run (e.g. {others[0]}); pass --resume to continue it or --overwrite to replace it"
                )
        output.mkdir(parents=True, exist_ok=True)
        probe_writable(output, output)
        for p in sorted(output.iterdir()):  # what an earlier attempt of this rank (or, with --overwrite, any run) left
            if p == record_path or (p.suffix == ".parquet" and _mine(p.name, own)):
                remove(p)
            elif overwrite and rank == 0 and (p.name == MANIFEST_NAME or (p.name.startswith(RANK_RECORD_PREFIX) and not p.name.endswith(f"-of-{world:05d}.json"))):
                remove(p)
            elif overwrite and rank == 0 and p.suffix == ".parquet" and not _mine(p.name, set(range(len(srcs)))):
                remove(p)
        hints: dict = {}
        schema, decider = reference_schema(srcs, hints, **options)
        empty = schema or pa.schema([(ID, pa.string()), (TEXT, pa.string())])
        width = max(5, len(str(max(len(srcs) - 1, 0))))
        sink = _SourceShards(output, shard_rows, run, listing, width, empty)
        started = time.time()
        stats, _ = _convert(srcs, sink, hints, only=own, schema=schema, decider=decider, **options)
        record = {
            "run_key": key,
            "rank": rank,
            "world": world,
            "command": run.command,
            "args": run.content_args(),
            "argv": run.argv,
            "started": run.started,
            "elapsed_s": round(time.time() - started, 3),
            "host": HOST,
            "inputs": listing.describe(),
            "outputs": sink.names,
            "extra": {},
            "summary": stats,  # rows read, written, dropped; "sources": this rank's
            "unique_ids": ID,
        }
        write_json_atomic(record_path, record)
    info(f"rank {rank} of {world}: wrote {stats['rows_written']:,} rows from {len(own)} source(s) in {len(sink.names)} shard(s); `delt finish {output}` when every rank is done")
    return record


def finish_listed(output: Path, data: list[tuple[Path, dict]], *, argv: Optional[list[str]] = None) -> dict:
    """`delt finish` for ranks that listed their shards (called under the output's guard, with
    records of one run): every rank's record, exactly the listed shards, one run's provenance and
    columns, unique ids; then the manifest, and the records removed."""
    import pyarrow.parquet as pq

    from delt_cli.dataset.prepare import _check_unique_ids
    from delt_cli.dataset.writer import _names, publish_ranks
    from delt_cli.infra.errors import DeltError

    first = data[0][1]
    world = int(first["world"])
    absent = sorted(set(range(world)) - {int(d["rank"]) for _, d in data})
    if absent:
        raise DeltError(
            f"{output}: rank(s) {_names([str(r) for r in absent])} of {world} have not finished (no record, so their shards are unknown); "
            "run them (rerunning a rank is safe) and finish again"
        )
    names = sorted(n for _, d in data for n in d["outputs"])
    present = {p.name for p in output.glob("*.parquet") if p.is_file()}
    missing = [n for n in names if n not in present]
    if missing:
        raise DeltError(f"{output}: {len(missing)} of {len(names)} shard(s) the ranks listed are missing: {_names(missing)}; rerun their ranks with --overwrite and finish again")
    stray = sorted(present - set(names))
    if stray:
        raise DeltError(f"{output}: {len(stray)} shard(s) that no rank of this run wrote: {_names(stray)}")
    fingerprint = first["inputs"]["fingerprint"]
    columns = None
    for name in names:
        prov = _provenance(output / name) or {}
        if (prov.get("command"), prov.get("args"), prov.get("input", {}).get("dataset")) != (first["command"], first["args"], fingerprint):
            raise DeltError(f"{output}: {name} was not written by this run (its provenance differs from the rank records'); rerun its rank with --overwrite")
        schema = pq.read_schema(output / name).remove_metadata()
        if columns is None:
            columns = (name, schema)
        elif not schema.equals(columns[1]):
            raise DeltError(f"{output}: {name} has other columns than {columns[0]} ({schema} vs {columns[1]}); rerun the ranks of one run with --overwrite")
    _check_unique_ids(output, ID, hint=first["args"].get("id_prefix") in (None, "none"))
    manifest = publish_ranks(output, data, names, inputs=first["inputs"], args=first["args"], argv=argv, summary_key="prepare")
    info(f"{output}: {manifest['prepare']['rows_written']:,} rows in {len(names)} shard(s) from {world} rank(s); manifest written")
    return manifest
