"""JSON lines read in chunks of whole lines: one implementation for the readers
(dataset/sources.py) and for `delt prepare` (prepare_sources.py).

* **Decompression by name**: `.gz` (gzip) and `.zst` (zstd) after the format's suffix
  (`split_compression`); a truncated or corrupt stream is one message naming the file and
  the last line read whole (`read_error`, also used for prepare's CSV).
* **Chunks** (`chunks`) of whole lines, read `READ_BYTES` at a time, that know their first
  line, so every message names a line of the file. Blank lines are lines but not records.
* **UTF-8**: a chunk is checked before it is parsed. ``error`` names the line (with a
  caller's hint); prepare's ``replace`` (U+FFFD) and ``skip`` (the line is emptied, so line
  numbers hold, and its record offset is kept in `Chunk.skipped`) repair it.
* **Parsing** (`parse`, `fits`) in blocks of `PARSE_BLOCK` on pyarrow's threads; a failure is
  parsed again in one block, whose row numbers are the chunk's, to name the line.
* **Schemas** (`merge_schemas`): what pyarrow infers for a whole file, widened chunk by chunk
  or file by file: null gives way to any type, an integer field that is fractional elsewhere
  is a float, text that looked like dates on some lines (pyarrow guesses timestamp[s]) is
  text, objects take the union of their fields, lists merge their items. A number on one
  line and a string on another is a `Conflict`, reported with the field (and the line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from delt_cli.dataset import remote
from delt_cli.infra.errors import DeltError

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}  # name suffix after the format's -> pyarrow codec
READ_BYTES = 1 << 20  # read from the (decompressing) stream at a time: a truncation is found within this much
PARSE_BLOCK = 1 << 20  # pyarrow parses a chunk in blocks of this size on several threads
REMOTE_BUFFER = 16 << 20  # bytes of an S3 object fetched per request
BLANK = b" \t\r\n"  # what the JSON parser skips between records
_NOT_BLANK = re.compile(rb"[^ \t\r\n]")


def split_compression(name: str) -> tuple[str, Optional[str]]:
    """`a.jsonl.zst` -> (`a.jsonl`, "zstd"); a name without a compression suffix -> (name, None)."""
    low = name.lower()
    for suffix, codec in COMPRESSIONS.items():
        if low.endswith(suffix):
            return name[: -len(suffix)], codec
    return name, None


def _detail(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_stream(path, compression: Optional[str]):
    """A sequential stream of the file (local or s3://), decompressed on the fly. An object in S3
    is read through a buffer of REMOTE_BUFFER bytes: one request each, not one per read."""
    try:
        if isinstance(path, remote.RemotePath):
            return path.filesystem.open_input_stream(path.fs_path, compression=compression, buffer_size=REMOTE_BUFFER)
        return remote.open_stream(path, compression)
    except (pa.ArrowException, OSError) as exc:
        raise DeltError(f"{path}: cannot open ({_detail(exc)})") from exc


def read_error(path, compression: Optional[str], lines: int, exc: BaseException) -> DeltError:
    """A stream that failed after `lines` whole lines: truncated or corrupt compressed data, or an I/O error."""
    at = f"after line {lines}" if lines else "before its first whole line"
    if compression:
        return DeltError(f"{path}: compressed data is truncated or corrupt {at} ({compression}: {_detail(exc)})")
    return DeltError(f"{path}: cannot read {at} ({_detail(exc)})")


READ_ERRORS = (pa.ArrowException, OSError, EOFError)


# -- chunks of whole lines -------------------------------------------------------------------


@dataclass
class Chunk:
    """Whole lines of a JSON lines file. Lines skipped for invalid UTF-8 are emptied (not
    removed), so line numbers hold; `skipped` lists their record offsets within the chunk."""

    path: object
    data: bytes
    first_line: int  # 1-based line number of the chunk's first line
    skipped: list = field(default_factory=list)
    _record_lines: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def blank(self) -> bool:
        return _NOT_BLANK.search(self.data) is None  # (strip would copy the chunk)

    @property
    def last_line(self) -> int:
        return self.first_line + max(self.data.count(b"\n") - (1 if self.data.endswith(b"\n") else 0), 0)

    def line_of(self, row: int) -> int:
        """File line of the `row`-th record the parser returns for this chunk."""
        if self._record_lines is None:
            lines = self.data.split(b"\n")
            self._record_lines = np.asarray([i for i, line in enumerate(lines) if line.strip(BLANK)], dtype=np.int64)
        if not len(self._record_lines):
            return self.first_line
        return self.first_line + int(self._record_lines[min(row, len(self._record_lines) - 1)])

    def where(self, row: int) -> str:
        return f"line {self.line_of(row)}"

    def block_size(self) -> int:
        """pyarrow needs every record inside one block: at least the longest line."""
        newlines = np.flatnonzero(np.frombuffer(self.data, dtype=np.uint8) == 10)
        longest = int(np.diff(newlines, prepend=-1).max()) if len(newlines) else len(self.data)
        return max(PARSE_BLOCK, longest + 1, len(self.data) - (int(newlines[-1]) if len(newlines) else 0))


def chunks(path, compression: Optional[str], *, chunk_bytes: int, invalid_utf8: str = "error", hint: str = "",
           counts: Optional[dict] = None) -> Iterator[Chunk]:
    """The file's decompressed text in chunks of about `chunk_bytes` that end at a line end (a line
    longer than that is one chunk), each checked for UTF-8 (`invalid_utf8`: error, replace or
    skip; `hint` ends the error's message; `counts` gets utf8_replaced / utf8_skipped / first_bad)."""
    counts = counts if counts is not None else {}
    step = max(1, min(READ_BYTES, chunk_bytes))
    pieces: list[bytes] = []
    size, line = 0, 1
    with open_stream(path, compression) as stream:
        while True:
            try:
                block = stream.read(step)
            except READ_ERRORS as exc:
                raise read_error(path, compression, line - 1 + sum(p.count(b"\n") for p in pieces), exc) from exc
            if block:
                size += len(block)
                cut = block.rfind(b"\n") + 1 if size >= chunk_bytes else 0
                if not cut:  # short of a chunk, or a line longer than a chunk: read on to its end
                    pieces.append(block)
                    continue
                data = b"".join([*pieces, block[:cut]])  # cut in the last block: one copy of the chunk
                rest = block[cut:]
                pieces, size = ([rest], len(rest)) if rest else ([], 0)
            elif pieces:
                data, pieces = b"".join(pieces), []
            else:
                return
            yield _checked(path, data, line, invalid_utf8, hint, counts)
            line += data.count(b"\n")


def _is_utf8(data: bytes) -> bool:
    """Checked in place (no decoded copy of the chunk): ASCII, or valid as an Arrow string."""
    if data.isascii():
        return True
    offsets = pa.array([0, len(data)], pa.int64()).buffers()[1]
    try:
        pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)]).validate(full=True)
        return True
    except pa.ArrowInvalid:
        return False


