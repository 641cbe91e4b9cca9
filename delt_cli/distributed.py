"""Which process am I? Rank, world size and barriers under accelerate/torchrun, or a single process.

Per-shard work is split by shard index (i % world == rank), never by data
inside a shard, so results do not depend on the number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None
    device: Any = "cpu"
    state: Any = None  # accelerate.PartialState when running distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_object(self, obj: Any) -> Any:
        """The main process's `obj` on every process."""
        if self.world == 1:
            return obj
        import torch.distributed as tdist

        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list:
        """Every process's `obj`, in rank order, on every process."""
        if self.world == 1:
            return [obj]
        import torch.distributed as tdist

        out = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out


def get_dist() -> Dist:
    """A Dist for this process: accelerate's PartialState when launched with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        return Dist(device=device)
    import torch
    from accelerate import PartialState

    # Without a GPU, accelerate only joins the processes (MULTI_CPU, gloo) when asked for cpu=True;
    # PartialState() under torchrun would silently give every process world size 1.
    state = PartialState(cpu=not torch.cuda.is_available())
    return Dist(
        rank=state.process_index,
        world=state.num_processes,
        barrier=state.wait_for_everyone,
        device=state.device,
        state=state,
    )
