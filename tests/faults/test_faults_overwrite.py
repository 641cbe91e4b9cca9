"""`--overwrite` deletes only what delt wrote (issue 14 §1).

Found: `mkdir o; echo x > o/notes.txt; mkdir o/sub; delt order IN -o o --method shuffle
--overwrite` exited 0 and deleted notes.txt and sub/. Every writing command must refuse,
naming the foreign entries, and leave them (and everything else there) as they were.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import tree_digest, write_dataset
from faultkit import delt, error_line, leftovers, tiny_bert


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("overwrite") / "in", 90, shards=3)


def plant(o: Path) -> None:
    """The issue's directory: a note and a sub-directory the user put there."""
    o.mkdir(parents=True, exist_ok=True)
    (o / "notes.txt").write_text("x\n")
    (o / "sub").mkdir()
    (o / "sub" / "keep.txt").write_text("mine\n")


DATASET_COMMANDS = [
    ("order", ["order", "{in}", "-o", "{o}", "--method", "shuffle", "--overwrite"]),
    ("select", ["select", "{in}", "-o", "{o}", "--by", "score", "--top-k", "5", "--overwrite"]),
    ("score", ["score", "{in}", "-o", "{o}", "--method", "length", "--overwrite"]),
    ("prepare", ["prepare", "{src}", "-o", "{o}", "--overwrite"]),
]


def _fill(args, data, o, src):
    return [a.format(**{"in": data, "o": o, "src": src}) for a in args]


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(20)))
    return src


@pytest.mark.parametrize("args", [pytest.param(a, id=i) for i, a in DATASET_COMMANDS])
def test_overwrite_refuses_a_directory_with_files_delt_did_not_write(data, tmp_path, args):
    o = tmp_path / "o"
    plant(o)
    before = tree_digest(o)
    res = delt(*_fill(args, data, o, _src(tmp_path)))
    error_line(res, f"{o}: holds files delt did not write (notes.txt, sub/)", "--overwrite deletes only delt outputs", code=2)
    assert tree_digest(o) == before and sorted(p.name for p in o.iterdir()) == ["notes.txt", "sub"]
    assert leftovers(o) == []


# a global step (StagedOutput, as select and prepare) and a per-shard one (ShardwiseOutput)
TWO_KINDS = [c for c in DATASET_COMMANDS if c[0] in ("order", "score")]


@pytest.mark.parametrize("args", [pytest.param(a, id=i) for i, a in TWO_KINDS])
def test_overwrite_refuses_a_delt_output_with_foreign_files_added(data, tmp_path, args):
    """A finished delt output to which the user added a note and a Parquet file of their own:
    the delt shards would be replaced, the rest not; so nothing is done."""
    o = tmp_path / "o"
    src = _src(tmp_path)
    first = delt(*[a for a in _fill(args, data, o, src) if a != "--overwrite"])
    assert first.returncode == 0, first.stderr
    (o / "notes.txt").write_text("x\n")
    pq.write_table(pa.table({"id": ["z"], "text": ["mine"]}), o / "zz-mine.parquet")
    before = tree_digest(o)
    res = delt(*_fill(args, data, o, src))
    error_line(res, "holds files delt did not write (notes.txt, zz-mine.parquet)", code=2)
    assert tree_digest(o) == before


@pytest.mark.parametrize("args", [pytest.param(a, id=i) for i, a in TWO_KINDS])
def test_overwrite_replaces_an_output_delt_wrote(data, tmp_path, args):
    """The other side: a directory holding only delt's own files (and a killed run's leftovers) is replaced."""
    o = tmp_path / "o"
    src = _src(tmp_path)
    assert delt(*[a for a in _fill(args, data, o, src) if a != "--overwrite"]).returncode == 0
    res = delt(*_fill(args, data, o, src))
    assert res.returncode == 0, res.stderr
    assert delt("stats", o).returncode == 0


@pytest.mark.slow
def test_overwrite_refuses_an_embed_output_with_foreign_files(data, tmp_path):
    o = tmp_path / "o"
    plant(o)
    before = tree_digest(o)
    bert = tiny_bert(tmp_path / "bert")
    res = delt("embed", data, "-o", o, "--model", bert, "--overwrite")
    error_line(res, "holds files delt did not write (notes.txt, sub/)", code=2)
    assert tree_digest(o) == before


@pytest.mark.slow
def test_overwrite_refuses_a_distill_output_with_foreign_files(data, tmp_path):
    o = tmp_path / "o"
    plant(o)
    before = tree_digest(o)
    res = delt("distill", data, "-o", o, "--column", "score", "--encoder", tmp_path / "no-encoder", "--overwrite")
    error_line(res, "holds files delt did not write (notes.txt, sub/)", code=2)
    assert tree_digest(o) == before


TINY = ["--model", "llama-tiny", "--tokenizer", "gpt2", "--seq-len", "32", "--batch-size", "4", "--max-steps", "1", "--save-every", "0"]


@pytest.mark.slow
@pytest.mark.assets
def test_overwrite_refuses_a_run_directory_with_foreign_files(data, tmp_path):
    run_dir = tmp_path / "run"
    plant(run_dir)
    before = tree_digest(run_dir)
    res = delt("train", data, "-o", run_dir, *TINY, "--overwrite")
    error_line(res, str(run_dir), "notes.txt", "sub/", code=2)
    assert tree_digest(run_dir) == before


@pytest.mark.slow
@pytest.mark.assets
def test_overwrite_refuses_an_eval_output_that_is_not_delt_results(data, tmp_path):
    """--overwrite of a results file that delt did not write (a user's notes) is refused."""
    from trainkit import tiny_model_dir

    model = tiny_model_dir(tmp_path / "model")
    results = tmp_path / "results.json"
    results.write_text("my notes, not results\n")
    res = delt("eval", model, "-o", results, "--tasks", "heldout", "--heldout", data, "--limit", "2", "--overwrite")
    error_line(res, str(results), "delt did not write", code=2)
    assert results.read_text() == "my notes, not results\n"