def _checked(path, data: bytes, first_line: int, invalid_utf8: str, hint: str, counts: dict) -> Chunk:
    if _is_utf8(data):
        return Chunk(path, data, first_line)
    try:
        data.decode("utf-8")  # where the first invalid sequence is
    except UnicodeDecodeError as exc:
        bad_line = first_line + data[: exc.start].count(b"\n")
        if invalid_utf8 == "error":
            raise DeltError(f"{path}: line {bad_line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}){'; ' + hint if hint else ''}") from exc
    else:
        return Chunk(path, data, first_line)
    counts.setdefault("first_bad", f"line {bad_line}")
    lines = data.split(b"\n")
    skipped, record = [], 0
    key = "utf8_replaced" if invalid_utf8 == "replace" else "utf8_skipped"
    for i, text in enumerate(lines):
        if not text.strip(BLANK):
            continue
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            if invalid_utf8 == "replace":
                lines[i] = text.decode("utf-8", "replace").encode("utf-8")
            else:
                lines[i] = b""
                skipped.append(record)
            counts[key] = counts.get(key, 0) + 1
        record += 1
    return Chunk(path, b"\n".join(lines), first_line, skipped)


# -- parsing -------------------------------------------------------------------------------------


def _read(data: bytes, schema: Optional[pa.Schema], extra: str, block_size: int) -> pa.Table:
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior=extra)
    return pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(block_size=block_size), parse_options=options)


