"""Lazy selections: `delt select --lazy` records which rows of its input to keep, not the rows.

A lazy selection is a directory holding only `manifest.json`, whose `lazy_selection`
record names the input (its spec as an absolute path, and every shard's path, rows,
footer fingerprint and kept rows) and carries the kept rows as a bitmap: one bit per row
of the input in dataset order (its shards in the order listed, rows in file order),
1 = kept, packed eight to a byte with the first row in the most significant bit
(numpy.packbits), the last byte zero-padded, base64-encoded (`kept`). One file, written
atomically like every manifest: 167 kB for a selection from 1M rows.

`open_selection` turns it back into a dataset: the input's shards, each cut down to its
kept rows, in the same order (the rows an eager `delt select` would have written, in the
same shards). Opening checks that the input is still exactly what was selected from
(same shard paths, rows and footer fingerprints, bits intact) and fails with a message
naming what changed otherwise. select and order read it natively (`SelectedDataset`):
the text is decoded once, by the command that writes it. Other commands get it written
out first (`materialize`): docs/datasets.md, "Lazy selections". `select --lazy` does not
read the ids; the kept rows' ids are checked by the command that moves them (order, as it
decodes them) unless the input's were checked before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import atexit
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from delt_cli.dataset.keys import hash64
from delt_cli.dataset.provenance import MANIFEST_NAME, METADATA_KEY, read_manifest
from delt_cli.dataset.reader import Dataset
from delt_cli.infra.errors import DeltError

RECORD_KEY = "lazy_selection"


def is_lazy_selection(path: str | os.PathLike) -> bool:
    """True for a directory without shards whose manifest holds a lazy selection."""
    p = Path(path)
    if not (p.is_dir() and (p / MANIFEST_NAME).is_file()) or any(p.glob("*.parquet")):
        return False
    return RECORD_KEY in (read_manifest(p) or {})


def _where(path) -> str:
    """Where a shard or input is, independent of the working directory: an absolute local path
    (globs included), or an `s3://` URI as it is."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if text.startswith("s3:/"):
        return text
    return str(Path(text).resolve()) if not set("*?[") & set(text) else os.path.abspath(text)


def _digest(shard_fingerprint: str, mask: np.ndarray) -> str:
    return hashlib.sha256(shard_fingerprint.encode() + np.packbits(mask).tobytes() + len(mask).to_bytes(8, "little")).hexdigest()[:32]


