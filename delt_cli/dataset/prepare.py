"""`delt prepare`: raw sources (JSON lines and CSV, plain, .gz or .zst; text; Parquet; Arrow
files and Hugging Face save_to_disk directories) -> a dataset of shards.

Sources are read (`delt_cli.dataset.prepare_sources`) as streams of record batches, in the order
given (a directory contributes its supported files sorted by path, a save_to_disk
directory its Arrow files in its state.json's order), and written
as shards of ``shard_rows`` rows. Rows whose text is null or blank are dropped
and counted. Invalid UTF-8 is an error naming the file and line unless
``--on-invalid-utf8`` says to replace or skip it.

Columns: the output always has ``id`` and ``text`` first. ``--text-column`` and
``--id-column`` name the sources' columns that become them, so later commands
need neither flag. Ids are kept from the source's id column when it has one;
otherwise every row gets ``<source>:<n>``, where <source> is the file's path
relative to the argument it came from and n is the record's position in that
file (counted before empty or skipped rows are dropped, so ids do not shift):
for a file given as an argument or at the top of a directory argument, the id
that every reading command derives for it (`dataset.reader.derived_ids`).
``--id-prefix source`` prefixes every id with ``<name>:``, the name of the
argument it came from, so that sources numbered alike can be combined.

The first source with records decides the columns (a JSONL file's columns are
those of all its lines, wherever a field first appears): later sources missing
a column get nulls; a column that only a later source has is dropped with a
warning; values are cast to the first source's types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from delt_cli.infra.console import info, progress, warn
from delt_cli.dataset.provenance import RunInfo, read_manifest
from delt_cli.dataset.writer import StagedOutput, shard_name, write_shard
from delt_cli.infra.errors import DeltError, UsageError
from delt_cli.dataset.prepare_sources import Records, SchemaWidened, Source, Utf8Policy, discover_sources, read_source

ID, TEXT = "id", "text"  # the output's column names


class IdPrefix(str, enum.Enum):
    none = "none"
    source = "source"


@dataclass
class _Accumulator:
    """Collects cleaned batches and emits shards of exactly `shard_rows` rows."""

    directory: Path
    shard_rows: int
    metadata: dict
    pending: list = field(default_factory=list)
    pending_rows: int = 0
    written: list = field(default_factory=list)

    def begin(self, index: int, src: Source) -> None:
        """One shard sequence across every source: nothing to do per source."""

    def end(self, index: int, src: Source) -> None:
        pass

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, rows: int) -> None:
        merged = pa.concat_tables(self.pending)
        head, tail = merged.slice(0, rows), merged.slice(rows)
        # Names are provisional (index only); renamed with a fixed width at the end.
        path = self.directory / f"tmp-{len(self.written):09d}.parquet"
        write_shard(head.combine_chunks(), path, self.metadata)
        self.written.append(path)
        self.pending = [tail] if tail.num_rows else []
        self.pending_rows = tail.num_rows

    def discard(self) -> None:
        """Remove what was written (a new attempt starts from nothing)."""
        for path in self.written:
            path.unlink(missing_ok=True)
        self.pending, self.pending_rows, self.written = [], 0, []

    def close(self, empty_schema: pa.Schema) -> list[Path]:
        if self.pending_rows or not self.written:
            if self.pending_rows:
                self._flush(self.pending_rows)
            else:
                path = self.directory / "tmp-000000000.parquet"
                write_shard(empty_schema.empty_table(), path, self.metadata)
                self.written.append(path)
        final = []
        for i, path in enumerate(self.written):
            target = path.with_name(shard_name(i, len(self.written)))
            path.rename(target)
            final.append(target)
        return final


def _conform(table: pa.Table, schema: pa.Schema, src: Source, dropped: set) -> pa.Table:
    """Cast `table` to `schema`: missing columns become nulls, extra ones are dropped (warned once)."""
    extra = [c for c in table.column_names if c not in schema.names]
    for c in extra:
        if c not in dropped:
            warn(f"{src.path}: column '{c}' is not in the first source's columns; dropped")
            dropped.add(c)
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            if col.type != f.type:
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise DeltError(f"{src.path}: column '{f.name}' is {col.type}, cannot cast to {f.type} as in the first source") from exc
            cols.append(col)
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.table(cols, schema=schema)


def prepare_dataset(
    sources: Sequence[str | Path],
    output: Path,
    *,
    shard_rows: int = 100_000,
    paragraphs: bool = False,
    id_column: str = ID,
    text_column: str = TEXT,
    id_prefix: IdPrefix | str = IdPrefix.none,
    on_invalid_utf8: Utf8Policy | str = Utf8Policy.error,
    domain: Optional[str] = None,
    run: Optional[RunInfo] = None,
    overwrite: bool = False,
    resume: bool = False,
    rank: Optional[tuple[int, int]] = None,
) -> Optional[dict]:
    """Convert sources into a dataset of Parquet shards; return the manifest. `rank` (r, W): one of
    W independent ranks converts its sources (`prepare_ranks`) and returns None."""
    if shard_rows < 1:
        raise UsageError(f"--shard-rows {shard_rows}: must be >= 1")
    if not sources:
        raise UsageError("give at least one source file or directory")
    id_prefix = _choice(IdPrefix, id_prefix, "--id-prefix")
    policy = _choice(Utf8Policy, on_invalid_utf8, "--on-invalid-utf8")
    srcs = discover_sources(sources)
    if id_prefix is IdPrefix.source:
        _check_source_names(srcs)
    run = run or RunInfo(command="prepare", args={"shard_rows": shard_rows, "paragraphs": paragraphs})
    inputs = _sources_as_dataset(sources, srcs)
    options = dict(policy=policy, paragraphs=paragraphs, id_column=id_column, text_column=text_column, id_prefix=id_prefix, domain=domain, batch_rows=shard_rows)
    if rank is not None:
        from delt_cli.dataset.prepare_ranks import prepare_rank

        prepare_rank(sources, srcs, Path(output), rank=rank[0], world=rank[1], run=run, shard_rows=shard_rows, options=options, overwrite=overwrite, resume=resume)
        return None
    with StagedOutput(output, [inputs], run=run, overwrite=overwrite, resume=resume) as stage:
        if stage.finished:
            return read_manifest(stage.output)
        metadata = stage.metadata({"sources": [str(s.path) for s in srcs]})
        hints: dict[Path, pa.Schema] = {}  # JSONL sources whose columns are known to be wider than their first chunk's
        while True:
            acc = _Accumulator(stage.path, shard_rows, metadata)
            try:
                stats, schema = _convert(srcs, acc, hints, **options)
                break
            except SchemaWidened as widened:
                acc.discard()
                if widened.source.path in hints:  # cannot happen: the hint holds the columns of the whole file
                    raise
                hints[widened.source.path] = widened.schema
                info(
                    f"{widened.source.path}: lines after the first {widened.line - 1:,} have fields or types those lines do not; "
                    "starting again with the columns of the whole file"
                )
        acc.close(schema or pa.schema([(ID, pa.string()), (TEXT, pa.string())]))
        _check_unique_ids(stage.path, ID, hint=id_prefix is IdPrefix.none and len(srcs) > 1)
        manifest = stage.finish(extra={"prepare": stats}, unique_ids=ID)
    info(
        f"wrote {stats['rows_written']:,} rows from {stats['sources']} source(s); "
        f"dropped {stats['empty_dropped']:,} empty text(s)"
    )
    if not stats["rows_written"]:
        warn(f"{output}: no documents were written; the dataset is empty")
    return manifest


def _choice(kind, value, flag: str):
    try:
        return kind(value.value if isinstance(value, enum.Enum) else value)
    except ValueError:
        raise UsageError(f"{flag} {value}: expected one of {', '.join(k.value for k in kind)}") from None


def _check_source_names(srcs: list[Source]) -> None:
    """--id-prefix source: two arguments of the same name would give the same prefix."""
    seen: dict[str, str] = {}
    for src in srcs:
        other = seen.setdefault(src.name, src.origin)
        if other != src.origin:
            raise UsageError(f"--id-prefix source: {other} and {src.origin} have the same name '{src.name}', so their ids could not be told apart")


def _convert(srcs: list[Source], acc: "_Accumulator", hints: dict, *, policy: Utf8Policy, paragraphs: bool, id_column: str,
             text_column: str, id_prefix: IdPrefix, domain: Optional[str], batch_rows: int,
             only: Optional[set[int]] = None, schema: Optional[pa.Schema] = None, decider: Optional[Path] = None) -> tuple[dict, Optional[pa.Schema]]:
    """Read every source (or the indices in `only`) into the accumulator (`begin`/`add`/`end`);
    return the counts and the output's columns. `schema` and `decider`: the columns, and the source
    that decided them, when known beforehand (a rank: `reference_schema`)."""
    picked = [(i, src) for i, src in enumerate(srcs) if only is None or i in only]
    stats = {"rows_read": 0, "rows_written": 0, "empty_dropped": 0, "utf8_replaced": 0, "utf8_skipped": 0, "sources": len(picked)}
    dropped: set = set()
    with progress() as bar:
        task = bar.add_task("reading", total=len(picked))
        for index, src in picked:
            counts: dict = {}
            deciding = schema is None or src.path == decider
            acc.begin(index, src)
            types = hints.get(src.path) or (None if deciding else _source_types(schema, id_column=id_column, text_column=text_column, domain=domain))
            read = written = 0
            for records in read_source(src, policy=policy, paragraphs=paragraphs, text_column=text_column, batch_rows=batch_rows,
                                       schema=types, widen=deciding, counts=counts):
                table = _normalize(records, src, id_column=id_column, text_column=text_column, id_prefix=id_prefix, domain=domain)
                n = table.num_rows
                read += n
                keep = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table.column(TEXT))), 0), False)
                kept = table.filter(keep)
                stats["empty_dropped"] += n - kept.num_rows
                if schema is None:
                    if not n:
                        continue  # a header without records decides nothing
                    schema = kept.schema
                kept = _conform(kept, schema, src, dropped)
                if kept.num_rows:
                    acc.add(kept)
                    written += kept.num_rows
            stats["rows_read"] += read
            stats["rows_written"] += written
            for key, verb in (("utf8_replaced", "had invalid UTF-8 replaced with U+FFFD"), ("utf8_skipped", "skipped for invalid UTF-8")):
                if counts.get(key):
                    stats[key] += counts[key]
                    warn(f"{src.path}: {counts[key]:,} record(s) {verb} (the first at {counts['first_bad']})")
            if not written:
                warn(f"{src.path}: no documents ({f'{read:,} record(s), all empty' if read else 'no records'})")
            acc.end(index, src)
            bar.advance(task)
    return stats, schema


def reference_schema(srcs: list[Source], hints: dict, *, policy: Utf8Policy, paragraphs: bool, id_column: str, text_column: str,
                     id_prefix: IdPrefix, domain: Optional[str], batch_rows: int) -> tuple[Optional[pa.Schema], Optional[Path]]:
    """The output's columns as one process decides them, and the source that decides them (the
    first with records), without writing anything. A JSON lines source is read to its end, since a
    later line may widen its columns (`hints` gets the whole file's then, as in a full run)."""
    for src in srcs:
        while True:
            try:
                found = None
                for records in read_source(src, policy=policy, paragraphs=paragraphs, text_column=text_column, batch_rows=batch_rows,
                                           schema=hints.get(src.path), widen=True, counts={}):
                    if found is None and records.table.num_rows:
                        found = _normalize(records, src, id_column=id_column, text_column=text_column, id_prefix=id_prefix, domain=domain).schema
                        if src.fmt != "jsonl":
                            break  # only JSON lines widen
                break
            except SchemaWidened as widened:
                if widened.source.path in hints:
                    raise
                hints[widened.source.path] = widened.schema
        if found is not None:
            return found, src.path
    return None, None


def _source_types(schema: pa.Schema, *, id_column: str, text_column: str, domain: Optional[str]) -> pa.Schema:
    """The output's column types under a later source's own names (ids and --domain excluded: those
    are generated or replaced), so that a JSONL source's values are read as the first source's."""
    fields = []
    for f in schema:
        if f.name == ID or (f.name == "domain" and domain is not None):
            continue
        fields.append(f.with_name(text_column) if f.name == TEXT else f)
    return pa.schema(fields)


def _normalize(records: Records, src: Source, *, id_column: str, text_column: str, id_prefix: IdPrefix, domain: Optional[str]) -> pa.Table:
    """The source's text and id columns as `text` and `id` (first), ids generated or prefixed, --domain."""
    table = records.table
    names = table.column_names
    if text_column not in names:
        raise DeltError(f"{src.path}: no text column '{text_column}' (--text-column); columns are: {', '.join(names)}")
    for flag, source_name, name in (("--text-column", text_column, TEXT), ("--id-column", id_column, ID)):
        if source_name != name and name in names:
            raise DeltError(
                f"{src.path}: has a column '{name}' besides '{source_name}' ({flag}), which prepare writes as '{name}'; rename one of them"
            )
    text = table.column(text_column)
    if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
        try:
            text = text.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DeltError(f"{src.path}: text column '{text_column}' is {text.type}, not text") from exc
    if id_column in names:
        ids = table.column(id_column)
        if ids.null_count:
            row = int(pc.index(pc.is_null(ids), True).as_py())
            raise DeltError(f"{src.path}: {records.where(row)}: the id ('{id_column}') is null ({ids.null_count:,} null id(s) in this part of the file)")
    else:
        ids = pa.array([f"{src.label}:{p}" for p in records.positions.tolist()], pa.string())
    if id_prefix is IdPrefix.source:
        try:
            ids = pc.binary_join_element_wise(f"{src.name}:", ids.cast(pa.string()), "")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DeltError(f"{src.path}: id column '{id_column}' is {ids.type}; --id-prefix needs ids that read as text") from exc
    rest = [c for c in names if c not in (id_column, text_column)]
    columns = {ID: ids, TEXT: text, **{c: table.column(c) for c in rest}}
    if domain is not None:
        columns["domain"] = pa.array([domain] * table.num_rows, pa.string())
    return pa.table(columns)


def _sources_as_dataset(specs: Sequence[str | Path], srcs: list[Source]):
    """Describe the raw sources like a dataset (content fingerprints, rows unknown = -1) for provenance."""
    from delt_cli.dataset import remote
    from delt_cli.dataset.provenance import sha256_file
    from delt_cli.dataset.reader import Dataset, Shard

    shards = [Shard(path=src.path, num_rows=-1, num_bytes=remote.file_size(src.path), fingerprint=sha256_file(src.path)[:32]) for src in srcs]
    roots = [Path(s) for s in specs if Path(s).is_dir()]
    return Dataset(spec=" ".join(map(str, specs)), shards=shards, schema=pa.schema([]), roots=roots)


def _check_unique_ids(directory: Path, id_column: str, *, hint: bool) -> None:
    from delt_cli.dataset.reader import open_dataset

    if not any(directory.glob("*.parquet")):
        return
    try:
        open_dataset(directory, id_column=id_column, allow_incomplete=True).check_ids()
    except DeltError as exc:
        advice = " (sources numbered alike: pass --id-prefix source to prefix each id with its source's name)" if hint else ""
        raise DeltError(f"the sources have duplicate ids: {str(exc).replace(str(directory), 'the output')}{advice}") from exc
