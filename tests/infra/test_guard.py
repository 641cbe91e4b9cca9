"""The output guard (delt_cli/infra/guard.py): writer lock, foreign files, leftovers, write checks; and
the readers' completeness check (delt_cli/dataset/reader.py: check_complete)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import tree_digest, write_dataset
from delt_cli.infra.atomic import HOST, parse_temporary, replace_dir, temporary_path
from delt_cli.infra.errors import DeltError, UsageError
from delt_cli.infra.guard import OutputGuard, clean_leftovers, lock_dir

DELT = [sys.executable, "-m", "delt_cli"]

HOLD = """
import sys, time
from pathlib import Path
from delt_cli.infra.guard import OutputGuard
with OutputGuard(Path(sys.argv[1]), run_key=sys.argv[2], rank=int(sys.argv[3]), world=int(sys.argv[4])):
    print("held", flush=True)
    time.sleep(float(sys.argv[5]))
"""


def _hold(target: Path, run_key: str, rank: int = 0, world: int = 1, seconds: float = 30.0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target), run_key, str(rank), str(world), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
    target = tmp_path / "out"
    holder = _hold(target, "run-a")
    try:
        with pytest.raises(DeltError, match=rf"in use by another delt run \(pid {holder.pid} on {HOST}"):
            with OutputGuard(target, run_key="run-b"):
                pass
        # the same run at the same rank (a duplicate launch) is refused too
        with pytest.raises(DeltError, match="in use by another delt run"):
            with OutputGuard(target, run_key="run-a"):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert not target.exists()


def test_a_stopped_process_inside_the_lock_is_named_not_waited_for_forever(tmp_path, monkeypatch):
    """A process SIGSTOPped while it takes or leaves the lock (it holds meta.lock for milliseconds
    otherwise): the next run gives up after META_TIMEOUT_S with one line naming the output's holder."""
    import signal

    from delt_cli.infra import guard

    target = tmp_path / "out"
    holder = _hold(target, "run-a")
    grab = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom filelock import FileLock\nlock = FileLock(sys.argv[1])\nlock.acquire()\nprint('in', flush=True)\ntime.sleep(60)",
         str(lock_dir(target) / "meta.lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert grab.stdout.readline().strip() == "in"
        grab.send_signal(signal.SIGSTOP)
        monkeypatch.setattr(guard, "META_TIMEOUT_S", 1.0)
        started = time.monotonic()
        with pytest.raises(DeltError, match=rf"stayed busy for 1 s: a delt process is stopped .* held by pid {holder.pid} on {HOST}"):
            with OutputGuard(target, run_key="run-b"):
                pass
        assert time.monotonic() - started < 10
    finally:
        for proc in (grab, holder):
            proc.kill()
            proc.wait()


def test_ranks_of_one_run_share_the_lock_and_other_runs_stay_out(tmp_path):
    target = tmp_path / "out"
    rank0 = _hold(target, "run-a", rank=0, world=3)
    try:
        with OutputGuard(target, run_key="run-a", rank=1, world=3):
            with pytest.raises(DeltError, match="in use by another delt run"):
                with OutputGuard(target, run_key="run-b", rank=2, world=3):
                    pass
    finally:
        rank0.kill()
        rank0.wait()


def test_a_dead_holder_is_taken_over_with_a_warning_and_the_lock_leaves_nothing(tmp_path, capsys):
    target = tmp_path / "out"
    dead = _hold(target, "run-a")
    dead.kill()  # SIGKILL: the kernel drops its lock, its holder record stays
    dead.wait()
    assert (lock_dir(target) / "holder.json").is_file()
    with OutputGuard(target, run_key="run-b"):
        pass
    assert f"taking over the lock of a delt run that is no longer running (pid {dead.pid}" in capsys.readouterr().err
    assert not lock_dir(target).exists()  # the last holder removes the lock directory


def test_overwrite_refuses_foreign_files_and_deletes_nothing(cli, tmp_path):
    data = write_dataset(tmp_path / "in", 60, shards=2)
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    (out / "sub").mkdir()
    (out / "sub" / "keep.txt").write_text("y")
    before = tree_digest(out)
    for args in (["order", data, "-o", out, "--method", "shuffle"], ["score", data, "-o", out, "--method", "length"]):
        res = cli(*args, "--overwrite")
        assert res.exit_code == 2, res.output
        assert "holds files delt did not write (notes.txt, sub/)" in res.stderr
        assert tree_digest(out) == before


def test_overwrite_replaces_what_delt_wrote(cli, tmp_path):
    data = write_dataset(tmp_path / "in", 60, shards=2)
    out = tmp_path / "o"
    assert cli("score", data, "-o", out, "--method", "compression").exit_code == 0
    res = cli("score", data, "-o", out, "--method", "length", "--overwrite")
    assert res.exit_code == 0, res.output
    assert "n_chars" in pq.read_schema(out / "shard-000.parquet").names
    assert cli("order", data, "-o", out, "--method", "shuffle", "--overwrite").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "part-00000.parquet", "part-00001.parquet"]


