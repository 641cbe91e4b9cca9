"""`delt prepare`: raw sources (JSONL, JSONL.gz, text, CSV, Parquet) -> a dataset of shards.

Sources are read as streams of record batches, in the order given (a directory
contributes its supported files sorted by path), and written as shards of
``shard_rows`` rows. Rows whose text is null or blank are dropped and counted.

Ids are kept from the source's id column when it has one; otherwise every row
gets ``<source>:<n>``, where <source> is the file's path relative to the
argument it came from and n is the record's position in that file (counted
before empty rows are dropped, so ids do not shift when empties change).

The first source decides the columns: later sources missing a column get
nulls; a column that only a later source has is dropped with a warning; values
are cast to the first source's types.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from delt_cli.console import info, progress, warn
from delt_cli.dataset.provenance import MANIFEST_NAME, RunInfo
from delt_cli.dataset.writer import StagedOutput, shard_name, write_shard
from delt_cli.errors import DeltError, UsageError

SUFFIXES = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".jsonl.gz": "jsonl.gz",
    ".json.gz": "jsonl.gz",
    ".ndjson.gz": "jsonl.gz",
    ".txt": "text",
    ".md": "text",
    ".text": "text",
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}


def source_format(path: Path) -> Optional[str]:
    name = path.name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    return None


@dataclass
class Source:
    path: Path
    label: str  # path relative to the argument it came from, used in generated ids
    fmt: str


def _is_dataset_manifest(path: Path) -> bool:
    """The manifest.json beside a delt dataset's shards is provenance, not a source of documents."""
    return path.name == MANIFEST_NAME and any(path.parent.glob("*.parquet"))


def discover_sources(specs: Sequence[str | Path]) -> list[Source]:
    sources: list[Source] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and source_format(p) and not p.name.startswith(".") and not _is_dataset_manifest(p))
            if not files:
                raise DeltError(f"{spec}: directory has no supported source files ({', '.join(sorted(SUFFIXES))})")
            sources.extend(Source(p, str(p.relative_to(path)), source_format(p)) for p in files)
        elif path.is_file():
            fmt = source_format(path)
            if fmt is None:
                raise DeltError(f"{spec}: unsupported source type (expected one of {', '.join(sorted(SUFFIXES))})")
            sources.append(Source(path, path.name, fmt))
        else:
            raise DeltError(f"{spec}: no such file or directory")
    return sources


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeltError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _text_batches(src: Source, *, paragraphs: bool, text_column: str) -> Iterator[pa.Table]:
    text = _read_text(src.path)
    if paragraphs:
        import re

        # blank-line separators are not documents: runs of blank lines never create empty paragraphs
        docs = [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]
    else:
        docs = [text]
    yield pa.table({text_column: pa.array(docs, pa.string())})


def _jsonl_batches(src: Source, block_size: int) -> Iterator[pa.Table]:
    stream = pa.input_stream(str(src.path), compression="gzip" if src.fmt.endswith(".gz") else None)
    try:
        reader = pajson.open_json(stream, read_options=pajson.ReadOptions(block_size=block_size))
        for batch in reader:
            yield pa.Table.from_batches([batch])
    except pa.ArrowInvalid as exc:
        raise DeltError(f"{src.path}: cannot parse JSON lines ({str(exc).splitlines()[0]})") from exc


def _csv_batches(src: Source, block_size: int) -> Iterator[pa.Table]:
    delimiter = "\t" if src.fmt == "tsv" else ","
    try:
        reader = pacsv.open_csv(
            str(src.path),
            read_options=pacsv.ReadOptions(block_size=block_size),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        )
        for batch in reader:
            yield pa.Table.from_batches([batch])
    except pa.ArrowInvalid as exc:
        raise DeltError(f"{src.path}: cannot parse CSV ({str(exc).splitlines()[0]})") from exc


def _parquet_batches(src: Source, batch_rows: int) -> Iterator[pa.Table]:
    try:
        pf = pq.ParquetFile(src.path)
        for batch in pf.iter_batches(batch_size=batch_rows):
            yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError) as exc:
        raise DeltError(f"{src.path}: cannot read Parquet ({exc})") from exc


def read_source(src: Source, *, paragraphs: bool, text_column: str, batch_rows: int) -> Iterator[pa.Table]:
    if src.fmt == "text":
        return _text_batches(src, paragraphs=paragraphs, text_column=text_column)
    if src.fmt.startswith("jsonl"):
        return _jsonl_batches(src, block_size=8 << 20)
    if src.fmt in ("csv", "tsv"):
        return _csv_batches(src, block_size=8 << 20)
    return _parquet_batches(src, batch_rows)


