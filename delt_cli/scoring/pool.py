"""For scorers that fit something on the pool before scoring shards (GOT-D's OT solve, DSIR's n-gram models).

The fit runs once, on the main process, on a seeded uniform sample of the pool's
rows drawn over global row indices (dataset order), so it is the same whichever
way the rows are split into shards and however many processes run; its result
is broadcast to every process.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa

from delt_cli.dataset import Dataset, Shard, read_shard
from delt_cli.infra.errors import DeltError

SAMPLE_STREAM = 0x6071D  # separates this seed's stream from other uses of the same --seed


def sample_rows(total: int, size: Optional[int], seed: int) -> Optional[np.ndarray]:
    """Sorted global row indices of a uniform sample without replacement; None means every row."""
    if size is None or size >= total:
        return None
    rng = np.random.default_rng([seed, SAMPLE_STREAM])
    return np.sort(rng.choice(total, size=size, replace=False))


def iter_sample(dataset: Dataset, columns: Sequence[str], rows: Optional[np.ndarray]) -> Iterator[tuple[Shard, pa.Table, np.ndarray]]:
    """Yield (shard, its full `columns` table, local indices of the sampled rows in it) for every shard."""
    offsets = dataset.offsets
    for i, shard in enumerate(dataset.shards):
        table = read_shard(shard, columns)
        if rows is None:
            local = np.arange(shard.num_rows, dtype=np.int64)
        else:
            lo, hi = np.searchsorted(rows, [offsets[i], offsets[i + 1]])
            local = rows[lo:hi] - offsets[i]
        yield shard, table, local


def fit_on_main(dist, fit: Callable[[], Any]) -> Any:
    """`fit()` on the main process, its result on every process; a DeltError there is raised on all."""
    payload: dict = {}
    if dist.is_main:
        try:
            payload = {"ok": fit()}
        except DeltError as exc:
            payload = {"error": str(exc)}
    payload = dist.broadcast_object(payload)
    if "error" in payload:
        raise DeltError(payload["error"])
    return payload["ok"]