def _read_blocks(chunk: Chunk, schema: Optional[pa.Schema], extra: str) -> pa.Table:
    """In blocks of PARSE_BLOCK; a chunk with a longer line, in blocks that hold its longest line."""
    try:
        return _read(chunk.data, schema, extra, PARSE_BLOCK)
    except pa.ArrowInvalid as exc:
        if "straddl" not in str(exc):
            raise
    return _read(chunk.data, schema, extra, chunk.block_size())


def parse(chunk: Chunk, schema: Optional[pa.Schema] = None, *, extra: str = "infer") -> pa.Table:
    """The chunk's records. `schema` gives the types of the fields it names; other fields are
    inferred (`extra="infer"`) or left out ("ignore"). An error names the file's line."""
    if chunk.blank:
        return (schema if schema is not None else pa.schema([])).empty_table()
    try:
        return _read_blocks(chunk, schema, extra)
    except pa.ArrowInvalid:
        pass
    try:  # once more in one block: its row numbers are the chunk's, so the message can name the line
        return _read(chunk.data, schema, extra, len(chunk.data) + 1)
    except pa.ArrowInvalid as exc:
        raise _parse_error(chunk, exc) from exc


def fits(chunk: Chunk, schema: pa.Schema) -> Optional[pa.Table]:
    """The chunk parsed with `schema`'s types for the fields it names (other fields inferred),
    or None when a value does not fit them."""
    try:
        return _read_blocks(chunk, schema, "infer")
    except pa.ArrowInvalid:
        return None


def _parse_error(chunk: Chunk, exc: BaseException) -> DeltError:
    message = _detail(exc)
    head, sep, row = message.rpartition(" in row ")
    if sep and row.isdigit():
        line = chunk.line_of(int(row))
        changed = re.fullmatch(r"JSON parse error: Column\((/.*)?\) changed from (\w+) to (\w+)", head)
        if changed and changed.group(1):
            name, before, now = changed.groups()
            return DeltError(f"{chunk.path}: line {line}: field '{name[1:].replace('/', '.')}' holds {_article(now)} here but {_article(before)} on earlier lines")
        if changed:  # the record itself is no object
            return DeltError(f"{chunk.path}: line {line}: holds {_article(changed.group(3))}, not a JSON object; expected one JSON object per line")
        return DeltError(f"{chunk.path}: line {line}: cannot parse JSON ({head.removeprefix('JSON parse error: ')}); expected one JSON object per line")
    return DeltError(f"{chunk.path}: lines {chunk.first_line}-{chunk.last_line}: cannot parse JSON ({message}); expected one JSON object per line")


def _article(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


# -- schemas -----------------------------------------------------------------------------------


class Conflict(Exception):
    """A field whose values have incompatible JSON types (`path`: the field and its parents)."""

    def __init__(self, path: list, before: pa.DataType, now: pa.DataType):
        super().__init__(".".join(path))
        self.path, self.before, self.now = path, before, now

    @property
    def name(self) -> str:
        return ".".join(self.path)

    def says(self) -> str:
        return f"field '{self.name}' holds {kind(self.now)} here but {kind(self.before)}"


def merge_schemas(a: pa.Schema, b: pa.Schema) -> pa.Schema:
    """`a` widened by the fields and types `b` needs (columns in first-seen order)."""
    fields = {f.name: f for f in a}
    for f in b:
        fields[f.name] = pa.field(f.name, _merge_types([f.name], fields[f.name].type, f.type)) if f.name in fields else f
    return pa.schema(list(fields.values()))


def _merge_types(path: list, a: pa.DataType, b: pa.DataType) -> pa.DataType:
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
            fields[fb.name] = pa.field(fb.name, _merge_types([*path, fb.name], fields[fb.name].type, fb.type)) if fb.name in fields else fb
        return pa.struct(list(fields.values()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_merge_types(path, a.value_type, b.value_type))
    raise Conflict(path, a, b)


def merge_chunk(chunk: Chunk, schema: pa.Schema, table: pa.Table) -> pa.Schema:
    """`schema` widened by what one chunk's records (`table`) need; a conflict names the line of
    the chunk's first record that holds the field."""
    try:
        return merge_schemas(schema, table.schema)
    except Conflict as conflict:
        line = chunk.line_of(_first_row_with(table, conflict.path))
        raise DeltError(f"{chunk.path}: line {line}: {conflict.says()} on earlier lines") from None


def kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "a number"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_timestamp(t):
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
