"""Moving full rows after a global decision, with bounded memory.

Global steps decide on thin key arrays (one value per row); this module then
moves the full rows:

* `write_filtered` keeps a boolean mask of rows, shard by shard (order kept);
  memory: one input shard per worker.
* `write_permuted` writes the rows in a new order, `shard_rows` per output
  shard, in two streaming passes. Pass 1 reads each input shard once, row
  group by row group, sorts the rows by destination and appends each output
  shard's rows as record batches to an Arrow IPC bucket file (no encoding).
  Pass 2 reads each output shard's batches back and writes them in final order,
  a row group at a time. Memory: about one input row group per worker in pass 1
  and one output shard (as read back, never copied whole) per worker in pass 2, plus 8 bytes per row for the destination index.

Shards are independent, so both passes run on a small thread pool
(dataset/parallel.py); results are assembled in shard order, so the output
does not depend on the thread count.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Loaded here, before the input is known (in `select | order -` while select still runs), not on
# first use (~50 ms): take and filter load pyarrow.compute, pa.array of a numpy array numpy.ma.
import numpy.ma  # noqa: F401,E402
import pyarrow.compute  # noqa: F401,E402

from delt_cli.dataset.keys import hash64, repeated
from delt_cli.dataset.parallel import parallel_map
from delt_cli.dataset.reader import Dataset
from delt_cli.dataset.timing import phase, timed
from delt_cli.dataset.writer import ROW_GROUP_SIZE, ShardWriteError, ShardWriter, shard_name, write_shard
from delt_cli.infra.errors import DeltError

POS = "__delt_pos"

# Pass 1 of a permutation holds the pieces of an input shard as read until they reach this size,
# then writes one bucket batch per output shard, sorted by destination: the number of batches
# grows with input shards x output shards, not with pieces x output shards (at 10M rows of
# ~500 bytes: ~30k batches, not 70k).
HOLD_BYTES = 8 << 20

# Pass 2 merges an output shard fed by more bucket batches than this once, with one copy of the
# shard, rather than slicing every batch for every row group (at 100M rows a shard has 1,000).
MANY_BATCHES = 256

# Bucket files are written through a buffer of this size: unbuffered, a bucket batch is a write
# call per buffer of each column and two lseeks (at 10M rows: ~70k batches of ~70 rows, ~710k
# writes and ~215k lseeks). Not larger: pass 2 memory-maps the files, and a fault maps the
# whole page-cache folio around the page, whose size follows the writes on Linux 6.x: with
# 1 MiB writes, reading a shard's small batches mapped most of every bucket file (peak at 10M
# rows ~440 -> ~950 MB).
BUCKET_BUFFER = 64 << 10

# Rows decoded at a time from a row group larger than this (foreign Parquet often has one
# row group per file: 100k rows of documents are ~50 MB of text, twice that while decoding).
BATCH_ROWS = ROW_GROUP_SIZE


def parquet_pieces(path: Path, columns: Sequence[str] | None = None, wanted: np.ndarray | None = None, batch_rows: int = BATCH_ROWS) -> Iterator[tuple[int, pa.Table]]:
    """(first row, table) pieces of one Parquet file with bounded memory: row groups of up to
    `batch_rows` rows whole, larger ones `batch_rows` at a time. Reads are buffered, 1 MiB at a
    time, not pre-buffered (pyarrow's default loads every column chunk of a row group whole:
    48 MB held for a 100k-row file of documents, against 10 MB this way). `wanted`, a boolean per row: row groups without a
    wanted row are not read; inside a large one, batches without one are decoded but not yielded."""
    cols = list(columns) if columns is not None else None
    try:
        with pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20) as pf:
            meta = pf.metadata
            start = 0
            for g in range(meta.num_row_groups):
                rows = meta.row_group(g).num_rows
                if rows and (wanted is None or wanted[start : start + rows].any()):
                    if rows <= batch_rows:
                        yield start, pf.read_row_group(g, columns=cols, use_threads=False)
                    else:
                        at = start
                        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[g], columns=cols, use_threads=False):
                            if wanted is None or wanted[at : at + batch.num_rows].any():
                                yield at, pa.Table.from_batches([batch])
                            at += batch.num_rows
                start += rows
    except (pa.ArrowException, OSError) as exc:
        raise DeltError(f"{path}: cannot read Parquet file ({exc})") from exc


def file_pieces(dataset: Dataset, shard, columns: Sequence[str] | None = None, wanted: np.ndarray | None = None) -> Iterator[tuple[int, pa.Table]]:
    """Pieces of one shard of `dataset`: local Parquet files through `parquet_pieces`; other
    formats, derived ids and objects in S3 (where pre-buffered ranged reads are the fast way)
    through the reader's own pieces (dataset/reader.py)."""
    if getattr(shard, "kind", "parquet") != "parquet" or getattr(shard, "derive_id", None) or not isinstance(shard.path, Path):
        return dataset.iter_row_groups(shard, columns, wanted=wanted)
    return parquet_pieces(shard.path, columns, wanted)


