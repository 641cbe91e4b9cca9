"""`delt prepare`: sources in, shards out, stable ids, empties dropped and counted."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_rows, tree_digest
from delt_cli.dataset import read_manifest


def test_jsonl_gz_text_csv_parquet_sources(cli, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with gzip.open(src / "a.jsonl.gz", "wt") as fh:
        for i, t in enumerate(["first doc", "", "third doc", "   "]):
            fh.write(json.dumps({"text": t, "score": i}) + "\n")
    (src / "b.txt").write_text("para one\nstill one\n\npara two\n\n\n")
    (src / "c.csv").write_text('text,score\n"csv, with comma",1\n"multi\nline",2\n')
    pq.write_table(pa.table({"text": ["pq doc"], "score": [7]}), src / "d.parquet")
    res = cli("prepare", src, "-o", tmp_path / "out", "--shard-rows", "2", "--paragraphs")
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "out")
    assert rows.column("text").to_pylist() == ["first doc", "third doc", "para one\nstill one", "para two", "csv, with comma", "multi\nline", "pq doc"]
    assert rows.column("id").to_pylist() == ["a.jsonl.gz:0", "a.jsonl.gz:2", "b.txt:0", "b.txt:1", "c.csv:0", "c.csv:1", "d.parquet:0"]
    assert rows.column("score").type == pa.int64()
    assert [p.name for p in sorted((tmp_path / "out").glob("*.parquet"))] == [f"part-0000{i}.parquet" for i in range(4)]
    stats = read_manifest(tmp_path / "out")["prepare"]
    assert stats["empty_dropped"] == 2 and stats["rows_written"] == 7


def test_ids_kept_from_source_and_domain_column(cli, tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text("\n".join(json.dumps({"id": f"u{i}", "text": f"t{i}"}) for i in range(5)) + "\n")
    res = cli("prepare", f, "-o", tmp_path / "o", "--domain", "news")
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "o")
    assert rows.column("id").to_pylist() == [f"u{i}" for i in range(5)]
    assert set(rows.column("domain").to_pylist()) == {"news"}


def test_text_file_one_doc_per_file_and_custom_columns(cli, tmp_path):
    """--text-column/--id-column name the source's columns; the output's are always id and text."""
    d = tmp_path / "plays"
    (d / "sub").mkdir(parents=True)
    (d / "one.md").write_text("To be\n\nor not")
    (d / "sub" / "two.txt").write_text("Exit, pursued")
    res = cli("prepare", d, "-o", tmp_path / "o", "--text-column", "body", "--id-column", "key")
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "o")
    assert rows.column_names == ["id", "text"]
    assert rows.column("id").to_pylist() == ["one.md:0", "sub/two.txt:0"]
    assert rows.column("text").to_pylist() == ["To be\n\nor not", "Exit, pursued"]


def test_prepare_is_deterministic(cli, tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(50)) + "\n")
    for out in ("a", "b"):
        assert cli("prepare", f, "-o", tmp_path / out, "--shard-rows", "7").exit_code == 0
    a, b = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    a.pop("manifest.json"), b.pop("manifest.json")
    assert a == b and len(a) == 8


def test_all_empty_gives_valid_empty_dataset(cli, tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"text": ""}) + "\n")
    assert cli("prepare", f, "-o", tmp_path / "o").exit_code == 0
    rows = read_rows(tmp_path / "o")
    assert rows.num_rows == 0 and "text" in rows.column_names


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda p: None, ["{tmp}/missing.jsonl"], "no such file or directory"),
        (lambda p: (p / "x.docx").write_text("x"), ["{tmp}/x.docx"], "unsupported source type"),
        (lambda p: (p / "x.jsonl").write_text('{"body": "x"}\n'), ["{tmp}/x.jsonl"], "no text column 'text'"),
        (lambda p: (p / "x.jsonl").write_text('{"text": "x"}\n{"text": \n'), ["{tmp}/x.jsonl"], "cannot parse JSON"),
        (lambda p: (p / "x.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n'), ["{tmp}/x.jsonl"], "duplicate ids"),
        (lambda p: (p / "x.txt").write_bytes(b"\xff\xfe bad"), ["{tmp}/x.txt"], "not valid UTF-8"),
    ],
)
def test_prepare_bad_input(cli, tmp_path, setup, args, message):
    setup(tmp_path)
    res = cli("prepare", *[a.format(tmp=tmp_path) for a in args], "-o", tmp_path / "out")
    assert res.exit_code != 0
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_delt_datasets_are_sources_without_their_manifests(cli, tmp_path):
    """Concatenating datasets (e.g. several target splits into one target set) reads the shards only."""
    for name, texts in (("a", ["one", "two"]), ("b", ["three"])):
        f = tmp_path / f"{name}.jsonl"
        f.write_text("\n".join(json.dumps({"id": f"{name}{i}", "text": t}) for i, t in enumerate(texts)) + "\n")
        assert cli("prepare", f, "-o", tmp_path / name).exit_code == 0
    res = cli("prepare", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "both")
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "both")
    assert rows.column("id").to_pylist() == ["a0", "a1", "b0"] and rows.column("text").to_pylist() == ["one", "two", "three"]
    # a manifest.json that is not beside shards is still a JSON source
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "manifest.json").write_text(json.dumps({"text": "a document"}) + "\n")
    res = cli("prepare", tmp_path / "src", "-o", tmp_path / "one")
    assert res.exit_code == 0, res.output
    assert read_rows(tmp_path / "one").column("text").to_pylist() == ["a document"]