class SelectedDataset(Dataset):
    """The kept rows of `source`: shard i of this dataset is `source.shards[i]` cut to `masks[i]`
    (a boolean per row of that file). A shard that keeps no row has 0 rows here; writing the
    selection out skips it, as an eager selection does."""

    def __init__(self, spec: str, source: Dataset, masks: Sequence[np.ndarray], *, root: Path, verified_ids: str | None):
        self.source = source
        self.masks = list(masks)
        self.verified_ids = verified_ids
        shards = [replace(s, num_rows=int(m.sum()), fingerprint=_digest(s.fingerprint, m)) for s, m in zip(source.shards, self.masks)]
        super().__init__(spec=spec, shards=shards, schema=source.schema, roots=[root, *source.roots], id_column=source.id_column, text_column=source.text_column)

    def describe(self, with_shards: bool = True) -> dict:
        return {**super().describe(with_shards), "lazy_selection_of": self.source.spec}

    # -- reading: every read goes through the source's pieces, cut to the kept rows --------
    def kept_pieces(self, i: int, columns: Sequence[str] | None = None, wanted: np.ndarray | None = None) -> Iterator[tuple[int, pa.Table, np.ndarray | None]]:
        """(first kept row, piece of the source file, positions of its kept rows or None for all)
        for shard i, with bounded memory; `wanted`, a boolean per kept row: pieces with none of
        them are not decoded. Lets a caller that copies rows anyway (order) skip the filter."""
        from delt_cli.dataset.permute import file_pieces

        mask = self.masks[i]
        if wanted is not None:
            mask = mask.copy()
            mask[mask] = wanted
        before = np.concatenate([[0], np.cumsum(self.masks[i])])  # kept rows before each source row
        if not mask.any():
            return
        for start, table in file_pieces(self.source, self.source.shards[i], columns, mask):
            part = self.masks[i][start : start + table.num_rows]
            yield int(before[start]), table, None if part.all() else np.flatnonzero(part)

    def shard_pieces(self, i: int, columns: Sequence[str] | None = None, wanted: np.ndarray | None = None) -> Iterator[tuple[int, pa.Table]]:
        """(first kept row, table of kept rows) pieces of shard i (see kept_pieces)."""
        for start, table, rows in self.kept_pieces(i, columns, wanted):
            yield start, table if rows is None else table.take(pa.array(rows))

    def iter_row_groups(self, shard, columns: Sequence[str] | None = None, *, wanted: np.ndarray | None = None):
        return self.shard_pieces(self.shards.index(shard), columns, wanted)

    def shard_table(self, i: int, columns: Sequence[str] | None = None) -> pa.Table:
        parts = [t for _, t in self.shard_pieces(i, columns)]
        schema = pa.schema([self.schema.field(c) for c in columns]) if columns is not None else self.schema
        return pa.concat_tables(parts) if parts else schema.empty_table()

    # -- ids --------------------------------------------------------------------------
    def ids_verified(self) -> bool:
        """The select that made this checked the ids of its input (whose shards are unchanged)."""
        return self.verified_ids == self.id_column

    def check_ids(self) -> None:
        self.require(self.id_column, flag="--id-column")
        if self.ids_verified():
            return
        ids = self.read_column(self.id_column)
        if ids.null_count:
            raise DeltError(f"{self.spec}: id column '{self.id_column}' has {ids.null_count} null value(s)")
        h = hash64(ids)
        order = np.argsort(h, kind="stable")
        same = np.flatnonzero(h[order][1:] == h[order][:-1])
        if len(same) == 0:
            return
        suspect = np.unique(np.concatenate([order[same], order[same + 1]]))
        values = ids.take(pa.array(suspect)).to_pylist()
        seen: dict = {}
        for v in values:
            seen[v] = seen.get(v, 0) + 1
        dups = [v for v, c in seen.items() if c > 1]
        if dups:
            raise DeltError(f"id column '{self.id_column}' in {self.spec} has {len(dups)} duplicated value(s), e.g. {dups[0]!r}")


# -- writing and opening ------------------------------------------------------------------


def selection_record(dataset: Dataset, keep: np.ndarray, shard_metadata: dict[bytes, bytes] | None = None) -> dict:
    """The manifest record for keeping rows `keep` of `dataset`; a lazy dataset's kept rows
    are mapped back to its source, so a selection always points at real shards.
    `shard_metadata`: the provenance that shards written out from it carry."""
    bounds = dataset.offsets
    masks = [keep[bounds[i] : bounds[i + 1]] for i in range(len(dataset.shards))]
    source = dataset
    if isinstance(dataset, SelectedDataset):
        for i, m in enumerate(dataset.masks):  # the kept of the kept, in rows of the source
            full = np.zeros(len(m), dtype=bool)
            full[np.flatnonzero(m)[masks[i]]] = True
            masks[i] = full
        source = dataset.source
    bits = np.packbits(np.concatenate(masks) if masks else np.zeros(0, dtype=bool)).tobytes()
    record = {
        "format": 1,
        "source": {
            "spec": _where(source.spec),
            "rows": source.num_rows,
            "shards": [{**s.describe(), "path": _where(s.path), "kept": int(m.sum())} for s, m in zip(source.shards, masks)],
        },
        "shard_metadata": (shard_metadata or {}).get(METADATA_KEY, b"").decode() or None,
        "kept_sha256": hashlib.sha256(bits).hexdigest(),
        "kept": base64.b64encode(bits).decode("ascii"),  # last: the long one
    }
    return record


def open_input(spec: str | os.PathLike, *, id_column: str = "id", text_column: str = "text", stdin=None) -> Dataset:
    """`open_dataset`, except that a lazy selection opens natively (for select and order)."""
    from delt_cli.dataset.reader import open_dataset, stdin_spec

    spec = stdin_spec(spec, stdin)
    if is_lazy_selection(spec):
        return open_selection(spec, id_column=id_column, text_column=text_column)
    return open_dataset(spec, id_column=id_column, text_column=text_column)


