"""Opening a dataset: a directory, a glob, a single file or `-` (path on stdin).

A dataset is an ordered list of shards with one schema. Dataset order is the
shards sorted by path, then row order inside each shard. Opening reads only the
Parquet footers (row counts, schema, a fingerprint); columns are read on
demand, one shard at a time, so nothing here holds more than one shard's worth
of a column in memory except the thin key arrays that global steps need.

Shards may also be JSON lines or Arrow files (a Hugging Face save_to_disk
directory), read as they are through dataset/sources.py, and a dataset without
an `id` column gets one derived from shard names and row numbers
(`derived_ids`); docs/datasets.md, "Inputs in other formats".
"""

from __future__ import annotations

import glob as globlib
import hashlib
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from delt_cli.dataset import remote, sources
from delt_cli.dataset.keys import group_codes, hash64, repeated
from delt_cli.infra.errors import DeltError

GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Shard:
    """One file of a dataset: a Parquet file described by its footer, or a JSON lines or
    Arrow file described by opening it (dataset/sources.py).

    `name` is the name of the Parquet shard that a per-shard step writes for it
    (`a.jsonl.zst` -> `a.parquet`); `derive_id` names the id column that reading
    adds (`derived_ids`) when the files have none.
    """

    path: Path
    num_rows: int
    num_bytes: int
    fingerprint: str
    kind: str = "parquet"
    compression: str | None = None
    schema: pa.Schema | None = field(default=None, compare=False, repr=False)  # what a non-Parquet shard is read with
    derive_id: str | None = None

    @property
    def name(self) -> str:
        if self.kind == "parquet":
            return self.path.name
        return sources.strip_suffix(self.path.name) + ".parquet"

    def describe(self) -> dict:
        out = {"path": str(self.path), "rows": self.num_rows, "fingerprint": self.fingerprint}
        if self.kind != "parquet":
            out["format"] = self.kind
        return out


def footer_fingerprint(path: Path) -> str:
    """sha256 of the file size and the Parquet footer (schema, row groups, column statistics).

    Cheap (no data pages are read) and it changes whenever the content's layout or
    statistics change, which is what provenance needs to tell two inputs apart.
    """
    size = remote.file_size(path)
    with remote.open_binary(path) as fh:
        if size < 12:
            raise DeltError(f"{path}: not a Parquet file (only {size} bytes)")
        fh.seek(size - 8)
        tail = fh.read(8)
        if tail[4:] != b"PAR1":
            raise DeltError(f"{path}: corrupt or truncated Parquet file (no PAR1 footer magic)")
        footer_len = int.from_bytes(tail[:4], "little")
        if footer_len + 12 > size:
            raise DeltError(f"{path}: corrupt or truncated Parquet file (footer length {footer_len} > file size)")
        fh.seek(size - 8 - footer_len)
        footer = fh.read(footer_len)
    digest = hashlib.sha256(size.to_bytes(8, "little") + footer).hexdigest()
    return digest[:32]


def _describe_schema_difference(a: pa.Schema, b: pa.Schema) -> str:
    names_a, names_b = set(a.names), set(b.names)
    if names_a != names_b:
        parts = []
        if names_b - names_a:
            parts.append("extra column(s) " + ", ".join(sorted(names_b - names_a)))
        if names_a - names_b:
            parts.append("missing column(s) " + ", ".join(sorted(names_a - names_b)))
        return "; ".join(parts)
    for name in a.names:
        ta, tb = a.field(name).type, b.field(name).type
        if ta != tb:
            return f"column '{name}' is {tb} here but {ta} in the first shard"
    if a.names != b.names:
        return "the same columns in a different order"
    return "different nullability or field metadata"


def _strip_meta(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema])


def stdin_spec(spec: str | os.PathLike, stdin=None) -> str:
    """The spec as text; `-` is replaced by the one path on stdin (what the previous command printed)."""
    spec = str(spec)
    if spec == "-":
        stream = stdin if stdin is not None else sys.stdin
        lines = [ln.strip() for ln in stream.read().splitlines() if ln.strip()]
        if not lines:
            raise DeltError("input '-': nothing on stdin (expected a dataset path from the previous command)")
        if len(lines) > 1:
            raise DeltError(f"input '-': expected one path on stdin, got {len(lines)} lines")
        spec = lines[0]
    return spec


