"""A delt dataset is complete, or every reading command refuses it (issue 14 §2).

Complete means: manifest.json lists exactly the shards in the directory. Parquet that delt did
not write (no `delt` key in its metadata) is other tools' data and is read as it is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import tree_digest, write_dataset
from faultkit import delt, error_line, launch, leftovers, shard_digests  # noqa: F401


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> tuple[Path, Path]:
    """8 input shards and their finished `score --method length` output."""
    root = tmp_path_factory.mktemp("incomplete")
    data = write_dataset(root / "data", 800, shards=8)
    out = root / "scored"
    res = delt("score", data, "-o", out, "--method", "length")
    assert res.returncode == 0, res.stderr
    return data, out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _unfinished(scored, tmp_path) -> Path:
    """What a kill -9 of `delt score` leaves after 3 of 8 shards: 3 shards, no manifest."""
    out = _copy(scored[1], tmp_path / "s")
    (out / "manifest.json").unlink()
    for p in sorted(out.glob("*.parquet"))[3:]:
        p.unlink()
    return out


# Every command that reads a dataset, on an unfinished one: {in} is the unfinished output.
READERS = [
    ("stats", ["stats", "{in}"]),
    ("stats-json", ["stats", "{in}", "--json", "{tmp}/stats.json"]),
    ("select", ["select", "{in}", "-o", "{tmp}/out", "--by", "score", "--top-r", "0.5"]),
    ("order", ["order", "{in}", "-o", "{tmp}/out", "--method", "shuffle"]),
    ("score", ["score", "{in}", "-o", "{tmp}/out", "--method", "compression"]),
    ("embed", ["embed", "{in}", "-o", "{tmp}/out", "--model", "{tmp}/no-model"]),
    ("distill", ["distill", "{in}", "-o", "{tmp}/out", "--column", "score"]),
    ("train", ["train", "{in}", "-o", "{tmp}/out", "--model", "llama-tiny", "--tokenizer", "gpt2", "--max-steps", "1"]),
    ("select-stdin", ["select", "-", "-o", "{tmp}/out", "--by", "score", "--top-k", "3"]),
]


@pytest.mark.parametrize("args", [pytest.param(a, id=i) for i, a in READERS])
def test_every_reader_refuses_an_unfinished_output(scored, tmp_path, cli, args):
    """issue 14 §2: after kill -9 during `delt score` (3 of 8 shards, no manifest), `delt stats OUT`
    reported 300 rows and `delt select OUT ...` wrote a "complete" dataset from 3/8 of the data."""
    out = _unfinished(scored, tmp_path)
    before = tree_digest(out)
    argv = [a.format(**{"in": out, "tmp": tmp_path}) for a in args]
    res = cli(*argv, input=f"{out}\n" if "-" in argv else None)
    assert res.exit_code == 1, res.output
    err = res.stderr.strip()
    assert err.splitlines() == [err] and err.startswith("error: ") and "Traceback" not in err, err
    assert f"{out}: an unfinished delt output (no manifest.json; 3 shard(s) written so far)" in err
    assert res.stdout == ""
    assert not (tmp_path / "out").exists() and not (tmp_path / "stats.json").exists()
    assert leftovers(tmp_path / "out") == []
    assert tree_digest(out) == before


@pytest.mark.slow
@pytest.mark.assets
def test_eval_refuses_an_unfinished_heldout_set(scored, tmp_path, cli):
    from trainkit import tiny_model_dir

    out = _unfinished(scored, tmp_path)
    model = tiny_model_dir(tmp_path / "model")
    res = cli("eval", model, "-o", tmp_path / "r.json", "--tasks", "heldout", "--heldout", out)
    assert res.exit_code == 1 and "an unfinished delt output" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        pytest.param(lambda o: sorted(o.glob("*.parquet"))[5].unlink(), "1 listed shard(s) missing (e.g. shard-005.parquet)", id="shard-deleted"),
        pytest.param(lambda o: shutil.copy(o / "shard-000.parquet", o / "shard-008.parquet"), "1 shard(s) not in the manifest (e.g. shard-008.parquet)", id="shard-added"),
        pytest.param(lambda o: (o / "manifest.json").write_text("{\"outputs\": {\"shards\": 3"), "manifest.json", id="manifest-corrupt"),
        pytest.param(lambda o: (o / "manifest.json").write_text("{}"), "manifest.json does not list the output shards", id="manifest-no-shards"),
    ],
)
def test_a_damaged_finished_output_is_refused(scored, tmp_path, damage, message):
    out = _copy(scored[1], tmp_path / "s")
    damage(out)
    error_line(delt("stats", out), str(out), message)


def test_a_corrupt_manifest_is_not_called_missing(scored, tmp_path):
    out = _copy(scored[1], tmp_path / "s")
    (out / "manifest.json").write_text("{\"outputs\": ")
    line = error_line(delt("stats", out), str(out))
    assert "no manifest.json" not in line and "manifest.json" in line


def test_resume_with_a_glob_of_4_on_an_output_of_8_is_refused(scored, tmp_path):
    """issue 14 §2: `delt score 'data/part-0000[0-3].parquet' -o x --method length --resume` on an x
    with 8 shards wrote a manifest of 4 shards while the directory held 8 (stats counted 800 rows)."""
    data, finished = scored
    for state in ("finished", "unfinished"):
        x = _copy(finished, tmp_path / state)
        if state == "unfinished":
            (x / "manifest.json").unlink()
        before = tree_digest(x)
        res = delt("score", f"{data}/shard-00[0-3].parquet", "-o", x, "--method", "length", "--resume")
        error_line(res, f"--output {x}: holds 4 shard(s) this input does not produce (e.g. shard-004.parquet)", code=2)
        assert tree_digest(x) == before


def test_allow_incomplete_reads_an_unfinished_output_on_request(scored, tmp_path):
    out = _unfinished(scored, tmp_path)
    res = delt("stats", out, "--allow-incomplete")
    assert res.returncode == 0, res.stderr
    assert "300" in res.stderr
    res = delt("stats", out, env={"DELT_ALLOW_INCOMPLETE": "1"})
    assert res.returncode == 0, res.stderr


def test_parquet_delt_did_not_write_is_read_without_a_manifest(tmp_path):
    d = write_dataset(tmp_path / "theirs", 30, shards=3)  # plain pyarrow files: no delt metadata
    assert not (d / "manifest.json").exists()
    res = delt("select", d, "-o", tmp_path / "sel", "--by", "score", "--top-k", "5")
    assert res.returncode == 0, res.stderr
    assert delt("stats", tmp_path / "sel").returncode == 0


def test_a_glob_over_part_of_a_finished_output_is_read(scored, tmp_path):
    """Completeness is about the directory, not the selection: some shards of a finished output read fine."""
    res = delt("stats", f"{scored[1]}/shard-00[0-3].parquet")
    assert res.returncode == 0, res.stderr
    assert "400" in res.stderr

