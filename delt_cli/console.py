"""stderr console, progress bars and log lines.

stdout is reserved for machine-readable output (the output path), so every
human-facing line goes through `console`, which writes to stderr. Progress bars
are drawn only when stderr is a terminal, and only on the main process when
several processes run under accelerate/torchrun.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False, soft_wrap=True)

_quiet = False


def set_quiet(value: bool) -> None:
    global _quiet
    _quiet = value


def is_quiet() -> bool:
    return _quiet


def is_main_process() -> bool:
    """True on rank 0 (or when no distributed launcher set RANK)."""
    return os.environ.get("RANK", "0") == "0"


def info(message: str) -> None:
    if not _quiet and is_main_process():
        console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")


@contextmanager
def progress(*extra_columns, transient: bool = False) -> Iterator[Progress]:
    """A rich progress bar on stderr, disabled when stderr is not a terminal."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    disable = _quiet or not console.is_terminal or not is_main_process()
    with Progress(*columns, console=console, disable=disable, transient=transient) as bar:
        yield bar
