"""Opening a dataset: a directory, a glob, a single Parquet file or `-` (path on stdin).

A dataset is an ordered list of Parquet shards with one schema. Dataset order
is the shards sorted by path, then row order inside each shard. Opening reads
only the Parquet footers (row counts, schema, a fingerprint); columns are read
on demand, one shard at a time, so nothing here holds more than one shard's
worth of a column in memory except the thin key arrays that global steps need.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from delt_cli.dataset.keys import group_codes, hash64
from delt_cli.errors import DeltError

GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Shard:
    """One Parquet file of a dataset, described by its footer."""

    path: Path
    num_rows: int
    num_bytes: int
    fingerprint: str

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> dict:
        return {"path": str(self.path), "rows": self.num_rows, "fingerprint": self.fingerprint}


def footer_fingerprint(path: Path) -> str:
    """sha256 of the file size and the Parquet footer (schema, row groups, column statistics).

    Cheap (no data pages are read) and it changes whenever the content's layout or
    statistics change, which is what provenance needs to tell two inputs apart.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
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


def resolve_spec(spec: str | os.PathLike, stdin=None) -> tuple[str, list[Path], list[Path]]:
    """Turn an input spec into (spec as text, shard paths sorted by name, input roots).

    The roots are the directories that the input "is" (a directory spec, or the
    folders a glob matched in); the output may not be placed inside them.
    """
    spec = str(spec)
    if spec == "-":
        stream = stdin if stdin is not None else sys.stdin
        lines = [ln.strip() for ln in stream.read().splitlines() if ln.strip()]
        if not lines:
            raise DeltError("input '-': nothing on stdin (expected a dataset path from the previous command)")
        if len(lines) > 1:
            raise DeltError(f"input '-': expected one path on stdin, got {len(lines)} lines")
        spec = lines[0]
    path = Path(spec)
    if path.is_dir():
        shards = sorted(p for p in path.glob("*.parquet") if p.is_file() and not p.name.startswith("."))
        if not shards:
            raise DeltError(f"{spec}: directory has no *.parquet shards")
        return spec, shards, [path]
    if path.is_file():
        return spec, [path], []
    if GLOB_CHARS & set(spec):
        matches = sorted(Path(p) for p in globlib.glob(spec) if Path(p).is_file())
        if not matches:
            raise DeltError(f"{spec}: glob matched no files")
        return spec, matches, sorted({p.parent for p in matches})
    raise DeltError(f"{spec}: no such file or directory")


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
        if with_shards:
            out["shards"] = [s.describe() for s in self.shards]
        return out

    # -- validation ----------------------------------------------------------------
    def require(self, column: str, *, flag: str, made_by: str | None = None) -> pa.DataType:
        """Fail with the list of existing columns when `column` is missing."""
        if column not in self.schema.names:
            hint = f" ({made_by})" if made_by else ""
            raise DeltError(
                f"{flag} '{column}': no such column in {self.spec}{hint}; "
                f"columns are: {', '.join(self.schema.names)}"
            )
        return self.schema.field(column).type

    def require_numeric(self, column: str, *, flag: str = "--by") -> pa.DataType:
        dtype = self.require(column, flag=flag)
        if not (pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_boolean(dtype)):
            raise DeltError(f"{flag} '{column}' in {self.spec} has type {dtype}, not a number")
        return dtype

    # -- reading -------------------------------------------------------------------
    def iter_tables(self, columns: Sequence[str] | None = None) -> Iterator[tuple[Shard, pa.Table]]:
        """Yield (shard, table) for every shard in dataset order."""
        for shard in self.shards:
            yield shard, read_shard(shard.path, columns)

    def iter_row_groups(
        self, shard: Shard, columns: Sequence[str] | None = None, *, wanted: np.ndarray | None = None
    ) -> Iterator[tuple[int, pa.Table]]:
        """(first row, table) for each row group of one shard, one at a time (bounded memory).

        `wanted`, a boolean per row of the shard: row groups where it is all false are not read.
        """
        try:
            pf = pq.ParquetFile(shard.path)
            start = 0
            for i in range(pf.num_row_groups):
                rows = pf.metadata.row_group(i).num_rows
                if wanted is None or wanted[start : start + rows].any():
                    yield start, pf.read_row_group(i, columns=list(columns) if columns is not None else None, use_threads=False)
                start += rows
        except (pa.ArrowException, OSError) as exc:
            raise DeltError(f"{shard.path}: cannot read Parquet file ({exc})") from exc

    def read_column(self, column: str) -> pa.ChunkedArray:
        """One column over the whole dataset, in dataset order."""
        chunks: list[pa.Array] = []
        for _, table in self.iter_tables([column]):
            chunks.extend(table.column(column).chunks)
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
        if col.null_count:
            valid &= ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if pa.types.is_integer(dtype) or pa.types.is_boolean(dtype):
            values = col.fill_null(0).to_numpy().astype(np.int64, copy=False)
        else:
            values = col.fill_null(np.nan).to_numpy().astype(np.float64, copy=False)
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
        from delt_cli.dataset.provenance import read_manifest

        folders = {s.path.parent for s in self.shards}
        if len(folders) != 1:
            return False
        manifest = read_manifest(folders.pop()) or {}
        try:
            if manifest["checks"]["unique_ids"] != self.id_column:
                return False
            recorded = [(o["name"], o["rows"], o["fingerprint"]) for o in manifest["outputs"]["shards"]]
        except (KeyError, TypeError):  # no record, an older manifest, or one edited by hand
            return False
        return recorded == [(s.name, s.num_rows, s.fingerprint) for s in self.shards]

    def check_ids(self) -> None:
        """Fail on a missing id column, null ids or duplicate ids (checked on 64-bit hashes, confirmed exactly).

        Skipped when the manifest records that these very shards were checked (`ids_verified`).
        """
        from delt_cli.dataset.parallel import parallel_map

        self.require(self.id_column, flag="--id-column")
        if self.ids_verified():
            return

        def shard_hashes(i: int) -> np.ndarray:
            shard = self.shards[i]
            ids = read_shard(shard.path, [self.id_column]).column(self.id_column)
            if ids.null_count:
                raise DeltError(f"{shard.path}: id column '{self.id_column}' has {ids.null_count} null value(s)")
            return hash64(ids)

        hashes = parallel_map(shard_hashes, len(self.shards), "checking ids")
        if not hashes:
            return
        all_hashes = np.concatenate(hashes)
        sorted_hashes = np.sort(all_hashes)
        repeated = sorted_hashes[1:][sorted_hashes[1:] == sorted_hashes[:-1]]  # sorted, so equal hashes are neighbours
        if len(repeated) == 0:
            return
        dup_hashes = repeated[np.concatenate([[True], repeated[1:] != repeated[:-1]])]
        # Confirm on the real values (for strings a hash collision is possible, if unlikely):
        # only the rows whose hash repeats are read as Python values.
        where: dict = {}
        offsets = self.offsets
        for shard, lo, hi in zip(self.shards, offsets[:-1], offsets[1:]):
            suspect = np.isin(all_hashes[lo:hi], dup_hashes)
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


