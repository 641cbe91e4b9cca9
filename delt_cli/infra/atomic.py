"""Files and directories that appear whole or not at all: write under a temporary name, then rename.

Every temporary name delt uses has one form, ``.<target name>.delt-<tag>-<host>-<pid>[-<n>]``,
beside its target, so that the next writer of an output can tell which leftovers belong to a
process that no longer runs (`parse_temporary`, used by `delt_cli.infra.guard`). A crash or an
error while writing leaves the previous file (if any) untouched and no partial one; the
temporary is removed on an error.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Optional

HOST = socket.gethostname().replace("-", "_") or "localhost"
_counter = itertools.count()
_TEMP = re.compile(r"^\.(?P<target>.+)\.delt-(?P<tag>[a-z]+)-(?P<host>[^-]+)-(?P<pid>\d+)(?:-\d+)?$")
# Names of temporaries written by delt before the one scheme above (cleaned up the same way).
_LEGACY = [
    re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)(?:\.\d+)?\.tmp$"),
    re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>\d+)$"),
    re.compile(r"^\.(?P<target>.+)\.delt-(?:staging|old)-(?P<pid>\d+)$"),
]


def temporary_path(target: str | os.PathLike, tag: str = "tmp") -> Path:
    """A fresh temporary name beside `target` (unique per process and call)."""
    target = Path(target)
    return target.with_name(f".{target.name}.delt-{tag}-{HOST}-{os.getpid()}-{next(_counter)}")


@dataclass(frozen=True)
class Temporary:
    path: Path
    target: str
    host: str
    pid: int

    @property
    def mine(self) -> bool:
        return self.host == HOST and self.pid == os.getpid()

    @property
    def abandoned(self) -> bool:
        """True when the process that made it is known to be gone (same host, pid not running)."""
        return self.host == HOST and self.pid != os.getpid() and not process_alive(self.pid)


def parse_temporary(path: Path) -> Optional[Temporary]:
    """The target, host and pid of a delt temporary, or None for any other name."""
    m = _TEMP.match(path.name)
    if m:
        return Temporary(path, m["target"], m["host"], int(m["pid"]))
    for legacy in _LEGACY:
        m = legacy.match(path.name)
        if m:
            return Temporary(path, m["target"], HOST, int(m["pid"]))
    return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove(path: Path) -> None:
    """Remove a file or a directory tree; missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def describe_os_error(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """'<path>: <reason>' for an OSError, naming the path even where the error does not
    (ENOSPC and EFBIG from a write carry no file name)."""
    where = exc.filename or path
    reason = exc.strerror or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    code = exc.errno
    if code is None:  # pyarrow's OSError carries the errno only in its message
        m = re.search(r"errno (\d+)", str(exc), re.IGNORECASE)
        code = int(m.group(1)) if m else None
    if code == errno.ENOSPC:
        reason = "no space left on device"
    elif code == errno.EFBIG:
        reason = "file too large (a file-size limit, ulimit -f, or the filesystem's maximum)"
    elif code == errno.EDQUOT:
        reason = "disk quota exceeded"
    return f"{where}: {reason}" if where else reason


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that wants a file name (Parquet, PNG);
    renamed to `path` when the block finishes without error, removed otherwise."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def open_atomic(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """`open(path, mode)` whose content replaces `path` only when the block finishes without error."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with open_atomic(path) as fh:
        fh.write(text)


def replace_dir(staging: Path, target: Path) -> None:
    """Move the finished directory `staging` to `target`, replacing what was there.

    Two renames (the old target aside, then `staging` into place), so `target` is at every
    moment either the old or the new directory, except between the renames, where a crash
    leaves the old one under an `old` temporary name that the next writer restores
    (`delt_cli.infra.guard`). The old directory is deleted last.
    """
    staging, target = Path(staging), Path(target)
    old = None
    if target.exists():
        old = temporary_path(target, "old")
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        remove(old)


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """A temporary directory beside `target` that replaces it when the block ends without error,
    and is removed on an error."""
    staging = temporary_path(target, "staging")
    staging.mkdir(parents=True)
    try:
        yield staging
        replace_dir(staging, target)
    except BaseException:
        remove(staging)
        raise
