"""Datasets in S3-compatible object storage, end to end against a local S3 server (moto's server
mode on 127.0.0.1, started here; never a real bucket): inputs and outputs as s3:// URIs, the
dataset contract where the store allows it (shards whole, manifest last, incomplete outputs
refused), resume from another machine, and one-line errors."""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import WORDS

moto_server = pytest.importorskip("moto.server", reason="moto[server] (dev extra) runs the local S3 server")

import pyarrow.fs as pafs  # noqa: E402

from delt_cli.dataset import open_dataset, remote  # noqa: E402


BUCKETS = itertools.count()


@pytest.fixture(scope="module")
def endpoint():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(endpoint, monkeypatch, tmp_path):
    """A fresh bucket on the local server; the AWS environment pointing at it; a local staging root."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("DELT_S3_STAGING", str(tmp_path / "staging"))
    remote._filesystem.cache_clear()
    fs = pafs.S3FileSystem(endpoint_override=endpoint, access_key="testing", secret_key="testing", region="us-east-1", allow_bucket_creation=True)
    bucket = f"test-{next(BUCKETS)}"
    fs.create_dir(bucket)
    yield fs, bucket
    remote._filesystem.cache_clear()


def put(fs, local: Path, key: str) -> None:
    pafs.copy_files(str(local), key, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def keys(fs, prefix: str) -> list[str]:
    return sorted(i.path[len(prefix) + 1 :] for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True)) if i.type == pafs.FileType.File)


def read_remote(fs, prefix: str) -> pa.Table:
    return pa.concat_tables(pq.read_table(f"{prefix}/{k}", filesystem=fs) for k in keys(fs, prefix) if k.endswith(".parquet"))


def corpus(path: Path, n: int = 60) -> Path:
    with gzip.open(path, "wt") as fh:
        for i in range(n):
            fh.write(json.dumps({"text": " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + i % 11)), "domain": ["a", "b"][i % 2]}) + "\n")
    return path


def test_pipeline_end_to_end_matches_local(cli, tmp_path, s3):
    """prepare -> score -> select -> order -> stats with every output in the bucket, against the
    same pipeline on local disk: the same rows in the same order, the URI on stdout."""
    fs, bucket = s3
    src = corpus(tmp_path / "docs.jsonl.gz")
    base = f"s3://{bucket}"
    steps = [
        ("prepare", str(src), "-o", "{out}/prep", "--shard-rows", "25"),
        ("score", "{out}/prep", "-o", "{out}/scored", "--method", "length"),
        ("select", "{out}/scored", "-o", "{out}/sel", "--by", "n_chars", "--top-r", "0.5"),
        ("order", "{out}/sel", "-o", "{out}/ord", "--method", "folding", "--by", "n_chars", "--folds", "2"),
    ]
    for out in (base, str(tmp_path / "local")):
        for step in steps:
            res = cli(*[a.format(out=out) for a in step])
            assert res.exit_code == 0, (step, res.output)
            assert res.stdout.strip() == step[step.index("-o") + 1].format(out=out)
    for name in ("prep", "scored", "sel", "ord"):
        prefix = f"{bucket}/{name}"
        assert "manifest.json" in keys(fs, prefix)
        local = open_dataset(tmp_path / "local" / name)
        there = open_dataset(f"{base}/{name}")
        assert [s.name for s in there.shards] == [s.name for s in local.shards]
        for column in ("id", "text"):
            assert there.read_column(column).to_pylist() == local.read_column(column).to_pylist(), (name, column)
    assert read_remote(fs, f"{bucket}/ord").column("n_chars").to_pylist() == open_dataset(tmp_path / "local" / "ord").read_column("n_chars").to_pylist()
    res = cli("stats", f"{base}/ord")
    assert res.exit_code == 0 and res.stdout.strip() == f"{base}/ord" and "n_chars" in res.stderr
    # the outputs' manifests and shard metadata name the bucket, not the local mirror
    manifest = json.loads(fs.open_input_stream(f"{bucket}/ord/manifest.json").read())
    assert manifest["inputs"]["spec"] == f"{base}/sel"
    # the local mirrors are emptied once published
    assert not any(p.is_file() for p in (tmp_path / "staging").rglob("*") if not p.name.startswith("."))


def test_score_reads_foreign_inputs_in_the_bucket(cli, tmp_path, s3):
    """A FineWeb-style Parquet prefix (no ids), a JSONL.zst object and a save_to_disk directory, read
    where they are; derived ids are materialized by select."""
    fs, bucket = s3
    rows = [{"text": f"document {i} " + "word " * (i % 5), "n": i} for i in range(30)]
    local = tmp_path / "fw"
    local.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:15]), local / "000_00000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[15:]), local / "000_00001.parquet")
    put(fs, local, f"{bucket}/fineweb")
    with pa.output_stream(str(tmp_path / "x.jsonl.zst"), compression="zstd") as out:
        out.write("".join(json.dumps(r) + "\n" for r in rows).encode())
    put(fs, tmp_path / "x.jsonl.zst", f"{bucket}/raw/x.jsonl.zst")
    for spec, out in ((f"s3://{bucket}/fineweb", "s1"), (f"s3://{bucket}/raw/x.jsonl.zst", "s2"), (f"s3://{bucket}/raw/*.zst", "s3")):
        res = cli("score", spec, "-o", f"s3://{bucket}/{out}", "--method", "length")
        assert res.exit_code == 0, (spec, res.output)
        assert read_remote(fs, f"{bucket}/{out}").column("text").to_pylist() == [r["text"] for r in rows]
    assert keys(fs, f"{bucket}/s2") == ["manifest.json", "x.parquet"]
    res = cli("select", f"s3://{bucket}/fineweb", "-o", f"s3://{bucket}/sel", "--by", "n", "--top-k", "3")
    assert res.exit_code == 0, res.output
    assert read_remote(fs, f"{bucket}/sel").column("id").to_pylist() == ["000_00001.parquet:12", "000_00001.parquet:13", "000_00001.parquet:14"]
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"), num_shards=2)
    put(fs, tmp_path / "hf", f"{bucket}/hf")
    res = cli("score", f"s3://{bucket}/hf", "-o", f"s3://{bucket}/s4", "--method", "length")
    assert res.exit_code == 0, res.output
    assert keys(fs, f"{bucket}/s4") == ["data-00000-of-00002.parquet", "data-00001-of-00002.parquet", "manifest.json"]


def test_readers_refuse_an_incomplete_output_in_the_bucket(cli, tmp_path, s3):
    fs, bucket = s3
    assert cli("prepare", corpus(tmp_path / "d.jsonl.gz"), "-o", f"s3://{bucket}/prep", "--shard-rows", "20").exit_code == 0
    fs.delete_file(f"{bucket}/prep/manifest.json")
    res = cli("stats", f"s3://{bucket}/prep")
    assert res.exit_code == 1 and res.stderr.strip().splitlines() == [
        f"error: s3://{bucket}/prep: an unfinished delt output (no manifest.json; 3 shard(s) written so far); "
        "finish it by rerunning the delt command that wrote it with --resume (or set DELT_ALLOW_INCOMPLETE=1 to read it anyway)"
    ]
    assert cli("stats", f"s3://{bucket}/prep", "--allow-incomplete").exit_code == 0
    # a manifest that does not list exactly the shards there
    assert cli("prepare", corpus(tmp_path / "d.jsonl.gz"), "-o", f"s3://{bucket}/prep", "--shard-rows", "20", "--overwrite").exit_code == 0
    fs.copy_file(f"{bucket}/prep/part-00000.parquet", f"{bucket}/prep/part-00009.parquet")
    res = cli("select", f"s3://{bucket}/prep", "-o", f"s3://{bucket}/sel", "--by", "nope", "--top-k", "1")
    assert res.exit_code == 1 and "1 shard(s) not in the manifest (e.g. part-00009.parquet)" in res.stderr
    assert keys(fs, f"{bucket}/sel") == []


def test_a_killed_score_resumes_on_another_machine(cli, tmp_path, s3):
    """Each shard is uploaded whole as it is finished and the manifest last: after a run that stopped
    with one shard and the manifest missing in the bucket, and no local mirror (another machine),
    --resume keeps the finished shards, scores the missing one and writes the manifest."""
    fs, bucket = s3
    assert cli("prepare", corpus(tmp_path / "d.jsonl.gz"), "-o", f"s3://{bucket}/prep", "--shard-rows", "20").exit_code == 0
    out = f"s3://{bucket}/scored"
    assert cli("score", f"s3://{bucket}/prep", "-o", out, "--method", "length").exit_code == 0
    done = read_remote(fs, f"{bucket}/scored")
    fs.delete_file(f"{bucket}/scored/manifest.json")
    fs.delete_file(f"{bucket}/scored/part-00002.parquet")
    shutil.rmtree(tmp_path / "staging")
    assert cli("stats", out).exit_code == 1  # refused while unfinished
    res = cli("score", f"s3://{bucket}/prep", "-o", out, "--method", "length")
    assert res.exit_code == 2 and "exists and is not empty; pass --resume" in res.stderr
    res = cli("score", f"s3://{bucket}/prep", "-o", out, "--method", "length", "--resume")
    assert res.exit_code == 0, res.output
    assert res.stderr.count("already finished, skipped (--resume)") == 2
    assert keys(fs, f"{bucket}/scored") == ["manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert read_remote(fs, f"{bucket}/scored").equals(done)


def test_overwrite_replaces_and_removes_stale_shards(cli, tmp_path, s3):
    fs, bucket = s3
    src = corpus(tmp_path / "d.jsonl.gz")
    assert cli("prepare", src, "-o", f"s3://{bucket}/prep", "--shard-rows", "10").exit_code == 0
    assert len(keys(fs, f"{bucket}/prep")) == 7
    res = cli("prepare", src, "-o", f"s3://{bucket}/prep", "--shard-rows", "30")
    assert res.exit_code == 2 and "exists and is not empty; pass --overwrite" in res.stderr
    assert cli("prepare", src, "-o", f"s3://{bucket}/prep", "--shard-rows", "30", "--overwrite").exit_code == 0
    assert keys(fs, f"{bucket}/prep") == ["manifest.json", "part-00000.parquet", "part-00001.parquet"]
    assert open_dataset(f"s3://{bucket}/prep").num_rows == 60
    # --overwrite never deletes what delt did not write
    fs.open_output_stream(f"{bucket}/prep/notes.txt").close()
    res = cli("prepare", src, "-o", f"s3://{bucket}/prep", "--overwrite")
    assert res.exit_code == 2 and "holds 1 object(s) delt did not write (e.g. notes.txt)" in res.stderr
    assert "notes.txt" in keys(fs, f"{bucket}/prep") and len(keys(fs, f"{bucket}/prep")) == 4


@pytest.mark.parametrize(
    "args, message",
    ids=["no-such-prefix", "glob-nothing", "output-inside-input", "bucket-only", "independent-ranks"],
    argvalues=
    [
        (["stats", "s3://{b}/nothing"], "s3://{b}/nothing: no such object or prefix"),
        (["stats", "s3://{b}/prep/*.nothing"], "s3://{b}/prep/*.nothing: glob matched no objects"),
        (["order", "s3://{b}/prep", "-o", "s3://{b}/prep/sub", "--method", "shuffle"], "--output s3://{b}/prep/sub: must not be the input s3://{b}/prep"),
        (["order", "s3://{b}/prep", "-o", "s3://{b}", "--method", "shuffle"], "--output s3://{b}: name a prefix inside the bucket"),
        (
            ["score", "s3://{b}/prep", "-o", "s3://{b}/scored", "--method", "length", "--rank", "0", "--world-size", "2"],
            "--output s3://{b}/scored: independent ranks (--rank/--world-size) need an output on a shared filesystem",
        ),
    ],
)
def test_bad_locations_are_one_line(cli, tmp_path, s3, args, message):
    fs, bucket = s3
    assert cli("prepare", corpus(tmp_path / "d.jsonl.gz"), "-o", f"s3://{bucket}/prep").exit_code == 0
    before = keys(fs, bucket)
    res = cli(*[a.format(b=bucket) for a in args])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code in (1, 2) and len(lines) == 1 and message.format(b=bucket) in lines[0], res.stderr
    assert keys(fs, bucket) == before


def test_prepare_reads_sources_in_the_bucket(cli, tmp_path, s3):
    """`delt prepare s3://bucket/raw` (a prefix of JSONL.gz, CSV, text and Parquet objects) and one
    object give what the same files on local disk give: rows, ids (labels relative to the prefix),
    columns; a prefix with nothing there and a save_to_disk folder are one line each."""
    fs, bucket = s3
    local = tmp_path / "raw"
    (local / "sub").mkdir(parents=True)
    corpus(local / "a.jsonl.gz", 40)
    (local / "sub" / "b.csv").write_text("text,domain\n" + "".join(f"{' '.join(WORDS[i:i + 6])},c\n" for i in range(12)))
    (local / "sub" / "c.txt").write_text("\n\n".join(" ".join(WORDS[i:i + 5]) for i in range(8)))
    pq.write_table(pa.table({"text": [" ".join(WORDS[i:i + 4]) for i in range(9)], "domain": ["d"] * 9}), local / "d.parquet")
    for p in sorted(local.rglob("*")):
        if p.is_file():
            put(fs, p, f"{bucket}/raw/{p.relative_to(local)}")
    args = ["--shard-rows", "20", "--paragraphs"]
    assert cli("prepare", local, "-o", tmp_path / "from-disk", *args).exit_code == 0
    res = cli("prepare", f"s3://{bucket}/raw", "-o", tmp_path / "from-bucket", *args)
    assert res.exit_code == 0, res.output
    a, b = open_dataset(tmp_path / "from-disk"), open_dataset(tmp_path / "from-bucket")
    for column in ("id", "text", "domain"):
        assert b.read_column(column).to_pylist() == a.read_column(column).to_pylist()
    assert "sub/b.csv:0" in b.read_column("id").to_pylist()
    sources = [s["path"] for s in json.loads((tmp_path / "from-bucket" / "manifest.json").read_text())["inputs"]["shards"]]
    assert sources[0] == f"s3://{bucket}/raw/a.jsonl.gz"
    for r in range(2):  # independent ranks read the bucket too
        assert cli("prepare", f"s3://{bucket}/raw", "-o", tmp_path / "ranks", *args, "--rank", r, "--world-size", 2).exit_code == 0
    assert cli("finish", tmp_path / "ranks").exit_code == 0
    assert open_dataset(tmp_path / "ranks").read_column("id").to_pylist() == a.read_column("id").to_pylist()
    one = cli("prepare", f"s3://{bucket}/raw/d.parquet", "-o", tmp_path / "one")
    assert one.exit_code == 0 and open_dataset(tmp_path / "one").read_column("id").to_pylist() == [f"d.parquet:{i}" for i in range(9)]
    missing = cli("prepare", f"s3://{bucket}/nothing", "-o", tmp_path / "none")
    assert missing.exit_code == 1 and "no such object or prefix" in missing.output and not (tmp_path / "none").exists()
    fs.open_output_stream(f"{bucket}/hf/state.json").close()
    fs.open_output_stream(f"{bucket}/hf/data-00000-of-00001.arrow").close()
    hf = cli("prepare", f"s3://{bucket}/hf", "-o", tmp_path / "hf")
    assert hf.exit_code == 1 and "save_to_disk" in hf.output and "Traceback" not in hf.output