def shard_pieces(dataset: Dataset, i: int, columns: Sequence[str] | None = None, wanted: np.ndarray | None = None) -> Iterator[tuple[int, pa.Table]]:
    """Pieces of shard i: a lazy selection (dataset/selected.py) cuts its source's pieces to the kept rows."""
    own = getattr(dataset, "shard_pieces", None)
    if own is not None:
        return own(i, columns, wanted)
    return file_pieces(dataset, dataset.shards[i], columns, wanted)


@contextmanager
def _shard_writer(path: Path, schema: pa.Schema, metadata: dict[bytes, bytes]) -> Iterator[ShardWriter]:
    """A ShardWriter whose writes and close count as the "encode" phase (dataset/timing.py)."""
    out = ShardWriter(path, schema, metadata)
    try:
        yield out
    except BaseException as exc:
        out.__exit__(type(exc), exc, exc.__traceback__)
        raise
    with phase("encode"):
        out.close()


def _remove_scratch(scratch: Path) -> None:
    """Remove the bucket files, several at a time: unlinking a file frees its pages from the page
    cache, and that is work for the kernel in the calling thread (1M rows, 250 MB of buckets:
    ~22 ms in one thread, the last thing `order` does before it publishes)."""
    files = sorted(scratch.glob("bucket-*.arrow")) if scratch.is_dir() else []

    def unlink(k: int) -> None:
        files[k].unlink(missing_ok=True)

    try:
        parallel_map(unlink, len(files), "removing scratch files")
    except OSError:
        pass
    shutil.rmtree(scratch, ignore_errors=True)


def _has_dictionary(t: pa.DataType) -> bool:
    return pa.types.is_dictionary(t) or any(_has_dictionary(t.field(i).type) for i in range(t.num_fields))


def release_memory_sooner(decay_ms: int = 200) -> None:
    """Have Arrow's jemalloc (the data commands' allocator, cli/main.py) return freed pages to the
    system after `decay_ms` rather than its default of about a second: order's peak at 1M rows
    ~306 -> ~280 MB for the same CPU time (0 ms: ~230 MB but 1.7x the CPU, in page faults)."""
    try:
        if pa.default_memory_pool().backend_name == "jemalloc":
            pa.jemalloc_set_decay_ms(decay_ms)
    except (pa.ArrowException, NotImplementedError):  # a build without jemalloc
        pass


def _batch_at(mapped: pa.MemoryMappedFile, at: int, size: int, schema: pa.Schema) -> pa.RecordBatch:
    """The record batch whose IPC message is the `size` bytes at `at` of a memory-mapped file, read
    in place: a positioned read copies it first (1M rows: gather ~0.11 -> ~0.16 CPU-s; the
    copy bounds memory no better while the bucket writes stay small: BUCKET_BUFFER)."""
    mapped.seek(at)
    return pa.ipc.read_record_batch(pa.ipc.read_message(mapped.read_buffer(size)), schema)


