"""Which process am I? Rank, world size and barriers under accelerate/torchrun, or a single process.

Per-shard work is split by shard index (i % world == rank), never by data
inside a shard, so results do not depend on the number of processes.

Two kinds of multi-process runs:

* one launch (torchrun, accelerate launch, `--processes N`): the processes meet (barriers,
  broadcasts), fit together and the main one writes the manifest;
* independent ranks (`--rank R --world-size W`, or a Slurm job array, whose
  SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT give them): each process runs alone, never
  waits for another, does no global work and leaves a rank record; `delt finish` checks the
  output and writes its manifest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from delt_cli.infra.errors import UsageError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None
    device: Any = "cpu"
    state: Any = None  # accelerate.PartialState when running distributed
    independent: bool = False  # --rank/--world-size or a Slurm array: no collectives, no manifest

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_object(self, obj: Any) -> Any:
        """The main process's `obj` on every process (an independent rank keeps its own)."""
        if self.world == 1 or self.independent:
            return obj
        import torch.distributed as tdist

        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list:
        """Every process's `obj`, in rank order, on every process (an independent rank: its own only)."""
        if self.world == 1 or self.independent:
            return [obj]
        import torch.distributed as tdist

        out = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out


def independent_rank(rank: Optional[int] = None, world_size: Optional[int] = None, env=None) -> Optional[tuple[int, int]]:
    """(rank, world) of an independent rank: from --rank/--world-size, else from a Slurm job array
    (SLURM_ARRAY_TASK_ID minus SLURM_ARRAY_TASK_MIN, over SLURM_ARRAY_TASK_STEP; SLURM_ARRAY_TASK_COUNT
    ranks); None when neither says so."""
    env = os.environ if env is None else env
    if rank is None and world_size is None:
        if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
            return None
        try:
            task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
            low, step = int(env.get("SLURM_ARRAY_TASK_MIN", "0")), int(env.get("SLURM_ARRAY_TASK_STEP", "1") or 1)
        except ValueError:
            raise UsageError("SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT are not integers; pass --rank and --world-size") from None
        rank, world_size = (task - low) // max(step, 1), count
        where = f"the Slurm array (task {task}, {count} tasks)"
    else:
        where = "--rank/--world-size"
        if rank is None or world_size is None:
            raise UsageError("--rank and --world-size: pass both (or neither)")
    if world_size < 1:
        raise UsageError(f"--world-size {world_size}: must be >= 1")
    if not 0 <= rank < world_size:
        raise UsageError(f"--rank {rank}: must be between 0 and --world-size - 1 ({world_size - 1}) (from {where})")
    if int(env.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(f"{where} and a torchrun/accelerate launch of {env['WORLD_SIZE']} processes: use one or the other")
    return rank, world_size


_exit_hook = False


def _destroy_process_group_at_exit() -> None:
    """Leave the process group cleanly at exit. Without it a rank that reaches the end while
    another is still tearing down sometimes aborts in C++ ("terminate called without an active
    exception", SIGABRT) after a complete run (3 of 27 runs in tests/faults)."""
    global _exit_hook
    if _exit_hook:
        return
    import atexit

    def destroy() -> None:
        import torch.distributed as torch_dist

        if torch_dist.is_available() and torch_dist.is_initialized():
            try:
                torch_dist.destroy_process_group()
            except Exception:  # already torn down by the launcher
                pass

    atexit.register(destroy)
    _exit_hook = True


def get_dist(rank: Optional[int] = None, world_size: Optional[int] = None) -> Dist:
    """A Dist for this process: an independent rank (`independent_rank`), accelerate's PartialState
    when launched with several processes, else a single process."""
    independent = independent_rank(rank, world_size)
    if independent is not None or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if independent is None:
            return Dist(device=device)
        return Dist(rank=independent[0], world=independent[1], device=device, independent=True)
    import torch
    from accelerate import PartialState

    # On a host without a GPU, accelerate picks the gloo backend only when asked for CPU explicitly
    # (`accelerate launch --cpu` does; plain torchrun does not), otherwise every process thinks it is alone.
    state = PartialState(cpu=not torch.cuda.is_available())
    _destroy_process_group_at_exit()
    return Dist(
        rank=state.process_index,
        world=state.num_processes,
        barrier=state.wait_for_everyone,
        device=state.device,
        state=state,
    )
