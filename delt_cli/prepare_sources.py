"""Raw source files (JSONL, text, CSV, Parquet) read as record batches for `delt prepare`.

Every reader yields `Records`: a table, the record number of each row in its file
(generated ids come from it, so they stay put when other records are dropped or
skipped) and a `where(row)` that says where a row came from ("line 12") in messages.

**Encoding.** Text must be UTF-8. `Utf8Policy` decides what an invalid byte sequence
does: ``error`` (the default: the message names the file and line), ``replace``
(each invalid sequence becomes U+FFFD, as Python's ``errors="replace"``) or ``skip``
(the record holding it is dropped: a JSONL line, a CSV record, a text document).
Parquet string columns are checked too, so nothing with invalid UTF-8 is passed on.

**JSONL columns come from the whole file.** A file is read in chunks of whole lines
(`CHUNK_BYTES`). Each chunk is parsed against the columns known so far; a chunk
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
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from delt_cli.dataset.provenance import MANIFEST_NAME
from delt_cli.errors import DeltError

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

CHUNK_BYTES = 8 << 20  # whole lines of JSONL (or bytes of CSV) parsed at a time
READ_BYTES = 1 << 20  # read from the (decompressing) stream at a time: a truncation is found within this much
PARSE_BLOCK = 1 << 20  # pyarrow parses a chunk in blocks of this size on several threads
JSON_BLANK = b" \t\r\n"  # what the JSON parser skips between records


class Utf8Policy(str, enum.Enum):
    error = "error"
    replace = "replace"
    skip = "skip"


def _split_suffix(name: str) -> tuple[str, Optional[str]]:
    lower = name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)], SUFFIXES[suffix]
    return name, None


def source_format(path: Path) -> Optional[str]:
    return _split_suffix(path.name)[1]


@dataclass
class Source:
    path: Path
    label: str  # path relative to the argument it came from (generated ids)
    fmt: str
    name: str = ""  # the argument's file or directory name without format suffix (--id-prefix source)
    origin: str = ""  # the argument it came from, as given


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
            name = path.name or path.resolve().name
            sources.extend(Source(p, str(p.relative_to(path)), source_format(p), name, str(spec)) for p in files)
        elif path.is_file():
            stem, fmt = _split_suffix(path.name)
            if fmt is None:
                raise DeltError(f"{spec}: unsupported source type (expected one of {', '.join(sorted(SUFFIXES))})")
            sources.append(Source(path, path.name, fmt, stem, str(spec)))
        else:
            raise DeltError(f"{spec}: no such file or directory")
    return sources


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
    elif src.fmt.startswith("jsonl"):
        raw = _jsonl(src, policy, schema=schema, widen=widen, counts=counts)
    elif src.fmt in ("csv", "tsv"):
        raw = _csv(src, policy, counts=counts)
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


@dataclass
class _Chunk:
    """Whole lines of a JSONL file. Lines skipped for invalid UTF-8 are emptied (not removed), so
    line numbers hold; `skipped` lists their record offsets within the chunk."""

    data: bytes
    first_line: int  # 1-based line number of the chunk's first line
    skipped: list = field(default_factory=list)
    _record_lines: Optional[np.ndarray] = None

    @property
    def blank(self) -> bool:
        return not self.data.strip(JSON_BLANK)

    def line_of(self, row: int) -> int:
        """File line of the `row`-th record the parser returns for this chunk."""
        if self._record_lines is None:
            lines = self.data.split(b"\n")
            self._record_lines = np.asarray([i for i, line in enumerate(lines) if line.strip(JSON_BLANK)], dtype=np.int64)
        return self.first_line + int(self._record_lines[min(row, len(self._record_lines) - 1)])

    def where(self, row: int) -> str:
        return f"line {self.line_of(row)}"

    def block_size(self) -> int:
        """pyarrow needs every record inside one block: at least the longest line."""
        newlines = np.flatnonzero(np.frombuffer(self.data, dtype=np.uint8) == 10)
        longest = int(np.diff(newlines, prepend=-1).max()) if len(newlines) else len(self.data)
        return max(PARSE_BLOCK, longest + 1, len(self.data) - (newlines[-1] if len(newlines) else 0))


def _open_stream(src: Source):
    compression = "gzip" if src.path.name.lower().endswith(".gz") else None
    try:
        return pa.input_stream(str(src.path), compression=compression)
    except OSError as exc:
        raise DeltError(f"{src.path}: cannot open ({exc})") from exc


def _truncated(src: Source, lines: int, exc: BaseException) -> DeltError:
    return DeltError(f"{src.path}: compressed data is truncated or corrupt after line {lines} ({exc})")


def _chunks(src: Source, policy: Utf8Policy, counts: dict) -> Iterator[_Chunk]:
    stream = _open_stream(src)
    pieces, size, line = [], 0, 1
    with stream:
        while True:
            try:
                block = stream.read(READ_BYTES)
            except (OSError, EOFError, zlib.error) as exc:
                raise _truncated(src, line - 1 + sum(p.count(b"\n") for p in pieces), exc) from exc
            if block:
                pieces.append(block)
                size += len(block)
                if size < CHUNK_BYTES or b"\n" not in block:
                    continue  # a line longer than a chunk: read on to its end
                buf = b"".join(pieces)
                cut = buf.rfind(b"\n") + 1
                data, rest = buf[:cut], buf[cut:]
                pieces, size = ([rest], len(rest)) if rest else ([], 0)
            elif pieces:
                data, pieces = b"".join(pieces), []
            else:
                return
            yield _checked_chunk(src, data, line, policy, counts)
            line += data.count(b"\n")


def _checked_chunk(src: Source, data: bytes, first_line: int, policy: Utf8Policy, counts: dict) -> _Chunk:
    try:
        data.decode("utf-8")
        return _Chunk(data, first_line)
    except UnicodeDecodeError as exc:
        bad_line = first_line + data[: exc.start].count(b"\n")
        if policy is Utf8Policy.error:
            raise DeltError(f"{src.path}: line {bad_line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); {_invalid_utf8_hint(policy)}") from exc
    counts.setdefault("first_bad", f"line {bad_line}")
    lines = data.split(b"\n")
    skipped, record = [], 0
    for i, line in enumerate(lines):
        if not line.strip(JSON_BLANK):
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            if policy is Utf8Policy.replace:
                lines[i] = line.decode("utf-8", "replace").encode("utf-8")
            else:
                lines[i] = b""
                skipped.append(record)
            key = "utf8_replaced" if policy is Utf8Policy.replace else "utf8_skipped"
            counts[key] = counts.get(key, 0) + 1
        record += 1
    return _Chunk(b"\n".join(lines), first_line, skipped)


def _parse(data: bytes, *, schema: Optional[pa.Schema], block_size: int) -> pa.Table:
    return pajson.read_json(
        pa.BufferReader(data),
        read_options=pajson.ReadOptions(block_size=block_size),
        parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
    )


def _infer(src: Source, chunk: _Chunk) -> pa.Table:
    """The chunk with the types it holds. On an error, parse it again in one block, whose row
    numbers are the chunk's, so that the message names the file's line."""
    try:
        return _parse(chunk.data, schema=None, block_size=chunk.block_size())
    except pa.ArrowInvalid:
        pass
    try:
        return _parse(chunk.data, schema=None, block_size=len(chunk.data) + 1)
    except pa.ArrowInvalid as exc:
        message = str(exc).splitlines()[0]
        head, sep, row = message.rpartition(" in row ")
        if sep and row.isdigit():
            line = chunk.line_of(int(row))
            changed = re.fullmatch(r"JSON parse error: Column\((/.*)\) changed from (\w+) to (\w+)", head)
            if changed:
                path, before, now = changed.groups()
                raise DeltError(f"{src.path}: line {line}: field '{path[1:].replace('/', '.')}' holds {_article(now)} here but {_article(before)} on earlier lines") from exc
            raise DeltError(f"{src.path}: line {line}: cannot parse JSON ({head.removeprefix('JSON parse error: ')})") from exc
        last = chunk.first_line + chunk.data.count(b"\n")
        raise DeltError(f"{src.path}: lines {chunk.first_line}-{last}: cannot parse JSON ({message})") from exc


def _with_types(chunk: _Chunk, schema: pa.Schema) -> Optional[pa.Table]:
    """The chunk parsed with `schema`'s types for the fields it names (other fields inferred),
    or None when a value does not fit them."""
    try:
        return _parse(chunk.data, schema=schema, block_size=chunk.block_size())
    except pa.ArrowInvalid:
        return None


def _jsonl(src: Source, policy: Utf8Policy, *, schema: Optional[pa.Schema], widen: bool, counts: dict) -> Iterator[Records]:
    record = 0
    chunks = _chunks(src, policy, counts)
    for chunk in chunks:
        if chunk.blank:
            record += len(chunk.skipped)
            continue
        if schema is None:
            table = _infer(src, chunk)
            schema = table.schema
        else:
            table = _with_types(chunk, schema)
            if widen and (table is None or table.schema != schema):
                wider = _merge_schemas(src, chunk, schema, _infer(src, chunk))
                raise SchemaWidened(src, _scan_rest(src, chunks, wider), chunk.first_line)
            if table is None:  # a later source whose values differ from the first source's types: conformed later
                table = _infer(src, chunk)
        n = table.num_rows + len(chunk.skipped)
        positions = record + (np.delete(np.arange(n), chunk.skipped) if chunk.skipped else np.arange(n))
        record += n
        yield Records(table, positions.astype(np.int64), chunk.where)


def _scan_rest(src: Source, chunks: Iterator[_Chunk], schema: pa.Schema) -> pa.Schema:
    for chunk in chunks:
        if chunk.blank:
            continue
        table = _with_types(chunk, schema)
        if table is None or table.schema != schema:
            schema = _merge_schemas(src, chunk, schema, _infer(src, chunk))
    return schema


def _merge_schemas(src: Source, chunk: _Chunk, schema: pa.Schema, table: pa.Table) -> pa.Schema:
    """The columns of `schema` widened by those `table` (one chunk) needs, as pyarrow infers for a whole file."""
    fields = {f.name: f for f in schema}
    for f in table.schema:
        if f.name in fields:
            fields[f.name] = pa.field(f.name, _merge_types(src, chunk, table, [f.name], fields[f.name].type, f.type))
        else:
            fields[f.name] = f
    return pa.schema(list(fields.values()))


def _merge_types(src: Source, chunk: _Chunk, table: pa.Table, path: list, a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if a == b or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_integer(a) and pa.types.is_floating(b) or pa.types.is_floating(a) and pa.types.is_integer(b):
        return pa.float64()
    if pa.types.is_timestamp(a) and pa.types.is_string(b) or pa.types.is_string(a) and pa.types.is_timestamp(b):
        return pa.string()  # text that only looked like dates so far (pyarrow infers timestamp[s] for those)
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields = {a.field(i).name: a.field(i) for i in range(a.num_fields)}
        for i in range(b.num_fields):
            fb = b.field(i)
            fields[fb.name] = pa.field(fb.name, _merge_types(src, chunk, table, [*path, fb.name], fields[fb.name].type, fb.type)) if fb.name in fields else fb
        return pa.struct(list(fields.values()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_merge_types(src, chunk, table, path, a.value_type, b.value_type))
    row = _first_row_with(table, path)
    raise DeltError(
        f"{src.path}: line {chunk.line_of(row)}: field '{'.'.join(path)}' holds {_kind(b)} here but {_kind(a)} on earlier lines"
    )


def _article(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "a number"
    if pa.types.is_string(t) or pa.types.is_timestamp(t):
        return "a string"
    if pa.types.is_boolean(t):
        return "a boolean"
    if pa.types.is_struct(t):
        return "an object"
    if pa.types.is_list(t):
        return "an array"
    return str(t)


def _first_row_with(table: pa.Table, path: list) -> int:
    """The first row where the (nested) field `path` has a value."""
    import pyarrow.compute as pc

    column = table.column(path[0]).combine_chunks()
    for name in path[1:]:
        if pa.types.is_list(column.type):
            break
        column = pc.struct_field(column, name)
    valid = np.asarray(pc.is_valid(column))
    return int(np.argmax(valid)) if valid.any() else 0


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
                data = self.inner.read(min(max(len(buffer), 1 << 16), READ_BYTES))
            except (OSError, EOFError, zlib.error) as exc:
                raise _truncated(self.src, self.lines + self._carry.count(b"\n"), exc) from exc
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
    stream = _Utf8Stream(src, _open_stream(src), policy, counts)
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
        pf = pq.ParquetFile(src.path)
        record = 0
        for batch in pf.iter_batches(batch_size=batch_rows):
            n = batch.num_rows
            yield Records(pa.Table.from_batches([batch]), np.arange(record, record + n, dtype=np.int64), lambda r, base=record: f"row {base + r + 1}")
            record += n
    except (pa.ArrowException, OSError) as exc:
        raise DeltError(f"{src.path}: cannot read Parquet ({exc})") from exc


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