@dataclass
class _Accumulator:
    """Collects cleaned batches and emits shards of exactly `shard_rows` rows."""

    directory: Path
    shard_rows: int
    metadata: dict
    pending: list = field(default_factory=list)
    pending_rows: int = 0
    written: list = field(default_factory=list)

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
    id_column: str = "id",
    text_column: str = "text",
    domain: Optional[str] = None,
    run: Optional[RunInfo] = None,
    overwrite: bool = False,
) -> dict:
    """Convert sources into a dataset of Parquet shards; return the manifest."""
    if shard_rows < 1:
        raise UsageError(f"--shard-rows {shard_rows}: must be >= 1")
    if not sources:
        raise UsageError("give at least one source file or directory")
    srcs = discover_sources(sources)
    run = run or RunInfo(command="prepare", args={"shard_rows": shard_rows, "paragraphs": paragraphs})
    stats = {"rows_read": 0, "rows_written": 0, "empty_dropped": 0, "sources": len(srcs)}
    schema: Optional[pa.Schema] = None
    dropped: set = set()
    inputs = _sources_as_dataset(sources, srcs)
    with StagedOutput(output, [inputs], run=run, overwrite=overwrite) as stage:
        acc = _Accumulator(stage.path, shard_rows, stage.metadata({"sources": [str(s.path) for s in srcs]}))
        with progress() as bar:
            task = bar.add_task("reading", total=len(srcs))
            for src in srcs:
                position = 0
                for table in read_source(src, paragraphs=paragraphs, text_column=text_column, batch_rows=shard_rows):
                    if text_column not in table.column_names:
                        raise DeltError(
                            f"{src.path}: no text column '{text_column}' (--text-column); columns are: {', '.join(table.column_names)}"
                        )
                    n = table.num_rows
                    table = _normalize(table, src, position, id_column=id_column, text_column=text_column, domain=domain)
                    position += n
                    stats["rows_read"] += n
                    keep = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table.column(text_column))), 0), False)
                    kept = table.filter(keep)
                    stats["empty_dropped"] += n - kept.num_rows
                    if schema is None:
                        schema = kept.schema
                    kept = _conform(kept, schema, src, dropped)
                    if kept.num_rows:
                        acc.add(kept)
                        stats["rows_written"] += kept.num_rows
                bar.advance(task)
        if schema is None:
            schema = pa.schema([(id_column, pa.string()), (text_column, pa.string())])
        acc.close(schema)
        _check_unique_ids(stage.path, id_column)
        manifest = stage.finish(extra={"prepare": stats}, unique_ids=id_column)
    info(
        f"wrote {stats['rows_written']:,} rows from {stats['sources']} source(s); "
        f"dropped {stats['empty_dropped']:,} empty text(s)"
    )
    return manifest


def _normalize(table: pa.Table, src: Source, start: int, *, id_column: str, text_column: str, domain: Optional[str]) -> pa.Table:
    text = table.column(text_column)
    if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
        try:
            text = text.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DeltError(f"{src.path}: text column '{text_column}' is {text.type}, not text") from exc
        table = table.set_column(table.column_names.index(text_column), text_column, text)
    if id_column not in table.column_names:
        ids = pa.array([f"{src.label}:{start + i}" for i in range(table.num_rows)], pa.string())
        table = table.add_column(0, id_column, ids)
    elif table.column(id_column).null_count:
        raise DeltError(f"{src.path}: id column '{id_column}' has {table.column(id_column).null_count} null value(s)")
    if domain is not None:
        col = pa.array([domain] * table.num_rows, pa.string())
        if "domain" in table.column_names:
            table = table.set_column(table.column_names.index("domain"), "domain", col)
        else:
            table = table.append_column("domain", col)
    # id and text first, the other columns as they came
    rest = [c for c in table.column_names if c not in (id_column, text_column)]
    return table.select([id_column, text_column, *rest])


def _sources_as_dataset(specs: Sequence[str | Path], srcs: list[Source]):
    """Describe the raw sources like a dataset (content fingerprints, rows unknown = -1) for provenance."""
    import hashlib

    from delt_cli.dataset.reader import Dataset, Shard

    shards = []
    for src in srcs:
        h = hashlib.sha256()
        with open(src.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        shards.append(Shard(path=src.path, num_rows=-1, num_bytes=src.path.stat().st_size, fingerprint=h.hexdigest()[:32]))
    roots = [Path(s) for s in specs if Path(s).is_dir()]
    return Dataset(spec=" ".join(map(str, specs)), shards=shards, schema=pa.schema([]), roots=roots)


def _check_unique_ids(directory: Path, id_column: str) -> None:
    from delt_cli.dataset.reader import open_dataset

    if not any(directory.glob("*.parquet")):
        return
    try:
        open_dataset(directory, id_column=id_column, allow_incomplete=True).check_ids()
    except DeltError as exc:
        raise DeltError(f"the sources have duplicate ids: {str(exc).replace(str(directory), 'the output')}") from exc
