"""Shards that are not Parquet: JSON lines and Arrow IPC files, read as they are.

A dataset's shards may be Parquet files (the contract, docs/datasets.md), JSON lines
(`.jsonl`, `.ndjson`, `.json`, each optionally `.gz` or `.zst`: one object per line) or
Arrow IPC files (`.arrow`: the `data-*.arrow` of a Hugging Face `save_to_disk`
directory, stream or file format). This module knows how to open and read the other
two kinds with the same shape of answer as a Parquet footer gives: schema, row count,
fingerprint, and the rows in bounded pieces. `reader.py` turns them into `Shard`s.

* JSON lines have no footer: opening parses the file once (16 MiB of text at a time) to
  count the records, infer the schema and hash the content, so a file that is not valid
  JSON lines (or not UTF-8) fails before any output is written, naming its line. Chunks,
  parsing and schema merging are dataset/jsonl.py's, shared with `delt prepare`. Schemas
  inferred from several files are unified the same way (an int column that is a float
  elsewhere becomes float; a column missing from a file is null there; date strings stay
  strings), and every file is read with the unified schema.
* Arrow files are memory-mapped: opening reads only the batch headers; columns not
  asked for are never touched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa

from delt_cli.dataset import jsonl, remote
from delt_cli.infra.errors import DeltError

# name suffix -> (kind, compression); the longest matching suffix wins.
SUFFIXES = {".parquet": ("parquet", None), ".arrow": ("arrow", None)}
for _base in (".jsonl", ".ndjson", ".json"):
    SUFFIXES[_base] = ("jsonl", None)
    for _suffix, _codec in jsonl.COMPRESSIONS.items():
        SUFFIXES[_base + _suffix] = ("jsonl", _codec)

# Files in a directory that are metadata, never shards.
METADATA_FILES = {"manifest.json", "dataset_info.json", "state.json", "dataset_dict.json"}

ACCEPTED = "Parquet (*.parquet), JSON lines (*.jsonl, *.ndjson, *.json, each optionally .gz or .zst) or Arrow (*.arrow)"
PREPARE_HINT = "`delt prepare` converts CSV, TSV and text files into a dataset"

JSON_CHUNK_BYTES = 16 << 20  # text parsed at a time
ARROW_PIECE_ROWS = 16384  # Arrow batches are coalesced into pieces of at least this many rows


def longest_suffix(name: str, suffixes) -> str | None:
    """The longest of `suffixes` that `name` ends with (any case), or None."""
    low = name.lower()
    return next((s for s in sorted(suffixes, key=len, reverse=True) if low.endswith(s)), None)


def shard_kind(path: Path | str) -> tuple[str, str | None] | None:
    """(kind, compression) from a file name, or None for a name that is no shard."""
    suffix = longest_suffix(Path(str(path)).name, SUFFIXES)
    return SUFFIXES[suffix] if suffix else None


def strip_suffix(name: str) -> str:
    """`a.jsonl.zst` -> `a`: the name without its shard suffix."""
    suffix = longest_suffix(name, SUFFIXES)
    return name[: -len(suffix)] if suffix else name


def is_directory_shard(path: Path) -> bool:
    """What a directory listing takes as a shard besides Parquet: JSON lines named .jsonl or
    .ndjson (optionally compressed) or compressed .json, and Arrow files. A plain `.json` in a
    directory is more often metadata than data, so it counts only when named (file or glob)."""
    kind = shard_kind(path)
    name = path.name.lower()
    return (
        kind is not None
        and not name.startswith(".")
        and name not in METADATA_FILES
        and not (kind[0] == "jsonl" and name.endswith(".json"))
    )


def not_a_shard(path: Path | str) -> DeltError:
    """The one-line error for a file that is no dataset shard (with the way to convert it)."""
    return DeltError(f"{path}: not a dataset file: expected {ACCEPTED}; {PREPARE_HINT}")


# -- Hugging Face save_to_disk directories ----------------------------------------------


def hf_data_files(directory: Path) -> list[Path] | None:
    """The Arrow files of a `datasets` save_to_disk directory in dataset order (state.json's
    `_data_files`), or None when `directory` is not one. A DatasetDict (dataset_dict.json)
    is an error that names its splits."""
    dict_file = directory / "dataset_dict.json"
    if dict_file.is_file():
        try:
            splits = json.loads(dict_file.read_text()).get("splits") or []
        except (OSError, ValueError, AttributeError):
            splits = []
        example = f"{directory / splits[0]}" if splits else f"{directory}/SPLIT"
        raise DeltError(
            f"{directory}: a Hugging Face DatasetDict (splits: {', '.join(splits) or 'unknown'}); pass one split's directory, e.g. {example}"
        )
    state = directory / "state.json"
    if not (state.is_file() and (directory / "dataset_info.json").is_file()):
        return None
    try:
        files = [entry["filename"] for entry in json.loads(state.read_text())["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeltError(f"{state}: not a Hugging Face datasets state file (no _data_files list: {exc})") from None
    paths = [directory / name for name in files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DeltError(f"{directory}: state.json lists {missing[0]}, which is missing ({len(missing)} missing in all)")
    if not paths:
        raise DeltError(f"{directory}: state.json lists no data files")
    return paths


def hf_state_fingerprint(path: Path) -> str:
    """The `_fingerprint` that `datasets` keeps in state.json beside an Arrow file ('' when none)."""
    try:
        return str(json.loads((path.parent / "state.json").read_text()).get("_fingerprint") or "")
    except (OSError, ValueError, AttributeError):
        return ""


# -- what opening a shard learns -----------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    schema: pa.Schema
    rows: int
    num_bytes: int
    fingerprint: str


def probe(path: Path, kind: str, compression: str | None) -> Probe:
    if kind == "jsonl":
        return _probe_jsonl(path, compression)
    if kind == "arrow":
        return _probe_arrow(path)
    raise ValueError(kind)


def iter_pieces(
    path: Path, kind: str, compression: str | None, schema: pa.Schema, columns: Sequence[str] | None
) -> Iterator[pa.Table]:
    """The rows of one shard in order, in pieces of bounded size, with `columns` (all when None)."""
    if kind == "jsonl":
        return _jsonl_pieces(path, compression, schema, columns)
    if kind == "arrow":
        return arrow_pieces(path, columns)
    raise ValueError(kind)


def read_table(path: Path, kind: str, compression: str | None, schema: pa.Schema, columns: Sequence[str] | None) -> pa.Table:
    wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns])
    pieces = list(iter_pieces(path, kind, compression, schema, columns))
    if len(wanted) == 0:  # no columns, only the row count (concat_tables would drop it)
        return pa.table({"_": pa.nulls(sum(p.num_rows for p in pieces))}).drop_columns(["_"])
    return pa.concat_tables(pieces) if pieces else wanted.empty_table()


# -- JSON lines (read by dataset/jsonl.py, as `delt prepare` reads them) ----------------------

UTF8_HINT = "convert it with `delt prepare --on-invalid-utf8 replace` (or skip)"


def _json_chunks(path: Path, compression: str | None) -> Iterator[jsonl.Chunk]:
    """The decompressed text in chunks of about JSON_CHUNK_BYTES of whole lines."""
    return jsonl.chunks(path, compression, chunk_bytes=JSON_CHUNK_BYTES, hint=UTF8_HINT)


def _probe_jsonl(path: Path, compression: str | None) -> Probe:
    digest = hashlib.sha256()
    rows = 0
    schema: pa.Schema | None = None
    for chunk in _json_chunks(path, compression):
        digest.update(chunk.data)
        if chunk.blank:
            continue
        table = jsonl.parse(chunk)
        schema = table.schema if schema is None else jsonl.merge_chunk(chunk, schema, table)
        rows += table.num_rows
    schema = _untimestamp(schema) if schema is not None else pa.schema([])
    return Probe(schema=schema, rows=rows, num_bytes=remote.file_size(path), fingerprint=digest.hexdigest()[:32])


def _untimestamp(schema: pa.Schema) -> pa.Schema:
    """JSON has no timestamps: Arrow guesses one from some date strings and not others (with
    fractional seconds), so two files could disagree. Such columns are read as the strings they are."""
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_timestamp(f.type) else f for f in schema])


def unify(where: Path | str, schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for JSON lines files read with their own inferred schemas (jsonl.merge_schemas:
    columns in first-seen order, types widened); incompatible types are an error naming the field."""
    schema = schemas[0]
    for other in schemas[1:]:
        try:
            schema = jsonl.merge_schemas(schema, other)
        except jsonl.Conflict as conflict:
            raise DeltError(f"{where}: {conflict.says()} in the files before it") from None
    return schema


