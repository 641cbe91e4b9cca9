"""`--processes N`: re-run the current command under torchrun with N processes.

torchrun (`python -m torch.distributed.run --standalone`) sets RANK / WORLD_SIZE
for each child; accelerate's PartialState then joins them (gloo on CPU, NCCL on
GPUs). The parent waits and exits with the children's status. A command that is
already running under a launcher (WORLD_SIZE set) is not re-launched.
"""

from __future__ import annotations

import os
import subprocess
import sys

import typer

from delt_cli.infra.errors import DeltError


def strip_flag(argv: list[str], flag: str) -> list[str]:
    """argv without `flag VALUE` / `flag=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = True
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return out


def relaunch(processes: int, argv: list[str] | None = None) -> None:
    """Start `processes` copies of this command under torchrun and exit with their status (no-op when launched)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    args = strip_flag(list(sys.argv[1:] if argv is None else argv), "--processes")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "delt_cli", *args]
    try:
        code = subprocess.call(cmd)
    except OSError as exc:
        raise DeltError(f"--processes {processes}: cannot start torchrun ({exc})") from exc
    raise typer.Exit(code)