def _pieces_with_rows(dataset: Dataset, i: int, wanted: np.ndarray) -> Iterator[tuple[int, pa.Table, np.ndarray | None]]:
    """shard_pieces, plus the positions of the shard's rows inside each piece (None: all of them);
    a lazy selection hands over its source's pieces uncut, so the rows are copied once."""
    own = getattr(dataset, "kept_pieces", None)
    if own is not None:
        return own(i, None, wanted)
    return ((start, table, None) for start, table in shard_pieces(dataset, i, wanted=wanted))


def _write_empty(dataset: Dataset, path: Path, metadata: dict[bytes, bytes]) -> Path:
    write_shard(dataset.schema.empty_table(), path, metadata)
    return path


def filtered_names(dataset: Dataset) -> list[str]:
    """Names of the output shards of a filter, one per input shard: the input names when they are
    distinct and sort in dataset order, else part-NNNNN in dataset order. (A glob over several
    folders can match two shards of one name, or order shards by folder unlike their names:
    taking the names then overwrote one shard with another, or reordered the output.)"""
    names = [s.name for s in dataset.shards]
    if len(set(names)) == len(names) and names == sorted(names):
        return names
    return [shard_name(i, len(names)) for i in range(len(names))]


def write_filtered(dataset: Dataset, keep: np.ndarray, directory: Path, metadata: dict[bytes, bytes]) -> list[Path]:
    """Write the rows where `keep` is true, one output shard per input shard that keeps any row.

    Output shards take the input shard names (`filtered_names`), so dataset order is preserved.
    Each shard is streamed row group by row group. When no row is kept, a single empty shard
    with the full schema is written.
    """
    release_memory_sooner()
    offsets = dataset.offsets
    names = filtered_names(dataset)

    def one(i: int) -> Path | None:
        mask = keep[offsets[i] : offsets[i + 1]]
        if not mask.any():
            return None
        path = directory / names[i]
        with _shard_writer(path, dataset.schema, metadata) as out:
            for start, table in timed("decode", shard_pieces(dataset, i, wanted=mask)):  # row groups with no kept row are not read
                part = mask[start : start + table.num_rows]
                with phase("filter"):
                    table = table if part.all() else table.filter(pa.array(part))
                with phase("encode"):
                    out.write(table)
        return path

    written = [p for p in parallel_map(one, len(dataset.shards), "writing") if p is not None]
    if not written:
        written.append(_write_empty(dataset, directory / shard_name(0, 1), metadata))
    return written


class IdCheck:
    """Unique, non-null ids of the rows a permutation moves, checked from the pieces pass 1 decodes
    anyway (no read of its own, and only the rows that are written): a 64-bit hash per row at
    its destination (8 bytes per row, freed after the check). A repeated hash or a null is
    confirmed on the values by the dataset's own exact check (`Dataset.check_ids`), which names
    the value and shards; a mere hash collision passes it."""

    def __init__(self, dataset: Dataset, rows: int):
        self.dataset = dataset
        self.hashes = np.empty(rows, dtype=np.uint64)
        self.nulls = False

    def add(self, positions: np.ndarray, values: pa.ChunkedArray) -> None:
        with phase("ids"):
            if values.null_count:
                self.nulls = True
                return
            self.hashes[positions] = hash64(values)

    def verify(self) -> None:
        with phase("ids"):
            h, self.hashes = self.hashes, None
            suspect = self.nulls or len(repeated(h)) > 0
            del h
            if suspect:
                self.dataset.check_ids()


