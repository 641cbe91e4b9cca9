"""Raw source files (JSONL, text, CSV, Parquet, Arrow) read as record batches for `delt prepare`.

Every reader yields `Records`: a table, the record number of each row in its file
(generated ids come from it, so they stay put when other records are dropped or
skipped) and a `where(row)` that says where a row came from ("line 12") in messages.

**Formats** come from the name: JSON lines and CSV/TSV, each plain or compressed
(`.gz`, `.zst`: `dataset/jsonl.py` decompresses by suffix for both), text, Parquet, and
Arrow IPC files (`.arrow`, stream or file format). A Hugging Face `save_to_disk`
directory (`state.json`, `dataset_info.json`, `data-*.arrow`) contributes the Arrow files
its `state.json` lists, in that order, and not its metadata; a `DatasetDict` directory is
refused with its splits named (dataset/sources.py reads both for the readers).

**Encoding.** Text must be UTF-8. `Utf8Policy` decides what an invalid byte sequence
does: ``error`` (the default: the message names the file and line), ``replace``
(each invalid sequence becomes U+FFFD, as Python's ``errors="replace"``) or ``skip``
(the record holding it is dropped: a JSONL line, a CSV record, a text document).
Parquet and Arrow string columns are checked too, so nothing with invalid UTF-8 is passed on.

**JSONL columns come from the whole file.** A file is read in chunks of whole lines
(`CHUNK_BYTES`; chunks, parsing and schema merging are dataset/jsonl.py's, as the readers
use them). Each chunk is parsed against the columns known so far; a chunk
that brings a new field or needs a wider type (a number field holding 1.5 further
down, a date field holding other text) makes the reader scan the rest of the file
for its full schema and raise `SchemaWidened`, and the caller starts again with that
schema. So a field that first appears on line 200,001 is a column exactly as it
would be on line 2, at the cost of reading such a file twice. Line numbers count
every line of the file (blank lines are not records but are lines).
"""

from __future__ import annotations

import enum
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from delt_cli.dataset import jsonl, remote, sources
from delt_cli.dataset.provenance import MANIFEST_NAME
from delt_cli.infra.errors import DeltError

FORMATS = {  # name suffix (before any compression suffix) -> format
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "text",
    ".md": "text",
    ".text": "text",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".arrow": "arrow",
}
COMPRESSIBLE = {"jsonl", "csv", "tsv"}  # formats read as a stream, so also .gz or .zst
ACCEPTED = (
    "JSON lines (.jsonl, .json, .ndjson), CSV (.csv), TSV (.tsv), each optionally .gz or .zst; "
    "text (.txt, .md, .text), Parquet (.parquet), Arrow (.arrow, a save_to_disk directory)"
)

CHUNK_BYTES = 8 << 20  # whole lines of JSONL (or bytes of CSV) parsed at a time


class Utf8Policy(str, enum.Enum):
    error = "error"
    replace = "replace"
    skip = "skip"


def _split_suffix(name: str) -> tuple[str, Optional[str], Optional[str]]:
    """(name without its suffixes, format, compression); format None for a name prepare does not read."""
    base, compression = jsonl.split_compression(name)
    suffix = sources.longest_suffix(base, FORMATS)
    if suffix is None or compression and FORMATS[suffix] not in COMPRESSIBLE:
        return name, None, None
    return base[: -len(suffix)], FORMATS[suffix], compression


def source_format(path: Path) -> Optional[str]:
    return _split_suffix(path.name)[1]


@dataclass
class Source:
    path: Path
    label: str  # path relative to the argument it came from (generated ids)
    fmt: str
    name: str = ""  # the argument's file or directory name without format suffix (--id-prefix source)
    origin: str = ""  # the argument it came from, as given
    compression: Optional[str] = None  # gzip, zstd (from the name)


def _is_dataset_manifest(path: Path) -> bool:
    """The manifest.json beside a delt dataset's shards is provenance, not a source of documents."""
    return path.name == MANIFEST_NAME and any(path.parent.glob("*.parquet"))


def _directory_files(root: Path) -> list[Path]:
    """The source files under `root`, sorted by path; a save_to_disk directory gives the Arrow
    files its state.json lists, in that order, where its first file would sort (the metadata
    and any other file in it are no sources); a DatasetDict anywhere is refused (sources.hf_data_files)."""
    files: list[Path] = []
    listed: dict[Path, Optional[list[Path]]] = {}  # directory -> its save_to_disk files (None: not one)
    for path in sorted(root.rglob("*")):
        if path.name == "dataset_dict.json":
            sources.hf_data_files(path.parent)  # raises, naming the splits
        if not path.is_file() or path.name.startswith("."):
            continue
        folder = path.parent
        if folder not in listed:
            listed[folder] = sources.hf_data_files(folder)
            if listed[folder] is not None:
                files.extend(listed[folder])
        if listed[folder] is None and source_format(path) and not _is_dataset_manifest(path):
            files.append(path)
    return files


