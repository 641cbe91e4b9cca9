"""A pause injected at one rename: the fault tests' way to stop a real delt process at an exact
point (then SIGKILL it, or start a second writer while it holds the lock).

Installed at start-up by tests/faults/inject/sitecustomize.py in every Python process that the
fault tests start (faultkit puts that folder on PYTHONPATH), when DELT_FAULT_PAUSE is set:

    DELT_FAULT_PAUSE=before:manifest.json     stop just before a file named manifest.json is
                                              renamed into place (its temporary is complete)
    DELT_FAULT_PAUSE=after:part-00002.parquet#1   stop just after the first rename onto that name
    DELT_FAULT_PAUSE=after:holder.json+unlock  stop at the first lock release (fcntl.flock LOCK_UN)
                                              after that rename: the output guard holds the writer
                                              lock and has let go of its short bookkeeping lock

The part after ':' is an fnmatch pattern on the destination's file name; '#N' picks the Nth
matching rename in that process (default 1). The process stops itself with SIGSTOP;
`faultkit.Proc.wait_stopped` waits for that. Nothing else changes: the delt code runs as it
is, only os.replace/os.rename (which every temporary-then-rename write of delt goes through)
and, with +unlock, fcntl.flock are wrapped.
"""

from __future__ import annotations

import fnmatch
import os
import signal


def install(spec: str) -> None:
    when, _, rest = spec.partition(":")
    rest, plus, _ = rest.partition("+unlock")
    pattern, _, nth = rest.partition("#")
    if when not in ("before", "after") or not pattern:
        raise SystemExit(f"DELT_FAULT_PAUSE={spec!r}: expected before:PATTERN or after:PATTERN[#N]")
    wanted = int(nth or 1)
    seen = 0

    def wrap(real):
        def renamed(src, dst, *args, **kwargs):
            nonlocal seen
            hit = False
            if fnmatch.fnmatch(os.path.basename(os.fsdecode(os.fspath(dst))), pattern):
                seen += 1
                hit = seen == wanted
            if hit and when == "before":
                os.kill(os.getpid(), signal.SIGSTOP)
            result = real(src, dst, *args, **kwargs)
            if hit and when == "after":
                if plus:
                    armed.append(True)
                else:
                    os.kill(os.getpid(), signal.SIGSTOP)
            return result

        return renamed

    armed: list = []
    os.replace = wrap(os.replace)
    os.rename = wrap(os.rename)
    if plus:
        import fcntl

        real_flock = fcntl.flock

        def flock(fd, operation):
            result = real_flock(fd, operation)
            if armed and operation & fcntl.LOCK_UN:
                armed.clear()
                os.kill(os.getpid(), signal.SIGSTOP)
            return result

        fcntl.flock = flock

