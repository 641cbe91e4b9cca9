"""stderr console, progress bars and log lines.

stdout is reserved for machine-readable output (the output path), so every
human-facing line goes through `console`, which writes to stderr. Progress bars
are drawn only when stderr is a terminal, and only on the main process when
several processes run under accelerate/torchrun.
"""

from __future__ import annotations

import os
import time
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


class _LoggedProgress(Progress):
    """A Progress that, when it cannot draw (stderr is a file or a pipe), writes a plain line per
    task at most every `every` seconds, and one when a task that ran that long completes, so logs
    of long unattended runs show how far they got (quick tasks print nothing)."""

    def __init__(self, *columns, every: float = 0.0, **kwargs):
        super().__init__(*columns, **kwargs)
        self._every = every
        self._logged: dict = {}

    def _log(self, task_id) -> None:
        task = next((t for t in self.tasks if t.id == task_id), None)
        if task is None or task.total is None:
            return
        now = time.monotonic()
        finished = task.completed >= task.total
        last = self._logged.get(task_id, task.start_time or now)
        if last == "done" or (task.elapsed or 0) < self._every:  # quick tasks stay silent
            return
        if not finished and now - last < self._every:
            return
        self._logged[task_id] = "done" if finished else now
        eta = "" if finished or task.time_remaining is None else f", eta {task.time_remaining:,.0f} s"
        console.print(f"{task.description}: {task.completed:,.0f}/{task.total:,.0f} ({task.elapsed or 0:,.0f} s{eta})", markup=False)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        if self._every:
            self._log(task_id)

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        if self._every:
            self._log(task_id)


@contextmanager
def progress(*extra_columns, transient: bool = False) -> Iterator[Progress]:
    """A rich progress bar on stderr; when stderr is not a terminal, a plain progress line per
    task every minute instead."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    visible = not _quiet and is_main_process()
    every = 60.0 if visible and not console.is_terminal else 0.0
    with _LoggedProgress(*columns, console=console, disable=not visible or not console.is_terminal, transient=transient, every=every) as bar:
        yield bar
