"""SIGKILL at exact points of every command that writes a dataset (and of train).

Each case stops a real delt process at one point (faultshim: at a rename, the moment a file
appears or is about to), kills it with SIGKILL, and then checks:

* readers refuse what is left: a per-shard output without its manifest is refused by
  `delt stats` and `delt select` with one line; a global step's output does not exist at all;
* a rerun (`--resume` for the per-shard steps score and embed, the same command for the
  global steps prepare, select, order and distill) ends byte-identical to an uninterrupted run;
* the rerun takes over the dead run's lock with a warning and removes what the killed run
  left (staging directories, temporary shards and manifests), saying so on stderr; nothing
  hidden is left beside or inside the output afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import WORDS, write_dataset
from faultkit import delt, error_line, file_digests, launch, leftovers, shard_digests, tiny_bert  # noqa: F401

ROWS, SHARDS = 800, 8

COMMANDS = {
    # name: (argv template, kind)
    "prepare": (["prepare", "{src}", "-o", "{out}", "--shard-rows", "100"], "staged"),
    "score-length": (["score", "{in}", "-o", "{out}", "--method", "length"], "shardwise"),
    "score-compression": (["score", "{in}", "-o", "{out}", "--method", "compression"], "shardwise"),
    "select": (["select", "{in}", "-o", "{out}", "--by", "score", "--top-r", "0.5"], "staged"),
    "order": (["order", "{in}", "-o", "{out}", "--method", "folding", "--by", "score", "--shard-rows", "100"], "staged"),
    "embed": (["embed", "{in}", "-o", "{out}", "--model", "{bert}", "--max-length", "64"], "shardwise"),
    "distill": (["distill", "{in}", "-o", "{out}", "--column", "score", "--encoder", "{bert}", "--freeze-encoder", "--max-length", "32"], "staged"),
}

START = "after:holder.json"  # the writer lock is taken, nothing else done yet
MANIFEST = "before:manifest.json"  # everything written, the manifest's temporary complete, not renamed

KILLS = [
    # (command, point, pause), slow
    ("prepare", "start", START, False),
    ("prepare", "mid-shard", "before:part-00002.parquet", False),  # the 3rd shard's temporary is complete
    ("prepare", "between-shards", "after:part-00003.parquet", False),
    ("prepare", "manifest", MANIFEST, False),
    ("score-length", "start", START, False),
    ("score-length", "between-shards", "after:shard-002.parquet", False),  # issue 14 §2: 3 of 8 shards, no manifest
    ("score-length", "mid-shard", "before:shard-005.parquet", False),
    ("score-length", "manifest", MANIFEST, False),
    ("score-compression", "between-shards", "after:shard-003.parquet", False),
    ("select", "start", START, False),
    ("select", "mid-shard", "before:shard-004.parquet", False),
    ("select", "manifest", MANIFEST, False),
    ("order", "start", START, False),
    ("order", "mid-shard", "before:part-00003.parquet", False),  # pass 2, buckets in the staging directory
    ("order", "manifest", MANIFEST, False),
    ("embed", "manifest", MANIFEST, True),
    ("distill", "manifest", MANIFEST, True),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("kill")
    write_dataset(root / "in", ROWS, shards=SHARDS)
    rng = np.random.default_rng(1)
    (root / "src").mkdir()
    for f in range(4):  # 4 JSONL sources of 200 documents: 8 shards of 100 rows
        lines = [json.dumps({"text": " ".join(rng.choice(WORDS, size=int(rng.integers(3, 30)))), "domain": f"d{f}"}) for _ in range(200)]
        (root / "src" / f"source-{f}.jsonl").write_text("\n".join(lines) + "\n")
    return {"in": root / "in", "src": root / "src", "root": root}


@pytest.fixture(scope="module")
def bert(data) -> Path:
    return tiny_bert(data["root"] / "bert")


def argv(command: str, data: dict, out: Path, bert: Path | None = None) -> list[str]:
    template, _ = COMMANDS[command]
    return [a.format(out=out, bert=bert, **{k: v for k, v in data.items()}) for a in template]


def digests(command: str, out: Path) -> dict:
    return file_digests(out) if command == "distill" else shard_digests(out)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run of a command (computed once per command)."""
    done: dict = {}
    root = tmp_path_factory.mktemp("reference")

    def get(command: str, bert: Path | None = None) -> tuple[dict, dict]:
        if command not in done:
            out = root / command
            res = delt(*argv(command, data, out, bert))
            assert res.returncode == 0, res.stderr
            done[command] = (digests(command, out), json.loads((out / "manifest.json").read_text())["outputs"])
        return done[command]

    return get