def _remote_sources(spec: str) -> list[Source]:
    """An `s3://` object or prefix: its source objects sorted by key (labels relative to the prefix,
    as for a local directory). A save_to_disk directory in a bucket is refused (copy it locally)."""
    where = remote.RemotePath(spec)
    info = where.info()
    if info.type == pafs.FileType.File:
        stem, fmt, compression = _split_suffix(where.name)
        if fmt is None:
            raise DeltError(f"{spec}: unsupported source type (expected {ACCEPTED})")
        return [Source(where, where.name, fmt, stem, str(spec), compression)]
    if info.type != pafs.FileType.Directory:
        raise DeltError(f"{remote.uri(spec)}: no such object or prefix in the bucket")
    objects = [remote.RemotePath(remote.SCHEME + i.path) for i in remote.list_prefix(where, recursive=True) if i.type == pafs.FileType.File]
    marker = next((o for o in objects if o.name in ("state.json", "dataset_dict.json")), None)
    if marker is not None:
        raise DeltError(f"{marker}: a save_to_disk directory in the bucket; prepare reads those from a local copy")
    found = []
    for obj in objects:
        stem, fmt, compression = _split_suffix(obj.name)
        if fmt is None or obj.name.startswith(".") or (obj.name == MANIFEST_NAME):
            continue
        found.append(Source(obj, obj.relative_to(where), fmt, where.name, str(spec), compression))
    if not found:
        raise DeltError(f"{remote.uri(spec)}: no supported source files under this prefix ({ACCEPTED})")
    return found


def discover_sources(specs: Sequence[str | Path]) -> list[Source]:
    found: list[Source] = []
    for spec in specs:
        if remote.is_remote(spec):
            found.extend(_remote_sources(str(spec)))
            continue
        path = Path(spec)
        if path.is_dir():
            files = _directory_files(path)
            if not files:
                raise DeltError(f"{spec}: directory has no supported source files ({ACCEPTED})")
            name = path.name or path.resolve().name
            for p in files:
                _, fmt, compression = _split_suffix(p.name)
                found.append(Source(p, str(p.relative_to(path)), fmt or "arrow", name, str(spec), compression))
        elif path.is_file():
            stem, fmt, compression = _split_suffix(path.name)
            if fmt is None:
                raise DeltError(f"{spec}: unsupported source type (expected {ACCEPTED})")
            found.append(Source(path, path.name, fmt, stem, str(spec), compression))
        else:
            raise DeltError(f"{spec}: no such file or directory")
    return found


@dataclass
class Records:
    table: pa.Table
    positions: np.ndarray  # int64: each row's record number in its file (0-based)
    where: Callable[[int], str]  # row -> "line 12", "row 3", ... for messages


class SchemaWidened(Exception):
    """The columns of `source` are wider than its first chunk said; start again with `schema`."""

    def __init__(self, source: Source, schema: pa.Schema, line: int):
        super().__init__(f"{source.path}: line {line} adds to the columns")
        self.source, self.schema, self.line = source, schema, line


def _invalid_utf8_hint(policy: Utf8Policy) -> str:
    return "pass --on-invalid-utf8 replace or skip" if policy is Utf8Policy.error else ""


def read_source(src: Source, *, policy: Utf8Policy, paragraphs: bool, text_column: str, batch_rows: int,
                schema: Optional[pa.Schema] = None, widen: bool = False, counts: Optional[dict] = None) -> Iterator[Records]:
    """Records of one source. JSONL only: `schema` gives the types of known fields (None: the
    first chunk's), and with `widen` a later chunk that needs more raises `SchemaWidened`."""
    counts = counts if counts is not None else {}
    if src.fmt == "text":
        raw = _text(src, policy, paragraphs=paragraphs, text_column=text_column, counts=counts)
    elif src.fmt == "jsonl":
        raw = _jsonl(src, policy, schema=schema, widen=widen, counts=counts)
    elif src.fmt in ("csv", "tsv"):
        raw = _csv(src, policy, counts=counts)
    elif src.fmt == "arrow":
        raw = _arrow(src)
    else:
        raw = _parquet(src, batch_rows)
    for records in raw:
        yield _valid_utf8_rows(records, src, policy, counts)


# ------------------------------------------------------------------ text files


