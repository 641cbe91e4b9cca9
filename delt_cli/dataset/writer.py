"""Writing datasets: atomic shards, guarded output directories, manifests.

Two ways to produce a dataset:

* `StagedOutput` for global steps (select, order, prepare): everything is written
  into a hidden staging directory beside the output, which is renamed into place
  only when the whole dataset and its manifest are finished. A failure leaves
  the previous output (if any) untouched and no partial one.
* `ShardwiseOutput` for per-shard steps (score, embed): each output shard is
  written under a temporary name and renamed, so a finished shard is always
  whole; `--resume` skips shards that are already finished with the same
  arguments and input; the manifest is written last and marks completion.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from delt_cli.infra.atomic import HOST, atomic_path, describe_os_error, parse_temporary, remove, replace_dir, temporary_path
from delt_cli.infra.console import info, warn
from delt_cli.dataset import remote_output
from delt_cli.dataset.provenance import (
    MANIFEST_NAME,
    METADATA_KEY,
    RunInfo,
    _jsonable,
    read_manifest,
    shard_provenance,
    write_json_atomic,
)
from delt_cli.dataset.keys import is_stringlike
from delt_cli.dataset.reader import Dataset, Shard, footer_fingerprint
from delt_cli.infra.errors import DeltError, UsageError
from delt_cli.infra.guard import OutputGuard, probe_writable

# Derived caches that describe a schema we may have changed; dropped on write.
STALE_METADATA = {b"pandas", b"huggingface", METADATA_KEY}

ROW_GROUP_SIZE = 16384
CODECS = ("zstd", "lz4", "snappy", "gzip", "brotli", "none")


def compression_options() -> dict:
    """The Parquet codec: DELT_PARQUET_COMPRESSION = zstd (the default, level 1), zstd:LEVEL,
    lz4, snappy, gzip, brotli or none.

    zstd level 1 rather than Arrow's default 3: writing, the largest cost of select and
    order, was about 25% faster for files ~15% larger on real text. lz4 and snappy write
    and read faster still for files about twice as large (docs/benchmarks.md, "Select
    and order"); a choice for intermediate datasets on a fast disk.
    """
    spec = os.environ.get("DELT_PARQUET_COMPRESSION", "zstd").strip().lower()
    codec, _, level = spec.partition(":")
    if codec not in CODECS or (level and (codec not in ("zstd", "gzip", "brotli") or not level.lstrip("-").isdigit())):
        raise UsageError(f"DELT_PARQUET_COMPRESSION={spec!r}: expected one of {', '.join(CODECS)}, or zstd, gzip or brotli with :LEVEL")
    if codec == "zstd" and not level:
        level = "1"
    return dict(compression=codec, compression_level=int(level) if level else None)


# Strings longer than this on average (documents, not labels or ids) get no min/max statistics.
LONG_STRING_BYTES = 64


def column_encodings(table: pa.Table, sample: int = 2048) -> dict:
    """Per-column `use_dictionary` and `write_statistics` for pyarrow's Parquet writer.

    Arrow tries a dictionary for every column by default and falls back after the
    dictionary page fills up; for text, ids and scores that costs time on write and
    read and saves nothing (a row group of 16,384 distinct floats fits the dictionary
    page, so it is kept: a page of values and one of indices, larger than the values
    alone), so strings and numbers that look mostly unique in the first `sample` rows
    get none. Min/max statistics of documents prune nothing and cost a comparison per
    value, so strings longer than LONG_STRING_BYTES on average get none either.
    Decided from the first rows only, so the choice is deterministic.
    """
    import pyarrow.compute  # noqa: F401  (pa.compute; loaded when first needed: `select --lazy` writes no shard)

    dictionary, statistics = [], []
    for name, column in zip(table.column_names, table.columns):
        head = column.slice(0, sample)
        t = column.type
        if (is_stringlike(t) or pa.types.is_integer(t) or pa.types.is_floating(t)) and len(head):
            if len(pa.compute.unique(head)) <= len(head) // 2:
                dictionary.append(name)
            if not is_stringlike(t) or (pa.compute.mean(pa.compute.binary_length(head)).as_py() or 0) <= LONG_STRING_BYTES:
                statistics.append(name)
        else:
            dictionary.append(name)
            statistics.append(name)
    return dict(use_dictionary=dictionary, write_statistics=statistics)


def shard_name(index: int, total: int, prefix: str = "part") -> str:
    """Zero-padded names whose lexicographic order is the numeric order."""
    width = max(5, len(str(max(total - 1, 0))))
    return f"{prefix}-{index:0{width}d}.parquet"


def _with_metadata(schema: pa.Schema, metadata: dict[bytes, bytes] | None) -> pa.Schema:
    keep = {k: v for k, v in (schema.metadata or {}).items() if k not in STALE_METADATA}
    return schema.with_metadata({**keep, **(metadata or {})})


def write_shard(table: pa.Table, path: Path, metadata: dict[bytes, bytes] | None = None) -> int:
    """Write `table` to `path` atomically (temporary name, then rename); return its row count."""
    path = Path(path)
    table = table.replace_schema_metadata(_with_metadata(table.schema, metadata).metadata)
    try:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, **column_encodings(table), **compression_options())
    except OSError as exc:
        raise ShardWriteError(path, exc) from exc
    return table.num_rows


class ShardWriteError(DeltError):
    """A shard could not be written (disk full, file-size limit, permissions): names the shard."""

    def __init__(self, path: Path, exc: OSError):
        self.path = path
        super().__init__(f"cannot write {describe_os_error(exc, path)}")


class ShardWriter:
    """Stream tables into one shard, atomically: rows are buffered into row groups of
    ROW_GROUP_SIZE rows, written to a temporary file, renamed on `close()`.

    Used as a context manager; on an exception the temporary file is removed.
    """

    def __init__(self, path: Path, schema: pa.Schema, metadata: dict[bytes, bytes] | None = None):
        self.path = Path(path)
        self.schema = _with_metadata(schema, metadata)
        self.tmp = temporary_path(self.path)
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table.replace_schema_metadata(self.schema.metadata))
        self._pending_rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_SIZE:
            try:
                self._flush()
            except OSError as exc:
                raise ShardWriteError(self.path, exc) from exc

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp, self.schema, **column_encodings(table), **compression_options())
        self._writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
        self.rows += table.num_rows
        self._pending, self._pending_rows = [], 0

    def close(self) -> int:
        try:
            self._flush()
            if self._writer is None:  # no rows: an empty shard with the schema
                pq.write_table(self.schema.empty_table(), self.tmp, **compression_options())
            else:
                self._writer.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.tmp.unlink(missing_ok=True)
            raise ShardWriteError(self.path, exc) from exc
        return self.rows

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)


def describe_outputs(paths: Sequence[Path]) -> list[dict]:
    """Name, row count and footer fingerprint of each written shard (what `Dataset.ids_verified` compares)."""
    return [{"name": p.name, "rows": pq.ParquetFile(p).metadata.num_rows, "fingerprint": footer_fingerprint(p)} for p in paths]


def _checks(unique_ids: str | None) -> dict:
    """The manifest's record of what was verified about the output (see Dataset.ids_verified)."""
    return {"checks": {"unique_ids": unique_ids}} if unique_ids else {}


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_output_location(output: Path, inputs: Sequence[Dataset]) -> Path:
    """Refuse an output that equals, contains or lies inside an input."""
    out = output.resolve()
    for ds in inputs:
        for root in ds.roots:
            r = root.resolve()
            if out == r or _is_within(out, r):
                raise UsageError(f"--output {output}: must not be the input directory {root} or inside it")
        for shard in ds.shards:
            p = shard.path.resolve()
            if out == p or _is_within(p, out):
                raise UsageError(f"--output {output}: would contain or replace the input shard {shard.path}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {output}: exists and is not a directory")
    return out


def _nonempty(directory: Path) -> bool:
    return directory.is_dir() and any(not p.name.startswith(".delt-write-probe") for p in directory.iterdir())


def is_delt_shard(path: Path) -> bool:
    """True for a Parquet file whose footer carries delt provenance."""
    try:
        return METADATA_KEY in (pq.read_schema(path).metadata or {})
    except (pa.ArrowException, OSError):
        return False


# Files a delt dataset directory may hold besides its shards and manifest: a scorer's fit
# (delt_cli/scoring/artifact.py), the records of independent ranks, an LQS cache of older versions.
RANK_RECORD_PREFIX = ".delt-rank-"
_DATASET_EXTRAS = (".delt-fit", RANK_RECORD_PREFIX, ".lqs-annotation")


def foreign_dataset_entries(directory: Path) -> list[str]:
    """What in a dataset directory delt did not write (for --overwrite, which deletes only delt outputs)."""
    manifest = read_manifest(Path(directory)) or {}
    try:
        listed = {o["name"] for o in manifest["outputs"]["shards"]}
    except (KeyError, TypeError):
        listed = set()
    out = []
    for p in sorted(Path(directory).iterdir()):
        if p.name == MANIFEST_NAME or parse_temporary(p) is not None or p.name.startswith(_DATASET_EXTRAS):
            continue
        if p.is_file() and p.suffix == ".parquet" and (p.name in listed or is_delt_shard(p)):
            continue
        out.append(p.name + ("/" if p.is_dir() else ""))
    return out


def run_key(run: RunInfo, inputs: dict, world: int = 1) -> str:
    """What makes processes one run (they share the output's lock): command, arguments, input, world size."""
    payload = json.dumps([run.command, run.content_args(), inputs.get("fingerprint"), world], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class StagedOutput:
    """Build a whole dataset in a staging directory, then rename it into place.

    Usage::

        with StagedOutput(out, [ds], run=run, overwrite=..., resume=...) as stage:
            if stage.finished: return stage.output   # --resume and nothing to do
            write_shard(table, stage.path / name, stage.metadata(...))
            stage.finish(inputs=..., extra=...)

    The output is held by an OutputGuard (delt_cli/infra/guard.py) for the whole block: one
    writer at a time, leftovers of killed runs cleaned, foreign files never deleted.
    """

    def __init__(
        self,
        output: Path,
        inputs: Sequence[Dataset],
        *,
        run: RunInfo,
        overwrite: bool = False,
        resume: bool = False,
        foreign: Callable[[Path], Sequence[str]] | None = None,
    ):
        """`foreign`: what in an existing output delt did not write (default: a dataset directory's
        rule, foreign_dataset_entries); outputs of another layout (a model directory) pass theirs."""
        self.output, self.remote = remote_output.split(output)  # s3://: built in a local mirror, published on exit
        self.foreign = foreign or foreign_dataset_entries
        self.inputs = list(inputs)
        self.run = run
        self.overwrite = overwrite
        self.resume = resume
        self.finished = False
        self._manifest: dict | None = None
        self._guard: OutputGuard | None = None
        self.path = temporary_path(self.output, "staging")

    def input_description(self, with_shards: bool = True) -> dict:
        if len(self.inputs) == 1:
            return self.inputs[0].describe(with_shards)
        return {"datasets": [ds.describe(with_shards) for ds in self.inputs]}

    def metadata(self, extra: dict | None = None) -> dict[bytes, bytes]:
        return self.run.shard_metadata(self.input_description(with_shards=False), extra)

    def __enter__(self) -> "StagedOutput":
        if self.overwrite and self.resume:
            raise UsageError("--overwrite and --resume: pass at most one")
        check_output_location(self.output, self.inputs)
        inputs = self.input_description(False)
        self._guard = OutputGuard(
            self.output, overwrite=self.overwrite, resume=self.resume, foreign=self.foreign, run_key=run_key(self.run, inputs)
        ).__enter__()
        try:
            if self.remote:
                remote_output.pull(self.output, self.remote, inputs=self.inputs, overwrite=self.overwrite, resume=self.resume, shardwise=False)
            if _nonempty(self.output):
                previous = read_manifest(self.output)
                if self.resume and previous and _same_run(previous, self.run, inputs):
                    info(f"{self.output}: already finished with the same arguments and input; nothing to do")
                    self.finished = True
                    return self
                if not (self.overwrite or self.resume):
                    raise UsageError(f"--output {self.output}: exists and is not empty; pass --overwrite to replace it")
                self._guard.refuse_foreign()  # the whole directory will be replaced
            self.path.mkdir(parents=True)
        except BaseException:
            self._guard.__exit__(None, None, None)
            raise
        return self

    def finish(self, *, extra: dict | None = None, unique_ids: str | None = None) -> dict:
        """Write the manifest (the dataset moves into place on leaving the block). `unique_ids`:
        the id column, when the command verified that it is non-null and unique in the output."""
        outputs = describe_outputs(sorted(self.path.glob("*.parquet")))
        self._manifest = self.run.manifest(inputs=self.input_description(), outputs=outputs, extra={**(extra or {}), **_checks(unique_ids)})
        write_json_atomic(self.path / MANIFEST_NAME, self._manifest)
        return self._manifest

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.finished:
                return
            if exc_type is not None or self._manifest is None:
                remove(self.path)
                if isinstance(exc, (OSError, ShardWriteError)):
                    kept = f"{self.output} was left as it was" if self.output.exists() else f"nothing was written to {self.output}"
                    what = str(exc) if isinstance(exc, ShardWriteError) else f"cannot write {describe_os_error(exc, self.path)}"
                    raise DeltError(f"{what}; {kept}") from exc
                return
            try:
                replace_dir(self.path, self.output)
            except OSError as err:
                remove(self.path)
                raise DeltError(f"cannot move the finished output into place: {describe_os_error(err, self.output)}; {self.output} was left as it was") from err
            if self.remote:
                remote_output.publish(self.output, self.remote)
        finally:
            if self._guard is not None:
                self._guard.__exit__(None, None, None)


def _same_run(manifest: dict, run: RunInfo, inputs: dict) -> bool:
    return (
        manifest.get("command") == run.command
        and manifest.get("content_args") == run.content_args()
        and manifest.get("inputs", {}).get("fingerprint") == inputs.get("fingerprint")
    )


class ShardwiseOutput:
    """An output directory filled one shard at a time, named after the input shards.

    Rank r of W processes handles input shards i with i % W == r; the names of
    output shards equal the input names, so no two processes ever write the same file.
    Used as a context manager by every process of the run: each holds the output's
    guard (delt_cli/infra/guard.py) under its rank from the checks to the manifest.

    `independent` ranks (--rank/--world-size, Slurm arrays) never wait for each other: each
    accepts an output that holds only its run's files, prepares only what is its own, skips
    its shards that the same run finished, and leaves a rank record (`finish_rank`) instead
    of the manifest; `finish_ranks` (`delt finish`) writes the manifest.
    """

    def __init__(
        self,
        output: Path,
        dataset: Dataset,
        *,
        run: RunInfo,
        overwrite: bool = False,
        resume: bool = False,
        rank: int = 0,
        world: int = 1,
        independent: bool = False,
    ):
        self.output, self.remote = remote_output.split(output)  # s3://: a local mirror, each shard uploaded
        self.dataset = dataset
        self.run = run
        self.overwrite = overwrite
        self.resume = resume
        self.rank = rank
        self.world = world
        self.independent = independent
        self.started = time.time()
        self._guard: OutputGuard | None = None
        self._prepared = False
        self._run_key = ""
        names = [s.name for s in dataset.shards]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})[0]
            raise DeltError(f"{dataset.spec}: two input shards are named {dup}; per-shard output names would collide")
        if names != sorted(names) and rank == 0:
            warn(
                f"{dataset.spec}: the input's shards, in path order, are not in name order; the output keeps their names, "
                "so its dataset order (by name) differs from the input's: `delt order` it, or pass one folder"
            )

    def __enter__(self) -> "ShardwiseOutput":
        self.check()
        self._run_key = run_key(self.run, self.dataset.describe(False), self.world)
        self._guard = OutputGuard(
            self.output,
            overwrite=self.overwrite,
            resume=self.resume,
            foreign=foreign_dataset_entries,
            run_key=self._run_key,
            rank=self.rank,
            world=self.world,
        ).__enter__()
        try:
            if self.remote:
                remote_output.pull(self.output, self.remote, inputs=[self.dataset], overwrite=self.overwrite, resume=self.resume, shardwise=True, independent=self.independent)
            if self.resume and self.output.is_dir():
                expected = {s.name for s in self.dataset.shards}
                extra = sorted(p.name for p in self.output.glob("*.parquet") if p.name not in expected)
                if extra:
                    raise UsageError(
                        f"--output {self.output}: holds {len(extra)} shard(s) this input does not produce (e.g. {extra[0]}); "
                        "--resume continues the same input only: pass --overwrite to replace the output"
                    )
            if self.independent and _nonempty(self.output) and not (self.overwrite or self.resume):
                others = self._not_this_run()
                if others:
                    raise UsageError(
                        f"--output {self.output}: holds files of another run (e.g. {others[0]}); "
                        "pass --resume to continue it or --overwrite to replace it"
                    )
        except BaseException:
            self._guard.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._guard is not None:
            self._guard.__exit__(None, None, None)
            self._guard = None
        if isinstance(exc, (OSError, ShardWriteError)):
            what = str(exc) if isinstance(exc, ShardWriteError) else f"cannot write {describe_os_error(exc, self.output)}"
            raise DeltError(f"{what}; finished shards are kept: free space and rerun with --resume") from exc

    def check(self) -> None:
        """Validate the location; every process calls this before any process writes."""
        if self.overwrite and self.resume:
            raise UsageError("--overwrite and --resume: pass at most one")
        check_output_location(self.output, [self.dataset])
        if _nonempty(self.output) and not (self.overwrite or self.resume or self.independent):
            raise UsageError(
                f"--output {self.output}: exists and is not empty; pass --resume to continue it or --overwrite to replace it"
            )

    # -- independent ranks -----------------------------------------------------------------------
    def _not_this_run(self) -> list[str]:
        return entries_of_other_runs(self.output, self.run, self.dataset.fingerprint, self._run_key)

    def record_path(self, rank: int | None = None) -> Path:
        return self.output / f"{RANK_RECORD_PREFIX}{self.rank if rank is None else rank:05d}-of-{self.world:05d}.json"

    def finish_rank(self, *, extra: dict | None = None, summary: dict | None = None, unique_ids: str | None = None) -> dict:
        """An independent rank's record of its part (for `delt finish`): the run, the input, its summary."""
        mine = [s.name for s in my_shards(self.dataset.shards, self.rank, self.world)]
        missing = [n for n in mine if not (self.output / n).is_file()]
        if missing:
            raise DeltError(f"{self.output}: {len(missing)} shard(s) of rank {self.rank} not finished, e.g. {missing[0]}; rerun this rank with --resume")
        record = {
            "run_key": self._run_key,
            "rank": self.rank,
            "world": self.world,
            "command": self.run.command,
            "args": {k: v for k, v in self.run.args.items() if k not in RANK_ARGS},
            "argv": self.run.argv,
            "started": self.run.started,
            "elapsed_s": round(time.time() - self.started, 3),
            "host": HOST,
            "inputs": self.dataset.describe(),
            "shards": mine,
            "extra": extra or {},
            "summary": summary or {},
            "unique_ids": unique_ids,
        }
        write_json_atomic(self.record_path(), _jsonable(record))
        return record

    # -- shards ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the directory; with --overwrite remove what an earlier run wrote (the guard has
        refused the run if anything else is there). Called by the main process of a launch, or by
        every independent rank, which removes only what no other rank of its run writes. Idempotent."""
        if self._prepared:
            return
        if self.overwrite and self.output.is_dir():
            expected = {s.name for s in self.dataset.shards}
            mine = {s.name for s in my_shards(self.dataset.shards, self.rank, self.world)}
            for p in self.output.iterdir():
                delt_file = p.name == MANIFEST_NAME or p.suffix == ".parquet" or p.name.startswith(_DATASET_EXTRAS) or parse_temporary(p)
                if not delt_file:
                    continue
                if self.independent:
                    own_record = p == self.record_path()
                    other_world = p.name.startswith(RANK_RECORD_PREFIX) and not p.name.endswith(f"-of-{self.world:05d}.json")
                    stray = p.suffix == ".parquet" and p.name not in expected
                    if not (own_record or p.name in mine or (self.rank == 0 and (other_world or stray or p.name.startswith(".delt-fit")))):
                        continue
                remove(p)
        (self.output / MANIFEST_NAME).unlink(missing_ok=True)
        probe_writable(self.output, self.output)
        self._prepared = True

    def path_for(self, shard: Shard) -> Path:
        return self.output / shard.name

    def metadata(self, shard: Shard, extra: dict | None = None) -> dict[bytes, bytes]:
        return self.run.shard_metadata({"shard": shard.describe(), "dataset": self.dataset.fingerprint}, extra)

    def is_done(self, shard: Shard) -> bool:
        """True when this shard's output exists with the same arguments and input and may be kept:
        with --resume, or on an independent rank (not with --overwrite)."""
        path = self.path_for(shard)
        if not ((self.resume or (self.independent and not self.overwrite)) and path.is_file()):
            return False
        prov = _provenance(path)
        return (
            prov is not None
            and prov.get("command") == self.run.command
            and prov.get("args") == self.run.content_args()
            and prov.get("input", {}).get("shard", {}).get("fingerprint") == shard.fingerprint
        )

    def write(self, shard: Shard, table: pa.Table, extra: dict | None = None) -> int:
        rows = write_shard(table, self.path_for(shard), self.metadata(shard, extra))
        if self.remote:
            remote_output.upload(self.path_for(shard), self.remote)
        return rows

    def finish(self, *, extra: dict | None = None, unique_ids: str | None = None) -> dict:
        """Write the manifest once every shard is there; `unique_ids` as for StagedOutput.finish."""
        paths = [self.path_for(s) for s in self.dataset.shards]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise DeltError(f"{self.output}: {len(missing)} shard(s) not finished, e.g. {missing[0]}; rerun with --resume")
        manifest = self.run.manifest(
            inputs=self.dataset.describe(), outputs=describe_outputs(paths), extra={**(extra or {}), **_checks(unique_ids)}
        )
        write_json_atomic(self.output / MANIFEST_NAME, manifest)
        if self.remote:
            remote_output.publish(self.output, self.remote)
        return manifest


# Arguments that only say which part of a run a process does (kept out of rank records' args).
RANK_ARGS = {"rank", "world_size"}


def entries_of_other_runs(output: Path, run: RunInfo, fingerprint: str, key: str) -> list[str]:
    """Entries of an output that another run left: an independent rank accepts only its run's
    rank records (run key `key`) and shards (same command, content arguments and input `fingerprint`)."""
    out = []
    for p in sorted(output.iterdir()):
        if p.name == MANIFEST_NAME or p.name.startswith(".delt-write-probe") or parse_temporary(p) is not None:
            continue
        if p.name.startswith(RANK_RECORD_PREFIX) and _read_json(p).get("run_key") == key:
            continue
        prov = _provenance(p) if p.suffix == ".parquet" and p.is_file() else None
        if prov and prov.get("command") == run.command and prov.get("args") == run.content_args() and prov.get("input", {}).get("dataset") == fingerprint:
            continue
        out.append(p.name)
    return out


def _provenance(path: Path) -> dict | None:
    try:
        return shard_provenance(pq.read_schema(path).metadata)
    except (pa.ArrowException, OSError):
        return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _names(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def finish_ranks(output: Path, *, argv: list[str] | None = None) -> dict:
    """`delt finish OUT`: check that the independent ranks of one run wrote every shard, then write
    the manifest (their rank records merged). One-line errors name missing shards, shards of
    another run, or records of two runs; nothing is written then."""
    output = Path(output)
    if not output.is_dir():
        raise DeltError(f"{output}: no such directory")
    records = sorted(output.glob(f"{RANK_RECORD_PREFIX}*.json"))
    manifest = read_manifest(output)
    if not records:
        if manifest is not None:
            info(f"{output}: already finished (manifest.json is there)")
            return manifest
        raise DeltError(f"{output}: no rank records ({RANK_RECORD_PREFIX}*.json): no rank of a --rank/--world-size run has finished here")
    with OutputGuard(output, run_key=f"finish-{HOST}-{os.getpid()}"):
        data = [(p, _read_json(p)) for p in records]
        broken = [p.name for p, d in data if "run_key" not in d]
        if broken:
            raise DeltError(f"{output}: unreadable rank record {broken[0]}")
        keys = {d["run_key"] for _, d in data}
        if len(keys) > 1:
            a = next(d for _, d in data if d["run_key"] == data[0][1]["run_key"])
            b = next(d for _, d in data if d["run_key"] != a["run_key"])
            raise DeltError(
                f"{output}: rank records of two different runs (rank {a['rank']} of {a['world']}: {' '.join(a.get('argv') or [])!s}; "
                f"rank {b['rank']} of {b['world']}: {' '.join(b.get('argv') or [])!s}); rerun the ranks of one run (--overwrite replaces the other's)"
            )
        first = data[0][1]
        if "outputs" in first:  # the ranks listed their shards (prepare: their number depends on the sources)
            from delt_cli.dataset.prepare_ranks import finish_listed

            return finish_listed(output, data, argv=argv)
        world = int(first["world"])
        inputs = first["inputs"]
        expected = [s["path"] for s in inputs["shards"]]
        names = [Path(p).name for p in expected]
        present = {p.name for p in output.glob("*.parquet") if p.is_file()}
        missing = [n for n in names if n not in present]
        if missing:
            ranks = sorted({i % world for i, n in enumerate(names) if n in set(missing)})
            raise DeltError(
                f"{output}: {len(missing)} of {len(names)} shard(s) missing: {_names(missing)} "
                f"(rank(s) {_names([str(r) for r in ranks])} of {world}); run those ranks (with --resume) and finish again"
            )
        stray = sorted(present - set(names))
        if stray:
            raise DeltError(f"{output}: {len(stray)} shard(s) that this run's input does not produce: {_names(stray)}")
        content_args = first["args"]
        reference = None
        for name, shard in zip(names, inputs["shards"]):
            prov = _provenance(output / name) or {}
            got = (prov.get("command"), prov.get("args"), prov.get("version"), prov.get("input", {}).get("dataset"), prov.get("input", {}).get("shard", {}).get("fingerprint"))
            if reference is None:
                reference = got[:4]
            if got[:4] != reference or got[4] != shard["fingerprint"]:
                first_name = names[0]
                differs = "the input shard" if got[:4] == reference else _difference(reference, got)
                raise DeltError(f"{output}: shards from two different runs: {name} and {first_name} differ in {differs}; rerun the stale rank with --overwrite")
        if reference[0] != first["command"] or reference[3] != inputs["fingerprint"]:
            raise DeltError(f"{output}: the shards were written by another run than the rank records say; rerun the ranks with --overwrite")
        ranks = {int(d["rank"]) for _, d in data}
        absent = sorted(set(range(world)) - ranks)
        if absent:
            warn(f"{output}: rank(s) {_names([str(r) for r in absent])} of {world} left no record (killed after writing their shards?); their counts are missing from the summary")
        return publish_ranks(output, data, names, inputs=inputs, args=content_args, argv=argv)


def publish_ranks(output: Path, data: list[tuple[Path, dict]], names: Sequence[str], *, inputs: dict, args: dict,
                  argv: list[str] | None, summary_key: str = "summary") -> dict:
    """The manifest of checked rank records `data` (path, record) and shards `names`: the ranks'
    numeric counters summed under `summary_key`, `processes`, each rank's host and time; then the
    records are removed. Called by `delt finish` under the output's guard."""
    ordered = [d for _, d in sorted(data, key=lambda x: x[1]["rank"])]
    first = data[0][1]
    extra = dict(first.get("extra") or {})
    summary: dict = {}
    for part in (d.get("summary") or {} for d in ordered):
        for k, v in part.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(summary.get(k, 0), (int, float)):
                summary[k] = summary.get(k, 0) + v
            else:
                summary.setdefault(k, v)
    if summary:
        extra[summary_key] = summary
    extra["processes"] = int(first["world"])
    extra["ranks"] = [{"rank": d["rank"], "host": d.get("host"), "elapsed_s": d.get("elapsed_s"), "argv": d.get("argv")} for d in ordered]
    unique_ids = first.get("unique_ids") if all(d.get("unique_ids") == first.get("unique_ids") for d in ordered) else None
    run = RunInfo(command=first["command"], args=args, argv=list(argv or first.get("argv") or []), started=min(float(d.get("started", time.time())) for d in ordered))
    manifest = run.manifest(inputs=inputs, outputs=describe_outputs([output / n for n in names]), extra={**extra, **_checks(unique_ids)})
    write_json_atomic(output / MANIFEST_NAME, manifest)
    for p, _ in data:
        p.unlink(missing_ok=True)
    return manifest


