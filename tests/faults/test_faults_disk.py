"""Disk full and file-size limits (issue 14 §3, §6).

* `ulimit -f` (RLIMIT_FSIZE set in the child; Python ignores SIGXFSZ, so a write past the limit
  fails with EFBIG): works for any user.
* A 2 MB tmpfs mounted for the test (ENOSPC): only as root where mount works; skipped otherwise.

Every case expects exit 1 and one line that names the path and the reason; the previous output
(if any) intact; nothing half-written that looks complete (the output does not exist, or readers
refuse it); no staging left behind by the failed run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import write_dataset
from faultkit import delt, error_line, leftovers, shard_digests


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """~4 MB of shards (8 x 12,500 rows): larger than the small disk."""
    return write_dataset(tmp_path_factory.mktemp("disk") / "big", 100_000, shards=8)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("disk") / "small", 300, shards=3)


@pytest.fixture
def disk(tmp_path) -> Path:
    """A 2 MB tmpfs at tmp_path/disk (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def used(mount: Path) -> int:
    st = os.statvfs(mount)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


# -- no space left on device -----------------------------------------------------------------

GLOBAL_STEPS = [
    ("order", ["order", "{in}", "-o", "{out}", "--method", "shuffle"]),
    ("select", ["select", "{in}", "-o", "{out}", "--by", "score", "--top-r", "0.9"]),
    ("prepare", ["prepare", "{src}", "-o", "{out}"]),
]


def _jsonl_from(dataset: Path, directory: Path) -> Path:
    """The dataset's rows as JSONL sources (for prepare)."""
    import pyarrow.parquet as pq

    directory.mkdir()
    for shard in sorted(dataset.glob("*.parquet")):
        rows = pq.read_table(shard, columns=["id", "text"]).to_pylist()
        (directory / f"{shard.stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


@pytest.mark.parametrize("args", [pytest.param(a, id=i) for i, a in GLOBAL_STEPS])
def test_global_step_on_a_full_disk_keeps_the_previous_output(big, small, disk, tmp_path, args):
    """The disk fills while the new output is staged: one line naming the file, the previous
    output (a small one written before) as it was, the staging directory gone."""
    out = disk / "out"

    def fill(d):
        src = _jsonl_from(d, tmp_path / f"src-{d.name}") if "{src}" in args else ""
        return [a.format(**{"in": d, "out": out, "src": src}) for a in args]

    assert delt(*fill(small)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = delt(*fill(big), "--overwrite")
    line = error_line(res, "no space left on device", f"{out} was left as it was")
    assert f"cannot write {disk}/" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert delt("stats", out).returncode == 0
    assert leftovers(out) == []


@pytest.mark.parametrize("args", [pytest.param(a, id=i) for i, a in GLOBAL_STEPS])
def test_global_step_on_a_full_disk_writes_nothing(big, disk, tmp_path, args):
    out = disk / "out"
    src = _jsonl_from(big, tmp_path / "src") if "{src}" in args else ""
    argv = [a.format(**{"in": big, "out": out, "src": src}) for a in args]
    res = delt(*argv)
    error_line(res, "no space left on device", f"nothing was written to {out}")
    assert not out.exists() and leftovers(out) == []
    assert used(disk) < 64 * 1024  # the failed run's staging is gone


def test_score_on_a_full_disk_keeps_finished_shards_and_resumes(big, disk, tmp_path):
    """Per-shard: the shards finished before the disk filled stay, the output is refused as
    unfinished, and once there is room `--resume` finishes it exactly like a run that had room."""
    out = disk / "out"
    res = delt("score", big, "-o", out, "--method", "length")
    line = error_line(res, "no space left on device", "finished shards are kept: free space and rerun with --resume")
    assert f"cannot write {out}/shard-" in line
    done = sorted(p.name for p in out.glob("*.parquet"))
    assert 0 < len(done) < 8
    error_line(delt("stats", out), f"an unfinished delt output (no manifest.json; {len(done)} shard(s) written so far)")
    assert leftovers(out) == []  # no temporary shard and no lock left by the failed run

    moved = tmp_path / "moved"
    shutil.copytree(out, moved)  # "free space": continue on a larger disk
    resumed = delt("score", big, "-o", moved, "--method", "length", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    whole = delt("score", big, "-o", tmp_path / "whole", "--method", "length")
    assert whole.returncode == 0
    assert shard_digests(moved) == shard_digests(tmp_path / "whole")


def test_a_disk_that_is_already_full_fails_before_any_work(small, disk):
    """Not a byte left: the command fails at once, naming where it could not write."""
    ballast = disk / "ballast"
    with open(ballast, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    out = disk / "out"
    res = delt("order", small, "-o", out, "--method", "shuffle")
    error_line(res, f"--output {out}: cannot take its lock: {disk}/.out.delt-lock/holder.json: no space left on device")
    assert not out.exists()
    assert {p.name for p in disk.iterdir()} <= {"ballast", ".out.delt-lock"}  # an empty lock directory, as a kill leaves


# -- file-size limit (ulimit -f): EFBIG --------------------------------------------------------

LIMIT = 256 * 1024  # bytes: every shard of `big` is larger, the lock's and the manifest's files are not

FSIZE_CASES = [
    ("order", ["order", "{in}", "-o", "{out}", "--method", "shuffle"], "staged"),
    ("select", ["select", "{in}", "-o", "{out}", "--by", "score", "--top-r", "0.9"], "staged"),
    ("prepare", ["prepare", "{src}", "-o", "{out}"], "staged"),
    ("score", ["score", "{in}", "-o", "{out}", "--method", "length"], "shardwise"),
]


@pytest.mark.parametrize("args, kind", [pytest.param(a, k, id=i) for i, a, k in FSIZE_CASES])
def test_file_size_limit_names_the_file(big, small, tmp_path, args, kind):
    out = tmp_path / "out"
    srcs = {d: _jsonl_from(d, tmp_path / f"src-{d.name}") if "{src}" in args else "" for d in (small, big)}
    argv = lambda d: [a.format(**{"in": d, "out": out, "src": srcs[d]}) for a in args]  # noqa: E731
    assert delt(*argv(small)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = delt(*argv(big), "--overwrite", fsize=LIMIT)
    line = error_line(res, "file too large")
    assert f"cannot write {tmp_path}/" in line  # the shard (or order's bucket file in the staging directory)
    if kind == "staged":
        assert f"{out} was left as it was" in line
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert delt("stats", out).returncode == 0
    else:  # the old output was replaced shard by shard: what is there is refused as unfinished
        assert "rerun with --resume" in line
        assert not (out / "manifest.json").exists()
        assert delt("stats", out).returncode == 1  # unfinished, or no shard at all
    assert leftovers(out) == []


def _fill(disk: Path, leave: int) -> None:
    """Fill `disk` up to `leave` bytes of free space."""
    st = os.statvfs(disk)
    with open(disk / "ballast", "wb") as fh:
        fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


@pytest.mark.slow
@pytest.mark.assets
def test_train_on_a_full_disk_names_the_file(disk):
    """(It said 'error: OSError: [Errno 28] No space left on device' or '6210 requested and 6080
    written', no file: the token cache's np.save in training/tokens.py.)"""
    from trainkit import corpus

    data = corpus(disk.parent / "data", n=40)
    _fill(disk, 24 * 1024)
    run_dir = disk / "run"
    res = delt("train", data, "-o", run_dir, "--model", "llama-tiny", "--tokenizer", "gpt2", "--seq-len", "32", "--batch-size", "4", "--max-steps", "2")
    error_line(res, f"{disk}/", "no space left on device")
    assert not (run_dir / "manifest.json").exists()


@pytest.mark.slow
@pytest.mark.assets
def test_eval_results_past_a_file_size_limit_name_the_file(tmp_path):
    from trainkit import tiny_model_dir

    data = write_dataset(tmp_path / "data", 20, shards=1)
    model = tiny_model_dir(tmp_path / "model")
    results = tmp_path / "results.json"
    res = delt("eval", model, "-o", results, "--tasks", "heldout", "--heldout", data, "--limit", "2", fsize=1024)
    error_line(res, f"--output {results}: cannot write", "file too large")
    assert not results.exists() and leftovers(results) == []
