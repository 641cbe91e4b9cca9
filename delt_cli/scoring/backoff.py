"""Back off after an accelerator out-of-memory error: halve the batch and retry, and say so."""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import numpy as np

from delt_cli.infra.console import warn
from delt_cli.infra.errors import DeltError

T = TypeVar("T")


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Backoff:
    """Runs `fn(batch)` over index batches; on OOM splits the failing batch in halves (recursively).

    The split is remembered as a cap on rows per batch for the rest of the run, so one
    OOM does not cost a failed attempt on every later batch.
    """

    def __init__(self, what: str = "batch"):
        self.what = what
        self.cap: int | None = None
        self.events = 0

    def run(self, batches: Sequence[np.ndarray], fn: Callable[[np.ndarray], T]) -> list[tuple[np.ndarray, T]]:
        out: list[tuple[np.ndarray, T]] = []
        queue = list(batches)[::-1]
        while queue:
            batch = queue.pop()
            if self.cap is not None and len(batch) > self.cap:
                queue.extend(np.array_split(batch, int(np.ceil(len(batch) / self.cap)))[::-1])
                continue
            try:
                out.append((batch, fn(batch)))
            except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_oom(exc):
                    raise
                _free()
                if len(batch) <= 1:
                    raise DeltError(f"out of memory on a single {self.what} row; lower --max-length") from exc
                half = (len(batch) + 1) // 2
                self.cap = half if self.cap is None else min(self.cap, half)
                self.events += 1
                warn(f"out of memory with a {self.what} of {len(batch)} rows; halving to {half} and retrying")
                queue.extend([batch[half:], batch[:half]])
        return out
