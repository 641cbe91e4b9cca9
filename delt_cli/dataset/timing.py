"""Where a data command's time goes: CPU seconds per phase, when DELT_TIMINGS=1.

select and order wrap their phases (ids, keys, decode, encode, ...) in `phase(name)`.
A phase on a worker thread of the shard pool adds that thread's CPU time
(time.thread_time), so it reports its CPU summed over threads; a phase on the main
thread adds the process's CPU time (time.process_time), which counts the pool's
threads when the phase waits on them (the id check). At the end the command writes
one line to stderr:

    delt-timings {"command": "select", "wall_s": 1.02, "process_cpu_s": 1.9, "cpu_s": {"ids": 0.07, ...}}

`wall_s` is the time from the library call to its end (a benchmark that also times the
whole process gets start-up and exit as the difference: scripts/bench_select_order.py);
`process_cpu_s` the CPU time of the whole process so far, start-up included.
Off by default: then `phase` costs one dictionary lookup.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

ENABLED = os.environ.get("DELT_TIMINGS", "") not in ("", "0")
_cpu: dict[str, float] = {}
_lock = threading.Lock()


def add(name: str, seconds: float) -> None:
    with _lock:
        _cpu[name] = _cpu.get(name, 0.0) + seconds


def _clock():
    return time.process_time if threading.current_thread() is threading.main_thread() else time.thread_time


_open = threading.local()  # phases open on this thread: [name, start, time of the phases inside it]


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the CPU time of the block under `name`; a phase inside another counts for itself
    alone (the enclosing one gets its time less the inner one's)."""
    if not ENABLED:
        yield
        return
    clock = _clock()
    stack = _open.__dict__.setdefault("stack", [])
    frame = [name, clock(), 0.0]
    stack.append(frame)
    try:
        yield
    finally:
        stack.pop()
        spent = clock() - frame[1]
        add(name, spent - frame[2])
        if stack:
            stack[-1][2] += spent


def timed(name: str, items: Iterable[T]) -> Iterator[T]:
    """Iterate `items`, counting the time spent producing each one (decoding, for a reader) under `name`."""
    if not ENABLED:
        yield from items
        return
    it = iter(items)
    clock = _clock()
    while True:
        start = clock()
        try:
            item = next(it)
        except StopIteration:
            add(name, clock() - start)
            return
        add(name, clock() - start)
        yield item


def report(command: str, started: float) -> None:
    """Write the `delt-timings` line (wall time since `started`, a time.perf_counter value)."""
    if not ENABLED:
        return
    with _lock:
        cpu = {k: round(v, 4) for k, v in _cpu.items()}
    sys.stderr.write("delt-timings " + json.dumps({"command": command, "wall_s": round(time.perf_counter() - started, 4),
                                                  "process_cpu_s": round(time.process_time(), 4), "cpu_s": cpu}) + "\n")
