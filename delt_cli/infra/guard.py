"""The output guard: every command that writes goes through it.

`OutputGuard(target, ...)` is held for the whole time a command writes `target` (a dataset
directory, a run directory, a results file, a cache entry). On entering it

1. checks the flags (`--overwrite` and `--resume` exclude each other) and that the place is
   writable (the parent directory, and the target itself when it exists: a read-only or
   immutable output fails here, before any work);
2. takes the **writer lock** of the target: one run at a time. The processes of one run
   (the ranks of a torchrun/accelerate launch, or of a job array, started with the same
   command, arguments and input) share it, each under its own rank; any other run is refused
   at once with one line naming the holder (pid, host, start time, command). A lock whose
   holder died is taken over with a warning (the kernel drops a dead process's lock);
3. cleans up what killed runs left: temporaries of the target (`delt_cli.infra.atomic` names them
   ``.<name>.delt-<tag>-<host>-<pid>-<n>``) whose process is gone, beside the target and
   inside it; a directory caught between the two renames of `atomic.replace_dir` is restored;
4. with `--overwrite`, refuses to go on when the target holds anything delt did not write
   (`foreign`: a predicate per kind of output), naming those files: delt deletes only what
   it wrote.

The lock is a small directory beside the target, ``.<name>.delt-lock/`` (fcntl locks through
the filelock package, one file per rank plus a holder record). What holds on NFS and object
storage: docs/reliability.md.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from filelock import FileLock, Timeout

from delt_cli.infra.atomic import HOST, describe_os_error, parse_temporary, remove, staged_dir, write_text_atomic
from delt_cli.infra.console import info, warn
from delt_cli.infra.errors import DeltError, UsageError

LOCK_SUFFIX = "delt-lock"
HOLDER = "holder.json"
META_TIMEOUT_S = 20.0  # the meta lock is held for milliseconds; longer means a stopped or hung process


def lock_dir(target: Path) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.{LOCK_SUFFIX}")


def _locked_elsewhere(path: Path) -> bool:
    """True when another process holds the lock file `path` (probed without blocking)."""
    if not path.exists():
        return False
    probe = FileLock(str(path))
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


def _describe_holder(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    command = " ".join(holder.get("argv") or []) or "?"
    rank = f", rank {holder['rank']} of {holder['world']}" if holder.get("world", 1) > 1 else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{rank}, since {started}: {command}"


def _read_holder(directory: Path) -> Optional[dict]:
    try:
        holder = json.loads((directory / HOLDER).read_text())
        return holder if isinstance(holder, dict) else None
    except (OSError, json.JSONDecodeError):
        return None


class OutputLock:
    """The writer lock of one output, shared by the ranks of one run (same `run_key`)."""

    def __init__(self, target: Path, *, run_key: str, rank: int = 0, world: int = 1, flag: str = "--output"):
        self.target = Path(target)
        self.dir = lock_dir(self.target)
        self.run_key = run_key
        self.rank = rank
        self.world = world
        self.flag = flag
        self._lock = None

    def _rank_file(self, rank: int) -> Path:
        return self.dir / f"rank-{rank:05d}.lock"

    def _live_ranks(self) -> list[int]:
        live = []
        for path in self.dir.glob("rank-*.lock"):
            rank = int(path.stem.split("-")[1])
            if rank != self.rank and _locked_elsewhere(path):
                live.append(rank)
        return live

    def acquire(self) -> None:
        for attempt in range(20):  # the directory may vanish between mkdir and open (its last holder left)
            try:
                self.dir.mkdir(exist_ok=True)
                meta = FileLock(str(self.dir / "meta.lock"))
                meta.acquire(timeout=META_TIMEOUT_S)
                break
            except FileNotFoundError:
                continue
            except Timeout:
                holder = _read_holder(self.dir)
                held = f" (the output is held by {_describe_holder(holder)})" if holder else ""
                raise DeltError(
                    f"{self.flag} {self.target}: its lock {self.dir / 'meta.lock'} stayed busy for {META_TIMEOUT_S:.0f} s: "
                    f"a delt process is stopped or hung while taking or leaving it{held}; resume it (kill -CONT) or stop it"
                ) from None
            except OSError as exc:
                raise DeltError(f"{self.flag} {self.target}: cannot create its lock {self.dir} ({exc.strerror or exc})") from exc
        else:
            raise DeltError(f"{self.flag} {self.target}: cannot create its lock {self.dir}")
        try:
            holder = _read_holder(self.dir)
            mine = FileLock(str(self._rank_file(self.rank)))
            try:
                mine.acquire(timeout=0)
            except Timeout:
                raise DeltError(f"{self.flag} {self.target}: in use by another delt run ({_describe_holder(holder or {})}); wait for it to finish or stop it") from None
            live = self._live_ranks()
            if live and holder is not None and holder.get("run_key") != self.run_key:
                mine.release()
                raise DeltError(f"{self.flag} {self.target}: in use by another delt run ({_describe_holder(holder)}); wait for it to finish or stop it")
            if not live:
                if holder is not None and not (holder.get("host") == HOST and holder.get("pid") == os.getpid()):
                    warn(f"{self.target}: taking over the lock of a delt run that is no longer running ({_describe_holder(holder)})")
                try:
                    write_text_atomic(
                        self.dir / HOLDER,
                        json.dumps({"run_key": self.run_key, "pid": os.getpid(), "host": HOST, "rank": self.rank, "world": self.world, "started": time.time(), "argv": ["delt", *sys.argv[1:]]}),
                    )
                except OSError as exc:  # a full disk fails here first, before any work
                    mine.release()
                    raise DeltError(f"{self.flag} {self.target}: cannot take its lock: {describe_os_error(exc, self.dir / HOLDER)}") from exc
            self._lock = mine
        finally:
            meta.release()

    def release(self) -> None:
        if self._lock is None:
            return
        meta = FileLock(str(self.dir / "meta.lock"))
        try:
            meta.acquire(timeout=META_TIMEOUT_S)
        except Timeout:
            self._lock.release()
            self._lock = None
            return
        try:
            self._lock.release()
            self._lock = None
            if not self._live_ranks():  # the last holder leaves no lock directory behind
                for path in self.dir.glob("rank-*.lock"):
                    path.unlink(missing_ok=True)
                (self.dir / HOLDER).unlink(missing_ok=True)
                # filelock re-checks after flock that its file was not unlinked meanwhile,
                # so a process waiting on meta.lock retries on a fresh file.
                (self.dir / "meta.lock").unlink(missing_ok=True)
        finally:
            meta.release()
        try:
            self.dir.rmdir()
        except OSError:  # another run has started meanwhile
            pass

    def sole_holder(self) -> bool:
        """True when no other rank of this run holds the lock now."""
        return not self._live_ranks()


# -- leftovers of killed runs ------------------------------------------------------------


def clean_leftovers(target: Path, *, everything_abandoned: bool) -> list[str]:
    """Remove temporaries of `target` whose process is gone; restore a directory caught
    between the renames of atomic.replace_dir. Returns what was done, for the log.

    `everything_abandoned`: no other process of this run holds the lock, so temporaries
    made on other hosts are abandoned too (their process cannot be checked from here).
    """
    target = Path(target)
    done = []
    candidates = []
    if target.parent.is_dir():
        candidates += [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.delt-") or p.name.startswith(f".{target.name}.")]
    if target.is_dir():
        candidates += [p for p in target.iterdir() if p.name.startswith(".")]
    for path in candidates:
        tmp = parse_temporary(path)
        if tmp is None or tmp.mine:
            continue
        if path.parent == target.parent and tmp.target != target.name:
            continue
        if not (tmp.abandoned or (everything_abandoned and tmp.host != HOST)):
            continue
        if path.parent == target.parent and ".delt-old-" in path.name and not target.exists():
            os.replace(path, target)
            done.append(f"restored {target} from {path.name}, left by a run killed while replacing it")
            continue
        size = _size(path)
        remove(path)
        done.append(f"removed {path} ({size / 1e6:.1f} MB), left by pid {tmp.pid} on {tmp.host}, which is no longer running")
    return done


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -- permission checks before the work ---------------------------------------------------

_FS_IOC_GETFLAGS = 0x80086601
_IMMUTABLE, _APPEND = 0x10, 0x20


def _immutable(path: Path) -> bool:
    """True when `path` has the immutable or append-only attribute (chattr +i/+a)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        buf = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("l", 0))
        return bool(struct.unpack("l", buf)[0] & (_IMMUTABLE | _APPEND))
    except OSError:
        return False
    finally:
        os.close(fd)