def resolve_spec(spec: str | os.PathLike, stdin=None) -> tuple[str, list[Path], list[Path]]:
    """Turn an input spec into (spec as text, shard paths in dataset order, input roots).

    A directory holds *.parquet shards; without any, its JSON lines and Arrow files
    (`sources.is_directory_shard`), or the Arrow files of a Hugging Face save_to_disk
    directory in the order its state.json lists them. The roots are the directories
    that the input "is" (a directory spec, or the folders a glob matched in); the
    output may not be placed inside them.
    """
    spec = stdin_spec(spec, stdin)
    if remote.is_remote(spec):
        return _resolve_remote(spec)
    path = Path(spec)
    if path.is_dir():
        return spec, _directory_shards(path, spec), [path]
    if path.is_file():
        return spec, [path], []
    if GLOB_CHARS & set(spec):
        # metadata beside the shards (manifest.json, a datasets state.json) is never a shard
        matches = sorted(
            Path(p) for p in globlib.glob(spec) if Path(p).is_file() and Path(p).name not in sources.METADATA_FILES and not Path(p).name.startswith(".")
        )
        if not matches:
            raise DeltError(f"{spec}: glob matched no files")
        return spec, matches, sorted({p.parent for p in matches})
    raise DeltError(f"{spec}: no such file or directory")


def _resolve_remote(spec: str) -> tuple[str, list, list]:
    """An `s3://` prefix (a "directory"), one object, or a glob of objects (dataset/remote.py)."""
    text = remote.uri(spec)
    if GLOB_CHARS & set(text):
        matches = [p for p in remote.glob(text) if p.name not in sources.METADATA_FILES and not p.name.startswith(".")]
        if not matches:
            raise DeltError(f"{text}: glob matched no objects")
        return text, matches, sorted({p.parent for p in matches})
    path = remote.RemotePath(text)
    info = path.info()
    if info.type == remote.pafs.FileType.File:
        return text, [path], []
    if info.type == remote.pafs.FileType.Directory:
        return text, _directory_shards(path, text), [path]
    raise DeltError(f"{text}: no such object or prefix")


def _directory_shards(path, spec: str) -> list:
    hf = sources.hf_data_files(path)
    if hf is not None:
        return hf
    files, folders = _entries(path)
    shards = [p for p in files if p.name.endswith(".parquet") and not p.name.startswith(".")]
    if not shards:
        shards = [p for p in files if sources.is_directory_shard(p)]
    if not shards:
        nested = " (for files in subdirectories, pass a glob: 'DIR/*/*.parquet')" if folders else ""
        raise DeltError(f"{spec}: directory has no *.parquet shards, JSON lines or Arrow files{nested}; {sources.PREPARE_HINT}")
    return shards


def _entries(path) -> tuple[list, list]:
    """(files, folders) directly in a directory or under an S3 prefix, sorted by name."""
    if isinstance(path, remote.RemotePath):
        infos = remote.list_prefix(path)
        files = [remote.RemotePath(remote.SCHEME + i.path) for i in infos if i.type == remote.pafs.FileType.File]
        return files, [i for i in infos if i.type == remote.pafs.FileType.Directory]
    entries = sorted(path.iterdir())
    return [p for p in entries if p.is_file()], [p for p in entries if p.is_dir()]