def open_materialized(spec: str | os.PathLike, *, id_column: str = "id", text_column: str = "text") -> Dataset:
    """A lazy selection for commands that read shards themselves: its rows are written to a
    temporary directory (under TMPDIR, removed when the process exits), as an eager
    selection would have written them, and that is opened."""
    from delt_cli.infra.console import info
    from delt_cli.dataset.permute import write_filtered
    from delt_cli.dataset.provenance import write_json_atomic
    from delt_cli.dataset.reader import open_dataset
    from delt_cli.dataset.writer import describe_outputs

    view = open_selection(spec, id_column=id_column, text_column=text_column)
    tmp = Path(tempfile.mkdtemp(prefix="delt-lazy-selection-"))
    atexit.register(shutil.rmtree, tmp, True)
    info(f"{spec} is a lazy selection: writing its {view.num_rows:,} rows to {tmp} for this command")
    recorded = read_manifest(Path(spec))[RECORD_KEY].get("shard_metadata")
    paths = write_filtered(view, np.ones(view.num_rows, dtype=bool), tmp, {METADATA_KEY: recorded.encode()} if recorded else {})
    manifest = {"command": "select --lazy, written out", "lazy_selection": str(spec), "outputs": {"rows": view.num_rows, "shards": describe_outputs(paths)}}
    if view.verified_ids:
        manifest["checks"] = {"unique_ids": view.verified_ids}
    write_json_atomic(tmp / MANIFEST_NAME, manifest)
    ds = open_dataset(tmp, id_column=id_column, text_column=text_column)
    ds.spec, ds.roots = str(spec), [*view.roots, tmp]
    return ds


def open_selection(path: str | os.PathLike, *, id_column: str = "id", text_column: str = "text") -> SelectedDataset:
    """Open a lazy selection natively (see the module docstring); fails naming what changed."""
    from delt_cli.dataset.reader import open_dataset

    directory = Path(path)
    manifest = read_manifest(directory)
    try:
        record = manifest[RECORD_KEY]
        source_spec = record["source"]["spec"]
        listed = [(str(s["path"]), int(s["rows"]), s["fingerprint"], int(s["kept"])) for s in record["source"]["shards"]]
        bits = base64.b64decode(record["kept"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise DeltError(f"{directory / MANIFEST_NAME}: its '{RECORD_KEY}' record is incomplete or unreadable (edited by hand?); rerun `delt select`") from None
    rerun = f"rerun the `delt select` that wrote {directory}"
    if hashlib.sha256(bits).hexdigest() != record.get("kept_sha256"):
        raise DeltError(f"{directory / MANIFEST_NAME}: the kept rows do not match their checksum (edited or damaged); {rerun}")
    try:
        source = open_dataset(source_spec, id_column=id_column, text_column=text_column)
    except DeltError as exc:
        raise DeltError(f"{directory} is a lazy selection of {source_spec}, which cannot be opened now ({exc}); {rerun}") from None
    now = [(_where(s.path), s.num_rows, s.fingerprint) for s in source.shards]
    added = sorted({str(c[0]) for c in now} - {str(x[0]) for x in listed})
    removed = sorted({str(x[0]) for x in listed} - {str(c[0]) for c in now})
    if added or removed:
        what = f"{added[0]} was added" if added else f"{removed[0]} is gone"
        raise DeltError(f"{directory} is a lazy selection of {source_spec}, whose shards changed since it was made ({what}); {rerun}")
    for (p, rows, fp, _), current in zip(listed, now):
        if (p, rows, fp) != current:
            raise DeltError(f"{directory} is a lazy selection of {source_spec}, whose shard {p} changed since it was made; {rerun}")
    total = sum(rows for _, rows, _, _ in listed)
    flat = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=total).astype(bool) if total else np.zeros(0, dtype=bool)
    bounds = np.concatenate([[0], np.cumsum([rows for _, rows, _, _ in listed])]).astype(np.int64)
    masks = [flat[bounds[i] : bounds[i + 1]] for i in range(len(listed))]
    if [int(m.sum()) for m in masks] != [kept for *_, kept in listed]:
        raise DeltError(f"{directory / MANIFEST_NAME}: the kept rows do not add up to the counts it lists; {rerun}")
    verified = (manifest.get("checks") or {}).get("unique_ids")
    return SelectedDataset(str(path), source, masks, root=directory, verified_ids=verified)