def probe_writable(directory: Path, what: Path, flag: str = "--output") -> None:
    """Fail unless a file can be created and removed in `directory` (created if missing)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".delt-write-probe-{HOST}-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = "read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc))
        raise DeltError(f"{flag} {what}: directory {directory} is not writable ({reason})") from exc


class OutputGuard:
    """Hold `target` for writing (see the module docstring). Use as a context manager.

    `foreign(target) -> names`: what in an existing target delt did not write (a dataset
    directory, a run directory, ...); with `overwrite` any such entry refuses the run.
    `run_key` identifies the run (its ranks share the lock); `rank`/`world` as launched.
    """

    def __init__(
        self,
        target: Path,
        *,
        overwrite: bool = False,
        resume: bool = False,
        foreign: Optional[Callable[[Path], Sequence[str]]] = None,
        run_key: str = "",
        rank: int = 0,
        world: int = 1,
        flag: str = "--output",
        wait: float = 0.0,
    ):
        """`wait`: seconds to wait for another run to release the target instead of refusing at
        once (for shared caches, where the other process builds the very same thing)."""
        self.wait = wait
        self.target = Path(target)
        self.overwrite = overwrite
        self.resume = resume
        self.foreign = foreign
        self.flag = flag
        self.lock = OutputLock(self.target, run_key=run_key or f"{HOST}-{os.getpid()}", rank=rank, world=world, flag=flag)

    def __enter__(self) -> "OutputGuard":
        if self.overwrite and self.resume:
            raise UsageError("--overwrite and --resume: pass at most one")
        parent = self.target.parent
        probe_writable(parent, self.target, self.flag)
        if self.target.is_dir():
            if _immutable(self.target):
                raise DeltError(f"{self.flag} {self.target}: the directory is immutable or append-only (chattr); cannot replace or write it")
            probe_writable(self.target, self.target, self.flag)
        elif self.target.exists() and (_immutable(self.target) or not os.access(self.target, os.W_OK)):
            raise DeltError(f"{self.flag} {self.target}: the file is read-only or immutable")
        deadline = time.monotonic() + self.wait
        while True:
            try:
                self.lock.acquire()
                break
            except DeltError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        try:
            for line in clean_leftovers(self.target, everything_abandoned=self.lock.sole_holder()):
                info(line)
            if self.overwrite and self.foreign is not None and self.target.exists():
                self.refuse_foreign()
        except BaseException:
            self.lock.release()
            raise
        return self

    def refuse_foreign(self) -> None:
        names = list(self.foreign(self.target)) if self.foreign else []
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise UsageError(
                f"{self.flag} {self.target}: holds files delt did not write ({shown}); "
                "--overwrite deletes only delt outputs: move them away or choose another output"
            )

    def __exit__(self, exc_type, exc, tb) -> None:
        self.lock.release()


def foreign_except(*patterns: str) -> Callable[[Path], list[str]]:
    """A `foreign` predicate for an output directory delt fills with known names
    (glob patterns: 'config.json', '*.safetensors', 'checkpoints'); anything else is foreign."""

    def foreign(directory: Path) -> list[str]:
        if not directory.is_dir():
            return []
        out = []
        for p in sorted(directory.iterdir()):
            if parse_temporary(p) is None and not any(p.match(pattern) for pattern in patterns):
                out.append(p.name + ("/" if p.is_dir() else ""))
        return out

    return foreign


def write_dir(target: Path, fill: Callable[[Path], None], *, flag: str = "--output") -> None:
    """Fill a staging directory beside `target` with `fill`, then put it in place of `target`
    (atomic.replace_dir); an OSError names the path and says that `target` is unchanged."""
    try:
        with staged_dir(target) as staging:
            fill(staging)
    except OSError as exc:
        from delt_cli.infra.atomic import describe_os_error

        kept = "left as it was" if target.exists() else "not created"
        raise DeltError(f"{flag} {target}: cannot write ({describe_os_error(exc)}); {target} was {kept}") from exc