def _difference(a: tuple, b: tuple) -> str:
    what = ("the command", "the arguments", "the delt version", "the input dataset")
    for name, x, y in zip(what, a, b):
        if x != y:
            if name == "the arguments" and isinstance(x, dict) and isinstance(y, dict):
                keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
                return f"the arguments ({', '.join('--' + k.replace('_', '-') for k in keys[:4])})"
            return name
    return "their provenance"


def my_shards(shards: Sequence[Shard], rank: int, world: int) -> list[Shard]:
    """The shards that process `rank` of `world` handles: i % world == rank."""
    return [s for i, s in enumerate(shards) if i % world == rank]


def run_shardwise(
    out: ShardwiseOutput,
    fn: Callable[[Shard], pa.Table],
    *,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] = lambda: None,
    on_shard: Callable[[Shard, int], None] | None = None,
) -> list[Shard]:
    """Apply `fn` (shard -> output table) to this process's unfinished shards; return the ones it wrote.
    Called inside `with out:` (the output's guard is held)."""
    assert out._guard is not None, "run_shardwise needs `with ShardwiseOutput(...) as out:`"
    barrier()
    if rank == 0 or out.independent:
        out.prepare()
    barrier()
    done = []
    for shard in my_shards(out.dataset.shards, rank, world):
        if out.is_done(shard):
            info(f"{shard.name}: already finished, skipped (--resume)")
            continue
        rows = out.write(shard, fn(shard))
        done.append(shard)
        if on_shard:
            on_shard(shard, rows)
    barrier()
    return done
