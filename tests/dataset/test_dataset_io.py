"""The dataset contract: opening inputs, schema checks, fingerprints, ids, atomic staged output."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_dataset
from delt_cli.dataset import RunInfo, StagedOutput, open_dataset, read_manifest, shard_name, write_shard
from delt_cli.dataset.permute import write_filtered, write_permuted
from delt_cli.infra.errors import DeltError


def test_open_directory_glob_file_and_stdin(tmp_path):
    d = write_dataset(tmp_path / "d", 30, shards=3)
    by_dir = open_dataset(d)
    assert by_dir.num_rows == 30 and len(by_dir.shards) == 3
    assert [s.name for s in by_dir.shards] == sorted(s.name for s in by_dir.shards)
    by_glob = open_dataset(str(d / "shard-00[01].parquet"))
    assert len(by_glob.shards) == 2
    one = open_dataset(d / "shard-001.parquet")
    assert one.num_rows == 10
    via_stdin = open_dataset("-", stdin=io.StringIO(f"{d}\n"))
    assert via_stdin.spec == str(d) and via_stdin.num_rows == 30


def test_dataset_order_is_name_order_then_rows(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    pq.write_table(pa.table({"id": ["b1", "b2"], "text": ["x", "y"]}), d / "b.parquet")
    pq.write_table(pa.table({"id": ["a1"], "text": ["z"]}), d / "a.parquet")
    ds = open_dataset(d)
    assert ds.read_column("id").to_pylist() == ["a1", "b1", "b2"]
    assert ds.offsets.tolist() == [0, 1, 3]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "no such file or directory"),
        (lambda p: str(p / "*.nothing"), "glob matched no files"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "directory has no \\*.parquet shards"),
    ],
)
def test_bad_specs(tmp_path, make, message):
    with pytest.raises(DeltError, match=message):
        open_dataset(make(tmp_path))


def test_corrupt_and_truncated_parquet(tmp_path):
    d = write_dataset(tmp_path / "d", 30, shards=2)
    shard = d / "shard-001.parquet"
    shard.write_bytes(shard.read_bytes()[:-20])  # truncated footer
    with pytest.raises(DeltError, match="shard-001.parquet: corrupt or truncated"):
        open_dataset(d)
    shard.write_bytes(b"not parquet at all, but long enough")
    with pytest.raises(DeltError, match="shard-001.parquet"):
        open_dataset(d)


def test_schema_mismatch_names_shard_and_column(tmp_path):
    d = write_dataset(tmp_path / "d", 20, shards=2)
    t = pq.read_table(d / "shard-001.parquet")
    t = t.set_column(t.column_names.index("score"), "score", t.column("score").cast(pa.string()))
    pq.write_table(t, d / "shard-001.parquet")
    with pytest.raises(DeltError, match=r"shard-001.parquet: schema differs from shard-000.parquet: column 'score' is string"):
        open_dataset(d)


def test_fingerprint_changes_with_content(tmp_path):
    a = open_dataset(write_dataset(tmp_path / "a", 20, seed=1))
    b = open_dataset(write_dataset(tmp_path / "b", 20, seed=2))
    a2 = open_dataset(tmp_path / "a")
    assert a.fingerprint == a2.fingerprint
    assert a.fingerprint != b.fingerprint


def test_missing_and_non_numeric_columns(tmp_path):
    ds = open_dataset(write_dataset(tmp_path / "d", 10))
    with pytest.raises(DeltError, match=r"--by 'nope': no such column .*columns are: id, text, score, domain, n"):
        ds.require_numeric("nope")
    with pytest.raises(DeltError, match="--by 'text' .* has type string, not a number"):
        ds.require_numeric("text")


def test_null_and_nan_counts(tmp_path):
    score = np.arange(10, dtype=np.float64)
    score[[2, 5]] = np.nan
    d = write_dataset(tmp_path / "d", 10, score=score, extra={"maybe": pa.array([1, None, 3, None, None, 6, 7, 8, 9, 10])})
    ds = open_dataset(d)
    with pytest.raises(DeltError, match="2 null or NaN"):
        ds.read_numeric("score")
    with pytest.raises(DeltError, match="3 null or NaN"):
        ds.read_numeric("maybe")
    values, valid = ds.read_numeric("score", drop_null=True)
    assert valid.sum() == 8 and not valid[2] and not valid[5]


def test_duplicate_and_null_ids(tmp_path):
    d = write_dataset(tmp_path / "d", 10, shards=2)
    t = pq.read_table(d / "shard-001.parquet")
    ids = t.column("id").to_pylist()
    ids[0] = "doc-000001"  # also in shard-000
    pq.write_table(t.set_column(0, "id", pa.array(ids)), d / "shard-001.parquet")
    with pytest.raises(DeltError, match=r"1 duplicated value\(s\), e.g. 'doc-000001' \(in shard-000.parquet, shard-001.parquet\)"):
        open_dataset(d).check_ids()
    ids[0] = None
    pq.write_table(t.set_column(0, "id", pa.array(ids)), d / "shard-001.parquet")
    with pytest.raises(DeltError, match="null value"):
        open_dataset(d).check_ids()


def test_id_hash_collisions_are_confirmed_on_the_values(tmp_path, monkeypatch):
    """Equal hashes only make rows suspect: with every hash colliding (a stand-in hash), distinct
    ids pass and a real duplicate is still named with both of its shards."""
    from delt_cli.dataset import reader

    monkeypatch.setattr(reader, "hash64", lambda ids: np.full(len(ids), 7, dtype=np.uint64))
    d = write_dataset(tmp_path / "d", 10, shards=3)
    open_dataset(d).check_ids()
    last = sorted(d.glob("*.parquet"))[-1]
    t = pq.read_table(last)
    ids = t.column("id").to_pylist()
    ids[-1] = "doc-000000"
    pq.write_table(t.set_column(0, "id", pa.array(ids)), last)
    with pytest.raises(DeltError, match=rf"1 duplicated value\(s\), e.g. 'doc-000000' \(in shard-000.parquet, {last.name}\)"):
        open_dataset(d).check_ids()


def test_shard_names_sort_numerically():
    names = [shard_name(i, 120000) for i in (0, 9, 10, 99999, 100000, 119999)]
    assert names == sorted(names)


def test_write_shard_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "x.parquet"
    write_shard(pa.table({"a": [1]}), path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(DeltError, match="x.parquet: disk full"):
        write_shard(pa.table({"a": [2]}), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_staged_output_leaves_nothing_on_failure(tmp_path):
    ds = open_dataset(write_dataset(tmp_path / "in", 10))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with StagedOutput(out, [ds], run=RunInfo("t")) as stage:
            write_shard(pa.table({"a": [1]}), stage.path / "part-00000.parquet")
            raise RuntimeError("crash before finish")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_staged_output_replaces_old_output_only_on_success(tmp_path):
    ds = open_dataset(write_dataset(tmp_path / "in", 10))
    out = tmp_path / "out"
    for value in (1, 2):
        with StagedOutput(out, [ds], run=RunInfo("t"), overwrite=True) as stage:
            write_shard(pa.table({"a": [value]}), stage.path / "part-00000.parquet")
            stage.finish()
    assert pq.read_table(out / "part-00000.parquet").column("a").to_pylist() == [2]
    assert read_manifest(out)["outputs"]["rows"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_permutation_with_many_small_output_shards(tmp_path):
    d = write_dataset(tmp_path / "in", 257, shards=4)
    ds = open_dataset(d)
    order = np.random.default_rng(0).permutation(257)[:200]
    outdir = tmp_path / "out"
    outdir.mkdir()
    paths = write_permuted(ds, order, outdir, {}, shard_rows=17)
    assert len(paths) == 12 and [p.name for p in paths] == sorted(p.name for p in paths)
    got = pa.concat_tables([pq.read_table(p) for p in paths]).column("n").to_pylist()
    assert got == order.tolist()
    assert not (outdir / ".buckets").exists()


def test_filter_keeps_order_and_empty_result_has_schema(tmp_path):
    ds = open_dataset(write_dataset(tmp_path / "in", 30, shards=3))
    out = tmp_path / "o1"
    out.mkdir()
    keep = np.zeros(30, dtype=bool)
    keep[[3, 4, 25]] = True
    paths = write_filtered(ds, keep, out, {})
    assert [p.name for p in paths] == ["shard-000.parquet", "shard-002.parquet"]
    assert pa.concat_tables([pq.read_table(p) for p in paths]).column("n").to_pylist() == [3, 4, 25]
    out2 = tmp_path / "o2"
    out2.mkdir()
    (empty,) = write_filtered(ds, np.zeros(30, dtype=bool), out2, {})
    assert pq.read_table(empty).num_rows == 0
    assert pq.read_schema(empty).names == ds.columns


def test_documents_get_neither_dictionary_nor_statistics_labels_get_both_scores_no_dictionary(tmp_path):
    n = 3000
    table = pa.table(
        {
            "id": [f"d{i}" for i in range(n)],
            "text": [f"document {i} " + "word " * 30 for i in range(n)],
            "domain": ["news" if i % 3 else "wiki" for i in range(n)],
            "score": np.random.default_rng(0).random(n),
            "n_tokens": np.arange(n, dtype=np.int64) % 40,
        }
    )
    path = tmp_path / "s.parquet"
    write_shard(table, path)
    meta = pq.ParquetFile(path).metadata.row_group(0)
    columns = {meta.column(j).path_in_schema: meta.column(j) for j in range(meta.num_columns)}
    assert not columns["text"].is_stats_set and columns["id"].is_stats_set and columns["score"].is_stats_set
    assert "RLE_DICTIONARY" in columns["domain"].encodings and "RLE_DICTIONARY" not in columns["text"].encodings
    # distinct scores: no dictionary (a page of values and one of indices is larger than the values alone);
    # a count with few values keeps it
    assert "RLE_DICTIONARY" not in columns["score"].encodings and "RLE_DICTIONARY" in columns["n_tokens"].encodings
    assert pq.read_table(path).equals(table)


@pytest.mark.parametrize("codec, expected", [("zstd", "ZSTD"), ("zstd:3", "ZSTD"), ("lz4", "LZ4"), ("snappy", "SNAPPY"), ("none", "UNCOMPRESSED")])
def test_codec_from_environment(tmp_path, monkeypatch, codec, expected):
    monkeypatch.setenv("DELT_PARQUET_COMPRESSION", codec)
    table = pa.table({"id": ["a", "b"], "text": ["x y", "z"]})
    write_shard(table, tmp_path / "s.parquet")
    assert pq.ParquetFile(tmp_path / "s.parquet").metadata.row_group(0).column(1).compression == expected
    assert pq.read_table(tmp_path / "s.parquet").equals(table)


def test_checked_ids_travel_in_the_manifest_and_are_checked_again_when_shards_change(tmp_path):
    from delt_cli.ordering import order_dataset
    from delt_cli.scoring.registry import build_scorer
    from delt_cli.scoring.runner import score_dataset
    from delt_cli.selection import Rule, select_dataset

    raw = write_dataset(tmp_path / "raw", 40, shards=2)
    assert not open_dataset(raw).ids_verified()  # written by hand: no manifest
    sel = tmp_path / "sel"
    select_dataset(raw, sel, by="score", rule=Rule("top_r", 0.75))
    assert read_manifest(sel)["checks"] == {"unique_ids": "id"}
    assert open_dataset(sel).ids_verified()
    assert not open_dataset(sel, id_column="n").ids_verified()  # another id column: not the one checked
    assert not open_dataset(str(sel / "shard-000.parquet")).ids_verified()  # a subset of the shards
    manifest = (sel / "manifest.json").read_text()
    for broken in ('{"checks": "id"}', '{"checks": {"unique_ids": "id"}, "outputs": {"shards": [1, 2]}}', "[]"):
        (sel / "manifest.json").write_text(broken)  # edited by hand or written by another tool: check again
        with pytest.raises(DeltError, match="does not list the output shards|an incomplete delt output"):
            open_dataset(sel)  # and plain readers refuse it
        assert not open_dataset(sel, allow_incomplete=True).ids_verified()
    (sel / "manifest.json").write_text(manifest)
    assert open_dataset(sel).ids_verified()
    # Scoring keeps the rows, so a checked input gives a checked output (and an unchecked one does not).
    score_dataset(sel, tmp_path / "scored", build_scorer("length", {"text_column": "text"}))
    assert open_dataset(tmp_path / "scored").ids_verified()
    score_dataset(raw, tmp_path / "scored-raw", build_scorer("length", {"text_column": "text"}))
    assert not open_dataset(tmp_path / "scored-raw").ids_verified()
    # Rewrite a shard with an id that the other shard has: the record no longer matches, ids are read again.
    shard = sel / "shard-001.parquet"
    t = pq.read_table(shard)
    first = pq.read_table(sel / "shard-000.parquet").column("id")[0].as_py()
    pq.write_table(t.set_column(0, "id", pa.array([first] + t.column("id").to_pylist()[1:])), shard)
    assert not open_dataset(sel).ids_verified()
    with pytest.raises(DeltError, match=f"1 duplicated value\\(s\\), e.g. '{first}'"):
        order_dataset(sel, tmp_path / "ord", method="sort", by="score")
    assert not (tmp_path / "ord").exists()


def test_filter_does_not_read_row_groups_it_drops(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    table = pa.table({"id": [f"doc-{i}" for i in range(3000)], "text": [f"text number {i} " * 20 for i in range(3000)]})
    pq.write_table(table, d / "a.parquet", row_group_size=1000, compression="zstd")
    # Zero the text chunk of row group 1, page headers included (the footer stays intact, so the file still opens).
    chunk = pq.ParquetFile(d / "a.parquet").metadata.row_group(1).column(1)
    data = bytearray((d / "a.parquet").read_bytes())
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data[start : start + chunk.total_compressed_size] = bytes(chunk.total_compressed_size)
    (d / "a.parquet").write_bytes(bytes(data))
    ds = open_dataset(d)
    keep = np.zeros(3000, dtype=bool)
    keep[[5, 2500]] = True
    out = tmp_path / "o"
    out.mkdir()
    (path,) = write_filtered(ds, keep, out, {})
    assert pq.read_table(path).column("id").to_pylist() == ["doc-5", "doc-2500"]
    keep[1500] = True
    (tmp_path / "o2").mkdir()
    with pytest.raises(DeltError, match="a.parquet: cannot read Parquet file"):
        write_filtered(ds, keep, tmp_path / "o2", {})