def write_permuted(
    dataset: Dataset,
    order: np.ndarray,
    directory: Path,
    metadata: dict[bytes, bytes],
    *,
    shard_rows: int,
    scratch: Path | None = None,
    check_ids: str | None = None,
) -> list[Path]:
    """Write rows `order[0], order[1], ...` (global row indices) as shards of `shard_rows` rows.

    Rows not in `order` are dropped. Output shards are named part-00000, part-00001, ...
    so that name order is the new dataset order. `check_ids`: an id column to check on the
    rows moved, while pass 1 has them decoded anyway (`IdCheck`); duplicated or null ids
    fail before pass 2 writes anything.
    """
    release_memory_sooner()
    total = int(len(order))
    n_out = max(1, -(-total // shard_rows))
    if total == 0:
        return [_write_empty(dataset, directory / shard_name(0, 1), metadata)]
    index = np.int32 if dataset.num_rows < 2**31 else np.int64  # 4 bytes per row where that is enough
    dest = np.full(dataset.num_rows, -1, dtype=index)
    dest[order] = np.arange(total, dtype=index)
    scratch = Path(scratch) if scratch is not None else directory / ".buckets"
    scratch.mkdir(parents=True, exist_ok=True)
    offsets = dataset.offsets
    boundaries = np.arange(n_out + 1, dtype=np.int64) * shard_rows
    # Dictionary columns travel decoded: an IPC file allows one dictionary per column, and pieces
    # of different row groups or files bring different ones. They are encoded again on writing.
    encoded = {f.name: f.type for f in dataset.schema if pa.types.is_dictionary(f.type)}
    bucket_schema = pa.schema([pa.field(f.name, encoded[f.name].value_type, f.nullable) if f.name in encoded else f for f in dataset.schema.remove_metadata()])
    bucket_schema = bucket_schema.append(pa.field(POS, pa.int64()))
    by_offset = not any(_has_dictionary(f.type) for f in bucket_schema)  # (dictionaries nested in lists or structs)
    ids = IdCheck(dataset, total) if check_ids is not None else None

    def decoded(table: pa.Table) -> pa.Table:
        for name, t in encoded.items():
            table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(t.value_type))
        return table

    def encoded_again(table: pa.Table) -> pa.Table:
        for name, t in encoded.items():
            table = table.set_column(table.schema.get_field_index(name), pa.field(name, t, dataset.schema.field(name).nullable), table.column(name).cast(t))
        return table

    def bucket(i: int) -> dict[int, list[tuple[int, int, int]]]:
        """Pass 1 for input shard i, row group by row group: rows split by output shard.

        Every (input row group, output shard) piece becomes one record batch of an Arrow IPC
        bucket file (no encoding or compression: cheap to write and to read back); returns
        {output shard: [(batch index, byte offset, byte length) in the bucket file]}.
        """
        path = scratch / f"bucket-{i:06d}.arrow"
        found: dict[int, list[int]] = {}
        shard_dest = dest[offsets[i] : offsets[i + 1]]
        try:
            return _fill_bucket(path, i, shard_dest, found)
        except OSError as exc:  # a full disk or a file-size limit: name the bucket file
            raise ShardWriteError(path, exc) from exc

    def _fill_bucket(path: Path, i: int, shard_dest: np.ndarray, found: dict) -> dict:
        written = 1 if by_offset else 0  # batch 0 is the empty one written first
        held: list[tuple[pa.Table, np.ndarray, np.ndarray]] = []  # (piece as read, its rows to move, their destinations)
        held_bytes = 0

        def flush() -> None:
            """Sort the held rows by destination (one take over all held pieces) and write one
            record batch per output shard: a slice of the sorted rows."""
            nonlocal written, held_bytes
            if not held:
                return
            starts = np.cumsum([0] + [t.num_rows for t, _, _ in held[:-1]])
            rows = np.concatenate([r + s for (_, r, _), s in zip(held, starts)])
            positions = np.concatenate([d for _, _, d in held])
            by_dest = np.argsort(positions)  # destinations are distinct: no ties
            table = decoded(pa.concat_tables([t for t, _, _ in held]).take(pa.array(rows[by_dest])))
            positions = positions[by_dest]
            if ids is not None:
                ids.add(positions, table.column(check_ids))
            table = table.append_column(POS, pa.array(positions, type=pa.int64()))
            cuts = np.searchsorted(positions, boundaries)
            for j in np.flatnonzero(np.diff(cuts)):
                for batch in table.slice(int(cuts[j]), int(cuts[j + 1] - cuts[j])).to_batches():
                    at = sink.tell()
                    writer.write_batch(batch)
                    found.setdefault(int(j), []).append((written, at, sink.tell() - at))
                    written += 1
            held.clear()
            held_bytes = 0

        with pa.OSFile(str(path), "wb") as raw, pa.BufferedOutputStream(raw, BUCKET_BUFFER) as sink, pa.ipc.new_file(sink, bucket_schema) as writer:
            if by_offset:
                writer.write_batch(pa.RecordBatch.from_pylist([], schema=bucket_schema))  # batch 0: makes the file's header go out first
            for start, table, kept in timed("decode", _pieces_with_rows(dataset, i, shard_dest >= 0)):
                with phase("bucket"):
                    d = shard_dest[start : start + (table.num_rows if kept is None else len(kept))]
                    rows = np.flatnonzero(d >= 0)
                    held.append((table.replace_schema_metadata(None), rows if kept is None else kept[rows], d[rows]))
                    held_bytes += table.nbytes
                    if held_bytes >= HOLD_BYTES:
                        flush()
            with phase("bucket"):
                flush()
        return found

    try:
        pieces: list[list[tuple[Path, list[tuple[int, int, int]]]]] = [[] for _ in range(n_out)]
        for i, found in enumerate(parallel_map(bucket, len(dataset.shards), "bucketing")):
            for j, batches in found.items():
                pieces[j].append((scratch / f"bucket-{i:06d}.arrow", batches))
        if ids is not None:
            ids.verify()
            ids = None

        def assemble(j: int) -> Path:
            """Pass 2 for output shard j, one row group at a time: every batch of the shard (one per
            input shard, or per HOLD_BYTES of it) is sorted by destination, so a row group's rows
            are one slice of each batch; they are merged and put in order there. Memory: the
            shard's batches once, plus one row group."""
            lo, hi = int(boundaries[j]), min(int(boundaries[j + 1]), total)
            step = ROW_GROUP_SIZE
            with phase("gather"):
                # Memory-mapped, opened for this shard only: its batches are read in place (no
                # copy) and their pages leave the resident set when the maps close at the end.
                # Each file is closed once its batches are taken (the mapping lives on in them), so
                # a shard fed by 1,000 input shards holds one descriptor at a time, not 1,000.
                batches = []
                for bucket_path, entries in pieces[j]:
                    with pa.memory_map(str(bucket_path)) as mapped:
                        if by_offset:  # straight from the recorded bytes: no footer to parse per file and shard
                            batches.extend(_batch_at(mapped, at, n, bucket_schema) for _, at, n in entries)
                        else:  # dictionaries are messages of their own: the file reader resolves them
                            reader = pa.ipc.open_file(mapped)
                            batches.extend(reader.get_batch(b) for b, _, _ in entries)
                starts = np.arange(lo, hi + step, step).clip(max=hi)
                if len(batches) > MANY_BATCHES:  # merge once for the shard, not once per row group
                    shard = pa.Table.from_batches(batches, schema=bucket_schema)
                    perm = np.empty(hi - lo, dtype=np.int64)
                    perm[shard.column(POS).to_numpy() - lo] = np.arange(hi - lo, dtype=np.int64)
                    shard = shard.drop_columns([POS]).combine_chunks()
                    batches = []
                else:
                    cuts = [np.searchsorted(b.column(POS).to_numpy(), starts) for b in batches]  # row group g: [c[g], c[g+1])
            path = directory / shard_name(j, n_out)
            with _shard_writer(path, dataset.schema, metadata) as out:
                for g in range(len(starts) - 1):
                    with phase("gather"):
                        if not batches:
                            group = shard.take(pa.array(perm[starts[g] - lo : starts[g + 1] - lo]))
                        else:
                            parts = [b.slice(c[g], c[g + 1] - c[g]) for b, c in zip(batches, cuts) if c[g + 1] > c[g]]
                            group = pa.Table.from_batches(parts, schema=bucket_schema)
                            pos = group.column(POS).to_numpy()
                            group = group.drop_columns([POS])
                            if not np.all(pos[1:] > pos[:-1]):
                                group = group.combine_chunks().take(pa.array(np.argsort(pos)))
                    with phase("encode"):
                        out.write(encoded_again(group) if encoded else group)
            del batches, group
            return path

        return parallel_map(assemble, n_out, "writing")
    finally:
        _remove_scratch(scratch)
