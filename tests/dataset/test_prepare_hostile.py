"""`delt prepare` on hostile and real-world files (issue 14 section 4, issue 16 section 1).

Invalid UTF-8 never reaches an output; the columns of a JSONL file do not depend on where
in the file a field first appears, and messages give the file's line; empty files of every
format give an empty dataset; a truncated gzip is named; --resume; ids namespaced by
source; source columns mapped once to `id` and `text`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

from conftest import read_rows, tree_digest
from delt_cli.dataset import read_manifest

BAD = b"\xff\xfe"


def one_line_error(res, *needles):
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def jsonl_bytes(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


# ---------------------------------------------------------------- 1. invalid UTF-8


def bad_jsonl(path: Path) -> Path:
    path.write_bytes(jsonl_bytes([{"text": "fine"}, {"text": "also fine"}]) + b'{"text": "bad ' + BAD + b' here"}\n' + jsonl_bytes([{"text": "last"}]))
    return path


def test_invalid_utf8_in_jsonl_is_an_error_naming_file_and_line(cli, tmp_path):
    src = bad_jsonl(tmp_path / "x.jsonl")
    res = cli("prepare", src, "-o", tmp_path / "out")
    one_line_error(res, "x.jsonl", "line 3", "UTF-8", "--on-invalid-utf8")
    assert not (tmp_path / "out").exists()


def test_invalid_utf8_replace_gives_valid_text_that_polars_and_score_read(cli, tmp_path):
    import polars as pl

    src = bad_jsonl(tmp_path / "x.jsonl")
    res = cli("prepare", src, "-o", tmp_path / "out", "--on-invalid-utf8", "replace")
    assert res.exit_code == 0, res.output
    assert "replaced" in res.stderr and "line 3" in res.stderr
    texts = pl.read_parquet(tmp_path / "out" / "*.parquet")["text"].to_list()
    assert texts == ["fine", "also fine", "bad \ufffd\ufffd here", "last"]
    assert read_manifest(tmp_path / "out")["prepare"]["utf8_replaced"] == 1
    res = cli("score", tmp_path / "out", "-o", tmp_path / "scored", "--method", "compression")
    assert res.exit_code == 0, res.output


def test_invalid_utf8_skip_drops_the_line_and_keeps_the_other_ids(cli, tmp_path):
    src = bad_jsonl(tmp_path / "x.jsonl")
    res = cli("prepare", src, "-o", tmp_path / "out", "--on-invalid-utf8", "skip")
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "out")
    assert rows.column("text").to_pylist() == ["fine", "also fine", "last"]
    assert rows.column("id").to_pylist() == ["x.jsonl:0", "x.jsonl:1", "x.jsonl:3"]  # the skipped record keeps its number
    stats = read_manifest(tmp_path / "out")["prepare"]
    assert stats["utf8_skipped"] == 1 and stats["rows_written"] == 3


def test_invalid_utf8_in_text_files(cli, tmp_path):
    src = tmp_path / "plays"
    src.mkdir()
    (src / "a.txt").write_bytes(b"para one\n\npara " + BAD + b" two\n\npara three\n")
    res = cli("prepare", src, "-o", tmp_path / "out", "--paragraphs")
    one_line_error(res, "a.txt", "line 3", "UTF-8")
    assert cli("prepare", src, "-o", tmp_path / "rep", "--paragraphs", "--on-invalid-utf8", "replace").exit_code == 0
    assert read_rows(tmp_path / "rep").column("text").to_pylist() == ["para one", "para \ufffd\ufffd two", "para three"]
    assert cli("prepare", src, "-o", tmp_path / "skip", "--paragraphs", "--on-invalid-utf8", "skip").exit_code == 0
    rows = read_rows(tmp_path / "skip")
    assert rows.column("text").to_pylist() == ["para one", "para three"]
    assert rows.column("id").to_pylist() == ["a.txt:0", "a.txt:2"]


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_in_csv(cli, tmp_path, gz):
    body = b'text,score\nfine,1\n"two\nlines",2\n"bad ' + BAD + b'",3\nlast,4\n'
    src = tmp_path / ("x.csv.gz" if gz else "x.csv")
    src.write_bytes(gzip.compress(body) if gz else body)
    one_line_error(cli("prepare", src, "-o", tmp_path / "out"), src.name, "line 5", "UTF-8")
    assert cli("prepare", src, "-o", tmp_path / "rep", "--on-invalid-utf8", "replace").exit_code == 0
    assert read_rows(tmp_path / "rep").column("text").to_pylist() == ["fine", "two\nlines", "bad \ufffd\ufffd", "last"]
    assert cli("prepare", src, "-o", tmp_path / "skip", "--on-invalid-utf8", "skip").exit_code == 0
    rows = read_rows(tmp_path / "skip")
    assert rows.column("text").to_pylist() == ["fine", "two\nlines", "last"] and rows.column("score").type == pa.int64()
    assert rows.column("id").to_pylist() == [f"{src.name}:0", f"{src.name}:1", f"{src.name}:3"]


@pytest.mark.parametrize("name", ["x.parquet", "x.arrow"])
def test_invalid_utf8_in_a_parquet_or_arrow_source(cli, tmp_path, name):
    values = [b"good", b"bad " + BAD]
    offsets = pa.array([0, 4, 4 + len(values[1])], pa.int32()).buffers()[1]
    text = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"".join(values))])  # not validated
    table = pa.table({"text": text})
    if name.endswith(".arrow"):
        with pa.OSFile(str(tmp_path / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        pq.write_table(table, tmp_path / name)
    one_line_error(cli("prepare", tmp_path / name, "-o", tmp_path / "out"), name, "row 2", "'text'", "UTF-8")
    assert cli("prepare", tmp_path / name, "-o", tmp_path / "rep", "--on-invalid-utf8", "replace").exit_code == 0
    assert read_rows(tmp_path / "rep").column("text").to_pylist() == ["good", "bad \ufffd\ufffd"]
    assert cli("prepare", tmp_path / name, "-o", tmp_path / "skip", "--on-invalid-utf8", "skip").exit_code == 0
    assert read_rows(tmp_path / "skip").column("id").to_pylist() == [f"{name}:0"]


# ------------------------------------------- 2. the whole file decides the columns


N_BIG = 200_000  # ~9 MB: more than the 8 MB the reader takes at a time


@pytest.fixture(scope="module")
def big_head() -> bytes:
    """200,000 JSONL lines (two of them blank, so lines and records differ) with id-less texts and an int field."""
    out = io.BytesIO()
    for i in range(N_BIG - 2):
        out.write(b'{"text": "document number %d here", "n": %d}\n' % (i, i))
        if i in (10, 20):
            out.write(b"\n")
    data = out.getvalue()
    assert len(data) > 8 << 20 and data.count(b"\n") == N_BIG
    return data


def reference_schema(data: bytes) -> pa.Schema:
    """What pyarrow infers when it sees the whole file at once."""
    return pajson.read_json(io.BytesIO(data), read_options=pajson.ReadOptions(block_size=len(data) + 1)).schema


def test_a_field_first_seen_on_line_200001_is_a_column(cli, tmp_path, big_head):
    data = big_head + b'{"text": "late", "n": 1, "lang": "en", "meta": {"url": "u"}}\n'
    (tmp_path / "big.jsonl").write_bytes(data)
    res = cli("prepare", tmp_path / "big.jsonl", "-o", tmp_path / "out", "--shard-rows", "60000")
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "out")
    assert rows.num_rows == N_BIG - 1
    assert rows.column_names == ["id", "text", "n", "lang", "meta"]
    assert rows.column("lang").null_count == N_BIG - 2 and rows.column("lang")[-1].as_py() == "en"
    assert rows.column("meta")[-1].as_py() == {"url": "u"}
    ref = reference_schema(data)
    assert [(f.name, f.type) for f in ref] == [(f.name, f.type) for f in rows.schema if f.name != "id"]
    shards = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert shards == ["manifest.json"] + [f"part-0000{i}.parquet" for i in range(4)]  # nothing left from the first attempt
    assert rows.column("id").to_pylist()[-1] == f"big.jsonl:{N_BIG - 2}"  # the 2 blank lines are not records


def test_a_wider_type_on_line_200001_widens_the_column(cli, tmp_path, big_head):
    data = big_head + b'{"text": "late", "n": 1.5, "when": "2020-01-01"}\n' + b'{"text": "later", "n": 2, "when": "not a date"}\n'
    (tmp_path / "big.jsonl").write_bytes(data)
    res = cli("prepare", tmp_path / "big.jsonl", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "out")
    assert rows.schema.field("n").type == pa.float64() == reference_schema(data).field("n").type
    assert rows.column("n").to_pylist()[-2:] == [1.5, 2.0] and rows.column("when").to_pylist()[-2:] == ["2020-01-01", "not a date"]


def test_a_type_conflict_on_line_200001_names_that_line_and_field(cli, tmp_path, big_head):
    (tmp_path / "big.jsonl").write_bytes(big_head + b'{"text": "late", "n": "abc"}\n')
    one_line_error(cli("prepare", tmp_path / "big.jsonl", "-o", tmp_path / "out"), "big.jsonl", "line 200001", "'n'")
    assert not (tmp_path / "out").exists()


def test_parse_error_and_invalid_utf8_past_8_mb_name_the_line(cli, tmp_path, big_head):
    (tmp_path / "a.jsonl").write_bytes(big_head + jsonl_bytes([{"text": "ok"}]) + b'{"text": \n')
    one_line_error(cli("prepare", tmp_path / "a.jsonl", "-o", tmp_path / "out"), "a.jsonl", "line 200002", "cannot parse JSON")
    (tmp_path / "b.jsonl").write_bytes(big_head + b'{"text": "' + BAD + b'"}\n')
    one_line_error(cli("prepare", tmp_path / "b.jsonl", "-o", tmp_path / "out"), "b.jsonl", "line 200001", "UTF-8")


def test_a_later_source_with_a_new_field_keeps_the_first_sources_columns(cli, tmp_path, big_head):
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes([{"text": "a", "n": 1}]))
    (tmp_path / "b.jsonl").write_bytes(big_head + b'{"text": "late", "n": 3, "lang": "en"}\n')
    res = cli("prepare", tmp_path / "a.jsonl", tmp_path / "b.jsonl", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "column 'lang' is not in the first source's columns" in res.stderr
    assert read_rows(tmp_path / "out").column_names == ["id", "text", "n"]


# ------------------------------------------------------------ 3. empty files


@pytest.mark.parametrize(
    "name, content",
    [
        ("x.jsonl", b""),
        ("x.jsonl", b"\n\n"),
        ("x.jsonl.gz", gzip.compress(b"", mtime=0)),
        ("x.txt", b""),
        ("x.csv", b"text,score\n"),
        ("x.csv", b""),
    ],
)
def test_empty_sources_give_an_empty_dataset_with_a_warning(cli, tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    res = cli("prepare", tmp_path / name, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "out")
    assert rows.num_rows == 0 and rows.column_names[:2] == ["id", "text"]
    assert f"warning: {tmp_path / name}: no documents" in res.stderr
    assert read_manifest(tmp_path / "out")["prepare"]["rows_written"] == 0


def test_an_empty_source_among_others_does_not_decide_the_columns(cli, tmp_path):
    (tmp_path / "a.csv").write_text("text,score\n")
    (tmp_path / "b.jsonl").write_bytes(jsonl_bytes([{"text": "x", "score": 2.5}]))
    res = cli("prepare", tmp_path / "a.csv", tmp_path / "b.jsonl", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "out")
    assert rows.column("score").to_pylist() == [2.5]


# -------------------------------------------------------- 4. truncated gzip


@pytest.mark.parametrize("name", ["x.jsonl.gz", "x.csv.gz"])
def test_truncated_gzip_names_the_file_and_the_line_reached(cli, tmp_path, name):
    lines = [f'{{"text": "line {i} {"x" * (i % 50)}"}}' for i in range(100_000)]
    if name.endswith("csv.gz"):
        lines = ["text"] + [f"line {i} {'x' * (i % 50)}" for i in range(100_000)]
    packed = gzip.compress(("\n".join(lines) + "\n").encode())
    (tmp_path / name).write_bytes(packed[: len(packed) // 2])
    msg = one_line_error(cli("prepare", tmp_path / name, "-o", tmp_path / "out"), name, "truncated", "after line")
    line = int(msg.split("after line ")[1].split()[0].rstrip(":,)"))
    assert 0 < line < 100_000
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ 5. --resume


def test_resume_on_a_finished_output_is_a_no_op_and_a_changed_source_rebuilds(cli, tmp_path):
    src = tmp_path / "x.jsonl"
    src.write_bytes(jsonl_bytes([{"text": f"doc {i}"} for i in range(5)]))
    assert cli("prepare", src, "-o", tmp_path / "out").exit_code == 0
    before = tree_digest(tmp_path / "out")
    res = cli("prepare", src, "-o", tmp_path / "out", "--resume")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(tmp_path / "out") and "nothing to do" in res.stderr
    assert tree_digest(tmp_path / "out") == before
    assert cli("prepare", src, "-o", tmp_path / "out").exit_code == 2  # neither flag: refused
    src.write_bytes(jsonl_bytes([{"text": f"doc {i}"} for i in range(6)]))
    assert cli("prepare", src, "-o", tmp_path / "out", "--resume").exit_code == 0
    assert read_rows(tmp_path / "out").num_rows == 6


# ------------------------------------------------------- 7. ids namespaced by source


def test_overlapping_ids_combine_with_id_prefix_source(cli, tmp_path):
    (tmp_path / "dump1.jsonl").write_bytes(jsonl_bytes([{"id": i, "text": f"one {i}"} for i in range(3)]))
    (tmp_path / "dump2.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes([{"id": i, "text": f"two {i}"} for i in range(2)])))
    res = cli("prepare", tmp_path / "dump1.jsonl", tmp_path / "dump2.jsonl.gz", "-o", tmp_path / "out")
    one_line_error(res, "duplicate ids", "--id-prefix source")
    res = cli("prepare", tmp_path / "dump1.jsonl", tmp_path / "dump2.jsonl.gz", "-o", tmp_path / "out", "--id-prefix", "source")
    assert res.exit_code == 0, res.output
    assert read_rows(tmp_path / "out").column("id").to_pylist() == ["dump1:0", "dump1:1", "dump1:2", "dump2:0", "dump2:1"]


def test_id_prefix_source_names_directories_by_their_name(cli, tmp_path):
    for name in ("a", "b"):  # two delt datasets whose shards and ids have the same names
        (tmp_path / f"{name}.jsonl").write_bytes(jsonl_bytes([{"id": "d0", "text": name}]))
        assert cli("prepare", tmp_path / f"{name}.jsonl", "-o", tmp_path / "sets" / name).exit_code == 0
        (tmp_path / "raw" / name).mkdir(parents=True)
        (tmp_path / "raw" / name / "part.jsonl").write_bytes(jsonl_bytes([{"text": name}]))  # generated ids collide too
    res = cli("prepare", tmp_path / "sets" / "a", tmp_path / "sets" / "b", "-o", tmp_path / "o1", "--id-prefix", "source")
    assert res.exit_code == 0, res.output
    assert read_rows(tmp_path / "o1").column("id").to_pylist() == ["a:d0", "b:d0"]
    res = cli("prepare", tmp_path / "raw" / "a", tmp_path / "raw" / "b", "-o", tmp_path / "o2", "--id-prefix", "source")
    assert res.exit_code == 0, res.output
    assert read_rows(tmp_path / "o2").column("id").to_pylist() == ["a:part.jsonl:0", "b:part.jsonl:0"]
    res = cli("prepare", tmp_path / "raw" / "a" / "part.jsonl", tmp_path / "raw" / "b" / "part.jsonl", "-o", tmp_path / "o3", "--id-prefix", "source")
    assert res.exit_code == 2 and "same name 'part'" in res.stderr and not (tmp_path / "o3").exists()


# ------------------------------------------------- 8. source columns mapped once


def test_csv_columns_are_mapped_to_id_and_text(cli, tmp_path):
    with open(tmp_path / "news.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["url", "body", "score"])
        w.writerows([["u1", "first story", 1], ["u2", "second story", 2]])
    res = cli("prepare", tmp_path / "news.csv", "--text-column", "body", "--id-column", "url", "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "out")
    assert rows.column_names == ["id", "text", "score"]
    assert rows.column("id").to_pylist() == ["u1", "u2"] and rows.column("text").to_pylist() == ["first story", "second story"]
    assert read_manifest(tmp_path / "out")["checks"]["unique_ids"] == "id"
    res = cli("stats", tmp_path / "out")  # later commands need no --text-column / --id-column
    assert res.exit_code == 0 and "text chars" in res.stderr, res.output


def test_a_mapped_column_clashing_with_an_existing_one_is_refused(cli, tmp_path):
    (tmp_path / "x.jsonl").write_bytes(jsonl_bytes([{"body": "b", "text": "t"}]))
    one_line_error(cli("prepare", tmp_path / "x.jsonl", "--text-column", "body", "-o", tmp_path / "out"), "x.jsonl", "'body'", "'text'")
    (tmp_path / "y.jsonl").write_bytes(jsonl_bytes([{"url": "u", "id": 1, "text": "t"}]))
    one_line_error(cli("prepare", tmp_path / "y.jsonl", "--id-column", "url", "-o", tmp_path / "out"), "y.jsonl", "'url'", "'id'")
