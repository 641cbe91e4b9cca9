"""A small thread pool for shard-parallel work on Arrow data.

Arrow releases the GIL while it decodes, compresses and writes, and numpy does
in its vectorised loops, so threads (not processes) are enough to keep a few
cores busy on independent shards. Results come back in item order, so what is
computed never depends on the thread count.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from delt_cli.infra.console import progress

T = TypeVar("T")


def workers() -> int:
    """Threads for shard-parallel I/O: DELT_IO_THREADS, else min(4, cpu count)."""
    return max(1, int(os.environ.get("DELT_IO_THREADS", min(4, os.cpu_count() or 1))))


def parallel_map(fn: Callable[[int], T], items: int, description: str) -> list[T]:
    """[fn(0), ..., fn(items - 1)] computed on the thread pool, with a progress bar.

    The first exception (in item order) is raised once every started item has finished.
    """
    results: list = [None] * items
    with progress() as bar, ThreadPoolExecutor(max_workers=min(workers(), max(1, items))) as pool:
        task = bar.add_task(description, total=items)
        futures = [pool.submit(fn, i) for i in range(items)]
        for i, future in enumerate(futures):
            results[i] = future.result()
            bar.advance(task)
    return results
