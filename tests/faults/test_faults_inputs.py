"""Bad and hostile inputs from issue 14, as one table, plus the places that cannot be written.

Each case: the exit status, one `error:` line holding the expected words (no traceback,
nothing on stdout), the inputs unchanged (tree_digest) and no output, not even a hidden
staging or lock directory. The older bad-input lists stay where they are (BAD_CASES in
test_cli_select_order.py, the scorer, eval and prepare tests); this table holds the cases that
issue 14 found.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import tree_digest, write_dataset
from faultkit import delt, error_line, leftovers


def _jsonl_gz_truncated(d: Path) -> None:
    data = gzip.compress("".join(json.dumps({"text": f"document number {i}"}) + "\n" for i in range(2000)).encode())
    (d / "docs.jsonl.gz").write_bytes(data[: len(data) // 2])


def _invalid_utf8(d: Path) -> None:
    (d / "docs.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "bad \xff\xfe bytes"}\n')


def _foreign_files(d: Path) -> None:
    (d / "o").mkdir()
    (d / "o" / "notes.txt").write_text("x\n")


def _finished_output(d: Path) -> None:
    res = delt("score", d / "ds", "-o", d / "o", "--method", "length")
    assert res.returncode == 0, res.stderr


def _a_file(d: Path) -> None:
    (d / "o").write_text("not a directory\n")


# (id, setup(inputs dir), argv, exit status, message) ; {d} is the inputs directory (it holds a
# dataset `ds` of 3 shards), {out} an output beside it that must not appear
CASES = [
    # §1: the flags that exclude each other, for a global and a per-shard step
    ("overwrite-and-resume-order", None, ["order", "{d}/ds", "-o", "{out}", "--method", "shuffle", "--overwrite", "--resume"], 2, "--overwrite and --resume: pass at most one"),
    ("overwrite-and-resume-score", None, ["score", "{d}/ds", "-o", "{out}", "--method", "length", "--overwrite", "--resume"], 2, "--overwrite and --resume: pass at most one"),
    # §1: --resume of a directory that holds files delt did not write (a global step replaces it whole)
    ("resume-over-foreign-files", _foreign_files, ["order", "{d}/ds", "-o", "{d}/o", "--method", "shuffle", "--resume"], 2, "holds files delt did not write (notes.txt)"),
    # an existing output without --overwrite/--resume
    ("finished-output-no-flag", _finished_output, ["score", "{d}/ds", "-o", "{d}/o", "--method", "compression"], 2, "exists and is not empty; pass --resume to continue it or --overwrite"),
    # the output is a file, or lies below one
    ("output-is-a-file", _a_file, ["select", "{d}/ds", "-o", "{d}/o", "--by", "score", "--top-k", "3"], 2, "exists and is not a directory"),
    ("output-below-a-file", _a_file, ["order", "{d}/ds", "-o", "{d}/o/sub", "--method", "shuffle"], 1, "is not writable"),
    # §3: a truncated .jsonl.gz names the file
    ("jsonl-gz-truncated", _jsonl_gz_truncated, ["prepare", "{d}/docs.jsonl.gz", "-o", "{out}"], 1, "docs.jsonl.gz: compressed data is truncated or corrupt"),
    # §4: invalid UTF-8 is refused, naming file and line, unless asked otherwise
    ("invalid-utf8", _invalid_utf8, ["prepare", "{d}/docs.jsonl", "-o", "{out}"], 1, "docs.jsonl: line 2: not valid UTF-8"),
    # §5: a model path that does not exist is not sent to the hub
    ("model-path-typo", None, ["score", "{d}/ds", "-o", "{out}", "--method", "perplexity", "--model", "models/typo"], 1, "--model models/typo: no such directory"),
]


@pytest.mark.parametrize("setup, args, code, message", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input(tmp_path, cli, setup, args, code, message):
    d = tmp_path / "inputs"
    write_dataset(d / "ds", 30, shards=3)
    if setup:
        setup(d)
    out = tmp_path / "out"
    before = tree_digest(d)
    res = cli(*[a.format(d=d, out=out) for a in args])
    assert res.exit_code == code, res.output
    err = res.stderr.strip()
    assert err.splitlines() == [err] and err.startswith("error: ") and "Traceback" not in err, err
    assert message in err
    assert res.stdout == ""
    assert tree_digest(d) == before  # inputs (and an output that was there) untouched
    assert not out.exists() and leftovers(out) == []
    assert leftovers(d / "o") == []


# -- places that cannot be written: refused before any work ----------------------------------


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only tmpfs (root only): writes fail with EROFS whatever the permissions."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["order", "{ds}", "-o", "{o}", "--method", "shuffle"], id="order"),
        pytest.param(["score", "{ds}", "-o", "{o}", "--method", "length"], id="score"),
        pytest.param(["prepare", "{src}", "-o", "{o}"], id="prepare"),
    ],
)
def test_read_only_file_system_is_refused_before_the_work(tmp_path, read_only_dir, args):
    ds = write_dataset(tmp_path / "ds", 30, shards=3)
    src = tmp_path / "a.txt"
    src.write_text("one document\n")
    res = delt(*[a.format(ds=ds, o=read_only_dir / "o", src=src) for a in args])
    error_line(res, f"{read_only_dir}", "not writable (read-only file system)")


@pytest.fixture
def immutable_output(tmp_path):
    """An existing output directory with the immutable attribute (chattr +i; root, ext4/xfs/btrfs)."""
    o = tmp_path / "o"
    res = delt("order", write_dataset(tmp_path / "ds", 30, shards=3), "-o", o, "--method", "shuffle")
    assert res.returncode == 0, res.stderr
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(o)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    yield o
    subprocess.run(["chattr", "-i", str(o)], check=False)


def test_immutable_output_is_refused_before_the_work(tmp_path, immutable_output):
    """Found: an immutable output directory failed only after the whole job, leaving the full staging copy."""
    before = tree_digest(immutable_output)
    res = delt("order", tmp_path / "ds", "-o", immutable_output, "--method", "sort", "--by", "score", "--overwrite")
    error_line(res, f"--output {immutable_output}: the directory is immutable or append-only (chattr)")
    assert tree_digest(immutable_output) == before
    assert leftovers(immutable_output) == []