def test_leftovers_of_dead_processes_are_removed_and_live_ones_kept(tmp_path, capsys):
    target = tmp_path / "out"
    target.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale_dir = tmp_path / f".out.delt-staging-{HOST}-{dead_pid}-0"
    stale_dir.mkdir()
    (stale_dir / "part-00000.parquet").write_bytes(b"x" * 1000)
    stale_shard = target / f".part-00001.parquet.delt-tmp-{HOST}-{dead_pid}-3"
    stale_shard.write_bytes(b"y")
    legacy = tmp_path / f".out.delt-staging-{dead_pid}"  # the name scheme before this version
    legacy.mkdir()
    live = tmp_path / f".out.delt-staging-{HOST}-{os.getppid()}-0"  # a running process
    live.mkdir()
    other = tmp_path / f".other.delt-staging-{HOST}-{dead_pid}-0"  # another output's
    other.mkdir()
    with OutputGuard(target, run_key="r"):
        pass
    err = capsys.readouterr().err
    assert not stale_dir.exists() and not stale_shard.exists() and not legacy.exists()
    assert live.exists() and other.exists()
    assert f"left by pid {dead_pid}" in err


def test_a_crash_between_the_two_renames_is_restored(tmp_path):
    target = tmp_path / "out"
    (target).mkdir()
    (target / "a").write_text("old")
    # what replace_dir leaves when killed after moving the old directory aside
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    aside = tmp_path / f".out.delt-old-{HOST}-{dead}-0"
    os.replace(target, aside)
    assert parse_temporary(aside).abandoned
    done = clean_leftovers(target, everything_abandoned=True)
    assert (target / "a").read_text() == "old" and not aside.exists()
    assert "restored" in done[0]


def test_replace_dir_swaps_whole_directories(tmp_path):
    target = tmp_path / "t"
    for content in ("one", "two"):
        staging = temporary_path(target, "staging")
        staging.mkdir()
        (staging / "f").write_text(content)
        replace_dir(staging, target)
    assert (target / "f").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def _chattr(flag: str, path: Path) -> bool:
    return shutil.which("chattr") is not None and subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


def test_an_immutable_output_fails_before_the_work(cli, tmp_path):
    data = write_dataset(tmp_path / "in", 60, shards=2)
    out = tmp_path / "o"
    assert cli("order", data, "-o", out, "--method", "shuffle").exit_code == 0
    if not _chattr("+i", out):
        pytest.skip("chattr +i is not available here")
    try:
        started = time.perf_counter()
        res = cli("order", data, "-o", out, "--method", "sort", "--by", "score", "--overwrite")
        assert res.exit_code == 1
        assert "immutable" in res.stderr and str(out) in res.stderr
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging copy left
        assert time.perf_counter() - started < 5
    finally:
        _chattr("-i", out)