@dataclass
class Dataset:
    """An opened dataset: shards in order, their common schema, and the id/text column names."""

    spec: str
    shards: list[Shard]
    schema: pa.Schema
    roots: list[Path] = field(default_factory=list)
    id_column: str = "id"
    text_column: str = "text"

    # -- description ---------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        return sum(s.num_rows for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.num_bytes for s in self.shards)

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    @property
    def ids_derived(self) -> bool:
        """True when the id column is not in the files but derived from shard names and rows."""
        return any(s.derive_id for s in self.shards)

    @property
    def offsets(self) -> np.ndarray:
        """Global row index of each shard's first row (length = shards + 1)."""
        return np.concatenate([[0], np.cumsum([s.num_rows for s in self.shards])]).astype(np.int64)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for s in self.shards:
            h.update(f"{s.name}:{s.num_rows}:{s.fingerprint};".encode())
        return h.hexdigest()[:32]

    def describe(self, with_shards: bool = True) -> dict:
        out = {
            "spec": self.spec,
            "rows": self.num_rows,
            "num_shards": len(self.shards),
            "fingerprint": self.fingerprint,
        }
        if self.ids_derived:
            out["derived_ids"] = f"{self.id_column} = <file name>:<row>"
        if with_shards:
            out["shards"] = [s.describe() for s in self.shards]
        return out

    # -- validation ----------------------------------------------------------------
    def require(self, column: str, *, flag: str, made_by: str | None = None) -> pa.DataType:
        """Fail with the list of existing columns when `column` is missing."""
        if column not in self.schema.names:
            hint = f" ({made_by})" if made_by else ""
            raise DeltError(f"{flag} '{column}': no such column in {self.spec}{hint}; columns are: {self.describe_columns()}{self.text_hint(flag)}")
        return self.schema.field(column).type

    def describe_columns(self) -> str:
        """The column names for a message, the derived id marked as such."""
        return ", ".join(f"{n} (derived)" if self.ids_derived and n == self.id_column else n for n in self.schema.names)

    def text_hint(self, flag: str = "--text-column") -> str:
        """For a missing text column: the string columns that could be it ('' when none)."""
        if not flag.endswith("text-column"):
            return ""
        candidates = [f.name for f in self.schema if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)) and not (self.ids_derived and f.name == self.id_column)]
        if len(candidates) == 1:
            return f"; pass {flag} {candidates[0]}"
        return f"; string columns: {', '.join(candidates)} (pass {flag} NAME)" if candidates else ""

    def require_numeric(self, column: str, *, flag: str = "--by") -> pa.DataType:
        dtype = self.require(column, flag=flag)
        if not (pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_boolean(dtype)):
            raise DeltError(f"{flag} '{column}' in {self.spec} has type {dtype}, not a number")
        return dtype

    # -- reading -------------------------------------------------------------------
    def shard_table(self, i: int, columns: Sequence[str] | None = None) -> pa.Table:
        """Shard i whole (or some of its columns)."""
        return read_shard(self.shards[i], columns)

    def iter_tables(self, columns: Sequence[str] | None = None) -> Iterator[tuple[Shard, pa.Table]]:
        """Yield (shard, table) for every shard in dataset order."""
        for i, shard in enumerate(self.shards):
            yield shard, self.shard_table(i, columns)

    def iter_row_groups(
        self, shard: Shard, columns: Sequence[str] | None = None, *, wanted: np.ndarray | None = None
    ) -> Iterator[tuple[int, pa.Table]]:
        """(first row, table) for each row group of one shard, one at a time (bounded memory).

        `wanted`, a boolean per row of the shard: row groups where it is all false are not read.
        JSON lines and Arrow shards come in pieces of about 16 MiB of text or 16,384 rows.
        """
        file_columns, add_id = _split_derived(shard, columns)
        for start, table in _iter_file_pieces(shard, file_columns, wanted):
            yield start, _with_derived(shard, table, start, columns, add_id)

    def read_column(self, column: str) -> pa.ChunkedArray:
        """One column over the whole dataset, in dataset order (shards read on the thread pool)."""
        from delt_cli.dataset.parallel import parallel_map

        parts = parallel_map(lambda i: self.shard_table(i, [column]).column(column).chunks, len(self.shards), f"reading {column}")
        chunks = [chunk for part in parts for chunk in part]
        dtype = self.schema.field(column).type
        return pa.chunked_array(chunks, type=dtype)

    def read_numeric(self, column: str, *, flag: str = "--by", drop_null: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """A numeric column as a numpy array plus a boolean mask of usable (non-null, non-NaN) rows.

        Without `drop_null`, any null or NaN is an error that says how many there are.
        """
        dtype = self.require_numeric(column, flag=flag)
        col = self.read_column(column)
        if pa.types.is_boolean(dtype):
            col = col.cast(pa.int8())
        valid = np.ones(len(col), dtype=bool)
        if col.null_count:  # (only then: fill_null loads pyarrow.compute, which `select --lazy` does not need)
            valid &= ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            col = col.fill_null(0 if pa.types.is_integer(dtype) or pa.types.is_boolean(dtype) else np.nan)
        if pa.types.is_integer(dtype) or pa.types.is_boolean(dtype):
            values = col.to_numpy().astype(np.int64, copy=False)
        else:
            values = col.to_numpy().astype(np.float64, copy=False)
            valid &= ~np.isnan(values)
        bad = int(len(values) - valid.sum())
        if bad and not drop_null:
            raise DeltError(
                f"{flag} '{column}' has {bad} null or NaN value(s) in {self.spec}; pass --drop-null to skip those rows"
            )
        return values, valid

    def read_groups(self, column: str, *, flag: str = "--group-by") -> tuple[np.ndarray, list]:
        """Integer group codes per row (distinct values sorted -> 0, 1, ...) and the group values."""
        self.require(column, flag=flag)
        values = self.read_column(column)
        if values.null_count:
            raise DeltError(f"{flag} '{column}' has {values.null_count} null value(s) in {self.spec}")
        return group_codes(values)

    def ids_verified(self) -> bool:
        """True when the manifest beside the shards records that a delt command checked this id
        column on exactly these shards (same names, row counts and footer fingerprints).

        Commands that check ids (prepare, select, order) record it; commands that carry the rows
        of a checked input through unchanged (score) pass it on. A shard that was rewritten,
        added or removed since changes the list, and the ids are checked again.
        """
        folders = {s.path.parent for s in self.shards}
        if len(folders) != 1:
            return False
        manifest = read_manifest_at(folders.pop()) or {}
        try:
            if manifest["checks"]["unique_ids"] != self.id_column:
                return False
            recorded = [(o["name"], o["rows"], o["fingerprint"]) for o in manifest["outputs"]["shards"]]
        except (KeyError, TypeError):  # no record, an older manifest, or one edited by hand
            return False
        return recorded == [(s.name, s.num_rows, s.fingerprint) for s in self.shards]

    def ids_known_unique(self) -> bool:
        """True when the ids need no check: checked before on these very shards, or derived."""
        return self.ids_derived or self.ids_verified()

    def check_ids(self) -> None:
        """Fail on a missing id column, null ids or duplicate ids (checked on 64-bit hashes, confirmed exactly).

        Skipped when the manifest records that these very shards were checked (`ids_verified`).
        """
        from delt_cli.dataset.parallel import parallel_map

        self.require(self.id_column, flag="--id-column")
        if self.ids_known_unique():  # derived ids are unique: shard names are (open_dataset)
            return

        def shard_hashes(i: int) -> np.ndarray:
            shard = self.shards[i]
            ids = read_shard(shard, [self.id_column]).column(self.id_column)
            if ids.null_count:
                raise DeltError(f"{shard.path}: id column '{self.id_column}' has {ids.null_count} null value(s)")
            return hash64(ids)

        offsets = self.offsets
        if not self.shards:
            return
        # One array of hashes, filled shard by shard and sorted in place: 8 bytes per row at the
        # peak (a list of per-shard arrays, their concatenation and a sorted copy held 24).
        hashes = np.empty(int(offsets[-1]), dtype=np.uint64)

        def fill(i: int) -> None:
            hashes[offsets[i] : offsets[i + 1]] = shard_hashes(i)

        parallel_map(fill, len(self.shards), "checking ids")
        dup_hashes = repeated(hashes)
        hashes = None  # freed before the exact check (not `del`: fill() refers to it)
        if len(dup_hashes) == 0:
            return
        # Confirm on the real values (for strings a hash collision is possible, if unlikely):
        # only the rows whose hash repeats are read as Python values (their shards' hashes
        # computed again: the sorted array no longer says which row is where).
        where: dict = {}
        for i, shard in enumerate(self.shards):
            suspect = np.isin(shard_hashes(i), dup_hashes)
            for start, table in self.iter_row_groups(shard, [self.id_column], wanted=suspect):
                part = suspect[start : start + table.num_rows]
                for value in table.column(self.id_column).filter(pa.array(part)).to_pylist():
                    where.setdefault(value, []).append(shard.name)
        dups = [value for value, shards in where.items() if len(shards) > 1]
        if dups:
            first = dups[0]
            raise DeltError(
                f"id column '{self.id_column}' in {self.spec} has {len(dups)} duplicated value(s), "
                f"e.g. {first!r} (in {', '.join(sorted(set(where[first])))})"
            )


def read_shard(shard: Shard | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """One whole shard (or some of its columns), derived ids included.

    Given a path rather than a Shard, the file is opened first (`open_shard`; no derived ids).
    ParquetFile.read rather than pq.read_table: the datasets path behind read_table
    keeps several times more memory alive after reading a single column. A local file is
    read without pre-buffering (one column of 10 files of 100k rows: ~15% faster); an
    object in S3 with it (ranged reads merged: the fast way there).
    """
    if not isinstance(shard, Shard):
        shard = open_shard(remote.location(shard))
    file_columns, add_id = _split_derived(shard, columns)
    if shard.kind == "parquet":
        try:
            with pq.ParquetFile(shard.path, pre_buffer=not isinstance(shard.path, Path)) as pf:
                table = pf.read(columns=file_columns, use_threads=False)
        except (pa.ArrowException, OSError) as exc:
            raise DeltError(f"{shard.path}: cannot read Parquet file ({exc})") from exc
    else:
        table = sources.read_table(shard.path, shard.kind, shard.compression, shard.schema, file_columns)
    return _with_derived(shard, table, 0, columns, add_id)


def _iter_file_pieces(shard: Shard, columns: list[str] | None, wanted: np.ndarray | None) -> Iterator[tuple[int, pa.Table]]:
    """(first row, table) for the pieces of one file: Parquet row groups (those with a wanted row),
    or the bounded pieces of a JSON lines or Arrow file (all parsed; unwanted ones not yielded)."""
    if shard.kind != "parquet":
        start = 0
        for table in sources.iter_pieces(shard.path, shard.kind, shard.compression, shard.schema, columns):
            if wanted is None or wanted[start : start + table.num_rows].any():
                yield start, table
            start += table.num_rows
        return
    try:
        pf = pq.ParquetFile(shard.path)
        start = 0
        for i in range(pf.num_row_groups):
            rows = pf.metadata.row_group(i).num_rows
            if wanted is None or wanted[start : start + rows].any():
                yield start, pf.read_row_group(i, columns=columns, use_threads=False)
            start += rows
    except (pa.ArrowException, OSError) as exc:
        raise DeltError(f"{shard.path}: cannot read Parquet file ({exc})") from exc


# -- derived ids ---------------------------------------------------------------------------


def derived_ids(source_name: str, start: int, count: int) -> pa.Array:
    """Ids for a dataset without an id column: `<file name>:<row>`, the row counted from 0 in
    that file (`a.jsonl.zst:0`, `000_00000.parquet:41`). They depend only on the file's name
    and the row's place in it, so every rerun and every process derives the same ones;
    a top-level file of `delt prepare` gets the same ids."""
    import pyarrow.compute as pc

    rows = pa.array(np.arange(start, start + count, dtype=np.int64)).cast(pa.string())
    return pc.binary_join_element_wise(f"{source_name}:", rows, "")


def _split_derived(shard: Shard, columns: Sequence[str] | None) -> tuple[list[str] | None, bool]:
    """(the columns to read from the file, whether the derived id column is wanted)."""
    if shard.derive_id is None:
        return (list(columns) if columns is not None else None), False
    if columns is None:
        return None, True
    return [c for c in columns if c != shard.derive_id], shard.derive_id in columns


def _with_derived(shard: Shard, table: pa.Table, start: int, columns: Sequence[str] | None, add_id: bool) -> pa.Table:
    """`table` with the derived id column put where `columns` (or the dataset schema: first) has it."""
    if not add_id:
        return table
    ids = derived_ids(shard.path.name, start, table.num_rows)
    at = 0 if columns is None else list(columns).index(shard.derive_id)
    return table.add_column(at, pa.field(shard.derive_id, pa.string()), ids)


def read_manifest_at(folder) -> dict | None:
    """The manifest.json in a local directory or under an S3 prefix (None when absent or unreadable)."""
    import json

    from delt_cli.dataset.provenance import MANIFEST_NAME, read_manifest

    if not isinstance(folder, remote.RemotePath):
        return read_manifest(folder)
    try:
        return json.loads((folder / MANIFEST_NAME).read_text())
    except (DeltError, ValueError):
        return None


def _manifest_exists(folder) -> bool:
    from delt_cli.dataset.provenance import MANIFEST_NAME

    try:
        return (folder / MANIFEST_NAME).is_file()
    except (DeltError, OSError):
        return False


def allow_incomplete_default() -> bool:
    return os.environ.get("DELT_ALLOW_INCOMPLETE", "") not in ("", "0")


def check_complete(shards: Sequence[Shard], delt_written: set[Path]) -> None:
    """Refuse shards of a delt output that is not finished.

    A delt output is finished when its manifest.json lists exactly the shards in its
    directory. Parquet files without delt provenance are other tools' data and are taken
    as they are. (A shard rewritten in place by another tool is read as it is; its
    fingerprint no longer matches, so what the manifest records about it, such as checked
    ids, is not trusted: Dataset.ids_verified.)
    """
    folders = sorted({s.path.parent for s in shards if s.path in delt_written}, key=str)
    for folder in folders:
        manifest = read_manifest_at(folder)
        present = {p.name: p for p in _entries(folder)[0] if p.name.endswith(".parquet") and not p.name.startswith(".")}
        if manifest is None:
            if _manifest_exists(folder):
                raise DeltError(f"{folder}: manifest.json is not a readable JSON manifest (damaged or edited by hand); {_finish_hint(folder)}")
            raise DeltError(f"{folder}: an unfinished delt output (no manifest.json; {len(present)} shard(s) written so far); {_finish_hint(folder)}")
        try:
            listed = {o["name"]: o for o in manifest["outputs"]["shards"]}
        except (KeyError, TypeError):
            raise DeltError(f"{folder}: manifest.json does not list the output shards (edited by hand or not a delt manifest)") from None
        missing = sorted(set(listed) - set(present))
        extra = sorted(set(present) - set(listed))
        problems = []
        if missing:
            problems.append(f"{len(missing)} listed shard(s) missing (e.g. {missing[0]})")
        if extra:
            problems.append(f"{len(extra)} shard(s) not in the manifest (e.g. {extra[0]})")
        if problems:
            raise DeltError(f"{folder}: an incomplete delt output: manifest.json does not list the shards present: {'; '.join(problems)}; {_finish_hint(folder)}")


def _finish_hint(folder: Path) -> str:
    """How to finish an output: the command of the run that holds or held its lock, when known."""
    import json

    if isinstance(folder, remote.RemotePath):  # an object store keeps no lock (docs/datasets.md)
        return "finish it by rerunning the delt command that wrote it with --resume (or set DELT_ALLOW_INCOMPLETE=1 to read it anyway)"
    if any(folder.glob(".delt-rank-*.json")):  # independent ranks (--rank/--world-size) leave records, not a manifest
        return f"when every rank has finished, run `delt finish {folder}` (or set DELT_ALLOW_INCOMPLETE=1 to read it anyway)"
    holder = folder.with_name(f".{folder.name}.delt-lock") / "holder.json"
    try:
        argv = json.loads(holder.read_text()).get("argv") or []
    except (OSError, ValueError, AttributeError):
        argv = []
    rerun = " ".join(a for a in argv if a not in ("--overwrite", "--resume"))
    how = f"finish it with `{rerun} --resume`" if rerun else "finish it by rerunning the delt command that wrote it with --resume"
    return f"{how} (or set DELT_ALLOW_INCOMPLETE=1 to read it anyway)"


def open_shard(path: Path) -> Shard:
    """Describe one file: a Parquet footer, or a JSON lines / Arrow file opened (sources.probe)."""
    return _open_one(path)[0]


def _open_one(path: Path) -> tuple[Shard, pa.Schema]:
    """A shard and its file's schema. A name without a known suffix is Parquet if it starts like one."""
    kind, compression = sources.shard_kind(path) or (None, None)
    if kind is None and not _has_parquet_magic(path):
        raise sources.not_a_shard(path)
    if kind in (None, "parquet"):
        fingerprint = footer_fingerprint(path)
        try:
            meta = pq.ParquetFile(path)
            schema, rows = meta.schema_arrow, meta.metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise DeltError(f"{path}: corrupt or truncated Parquet file ({exc})") from exc
        return Shard(path=path, num_rows=rows, num_bytes=remote.file_size(path), fingerprint=fingerprint), schema
    found = sources.probe(path, kind, compression)
    shard = Shard(path, found.rows, found.num_bytes, found.fingerprint, kind=kind, compression=compression, schema=found.schema)
    return shard, found.schema


def _has_parquet_magic(path: Path) -> bool:
    try:
        with remote.open_binary(path) as fh:
            return fh.read(4) == b"PAR1"
    except (OSError, DeltError):
        return False


def _open_shards(paths: Sequence[Path]) -> tuple[list[Shard], list[pa.Schema]]:
    """Shards and their file schemas, in order. Local Parquet footers are read in turn (cheap);
    JSON lines and Arrow files (a JSON lines file is parsed once) and objects in S3 (a few
    requests each) are opened on the thread pool."""
    from delt_cli.dataset.parallel import parallel_map

    local_parquet = all(sources.shard_kind(p) in (None, ("parquet", None)) and not isinstance(p, remote.RemotePath) for p in paths)
    if local_parquet:
        pairs = [_open_one(p) for p in paths]
    else:
        pairs = parallel_map(lambda i: _open_one(paths[i]), len(paths), "opening")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _common_schema(shards: list[Shard], schemas: list[pa.Schema]) -> tuple[list[Shard], pa.Schema]:
    """The dataset schema: JSON lines files alone are unified (their schemas are inferred); any
    other mix must agree exactly (the message names the shard and the differing column)."""
    if shards and all(s.kind == "jsonl" for s in shards):
        schema = schemas[0]
        for shard, other in zip(shards[1:], schemas[1:]):
            schema = sources.unify(shard.path, [schema, other])
        return [replace(s, schema=schema) for s in shards], schema
    first = _strip_meta(schemas[0])
    for shard, other in zip(shards[1:], schemas[1:]):
        if _strip_meta(other) != first:
            raise DeltError(f"{shard.path}: schema differs from {shards[0].path.name}: {_describe_schema_difference(first, _strip_meta(other))}")
    return shards, schemas[0]


def _check_output_names(spec: str, shards: list[Shard]) -> None:
    """Two JSON lines or Arrow files whose Parquet output names agree (`a.jsonl`, `a.jsonl.gz`)
    would overwrite each other's output shard."""
    if all(s.kind == "parquet" for s in shards):
        return
    seen: dict[str, Path] = {}
    for s in shards:
        if s.name in seen:
            raise DeltError(f"{spec}: {seen[s.name].name} and {s.path.name} would both be written as {s.name}; pass a glob that picks one of them")
        seen[s.name] = s.path


def _derive_ids(spec: str, shards: list[Shard], schema: pa.Schema, id_column: str) -> tuple[list[Shard], pa.Schema]:
    """Without an `id` column, ids are derived (`derived_ids`), and the column is added first."""
    names = [s.path.name for s in shards]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[0]
        raise DeltError(
            f"{spec}: no '{id_column}' column, and two files are named {dup}, so ids derived from file names would collide; "
            "pass --id-column, or run `delt prepare` to give every row an id"
        )
    shards = [replace(s, derive_id=id_column) for s in shards]
    return shards, schema.insert(0, pa.field(id_column, pa.string()))


def open_dataset(
    spec: str | os.PathLike,
    *,
    id_column: str = "id",
    text_column: str = "text",
    stdin=None,
    allow_incomplete: bool | None = None,
) -> Dataset:
    """Resolve `spec`, read every footer (open every JSON lines / Arrow file), check that all
    shards share one schema and that no shard belongs to an unfinished delt output
    (`check_complete`; `allow_incomplete` or DELT_ALLOW_INCOMPLETE=1 skips that check).

    A dataset without the id column gets derived ids when the column is the default `id`;
    another `--id-column` that does not exist stays an error where ids are needed.

    A lazy selection (`delt select --lazy`) is opened with its rows written to a temporary
    directory first (dataset/selected.py; select and order read it without that)."""
    spec = stdin_spec(spec, stdin)
    from delt_cli.dataset import selected

    if selected.is_lazy_selection(spec):
        return selected.open_materialized(spec, id_column=id_column, text_column=text_column)
    spec_text, paths, roots = resolve_spec(spec)
    shards, schemas = _open_shards(paths)
    shards, schema = _common_schema(shards, schemas)
    _check_output_names(spec_text, shards)
    delt_written = {s.path for s, sc in zip(shards, schemas) if s.kind == "parquet" and b"delt" in (sc.metadata or {})}
    if not (allow_incomplete if allow_incomplete is not None else allow_incomplete_default()):
        check_complete(shards, delt_written)
    if id_column == "id" and id_column not in schema.names:
        shards, schema = _derive_ids(spec_text, shards, schema, id_column)
    return Dataset(
        spec=spec_text,
        shards=shards,
        schema=schema,
        roots=roots,
        id_column=id_column,
        text_column=text_column,
    )