def read_shard(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """One whole shard (or some of its columns).

    ParquetFile.read rather than pq.read_table: the datasets path behind read_table
    keeps several times more memory alive after reading a single column.
    """
    try:
        with pq.ParquetFile(path) as pf:
            return pf.read(columns=list(columns) if columns is not None else None, use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise DeltError(f"{path}: cannot read Parquet file ({exc})") from exc


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
    from delt_cli.dataset.provenance import read_manifest

    folders = sorted({s.path.parent for s in shards if s.path in delt_written})
    for folder in folders:
        manifest = read_manifest(folder)
        present = {p.name: p for p in folder.glob("*.parquet") if p.is_file() and not p.name.startswith(".")}
        if manifest is None:
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

    holder = folder.with_name(f".{folder.name}.delt-lock") / "holder.json"
    try:
        argv = json.loads(holder.read_text()).get("argv") or []
    except (OSError, ValueError, AttributeError):
        argv = []
    rerun = " ".join(a for a in argv if a not in ("--overwrite", "--resume"))
    how = f"finish it with `{rerun} --resume`" if rerun else "finish it by rerunning the delt command that wrote it with --resume"
    return f"{how} (or set DELT_ALLOW_INCOMPLETE=1 to read it anyway)"


def open_dataset(
    spec: str | os.PathLike,
    *,
    id_column: str = "id",
    text_column: str = "text",
    stdin=None,
    allow_incomplete: bool | None = None,
) -> Dataset:
    """Resolve `spec`, read every footer, check that all shards share one schema and that
    no shard belongs to an unfinished delt output (`check_complete`; `allow_incomplete` or
    DELT_ALLOW_INCOMPLETE=1 skips that check)."""
    spec_text, paths, roots = resolve_spec(spec, stdin=stdin)
    shards: list[Shard] = []
    schema: pa.Schema | None = None
    first: Path | None = None
    delt_written: set[Path] = set()
    for path in paths:
        fingerprint = footer_fingerprint(path)
        try:
            meta = pq.ParquetFile(path)
            shard_schema = meta.schema_arrow
            rows = meta.metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise DeltError(f"{path}: corrupt or truncated Parquet file ({exc})") from exc
        if b"delt" in (shard_schema.metadata or {}):
            delt_written.add(path)
        if schema is None:
            schema, first = _strip_meta(shard_schema), path
            full_schema = shard_schema
        elif _strip_meta(shard_schema) != schema:
            raise DeltError(
                f"{path}: schema differs from {first.name}: {_describe_schema_difference(schema, _strip_meta(shard_schema))}"
            )
        shards.append(Shard(path=path, num_rows=rows, num_bytes=path.stat().st_size, fingerprint=fingerprint))
    assert schema is not None
    if not (allow_incomplete if allow_incomplete is not None else allow_incomplete_default()):
        check_complete(shards, delt_written)
    return Dataset(
        spec=spec_text,
        shards=shards,
        schema=full_schema,
        roots=roots,
        id_column=id_column,
        text_column=text_column,
    )