def test_readers_refuse_an_unfinished_output_and_stats_can_inspect_it(cli, tmp_path):
    data = write_dataset(tmp_path / "in", 80, shards=4)
    out = tmp_path / "s"
    assert cli("score", data, "-o", out, "--method", "length").exit_code == 0
    (out / "manifest.json").unlink()  # what a kill before the manifest leaves
    for args in (["stats", out], ["select", out, "-o", tmp_path / "sel", "--by", "n_chars", "--top-r", "0.5"]):
        res = cli(*args)
        assert res.exit_code == 1
        assert f"{out}: an unfinished delt output (no manifest.json; 4 shard(s) written so far)" in res.stderr
    assert not (tmp_path / "sel").exists()
    res = cli("stats", out, "--allow-incomplete")
    assert res.exit_code == 0 and res.stdout.strip() == str(out)


def test_readers_refuse_missing_and_extra_shards_but_take_foreign_parquet(cli, tmp_path):
    data = write_dataset(tmp_path / "in", 80, shards=4)
    out = tmp_path / "s"
    assert cli("score", data, "-o", out, "--method", "length").exit_code == 0
    moved = tmp_path / "moved.parquet"
    os.replace(out / "shard-003.parquet", moved)
    res = cli("stats", out)
    assert res.exit_code == 1 and "1 listed shard(s) missing (e.g. shard-003.parquet)" in res.stderr
    os.replace(moved, out / "shard-003.parquet")
    shutil.copy(out / "shard-000.parquet", out / "shard-009.parquet")
    res = cli("stats", out)
    assert res.exit_code == 1 and "1 shard(s) not in the manifest (e.g. shard-009.parquet)" in res.stderr
    # a subset by glob of a complete output is fine; Parquet without delt provenance is other tools' data
    (out / "shard-009.parquet").unlink()
    assert cli("stats", str(out / "shard-00[01].parquet")).exit_code == 0
    assert cli("stats", data).exit_code == 0


def test_resume_with_a_subset_input_is_refused_instead_of_a_short_manifest(cli, tmp_path):
    data = write_dataset(tmp_path / "in", 80, shards=8)
    out = tmp_path / "x"
    assert cli("score", data, "-o", out, "--method", "length").exit_code == 0
    before = tree_digest(out)
    res = cli("score", str(data / "shard-00[0-3].parquet"), "-o", out, "--method", "length", "--resume")
    assert res.exit_code == 2
    assert "holds 4 shard(s) this input does not produce (e.g. shard-004.parquet)" in res.stderr
    assert tree_digest(out) == before


def test_guard_checks_flags_and_writability(tmp_path):
    with pytest.raises(UsageError, match="--overwrite and --resume"):
        with OutputGuard(tmp_path / "o", overwrite=True, resume=True):
            pass
    with pytest.raises(DeltError, match="is not writable"):
        with OutputGuard(Path("/proc/delt-no/out")):
            pass


def _labelled(directory: Path) -> Path:
    rows = [{"id": f"d{i}", "text": f"document number {i} " * (1 + i % 5), "label": float(i % 7)} for i in range(24)]
    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), directory / "part-0.parquet")
    return directory


@pytest.mark.assets
def test_distill_overwrite_replaces_a_scorer_but_not_the_users_files(cli, tmp_path):
    data = _labelled(tmp_path / "ann")
    args = ["distill", str(data), "-o", str(tmp_path / "scorer"), "--column", "label", "--freeze-encoder", "--max-length", "32"]
    assert cli(*args).exit_code == 0
    result = cli(*args, "--overwrite", "--seed", "1")
    assert result.exit_code == 0, result.output  # a scorer directory is delt's own, not "foreign files"
    (tmp_path / "scorer" / "notes.txt").write_text("mine")
    result = cli(*args, "--overwrite", "--seed", "2")
    assert result.exit_code == 2 and "holds files delt did not write (notes.txt)" in result.stderr
    assert (tmp_path / "scorer" / "notes.txt").read_text() == "mine"


def test_an_output_of_independent_ranks_points_to_delt_finish(cli, tmp_path):
    data = write_dataset(tmp_path / "in", 40, shards=2)
    out = tmp_path / "s"
    assert cli("score", data, "-o", out, "--method", "length").exit_code == 0
    (out / "manifest.json").unlink()
    (out / ".delt-rank-0-of-2.json").write_text("{}")  # what a rank of --rank/--world-size leaves
    res = cli("stats", out)
    assert res.exit_code == 1 and f"run `delt finish {out}`" in res.stderr