def _case(c):
    command, point, pause, slow = c
    return pytest.param(command, point, pause, id=f"{command}-{point}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("command, point, pause", [_case(c) for c in KILLS])
def test_killed_run_is_refused_then_finished_byte_identical(request, data, reference, launch, tmp_path, command, point, pause):
    bert = request.getfixturevalue("bert") if "{bert}" in " ".join(COMMANDS[command][0]) else None
    kind = COMMANDS[command][1]
    out = tmp_path / "out"
    args = argv(command, data, out, bert)
    want_digests, want_outputs = reference(command, bert)

    proc = launch(*args, pause=pause)
    proc.wait_stopped()
    proc.kill()

    left = leftovers(out)
    assert ".out.delt-lock" in left  # the dead run's lock directory
    garbage = [name for name in left if name != ".out.delt-lock"]
    # A staging directory (global steps), or a complete temporary shard or manifest (per-shard steps).
    if point in ("mid-shard", "manifest") or (kind == "staged" and point != "start"):
        assert garbage, f"the kill at {pause} left nothing to clean up: {left}"
    else:
        assert not garbage, garbage

    # Readers refuse what is there, with one line, and write nothing.
    if kind == "shardwise" and out.is_dir() and any(out.glob("*.parquet")):
        refused = delt("stats", out)
        error_line(refused, f"{out}: an unfinished delt output (no manifest.json", f"delt {' '.join(args)} --resume")
        if point == "between-shards":  # issue 14 §2; every reader: test_faults_incomplete.py
            sel = tmp_path / "sel"
            error_line(delt("select", out, "-o", sel, "--by", "score", "--top-r", "0.5"), "an unfinished delt output")
            assert not sel.exists() and not leftovers(sel)
    else:
        assert not out.exists(), sorted(p.name for p in out.iterdir())
        error_line(delt("stats", out), f"{out}: no such file or directory")

    rerun = delt(*args, *(["--resume"] if kind == "shardwise" else []))
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == str(out)
    assert f"{out}: taking over the lock of a delt run that is no longer running (pid {proc.pid}" in rerun.stderr, rerun.stderr
    for name in garbage:
        assert f"{name.split('/')[-1]} (" in rerun.stderr and f"left by pid {proc.pid}" in rerun.stderr, (name, rerun.stderr)
    assert digests(command, out) == want_digests
    assert json.loads((out / "manifest.json").read_text())["outputs"] == want_outputs
    assert leftovers(out) == []
    if command != "distill":  # a scorer directory, not a dataset
        assert delt("stats", out).returncode == 0


def test_kill_between_the_two_renames_of_a_replace_is_repaired_by_the_next_writer(data, reference, launch, tmp_path):
    """order --overwrite killed after the old output was moved aside and before the new one moved
    in: the output is missing (readers say so); the next writer puts the old one back (and says so)
    and removes the finished staging directory of the dead run."""
    out = tmp_path / "out"
    old_args = argv("order", data, out)
    assert delt(*old_args).returncode == 0
    old = shard_digests(out)
    new_args = [*old_args, "--seed", "7", "--method", "shuffle", "--overwrite"]
    proc = launch(*new_args, pause="after:.out.delt-old-*")
    proc.wait_stopped()
    proc.kill()
    assert not out.exists()
    assert any(name.startswith(".out.delt-old-") for name in leftovers(out))
    assert any(name.startswith(".out.delt-staging-") for name in leftovers(out))
    error_line(delt("stats", out), "no such file or directory")

    again = delt(*old_args, "--resume")  # the old run's arguments: finished, nothing to do once restored
    assert again.returncode == 0, again.stderr
    assert f"restored {out} from .out.delt-old-" in again.stderr
    assert "already finished with the same arguments and input" in again.stderr
    assert "removed " in again.stderr and ".out.delt-staging-" in again.stderr
    assert shard_digests(out) == old
    assert leftovers(out) == []


def test_killed_staged_run_leaves_the_previous_output_as_it_was(data, launch, tmp_path):
    """select --overwrite killed while writing: the previous output is untouched and still reads."""
    out = tmp_path / "out"
    args = argv("select", data, out)
    assert delt(*args).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = launch(*args[:-1], "0.25", "--overwrite", pause="before:shard-003.parquet")
    proc.wait_stopped()
    proc.kill()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert delt("stats", out).returncode == 0


# -- train ---------------------------------------------------------------------------------

TINY = ["--model", "llama-tiny", "--tokenizer", "gpt2", "--seq-len", "32", "--batch-size", "4", "--grad-accum", "1",
        "--lr", "3e-3", "--warmup-steps", "2", "--log-every", "0", "--max-steps", "6", "--save-every", "2", "--log-order"]


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    from trainkit import corpus

    root = tmp_path_factory.mktemp("train")
    data = corpus(root / "data", n=40)
    whole = root / "whole"
    res = delt("train", data, "-o", whole, *TINY)
    assert res.returncode == 0, res.stderr
    return data, whole


def losses(run_dir: Path) -> list:
    from delt_cli.training.runlog import read_log

    return [(r["step"], r["loss"]) for r in read_log(run_dir / "metrics.jsonl")]


@pytest.mark.slow
@pytest.mark.assets
@pytest.mark.parametrize(
    "pause",
    [
        pytest.param("before:step-00000004", id="checkpoint-dir"),  # the 2nd checkpoint complete under its temporary name
        # step-4 in place, latest.json still at step 2, its new temporary complete (the resumed run
        # once left that temporary behind)
        pytest.param("before:latest.json#2", id="checkpoint-pointer"),
        pytest.param(MANIFEST, id="manifest"),  # every step done, the run's manifest not yet in place
    ],
)
def test_killed_train_resumes_to_the_same_metrics_and_order(train_data, launch, tmp_path, pause):
    data, whole = train_data
    run_dir = tmp_path / "run"
    proc = launch("train", data, "-o", run_dir, *TINY, pause=pause)
    proc.wait_stopped(timeout=600)
    proc.kill()
    assert not (run_dir / "manifest.json").exists()
    if pause == MANIFEST:  # every step done, the model written: still not a finished run to evaluate
        refused = delt("eval", run_dir, "--tasks", "heldout", "--heldout", data, "--limit", "2")
        error_line(refused, f"MODEL {run_dir}: a training run that has not finished (no manifest.json)")
    resumed = delt("train", data, "-o", run_dir, *TINY, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(run_dir) == losses(whole)
    assert (run_dir / "order.jsonl").read_text() == (whole / "order.jsonl").read_text()
    assert file_digests(run_dir / "model") == file_digests(whole / "model")
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers(run_dir) == []


# -- LQS -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.assets
def test_killed_lqs_resumes_to_the_same_bytes(launch, tmp_path):
    from scoring_data import planted, small_tokenizer

    pool, target = planted(tmp_path / "corpus", per_domain=6, target_size=8, shards=4)
    tok = small_tokenizer(str(tmp_path / "tok"))
    args = ["score", pool, "--method", "lqs", "--model", "llama-tiny", "--tokenizer", tok, "--target", target, "--target-size", "8",
            "--proxy-size", "16", "--proxy-steps", "4", "--proxy-batch-size", "4", "--interval", "2", "--max-length", "64"]
    whole = tmp_path / "whole"
    assert delt(*args, "-o", whole).returncode == 0
    out = tmp_path / "out"
    proc = launch(*args, "-o", out, pause="after:part-00001.parquet")
    proc.wait_stopped()
    proc.kill()
    error_line(delt("stats", out), "an unfinished delt output (no manifest.json; 2 shard(s) written so far)")
    resumed = delt(*args, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "lqs: fit reused from" in resumed.stderr
    assert shard_digests(out) == shard_digests(whole)
    assert leftovers(out) == []
