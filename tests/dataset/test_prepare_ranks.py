"""`delt prepare --rank R --world-size W` + `delt finish` (issue 15 §2): independent processes each
convert their sources; the result has exactly the rows, ids and columns of one `delt prepare`, and
the same bytes for any number of ranks."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import delt, read_rows, tree_digest
from delt_cli.dataset import read_manifest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sources(tmp_path) -> Path:
    """Mixed sources in one folder: JSONL whose 200th line adds a column (the deciding source must
    widen), .jsonl.gz, an empty file, a later source with a column of its own (dropped), CSV, text
    paragraphs and Parquet with an int column read as the first source's float."""
    src = tmp_path / "src"
    src.mkdir()
    words = Path(pq.__file__).read_text().split()  # an installed module's text (license, prose, code), not a word list of ours
    def doc(i: int) -> str:
        return " ".join(words[(i * 7) % (len(words) - 40): (i * 7) % (len(words) - 40) + 5 + i % 30]) if i % 11 else "   "
    with open(src / "a.jsonl", "w") as fh:
        for i in range(260):
            rec = {"text": doc(i), "score": i / 2}
            if i == 200:
                rec["url"] = "https://example.org/a"
            fh.write(json.dumps(rec) + "\n")
    with gzip.open(src / "b.jsonl.gz", "wt") as fh:
        for i in range(130):
            fh.write(json.dumps({"text": doc(i + 1000), "score": i, "lang": "en"}) + "\n")
    (src / "c.jsonl").write_text("")
    with open(src / "d.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "score"])
        writer.writerows([doc(i + 2000), i] for i in range(90))
    (src / "e.txt").write_text("\n\n".join(doc(i + 3000) for i in range(1, 40) if doc(i + 3000).strip()))
    pq.write_table(pa.table({"text": [doc(i + 4000) for i in range(1, 120)], "score": list(range(1, 120))}), src / "f.parquet")
    return src


def _shards(directory: Path) -> dict[str, str]:
    return {k: v for k, v in tree_digest(directory).items() if k.endswith(".parquet")}


def _delt(*args, env=None, ok=True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "delt_cli", *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def test_three_rank_processes_and_finish_equal_one_rank_and_one_process(sources, tmp_path):
    opts = ["--shard-rows", "50", "--paragraphs"]
    plain = tmp_path / "plain"
    delt("prepare", sources, "-o", plain, *opts)
    three, one = tmp_path / "three", tmp_path / "one"
    for r in range(3):
        res = _delt("prepare", sources, "-o", three, *opts, "--rank", r, "--world-size", 3)
        assert res.stdout == ""  # a rank's part is not an output yet: nothing to pipe
    refused = _delt("stats", three, ok=False)  # readers refuse it until finish
    assert refused.returncode == 1 and "delt finish" in refused.stderr, refused.stderr
    assert _delt("finish", three).stdout.strip() == str(three)
    delt("prepare", sources, "-o", one, *opts, "--rank", 0, "--world-size", 1)
    delt("finish", one)

    assert _shards(three) == _shards(one)  # every shard byte for byte, whatever W (manifests differ in ranks and times)
    names = sorted(p.name for p in three.glob("*.parquet"))
    assert names[0] == "part-00000-00000.parquet" and "part-00002-00000.parquet" in names  # the empty source: one empty shard
    assert pq.read_metadata(three / "part-00002-00000.parquet").num_rows == 0
    a, b = read_rows(plain), read_rows(three)
    assert a.column_names == b.column_names == ["id", "text", "score", "url"]  # widened; 'lang' dropped as in one process
    assert a.schema.field("score").type == pa.float64()
    assert a.equals(b)  # the rows, ids and values of one process, in its order
    m = read_manifest(three)
    assert m["prepare"]["rows_written"] == a.num_rows == read_manifest(plain)["prepare"]["rows_written"]
    assert m["prepare"]["empty_dropped"] == read_manifest(plain)["prepare"]["empty_dropped"] > 0
    assert m["checks"]["unique_ids"] == "id" and m["processes"] == 3
    assert not list(three.glob(".delt-rank-*"))


def test_slurm_array_defaults_and_rerun(sources, tmp_path):
    out = tmp_path / "out"
    for task in (5, 6):  # an array --array=5-6: ranks 0 and 1 of 2
        _delt("prepare", sources, "-o", out, "--shard-rows", "40",
              env={"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "5"})
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    again = _delt("prepare", sources, "-o", out, "--shard-rows", "40", "--rank", 1, "--world-size", 2)  # a requeued task
    assert "already finished" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == before
    (out / ".delt-rank-00001-of-00002.json").unlink()  # killed before its record ...
    (out / "part-00003-00000.parquet").unlink()  # ... and before its last shard
    _delt("prepare", sources, "-o", out, "--shard-rows", "40", "--rank", 1, "--world-size", 2)
    delt("finish", out)
    ref = tmp_path / "ref"
    delt("prepare", sources, "-o", ref, "--shard-rows", "40", "--rank", 0, "--world-size", 1)
    delt("finish", ref)
    assert _shards(out) == _shards(ref)


def test_finish_refuses_missing_ranks_and_shards(sources, tmp_path, cli):
    out = tmp_path / "out"
    delt("prepare", sources, "-o", out, "--rank", 0, "--world-size", 2)
    res = cli("finish", out)
    assert res.exit_code == 1 and "rank(s) 1 of 2 have not finished" in res.output
    assert not (out / "manifest.json").exists()
    delt("prepare", sources, "-o", out, "--rank", 1, "--world-size", 2)
    (out / "part-00003-00000.parquet").unlink()
    res = cli("finish", out)
    assert res.exit_code == 1 and "part-00003-00000.parquet" in res.output and "missing" in res.output
    assert not (out / "manifest.json").exists()


def test_finish_checks_ids_across_ranks(tmp_path, cli):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b"):  # the same ids in two sources, which two ranks convert
        (src / f"{name}.jsonl").write_text("".join(json.dumps({"id": f"u{i}", "text": f"{name} {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "out"
    for r in range(2):
        delt("prepare", src, "-o", out, "--rank", r, "--world-size", 2)
    res = cli("finish", out)
    assert res.exit_code == 1 and "duplicate ids" in res.output and "--id-prefix source" in res.output
    assert not (out / "manifest.json").exists()


def test_bad_rank_and_other_runs(sources, tmp_path, cli):
    out = tmp_path / "out"
    res = cli("prepare", sources, "-o", out, "--rank", 3, "--world-size", 3)
    assert res.exit_code == 2 and "--rank 3" in res.output and not out.exists()
    res = cli("prepare", sources, "-o", "s3://bucket/raw", "--rank", 0, "--world-size", 3)
    assert res.exit_code == 2 and "need an output on a shared filesystem" in res.output and not Path("s3:").exists()
    delt("prepare", sources, "-o", out, "--rank", 0, "--world-size", 2, "--shard-rows", "40")
    res = cli("prepare", sources, "-o", out, "--rank", 1, "--world-size", 2, "--shard-rows", "30")  # another run's options
    assert res.exit_code == 2 and "holds files of another run" in res.output
    assert sorted(p.name for p in out.glob(".delt-rank-*")) == [".delt-rank-00000-of-00002.json"]
    delt("prepare", sources, "-o", out, "--rank", 1, "--world-size", 2, "--shard-rows", "30", "--overwrite")  # replaces only its own part
    res = cli("finish", out)
    assert res.exit_code == 1 and "rank records of two different runs" in res.output
    assert not (out / "manifest.json").exists()