def _text(src: Source, policy: Utf8Policy, *, paragraphs: bool, text_column: str, counts: dict) -> Iterator[Records]:
    raw = src.path.read_bytes()
    escaped = False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        if policy is Utf8Policy.error:
            raise DeltError(f"{src.path}: line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); {_invalid_utf8_hint(policy)}") from exc
        # surrogateescape keeps each invalid byte as a lone surrogate, so a document can tell that it held one
        text = raw.decode("utf-8", "surrogateescape")
        escaped = True
        counts.setdefault("first_bad", f"line {line}")
    # blank-line separators are not documents: runs of blank lines never create empty paragraphs
    docs = [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()] if paragraphs else [text]
    bad = [i for i, d in enumerate(docs) if _has_escaped_bytes(d)] if escaped else []
    if bad and policy is Utf8Policy.replace:
        for i in bad:
            docs[i] = docs[i].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        counts["utf8_replaced"] = counts.get("utf8_replaced", 0) + len(bad)
    keep = np.ones(len(docs), dtype=bool)
    if bad and policy is Utf8Policy.skip:
        keep[bad] = False
        counts["utf8_skipped"] = counts.get("utf8_skipped", 0) + len(bad)
    kept = [d for d, k in zip(docs, keep) if k]
    unit = "paragraph" if paragraphs else "document"
    positions = np.flatnonzero(keep).astype(np.int64)
    yield Records(pa.table({text_column: pa.array(kept, pa.string())}), positions, lambda r: f"{unit} {positions[r] + 1}")


def _has_escaped_bytes(text: str) -> bool:
    """True when surrogateescape decoding put an invalid byte into `text`."""
    return not text.isascii() and any("\udc80" <= ch <= "\udcff" for ch in text)


# ------------------------------------------------------------------------ JSONL


def _jsonl(src: Source, policy: Utf8Policy, *, schema: Optional[pa.Schema], widen: bool, counts: dict) -> Iterator[Records]:
    """Chunks, parsing and schema merging are dataset/jsonl.py's (the readers' too)."""
    record = 0
    chunks = jsonl.chunks(src.path, src.compression, chunk_bytes=CHUNK_BYTES, invalid_utf8=policy.value,
                          hint=_invalid_utf8_hint(policy), counts=counts)
    for chunk in chunks:
        if chunk.blank:
            record += len(chunk.skipped)
            continue
        if schema is None:
            table = jsonl.parse(chunk)
            schema = table.schema
        else:
            table = jsonl.fits(chunk, schema)
            if widen and (table is None or table.schema != schema):
                wider = jsonl.merge_chunk(chunk, schema, jsonl.parse(chunk))
                raise SchemaWidened(src, _scan_rest(chunks, wider), chunk.first_line)
            if table is None:  # a later source whose values differ from the first source's types: conformed later
                table = jsonl.parse(chunk)
        n = table.num_rows + len(chunk.skipped)
        positions = record + (np.delete(np.arange(n), chunk.skipped) if chunk.skipped else np.arange(n))
        record += n
        yield Records(table, positions.astype(np.int64), chunk.where)


def _scan_rest(chunks: Iterator[jsonl.Chunk], schema: pa.Schema) -> pa.Schema:
    for chunk in chunks:
        if chunk.blank:
            continue
        table = jsonl.fits(chunk, schema)
        if table is None or table.schema != schema:
            schema = jsonl.merge_chunk(chunk, schema, jsonl.parse(chunk))
    return schema


# -------------------------------------------------------------------------- CSV


class _Utf8Stream(io.RawIOBase):
    """A byte stream that checks (error) or repairs (replace) UTF-8 as the CSV parser reads it,
    counting lines so that messages can name one; `skip` passes bytes through (rows are
    dropped after parsing). A decompression failure is reported with the line reached."""

    def __init__(self, src: Source, inner, policy: Utf8Policy, counts: dict):
        self.src, self.inner, self.policy, self.counts = src, inner, policy, counts
        self.lines = 0  # newlines delivered so far
        self.total = 0  # bytes delivered
        self._carry = b""  # an incomplete UTF-8 sequence at the end of the last read
        self._out = b""
        self._last_bad_line = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._out:
            try:
                data = self.inner.read(min(max(len(buffer), 1 << 16), jsonl.READ_BYTES))
            except jsonl.READ_ERRORS as exc:
                raise jsonl.read_error(self.src.path, self.src.compression, self.lines + self._carry.count(b"\n"), exc) from exc
            if not data and not self._carry:
                return 0
            self._out = self._check(self._carry + data, final=not data)
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        self.total += n
        return n

    def _check(self, data: bytes, *, final: bool) -> bytes:
        cut = len(data) if final else _complete_utf8_prefix(data)
        head, self._carry = data[:cut], data[cut:]
        if self.policy is not Utf8Policy.skip:
            try:
                head.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = self.lines + head[: exc.start].count(b"\n") + 1
                if self.policy is Utf8Policy.error:
                    raise DeltError(
                        f"{self.src.path}: line {line}: not valid UTF-8 (byte 0x{head[exc.start]:02x}); {_invalid_utf8_hint(self.policy)}"
                    ) from exc
                self.counts.setdefault("first_bad", f"line {line}")
                for i, piece in enumerate(head.split(b"\n")):
                    try:
                        piece.decode("utf-8")
                    except UnicodeDecodeError:
                        if self.lines + i + 1 != self._last_bad_line:
                            self.counts["utf8_replaced"] = self.counts.get("utf8_replaced", 0) + 1
                            self._last_bad_line = self.lines + i + 1
                head = head.decode("utf-8", "replace").encode("utf-8")
        self.lines += head.count(b"\n")
        return head


