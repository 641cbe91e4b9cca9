"""Two writers on one output: exactly one proceeds, the other is refused at once.

The first writer is stopped (SIGSTOP, by faultshim) right after it took the output's lock,
so the second one meets a held lock every time, not only when the timing is right. The
second must then fail with one line naming the holder (pid, host, start time, command)
while the first is still stopped (it does not wait for it); the first, let go, finishes
and its output is exactly what it writes alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import write_dataset
from delt_cli.infra.atomic import HOST
from faultkit import delt, error_line, launch, leftovers, shard_digests  # noqa: F401

HOLDS = "after:holder.json+unlock"  # the writer lock held, its bookkeeping lock let go


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("concurrent")
    return write_dataset(root / "in", 600, shards=6)


def _second_is_refused(first, second_args, out: Path) -> None:
    started = time.monotonic()
    second = delt(*second_args, timeout=120)
    line = error_line(second, f"{out}: in use by another delt run (pid {first.pid} on {HOST}", ": delt " + " ".join(str(a) for a in first.args))
    assert first.state() == "T", "the first writer went on while the second ran"
    assert time.strftime("since %Y-%m-%d ") in line
    assert time.monotonic() - started < 60


# (id, first writer, second writer, output kind): {in} and {out} are filled in
DATASET_CASES = [
    # issue 14 §1: `order IN -o o --method folding`, then `--method shuffle` on the same o
    ("order", ["order", "{in}", "-o", "{out}", "--method", "folding", "--by", "score"], ["order", "{in}", "-o", "{out}", "--method", "shuffle"]),
    # issue 14 §1: `score big -o s --method compression --overwrite`, then `--method length --overwrite`
    ("score", ["score", "{in}", "-o", "{out}", "--method", "compression", "--overwrite"], ["score", "{in}", "-o", "{out}", "--method", "length", "--overwrite"]),
    # the same command twice (the same run key: two processes that both think they are rank 0)
    ("score-same-command", ["score", "{in}", "-o", "{out}", "--method", "length"], ["score", "{in}", "-o", "{out}", "--method", "length"]),
    ("select", ["select", "{in}", "-o", "{out}", "--by", "score", "--top-r", "0.5"], ["select", "{in}", "-o", "{out}", "--by", "n", "--top-k", "5", "--overwrite"]),
    ("prepare", ["prepare", "{src}", "-o", "{out}"], ["prepare", "{src}", "-o", "{out}", "--shard-rows", "10", "--overwrite"]),
]


@pytest.mark.parametrize("first, second", [pytest.param(a, b, id=i) for i, a, b in DATASET_CASES])
def test_second_dataset_writer_is_refused_and_the_first_finishes(data, launch, tmp_path, first, second):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl").write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(50)))
    out = tmp_path / "o"
    fill = lambda args: [a.format(**{"in": data, "out": out, "src": src}) for a in args]  # noqa: E731
    alone = tmp_path / "alone"
    assert delt(*[a.replace(str(out), str(alone)) for a in fill(first)]).returncode == 0

    holder = launch(*fill(first), pause=HOLDS)
    holder.wait_stopped()
    assert json.loads((tmp_path / ".o.delt-lock" / "holder.json").read_text())["pid"] == holder.pid
    _second_is_refused(holder, fill(second), out)
    assert holder.cont() == 0, holder.stderr
    assert holder.stdout.strip() == str(out)
    assert shard_digests(out) == shard_digests(alone)
    assert delt("stats", out).returncode == 0
    assert leftovers(out) == []  # the lock directory goes with its last holder


def test_the_lock_is_per_output(data, launch, tmp_path):
    """While one output is held, another output in the same directory is written as usual."""
    holder = launch("order", data, "-o", tmp_path / "a", "--method", "shuffle", pause=HOLDS)
    holder.wait_stopped()
    other = delt("order", data, "-o", tmp_path / "b", "--method", "shuffle")
    assert other.returncode == 0, other.stderr
    assert holder.cont() == 0
    assert shard_digests(tmp_path / "a") == shard_digests(tmp_path / "b")


def test_a_dead_holder_is_taken_over_with_a_warning(data, launch, tmp_path):
    holder = launch("select", data, "-o", tmp_path / "o", "--by", "score", "--top-k", "7", pause=HOLDS)
    holder.wait_stopped()
    holder.kill()
    second = delt("select", data, "-o", tmp_path / "o", "--by", "score", "--top-k", "3")
    assert second.returncode == 0, second.stderr
    assert f"taking over the lock of a delt run that is no longer running (pid {holder.pid} on {HOST}" in second.stderr
    assert leftovers(tmp_path / "o") == []


def test_readers_are_not_blocked_by_a_writer(data, launch, tmp_path):
    """The lock is for writers: reading the input (or a finished output) of a held run works."""
    assert delt("order", data, "-o", tmp_path / "o", "--method", "shuffle").returncode == 0
    holder = launch("order", data, "-o", tmp_path / "o", "--method", "sort", "--by", "score", "--overwrite", pause=HOLDS)
    holder.wait_stopped()
    assert delt("stats", tmp_path / "o").returncode == 0
    assert delt("select", tmp_path / "o", "-o", tmp_path / "sel", "--by", "score", "--top-k", "3").returncode == 0
    assert holder.cont() == 0


@pytest.mark.slow
def test_ranks_of_one_run_share_the_lock_and_another_run_is_refused(data, launch, tmp_path):
    """`--processes 2` (torchrun): the two ranks of one run hold the output together; another run
    is refused while one rank is stopped holding it; the run then finishes as one process would."""
    out = tmp_path / "o"
    holder = launch("score", data, "-o", out, "--method", "length", "--processes", "2", pause=HOLDS)
    holder.wait_stopped(timeout=600)
    record = json.loads((tmp_path / ".o.delt-lock" / "holder.json").read_text())
    assert record["world"] == 2
    second = delt("score", data, "-o", out, "--method", "compression", "--overwrite", timeout=120)
    error_line(second, f"{out}: in use by another delt run (pid {record['pid']} on {HOST}, rank {record['rank']} of 2, since ")
    code = holder.cont()
    assert json.loads((out / "manifest.json").read_text())["processes"] == 2
    alone = delt("score", data, "-o", tmp_path / "alone", "--method", "length")
    assert alone.returncode == 0
    assert shard_digests(out) == shard_digests(tmp_path / "alone")
    assert leftovers(out) == []
    # (A rank stopped for a few seconds once aborted at exit after a complete run, ~1 run in 10:
    # "terminate called without an active exception"; the process group is now destroyed at exit.)
    assert code == 0, holder.stderr


# -- train and eval ------------------------------------------------------------------------

TINY = ["--model", "llama-tiny", "--tokenizer", "gpt2", "--seq-len", "32", "--batch-size", "4", "--grad-accum", "1",
        "--lr", "3e-3", "--warmup-steps", "1", "--log-every", "0", "--max-steps", "3", "--save-every", "0"]


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    from trainkit import corpus

    return corpus(tmp_path_factory.mktemp("train") / "data", n=40)


@pytest.mark.slow
@pytest.mark.assets
def test_second_train_on_one_run_directory_is_refused(text_data, launch, tmp_path):
    run_dir = tmp_path / "run"
    holder = launch("train", text_data, "-o", run_dir, *TINY, pause=HOLDS)
    holder.wait_stopped()
    _second_is_refused(holder, ["train", text_data, "-o", run_dir, *TINY, "--lr", "1e-3", "--overwrite"], run_dir)
    assert holder.cont() == 0, holder.stderr
    assert (run_dir / "manifest.json").is_file() and (run_dir / "model").is_dir()
    assert leftovers(run_dir) == []


@pytest.mark.slow
@pytest.mark.assets
def test_second_eval_on_one_results_file_is_refused(text_data, launch, tmp_path):
    from trainkit import tiny_model_dir

    model = tiny_model_dir(tmp_path / "model")
    results = tmp_path / "results.json"
    args = ["eval", model, "-o", results, "--tasks", "heldout", "--heldout", text_data, "--limit", "4"]
    holder = launch(*args, pause=HOLDS)
    holder.wait_stopped()
    _second_is_refused(holder, [*args[:-1], "2", "--overwrite"], results)
    assert holder.cont() == 0, holder.stderr
    assert json.loads(results.read_text())
    assert leftovers(results) == []
