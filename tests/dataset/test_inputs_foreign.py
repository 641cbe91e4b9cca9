"""Corpora as other tools write them, read directly by the reading commands: Parquet shards
without ids (FineWeb/Dolma/RedPajama exports) from pyarrow, polars and DuckDB; JSON lines,
gzipped and zstd-compressed; Hugging Face `save_to_disk` directories. Derived ids; one-line
errors for what cannot be read. `delt prepare` reads the same corpora, with the same ids."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import WORDS, read_rows, tree_digest
from delt_cli.dataset import open_dataset, read_manifest, read_shard, sources
from delt_cli.dataset.reader import derived_ids
from delt_cli.infra.errors import DeltError

REPO = Path(__file__).resolve().parents[2]


def records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"text": " ".join(rng.choice(WORDS, size=int(rng.integers(3, 30)))), "url": f"https://example.org/{seed}/{i}", "n": i, "score": float(rng.normal())}
        for i in range(n)
    ]


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def write_zst(path: Path, data: bytes) -> Path:
    with pa.output_stream(str(path), compression="zstd") as out:
        out.write(data)
    return path


def write_arrow(path: Path, table: pa.Table, fmt: str, *, batch_rows: int) -> Path:
    """An Arrow IPC file as pyarrow writes it, in the stream or file format."""
    with pa.OSFile(str(path), "wb") as sink:
        writer = pa.ipc.new_stream(sink, table.schema) if fmt == "stream" else pa.ipc.new_file(sink, table.schema)
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
        writer.close()
    return path


def texts_and_ids(out: Path) -> tuple[list, list]:
    rows = read_rows(out)
    return rows.column("text").to_pylist(), rows.column("id").to_pylist()


# -- Parquet without ids, from three writers -------------------------------------------------


def _fineweb_dir(root: Path, writer: str, shards: int = 2, per: int = 40) -> Path:
    """A FineWeb-style export: text, url, n, score and no id column, as `writer` writes Parquet."""
    import duckdb
    import polars as pl

    root.mkdir(parents=True)
    for s in range(shards):
        table = pa.Table.from_pylist(records(per, seed=s))
        path = root / f"000_{s:05d}.parquet"
        if writer == "pyarrow":
            pq.write_table(table, path)  # pyarrow defaults
        elif writer == "polars":
            pl.from_arrow(table).write_parquet(path)
        else:
            con = duckdb.connect()
            con.register("t", table)
            con.execute(f"COPY t TO '{path}' (FORMAT parquet)")
            con.close()
    return root


@pytest.mark.parametrize("writer", ["pyarrow", "polars", "duckdb"])
def test_parquet_without_ids_goes_straight_through(cli, tmp_path, writer):
    data = _fineweb_dir(tmp_path / "fw", writer)
    before = tree_digest(data)
    every = {f"000_{s:05d}.parquet:{i}": r for s in range(2) for i, r in enumerate(records(40, seed=s))}
    res = cli("score", data, "-o", tmp_path / "scored", "--method", "length")
    assert res.exit_code == 0, res.output
    scored = read_rows(tmp_path / "scored")
    assert scored.column("id").to_pylist() == list(every)  # materialized in the output
    assert scored.column("text").to_pylist() == [r["text"] for r in every.values()]
    assert scored.column("n_chars").to_pylist() == [len(r["text"]) for r in every.values()]
    # a global step straight from the export: the derived ids are written into its output
    res = cli("select", data, "-o", tmp_path / "sel", "--by", "score", "--top-k", "10")
    assert res.exit_code == 0, res.output
    sel = read_rows(tmp_path / "sel")
    assert sel.column_names[0] == "id" and sel.num_rows == 10
    assert all(every[i]["text"] == t for i, t in zip(sel.column("id").to_pylist(), sel.column("text").to_pylist()))
    assert sorted(sel.column("score").to_pylist()) == sorted(r["score"] for r in every.values())[-10:]
    res = cli("order", data, "-o", tmp_path / "ord", "--method", "sort", "--by", "n")
    assert res.exit_code == 0, res.output
    ordered = read_rows(tmp_path / "ord")
    assert sorted(ordered.column("id").to_pylist()) == sorted(every)
    assert ordered.column("n").to_pylist() == sorted(ordered.column("n").to_pylist())
    assert all(every[i]["n"] == n for i, n in zip(ordered.column("id").to_pylist(), ordered.column("n").to_pylist()))
    assert cli("stats", data).exit_code == 0
    assert tree_digest(data) == before  # inputs never modified


def test_derived_ids_are_the_same_in_every_process_and_rerun(tmp_path):
    """Ids come from the file name and the row: two separate processes write byte-identical shards,
    and the ids match `delt prepare`'s for the same top-level files."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl").write_bytes(jsonl_bytes(records(30, seed=1)))
    with gzip.open(src / "b.jsonl.gz", "wb") as fh:
        fh.write(jsonl_bytes(records(20, seed=2)))
    outs = []
    for name in ("one", "two"):
        cmd = [sys.executable, "-m", "delt_cli", "order", str(src), "-o", str(tmp_path / name), "--method", "shuffle", "--seed", "3"]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
        assert done.returncode == 0, done.stderr
        digest = tree_digest(tmp_path / name)
        digest.pop("manifest.json")
        outs.append(digest)
    assert outs[0] == outs[1] and outs[0]
    prepared = tmp_path / "prepared"
    done = subprocess.run([sys.executable, "-m", "delt_cli", "prepare", str(src), "-o", str(prepared)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    direct = open_dataset(src)
    assert direct.read_column("id").to_pylist() == read_rows(prepared).column("id").to_pylist()
    assert direct.describe(with_shards=False)["derived_ids"] == "id = <file name>:<row>"


def test_derived_ids_unit():
    assert derived_ids("a.jsonl.zst", 41, 3).to_pylist() == ["a.jsonl.zst:41", "a.jsonl.zst:42", "a.jsonl.zst:43"]
    assert derived_ids("x.parquet", 0, 0).to_pylist() == []


# -- JSON lines --------------------------------------------------------------------------------


def test_jsonl_plain_gzip_and_zstd_from_several_writers(cli, tmp_path):
    import duckdb
    import polars as pl

    rows = records(25)
    src = tmp_path / "src"
    src.mkdir()
    pl.from_dicts(rows).write_ndjson(src / "polars.jsonl")
    with gzip.open(src / "python.jsonl.gz", "wb") as fh:
        fh.write(jsonl_bytes(rows))
    write_zst(src / "arrow.jsonl.zst", jsonl_bytes(rows))
    con = duckdb.connect()
    con.register("t", pa.Table.from_pylist(rows))
    con.execute(f"COPY t TO '{src / 'duck.json.zst'}' (FORMAT json, COMPRESSION zstd)")
    con.execute(f"COPY t TO '{src / 'duck2.ndjson.gz'}' (FORMAT json, COMPRESSION gzip)")
    con.close()
    for path in sorted(src.iterdir()):
        out = tmp_path / f"scored-{path.name}"
        res = cli("score", path, "-o", out, "--method", "length")
        assert res.exit_code == 0, (path.name, res.output)
        assert res.stdout.strip() == str(out)
        scored = read_rows(out)
        assert [p.name for p in out.glob("*.parquet")] == [sources.strip_suffix(path.name) + ".parquet"]
        assert scored.column("text").to_pylist() == [r["text"] for r in rows], path.name
        assert scored.column("id").to_pylist() == [f"{path.name}:{i}" for i in range(25)]
        assert scored.column("n_chars").to_pylist() == [len(r["text"]) for r in rows]
        assert scored.column("n").type == pa.int64() and scored.column("score").type == pa.float64()
    # the directory itself: all five files, in name order
    ds = open_dataset(src)
    assert [s.path.name for s in ds.shards] == sorted(p.name for p in src.iterdir()) and ds.num_rows == 125


def test_jsonl_schemas_are_unified_across_records_and_files(tmp_path):
    """Inferred types differ between files (an int column with a float elsewhere, a field some files
    lack, date strings): every file is read with one schema."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl").write_text('{"text": "x", "n": 1, "when": "2013-05-18T07:12:43Z"}\n\n{"text": "y", "n": 2, "when": null}\n')
    (src / "b.jsonl").write_text('{"text": "z", "n": 2.5, "extra": [1, 2], "when": "2013-05-18T07:12:43.120Z"}\n')
    ds = open_dataset(src)
    assert ds.schema.field("n").type == pa.float64() and ds.schema.field("when").type == pa.string()
    assert ds.num_rows == 3  # the blank line is no record
    table = pa.concat_tables(read_shard(s) for s in ds.shards)
    assert table.column_names == ["id", "text", "n", "when", "extra"]
    assert table.column("n").to_pylist() == [1.0, 2.0, 2.5]
    assert table.column("extra").to_pylist() == [None, None, [1, 2]]
    assert table.column("id").to_pylist() == ["a.jsonl:0", "a.jsonl:1", "b.jsonl:0"]


def test_jsonl_is_read_in_bounded_pieces(tmp_path, monkeypatch):
    """Per-shard streaming: a JSON lines shard comes in pieces of about JSON_CHUNK_BYTES; the pieces
    put together are the whole shard, derived ids included; unwanted pieces are not returned."""
    monkeypatch.setattr(sources, "JSON_CHUNK_BYTES", 4096)
    rows = records(400)
    path = write_zst(tmp_path / "big.jsonl.zst", jsonl_bytes(rows))
    ds = open_dataset(path)
    shard = ds.shards[0]
    pieces = list(ds.iter_row_groups(shard))
    assert len(pieces) > 5 and all(p.nbytes < 64 * 1024 for _, p in pieces)
    assert [start for start, _ in pieces] == list(np.cumsum([0] + [p.num_rows for _, p in pieces[:-1]]))
    whole = read_shard(shard)
    assert pa.concat_tables(p for _, p in pieces).equals(whole)
    assert whole.column("id").to_pylist()[-1] == "big.jsonl.zst:399"
    wanted = np.zeros(400, dtype=bool)
    wanted[390] = True
    (start, piece), = list(ds.iter_row_groups(shard, ["id"], wanted=wanted))
    assert piece.column_names == ["id"] and "big.jsonl.zst:390" in piece.column("id").to_pylist()


# -- Hugging Face save_to_disk -----------------------------------------------------------------


@pytest.fixture
def hf_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = records(60)
    d = datasets.Dataset.from_list(rows)
    d.save_to_disk(str(tmp_path / "hf"), num_shards=3)
    datasets.DatasetDict({"train": d, "test": d.select(range(5))}).save_to_disk(str(tmp_path / "hfdict"))
    return tmp_path / "hf", rows


def test_save_to_disk_directory(cli, tmp_path, hf_dir):
    hf, rows = hf_dir
    res = cli("score", hf, "-o", tmp_path / "scored", "--method", "length")
    assert res.exit_code == 0, res.output
    names = [f"data-{i:05d}-of-00003" for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "scored").glob("*.parquet")) == [n + ".parquet" for n in names]
    texts, ids = texts_and_ids(tmp_path / "scored")
    assert texts == [r["text"] for r in rows]
    assert ids == [f"{n}.arrow:{i}" for n in names for i in range(20)]
    res = cli("select", hf, "-o", tmp_path / "sel", "--by", "n", "--top-k", "7")
    assert res.exit_code == 0, res.output
    sel = read_rows(tmp_path / "sel")
    assert sel.column("n").to_pylist() == list(range(53, 60))
    assert sel.column("id").to_pylist() == [f"{names[2]}.arrow:{i}" for i in range(13, 20)]
    assert cli("stats", hf).exit_code == 0
    # a split of a DatasetDict is a dataset too
    assert open_dataset(hf.parent / "hfdict" / "test").num_rows == 5


@pytest.mark.parametrize("fmt", ["stream", "file"])
def test_arrow_files_in_bounded_pieces_with_columns_projected(tmp_path, monkeypatch, fmt):
    """Arrow IPC written by pyarrow (stream or file format), batches of 5 rows, coalesced into pieces."""
    monkeypatch.setattr(sources, "ARROW_PIECE_ROWS", 12)
    table = pa.Table.from_pylist(records(50))
    path = write_arrow(tmp_path / "x.arrow", table, fmt, batch_rows=5)
    ds = open_dataset(path)
    assert ds.num_rows == 50 and ds.columns == ["id", "text", "url", "n", "score"]
    pieces = list(ds.iter_row_groups(ds.shards[0], ["n", "id"]))
    assert [t.num_rows for _, t in pieces] == [15, 15, 15, 5] and [s for s, _ in pieces] == [0, 15, 30, 45]
    assert all(t.column_names == ["n", "id"] for _, t in pieces)
    assert pa.concat_tables(t for _, t in pieces).column("id").to_pylist() == [f"x.arrow:{i}" for i in range(50)]
    assert read_shard(ds.shards[0]).drop_columns(["id"]).equals(table)


# -- bad inputs: one line each, nothing written ---------------------------------------------


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _setup_bad(kind: str, tmp: Path) -> list[str]:
    """Make the bad input `kind` under tmp; return the input arguments."""
    if kind == "text-file":
        (tmp / "notes.txt").write_text("just text")
        return [str(tmp / "notes.txt")]
    if kind == "csv-file":
        (tmp / "table.csv").write_text("body,uid\nx,1\n")
        return [str(tmp / "table.csv")]
    if kind == "json-array":
        (tmp / "array.json").write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
        return [str(tmp / "array.json")]
    if kind == "bad-line":
        (tmp / "x.jsonl").write_text('{"text": "a"}\n{"text": \n')
        return [str(tmp / "x.jsonl")]
    if kind == "truncated-gzip":
        with gzip.open(tmp / "x.jsonl.gz", "wb") as fh:
            fh.write(jsonl_bytes(records(200)))
        _truncate(tmp / "x.jsonl.gz", 300)
        return [str(tmp / "x.jsonl.gz")]
    if kind == "truncated-zstd":
        _truncate(write_zst(tmp / "x.jsonl.zst", jsonl_bytes(records(200))), 300)
        return [str(tmp / "x.jsonl.zst")]
    if kind == "types-in-file":
        (tmp / "x.jsonl").write_text('{"text": "a", "n": 1}\n{"text": "b", "n": "two"}\n')
        return [str(tmp / "x.jsonl")]
    if kind == "types-across-files":
        (tmp / "src").mkdir()
        (tmp / "src" / "a.jsonl").write_text('{"text": "a", "n": 1}\n')
        (tmp / "src" / "b.jsonl").write_text('{"text": "b", "n": "two"}\n')
        return [str(tmp / "src")]
    if kind == "same-name-no-ids":
        for d in ("x", "y"):
            (tmp / d).mkdir()
            pq.write_table(pa.table({"text": ["a"], "score": [1.0]}), tmp / d / "part.parquet")
        return [str(tmp / "*" / "part.parquet")]
    if kind == "same-output-name":
        (tmp / "src").mkdir()
        (tmp / "src" / "a.jsonl").write_bytes(jsonl_bytes(records(3)))
        write_zst(tmp / "src" / "a.jsonl.zst", jsonl_bytes(records(3)))
        return [str(tmp / "src")]
    if kind == "missing-text":
        (tmp / "x.jsonl").write_text('{"body": "a", "score": 1}\n')
        return [str(tmp / "x.jsonl")]
    if kind == "empty-dir":
        (tmp / "empty").mkdir()
        (tmp / "empty" / "README.md").write_text("nothing here")
        return [str(tmp / "empty")]
    datasets = pytest.importorskip("datasets")
    d = datasets.Dataset.from_list(records(10))
    if kind == "dataset-dict":
        datasets.DatasetDict({"train": d, "validation": d}).save_to_disk(str(tmp / "hf"))
        return [str(tmp / "hf")]
    d.save_to_disk(str(tmp / "hf"), num_shards=2)
    if kind == "hf-missing-file":
        (tmp / "hf" / "data-00001-of-00002.arrow").unlink()
    else:  # hf-truncated
        _truncate(tmp / "hf" / "data-00001-of-00002.arrow", 200)
    return [str(tmp / "hf")]


BAD = [
    ("text-file", "notes.txt: not a dataset file: expected Parquet (*.parquet), JSON lines"),
    ("csv-file", "`delt prepare` converts CSV, TSV and text files into a dataset"),
    ("json-array", "array.json: line 1: holds an array, not a JSON object; expected one JSON object per line"),
    ("bad-line", "x.jsonl: line 2: cannot parse JSON"),
    ("truncated-gzip", "x.jsonl.gz: compressed data is truncated or corrupt"),
    ("truncated-zstd", "x.jsonl.zst: compressed data is truncated or corrupt"),
    ("types-in-file", "x.jsonl: line 2: field 'n' holds a string here but a number on earlier lines"),
    ("types-across-files", "b.jsonl: field 'n' holds a string here but a number in the files before it"),
    ("same-name-no-ids", "two files are named part.parquet, so ids derived from file names would collide"),
    ("same-output-name", "a.jsonl and a.jsonl.zst would both be written as a.parquet"),
    ("missing-text", "--text-column 'text': no such column in"),
    ("empty-dir", "directory has no *.parquet shards, JSON lines or Arrow files"),
    ("dataset-dict", "a Hugging Face DatasetDict (splits: train, validation); pass one split's directory"),
    ("hf-missing-file", "state.json lists data-00001-of-00002.arrow, which is missing"),
    ("hf-truncated", "data-00001-of-00002.arrow: corrupt or truncated Arrow file"),
]


@pytest.mark.parametrize("kind, message", BAD, ids=[k for k, _ in BAD])
def test_bad_input_is_one_line(cli, tmp_path, kind, message):
    args = _setup_bad(kind, tmp_path)
    one_line_error(cli("score", *args, "-o", tmp_path / "out", "--method", "length"), message, tmp_path / "out")


def one_line_error(res, message: str, out: Path) -> None:
    """Exit status 1, one `error:` line holding `message`, and no output written."""
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert not out.exists()


def test_missing_text_column_names_the_candidate(cli, tmp_path):
    (tmp_path / "x.jsonl").write_text('{"body": "a", "score": 1}\n')
    res = cli("score", tmp_path / "x.jsonl", "-o", tmp_path / "out", "--method", "length")
    assert res.stderr.strip() == f"error: --text-column 'text': no such column in {tmp_path / 'x.jsonl'}; columns are: id (derived), body, score; pass --text-column body"
    res = cli("score", tmp_path / "x.jsonl", "-o", tmp_path / "out", "--method", "length", "--text-column", "body")
    assert res.exit_code == 0, res.output


def test_a_named_id_column_that_is_missing_is_still_an_error(cli, tmp_path):
    """Ids are derived only for the default `id`: a misspelt --id-column is not papered over."""
    (tmp_path / "x.jsonl").write_text('{"text": "a", "score": 1}\n{"text": "b", "score": 2}\n')
    res = cli("select", tmp_path / "x.jsonl", "-o", tmp_path / "out", "--by", "score", "--top-k", "1", "--id-column", "uid")
    assert res.exit_code == 1 and "--id-column 'uid': no such column" in res.stderr


def test_open_errors_are_delt_errors(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(DeltError, match="x.bin: not a dataset file"):
        open_dataset(tmp_path / "x.bin")
    # a Parquet file without the suffix is still Parquet
    pq.write_table(pa.table({"id": ["a"], "text": ["b"]}), tmp_path / "shard")
    assert open_dataset(tmp_path / "shard").num_rows == 1


# -- delt prepare on the same corpora ------------------------------------------------------------


def test_prepare_reads_jsonl_zst_as_the_readers_do(cli, tmp_path):
    """JSON lines compressed with zstd by pyarrow and by DuckDB (.jsonl.zst, .json.zst, .ndjson.zst):
    prepare keeps the types, drops empty texts, maps --text-column, and its ids are the ones every
    reading command derives for the same file."""
    import duckdb

    rows = records(30) + [{"text": "", "url": "u", "n": 30, "score": 0.0}, {"text": "  ", "url": "v", "n": 31, "score": 0.0}]
    src = tmp_path / "src"
    src.mkdir()
    write_zst(src / "arrow.jsonl.zst", jsonl_bytes(rows))
    con = duckdb.connect()
    con.register("t", pa.Table.from_pylist(rows))
    con.execute(f"COPY t TO '{src / 'duck.json.zst'}' (FORMAT json, COMPRESSION zstd)")
    con.close()
    write_zst(src / "body.ndjson.zst", jsonl_bytes([{"body": r["text"], "n": r["n"]} for r in rows]))
    for path in (src / "arrow.jsonl.zst", src / "duck.json.zst"):
        out = tmp_path / f"p-{path.name}"
        res = cli("prepare", path, "-o", out)
        assert res.exit_code == 0, res.output
        texts, ids = texts_and_ids(out)
        assert texts == [r["text"] for r in rows[:30]]
        assert ids == [f"{path.name}:{i}" for i in range(30)]
        assert ids == open_dataset(path).read_column("id").to_pylist()[:30]  # the readers' derived ids
        prepared = read_rows(out)
        assert prepared.column_names == ["id", "text", "url", "n", "score"] and prepared.column("n").type == pa.int64()
        assert read_manifest(out)["prepare"]["empty_dropped"] == 2
    res = cli("prepare", src / "body.ndjson.zst", "-o", tmp_path / "body", "--text-column", "body", "--id-prefix", "source")
    assert res.exit_code == 0, res.output
    texts, ids = texts_and_ids(tmp_path / "body")
    assert texts == [r["text"] for r in rows[:30]] and ids == [f"body:body.ndjson.zst:{i}" for i in range(30)]


def test_prepare_widens_a_zst_file_read_in_chunks_like_a_plain_one(cli, tmp_path, monkeypatch):
    """A field that first appears late and an int field that turns fractional, in a .jsonl.zst read
    in small chunks: the same dataset as from the plain file (and as from one chunk)."""
    from delt_cli.dataset import prepare_sources

    rows = records(300)
    rows[250]["lang"] = "en"
    rows[280]["n"] = 1.5
    data = jsonl_bytes(rows)
    (tmp_path / "a.jsonl").write_bytes(data)
    write_zst(tmp_path / "a.jsonl.zst", data)
    assert cli("prepare", tmp_path / "a.jsonl", "-o", tmp_path / "whole").exit_code == 0
    monkeypatch.setattr(prepare_sources, "CHUNK_BYTES", 4096)
    for name in ("a.jsonl", "a.jsonl.zst"):
        res = cli("prepare", tmp_path / name, "-o", tmp_path / f"out-{name}")
        assert res.exit_code == 0, res.output
        assert "starting again with the columns of the whole file" in res.stderr
    plain, packed, whole = (read_rows(tmp_path / d) for d in ("out-a.jsonl", "out-a.jsonl.zst", "whole"))
    assert plain.drop_columns(["id"]).equals(packed.drop_columns(["id"])) and plain.drop_columns(["id"]).equals(whole.drop_columns(["id"]))
    assert packed.schema.field("n").type == pa.float64() and packed.column("lang").to_pylist()[250] == "en"
    assert packed.column("id").to_pylist() == [f"a.jsonl.zst:{i}" for i in range(300)]


def test_prepare_invalid_utf8_in_a_zst_file(cli, tmp_path):
    path = write_zst(tmp_path / "x.jsonl.zst", b'{"text": "fine"}\n\n{"text": "bad \xff here"}\n{"text": "last"}\n')
    res = cli("prepare", path, "-o", tmp_path / "out")
    assert res.exit_code == 1 and res.stderr.strip().splitlines() == [
        f"error: {path}: line 3: not valid UTF-8 (byte 0xff); pass --on-invalid-utf8 replace or skip"
    ]
    assert cli("prepare", path, "-o", tmp_path / "skip", "--on-invalid-utf8", "skip").exit_code == 0
    assert texts_and_ids(tmp_path / "skip") == (["fine", "last"], ["x.jsonl.zst:0", "x.jsonl.zst:2"])
    # the readers refuse it the same way, pointing at prepare
    res = cli("stats", path)
    assert res.exit_code == 1 and f"{path}: line 3: not valid UTF-8" in res.stderr and "delt prepare --on-invalid-utf8" in res.stderr


def test_a_line_longer_than_a_parse_block(cli, tmp_path, monkeypatch):
    """A 3 MiB record (pyarrow parses in 1 MiB blocks) among short ones, in a later chunk and in a
    file without a final newline: read whole by the readers and by prepare, and no new column."""
    from delt_cli.dataset import prepare_sources

    rows = records(50)
    rows[30]["text"] = "long " * (600 << 10)
    path = write_zst(tmp_path / "long.jsonl.zst", jsonl_bytes(rows).rstrip(b"\n"))
    monkeypatch.setattr(prepare_sources, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(sources, "JSON_CHUNK_BYTES", 4096)
    assert open_dataset(path).read_column("text").to_pylist() == [r["text"] for r in rows]
    res = cli("prepare", path, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "starting again" not in res.stderr
    assert texts_and_ids(tmp_path / "out") == ([r["text"] for r in rows], [f"long.jsonl.zst:{i}" for i in range(50)])


@pytest.mark.parametrize("name", ["x.csv.zst", "x.tsv.gz"])
def test_prepare_reads_compressed_csv_and_tsv(cli, tmp_path, name):
    sep = "\t" if ".tsv" in name else ","
    body = f"body{sep}n\nfirst doc{sep}1\nsecond doc{sep}2\n".encode()
    path = tmp_path / name
    if name.endswith(".zst"):
        write_zst(path, body)
    else:
        path.write_bytes(gzip.compress(body))
    res = cli("prepare", path, "-o", tmp_path / "out", "--text-column", "body")
    assert res.exit_code == 0, res.output
    assert texts_and_ids(tmp_path / "out") == (["first doc", "second doc"], [f"{name}:0", f"{name}:1"])


def test_prepare_reads_a_save_to_disk_directory(cli, tmp_path, hf_dir):
    """A `datasets` save_to_disk directory: its Arrow files in state.json's order, no metadata read as
    documents, ids equal to the readers', --id-prefix by the directory's name, --text-column, the same
    inside a larger directory argument, and one of its Arrow files on its own."""
    hf, rows = hf_dir
    names = [f"data-{i:05d}-of-00003.arrow" for i in range(3)]
    res = cli("prepare", hf, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "warning" not in res.stderr
    texts, ids = texts_and_ids(tmp_path / "out")
    assert texts == [r["text"] for r in rows] and ids == [f"{n}:{i}" for n in names for i in range(20)]
    assert ids == open_dataset(hf).read_column("id").to_pylist()
    prepared = read_rows(tmp_path / "out")
    assert prepared.column_names == ["id", "text", "url", "n", "score"] and prepared.column("n").to_pylist() == list(range(60))
    assert b"huggingface" not in (prepared.schema.metadata or {})  # the datasets features stay behind
    # two splits of a DatasetDict (whose directory is refused), their ids told apart by --id-prefix
    splits = hf.parent / "hfdict"
    res = cli("prepare", splits / "train", splits / "test", "-o", tmp_path / "splits", "--id-prefix", "source")
    assert res.exit_code == 0, res.output
    texts, ids = texts_and_ids(tmp_path / "splits")
    assert texts == [r["text"] for r in rows + rows[:5]]
    assert ids == [f"train:data-00000-of-00001.arrow:{i}" for i in range(60)] + [f"test:data-00000-of-00001.arrow:{i}" for i in range(5)]
    # inside a directory argument, beside a JSON lines file: paths relative to the argument
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    hf.rename(corpora / "hf")
    (corpora / "z.jsonl").write_bytes(jsonl_bytes([{"text": "last one"}]))
    res = cli("prepare", corpora, "-o", tmp_path / "nested", "--id-prefix", "source")
    assert res.exit_code == 0, res.output
    texts, ids = texts_and_ids(tmp_path / "nested")
    assert texts == [r["text"] for r in rows] + ["last one"]
    assert ids == [f"corpora:hf/{n}:{i}" for n in names for i in range(20)] + ["corpora:z.jsonl:0"]
    # one of its Arrow files
    res = cli("prepare", corpora / "hf" / names[1], "-o", tmp_path / "one")
    assert res.exit_code == 0, res.output
    assert texts_and_ids(tmp_path / "one") == ([r["text"] for r in rows[20:40]], [f"{names[1]}:{i}" for i in range(20)])


def test_prepare_maps_the_columns_of_a_save_to_disk_dataset_and_drops_empty_texts(cli, tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"uid": f"doc-{i}", "body": "" if i % 4 == 0 else f"text {i}", "meta": {"lang": "en", "len": i}} for i in range(12)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"), num_shards=2)
    res = cli("prepare", tmp_path / "hf", "-o", tmp_path / "out", "--text-column", "body", "--id-column", "uid")
    assert res.exit_code == 0, res.output
    prepared = read_rows(tmp_path / "out")
    assert prepared.column_names == ["id", "text", "meta"]
    assert prepared.column("id").to_pylist() == [r["uid"] for r in rows if r["body"]]
    assert prepared.column("text").to_pylist() == [r["body"] for r in rows if r["body"]]
    assert prepared.column("meta").to_pylist() == [r["meta"] for r in rows if r["body"]]
    assert read_manifest(tmp_path / "out")["prepare"]["empty_dropped"] == 3


@pytest.mark.parametrize("fmt", ["stream", "file"])
def test_prepare_reads_arrow_files_written_by_pyarrow(cli, tmp_path, fmt):
    table = pa.Table.from_pylist(records(40))
    path = write_arrow(tmp_path / "x.arrow", table, fmt, batch_rows=7)
    res = cli("prepare", path, "-o", tmp_path / "out", "--shard-rows", "15")
    assert res.exit_code == 0, res.output
    prepared = read_rows(tmp_path / "out")
    assert prepared.drop_columns(["id"]).equals(table)
    assert prepared.column("id").to_pylist() == open_dataset(path).read_column("id").to_pylist() == [f"x.arrow:{i}" for i in range(40)]


# prepare says what the readers say about the same file (dataset/jsonl.py and dataset/sources.py read it for both)
PREPARE_BAD = [(kind, dict(BAD)[kind]) for kind in ("truncated-zstd", "dataset-dict", "hf-missing-file", "hf-truncated")] + [
    ("not-zstd", "x.jsonl.zst: compressed data is truncated or corrupt"),
    ("dataset-dict-inside", dict(BAD)["dataset-dict"]),
    ("compressed-parquet", "x.parquet.zst: unsupported source type"),
]


@pytest.mark.parametrize("kind, message", PREPARE_BAD, ids=[k for k, _ in PREPARE_BAD])
def test_prepare_bad_input_is_one_line(cli, tmp_path, kind, message):
    if kind == "not-zstd":
        (tmp_path / "x.jsonl.zst").write_bytes(jsonl_bytes(records(3)))
        args = [str(tmp_path / "x.jsonl.zst")]
    elif kind == "dataset-dict-inside":
        (tmp_path / "corpora").mkdir()
        (tmp_path / "corpora" / "a.jsonl").write_bytes(jsonl_bytes(records(3)))
        _setup_bad("dataset-dict", tmp_path / "corpora")
        args = [str(tmp_path / "corpora")]
    elif kind == "compressed-parquet":
        write_zst(tmp_path / "x.parquet.zst", b"PAR1")
        args = [str(tmp_path / "x.parquet.zst")]
    else:
        args = _setup_bad(kind, tmp_path)
    one_line_error(cli("prepare", *args, "-o", tmp_path / "out"), message, tmp_path / "out")


# -- stats without the text column -------------------------------------------------------------


def test_stats_says_when_the_text_column_is_missing(cli, tmp_path):
    """A CSV-derived dataset keeps its own column names: stats names the missing text column and
    the columns there are, instead of an empty table and exit 0."""
    data = tmp_path / "csvish"
    data.mkdir()
    pq.write_table(pa.table({"uid": ["a", "b", "c"], "body": ["one", "two words", "three more words"]}), data / "part.parquet")
    res = cli("stats", data)
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr.strip() == (
        f"error: no text column 'text' in {data}, so no text lengths; columns are: id (derived), uid, body; string columns: uid, body (pass --text-column NAME); "
        "nothing else to summarise (no numeric or --group-by column)"
    )
    res = cli("stats", data, "--text-column", "body")
    assert res.exit_code == 0 and res.stdout.strip() == str(data) and "text chars" in res.stderr
    # with something else to show: the summary, and a warning that names the missing column
    pq.write_table(pa.table({"uid": ["a", "b"], "body": ["x", "y"], "label": [1, 0]}), data / "part.parquet")
    res = cli("stats", data)
    assert res.exit_code == 0 and res.stdout.strip() == str(data)
    assert "warning: no text column 'text'" in res.stderr and "label" in res.stderr


# -- train, embed and eval --heldout read the same inputs -------------------------------------


@pytest.mark.assets
def test_train_and_heldout_read_jsonl_zst_like_parquet(tmp_path):
    """`delt train` and the held-out loss of `delt eval` on a JSONL.zst file give what they give
    on the same rows as Parquet."""
    from trainkit import news_and_plays

    from delt_cli.evaluation.heldout import heldout_loss
    from delt_cli.models.loading import load_causal_lm, load_tokenizer
    from delt_cli.training.config import TrainConfig
    from delt_cli.training.loop import train_run

    rows = [{"text": t, "domain": d} for _, d, t in news_and_plays()[:48]]
    src = write_zst(tmp_path / "corpus.jsonl.zst", jsonl_bytes(rows))
    as_parquet = tmp_path / "pq"
    as_parquet.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), as_parquet / "corpus.parquet")
    config = TrainConfig(model="llama-tiny", tokenizer="gpt2", seq_len=32, batch_size=4, grad_accum=1, lr=3e-3, warmup_steps=1, max_steps=3)
    train_run(str(src), tmp_path / "run", config, save_every=0)
    train_run(str(as_parquet), tmp_path / "run-pq", config, save_every=0)
    model = load_causal_lm(tmp_path / "run" / "model", dtype="float32", device="cpu")
    model_pq = load_causal_lm(tmp_path / "run-pq" / "model", dtype="float32", device="cpu")
    for a, b in zip(model.parameters(), model_pq.parameters()):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())  # the same tokens in the same order
    tok = load_tokenizer(tmp_path / "run" / "model")
    got = heldout_loss(model, tok, str(src), max_len=24, batch_size=4, limit=6)
    want = heldout_loss(model, tok, str(as_parquet), max_len=24, batch_size=4, limit=6)
    assert got["loss"] == want["loss"] and got["tokens"] == want["tokens"] > 0


@pytest.mark.assets
def test_embed_reads_a_save_to_disk_directory(cli, tmp_path, hf_dir):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from delt_cli.infra.assets import minilm_dir

    import torch

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20, max_position_embeddings=64)
    encoder = tmp_path / "enc"
    BertModel(config).save_pretrained(str(encoder))
    tokenizer.save_pretrained(str(encoder))
    hf, rows = hf_dir
    res = cli("embed", hf, "-o", tmp_path / "emb", "--model", encoder)
    assert res.exit_code == 0, res.output
    emb = read_rows(tmp_path / "emb")
    assert emb.column("text").to_pylist() == [r["text"] for r in rows]
    assert emb.column("id").to_pylist() == [f"data-{s:05d}-of-00003.arrow:{i}" for s in range(3) for i in range(20)]
    assert emb.schema.field("emb").type == pa.list_(pa.float32(), 16)


@pytest.mark.parametrize("kind", ["parquet-without-ids", "jsonl"])
def test_row_readers_of_the_scorers_see_the_readers_ids(tmp_path, kind):
    """The samplers and row readers behind dsir/gotd fits, LQS, the token cache and held-out loss
    read a shard as the dataset describes it: derived ids included, a JSONL shard parsed once with
    its dataset's schema (they once re-opened the bare path, which lost the derived ids)."""
    import numpy as np

    from delt_cli.dataset import open_dataset, read_shard
    from delt_cli.scoring.pool import iter_sample
    from delt_cli.scoring.tokens import read_rows

    d = tmp_path / "in"
    d.mkdir()
    texts = [f"{w} document number {i}" for i, w in enumerate("alpha beta gamma delta epsilon zeta eta theta".split())]
    if kind == "jsonl":
        for part in range(2):
            (d / f"p{part}.jsonl").write_text("".join(json.dumps({"id": f"u{part}-{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    else:
        for part in range(2):
            pq.write_table(pa.table({"text": texts}), d / f"p{part}.parquet")
    ds = open_dataset(d)
    every = [v for s in ds.shards for v in read_shard(s, ["id"]).column("id").to_pylist()]
    assert len(set(every)) == 2 * len(texts)
    rows = np.array([1, 5, 9, 14])
    assert read_rows(ds, rows, ["id", "text"]).column("id").to_pylist() == [every[r] for r in rows]
    sampled = [t.column("id").to_pylist() for _, t, _ in iter_sample(ds, ["id", "text"], None)]
    assert sum(sampled, []) == every