def _complete_utf8_prefix(data: bytes) -> int:
    """Length of `data` without an incomplete multi-byte sequence at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: complete if its sequence fits
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


def _csv(src: Source, policy: Utf8Policy, *, counts: dict) -> Iterator[Records]:
    stream = _Utf8Stream(src, jsonl.open_stream(src.path, src.compression), policy, counts)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=CHUNK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter="\t" if src.fmt == "tsv" else ",", newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(check_utf8=policy is not Utf8Policy.skip),
        )
        record = 0
        for batch in reader:
            n = batch.num_rows
            yield Records(pa.Table.from_batches([batch]), np.arange(record, record + n, dtype=np.int64), lambda r, base=record: f"record {base + r + 1}")
            record += n
    except pa.ArrowInvalid as exc:
        if stream.total == 0:
            return  # an empty file: no header, no records
        raise DeltError(f"{src.path}: cannot parse CSV ({str(exc).splitlines()[0]})") from exc


# ---------------------------------------------------------------------- Parquet


def _parquet(src: Source, batch_rows: int) -> Iterator[Records]:
    try:
        pf = pq.ParquetFile(remote.open_binary(src.path) if isinstance(src.path, remote.RemotePath) else src.path)
        record = 0
        for batch in pf.iter_batches(batch_size=batch_rows):
            n = batch.num_rows
            yield Records(pa.Table.from_batches([batch]), np.arange(record, record + n, dtype=np.int64), lambda r, base=record: f"row {base + r + 1}")
            record += n
    except (pa.ArrowException, OSError) as exc:
        raise DeltError(f"{src.path}: cannot read Parquet ({exc})") from exc


# ------------------------------------------------------------------------ Arrow


def _arrow(src: Source) -> Iterator[Records]:
    """An Arrow IPC file (a save_to_disk shard), memory-mapped, in pieces (dataset/sources.py)."""
    record = 0
    for table in sources.arrow_pieces(src.path, None):
        n = table.num_rows
        yield Records(table, np.arange(record, record + n, dtype=np.int64), lambda r, base=record: f"row {base + r + 1}")
        record += n


# ---------------------------------------------------- UTF-8 of parsed strings


def _valid_utf8_rows(records: Records, src: Source, policy: Utf8Policy, counts: dict) -> Records:
    """The last check before anything is written: no string value holds invalid UTF-8."""
    table = records.table
    try:
        table.validate(full=True)
        return records
    except pa.ArrowInvalid:
        pass
    bad_rows = np.zeros(table.num_rows, dtype=bool)
    columns = list(table.columns)
    for c, (name, column) in enumerate(zip(table.column_names, table.columns)):
        try:
            column.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        flat = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        if flat:
            values = column.cast(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()).to_pylist()
            bad = np.asarray([v is not None and not _decodes(v) for v in values])
        else:
            bad = np.asarray([_invalid(table.slice(i, 1).select([c])) for i in range(table.num_rows)])
        if policy is Utf8Policy.error:
            row = int(np.argmax(bad))
            raise DeltError(f"{src.path}: {records.where(row)}: column '{name}' holds invalid UTF-8; {_invalid_utf8_hint(policy)}")
        if policy is Utf8Policy.replace:
            if not flat:
                raise DeltError(f"{src.path}: {records.where(int(np.argmax(bad)))}: column '{name}' ({column.type}) holds invalid UTF-8 that cannot be replaced in place; pass --on-invalid-utf8 skip")
            columns[c] = pa.array([v.decode("utf-8", "replace") if v is not None else None for v in values], column.type)
            counts["utf8_replaced"] = counts.get("utf8_replaced", 0) + int(bad.sum())
        bad_rows |= bad
        counts.setdefault("first_bad", records.where(int(np.argmax(bad))))
    if policy is Utf8Policy.replace:
        return Records(pa.table(columns, names=table.column_names), records.positions, records.where)
    keep = np.flatnonzero(~bad_rows)
    counts["utf8_skipped"] = counts.get("utf8_skipped", 0) + int(bad_rows.sum())
    where = records.where
    return Records(table.take(pa.array(keep)), records.positions[keep], lambda r: where(int(keep[r])))


def _decodes(value: bytes) -> bool:
    try:
        value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _invalid(table: pa.Table) -> bool:
    try:
        table.validate(full=True)
        return False
    except pa.ArrowInvalid:
        return True