def _jsonl_pieces(path: Path, compression: str | None, schema: pa.Schema, columns: Sequence[str] | None) -> Iterator[pa.Table]:
    wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns])
    for chunk in _json_chunks(path, compression):
        if not chunk.blank:
            yield jsonl.parse(chunk, wanted, extra="ignore").select(wanted.names)  # no columns: just the row count


# -- Arrow IPC (Hugging Face datasets) ------------------------------------------------------


def _open_arrow(path: Path):
    source = remote.open_mapped(path)
    if source.read(6) == b"ARROW1":
        source.seek(0)
        reader = pa.ipc.open_file(source)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
    source.seek(0)
    reader = pa.ipc.open_stream(source)
    return reader.schema, iter(reader)


def _probe_arrow(path: Path) -> Probe:
    try:
        schema, batches = _open_arrow(path)
        counts = [b.num_rows for b in batches]
    except (pa.ArrowException, OSError) as exc:
        raise DeltError(f"{path}: corrupt or truncated Arrow file ({str(exc).splitlines()[0]})") from exc
    size = remote.file_size(path)
    # Footprint rather than a full hash (Arrow files are large and mapped, not read): the size,
    # the batch row counts, the first and last MiB, and the datasets fingerprint beside it.
    digest = hashlib.sha256(f"{size}:{counts}:{hf_state_fingerprint(path)}".encode())
    with remote.open_binary(path) as fh:
        digest.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(size - (1 << 20))
            digest.update(fh.read())
    return Probe(schema=schema, rows=sum(counts), num_bytes=size, fingerprint=digest.hexdigest()[:32])


def arrow_pieces(path: Path, columns: Sequence[str] | None) -> Iterator[pa.Table]:
    try:
        _, batches = _open_arrow(path)
        pending: list[pa.RecordBatch] = []
        count = 0
        for batch in batches:
            pending.append(batch if columns is None else batch.select(list(columns)))
            count += batch.num_rows
            if count >= ARROW_PIECE_ROWS:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
        if pending:
            yield pa.Table.from_batches(pending)
    except (pa.ArrowException, OSError) as exc:
        raise DeltError(f"{path}: corrupt or truncated Arrow file ({str(exc).splitlines()[0]})") from exc
