"""stderr console, progress bars and log lines.

stdout is reserved for machine-readable output (the output path), so every
human-facing line goes through `console`, which writes to stderr. Progress bars
are drawn only when stderr is a terminal, and only on the main process when
several processes run under accelerate/torchrun. When stderr is not a terminal, tables
are printed whole (no 80-column cut) and progress becomes a plain line a minute. ETAs
come from `RateEstimate`, an average that one slow or quick stretch does not swing.

rich is imported on first use (~40 ms of a data command's start-up): the console is made
the first time something is printed, and a progress bar that nobody sees (`--quiet`, or a
process other than the main one) is a stand-in that draws nothing.
"""

from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

# Width when stderr is a file or a pipe: rich would assume 80 columns and cut table headers and
# names (`colu…`); a log gets whole tables instead (COLUMNS, when set, still decides).
NON_TERMINAL_WIDTH = 1000


def _width() -> Optional[int]:
    if os.environ.get("COLUMNS", "").isdigit():
        return None
    try:
        return None if sys.stderr.isatty() else NON_TERMINAL_WIDTH
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return NON_TERMINAL_WIDTH


class _StderrConsole:
    """rich's Console on stderr, made the first time it is used; every attribute is the real one's."""

    def __init__(self):
        object.__setattr__(self, "_real", None)

    def real(self):
        if self._real is None:
            from rich.console import Console

            object.__setattr__(self, "_real", Console(stderr=True, highlight=False, soft_wrap=True, width=_width()))
        return self._real

    def __getattr__(self, name):
        return getattr(self.real(), name)

    def __setattr__(self, name, value):
        setattr(self.real(), name, value)


console = _StderrConsole()

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


def error(message: str) -> None:
    """One `error:` line on stderr; `message` is shown as written (brackets are not markup)."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/bold red] {escape(message)}", markup=True, highlight=False)


class RateEstimate:
    """Items per second for an ETA, steady when batches differ in cost.

    rich's own estimate averages the last 30 seconds, so one slow or quick stretch (long
    documents first, a slow shard) swings the ETA several-fold within a run (1,061 s, then
    170 s). Here progress and time are summed since the task started, each stretch weighted
    by exp(-age / horizon): the rate is the plain average since the start for runs shorter
    than the horizon, and follows a lasting change of speed within about `horizon` seconds
    in longer ones. Progress a task starts with (a resumed run) does not count.
    """

    def __init__(self, start_time: float, completed: float = 0.0, *, horizon: float = 600.0):
        self.horizon = horizon
        self._time = start_time
        self._completed = completed
        self._items = 0.0  # decayed items done
        self._seconds = 0.0  # decayed seconds spent

    def update(self, now: float, completed: float) -> None:
        dt = max(now - self._time, 0.0)
        decay = math.exp(-dt / self.horizon)
        self._items = self._items * decay + max(completed - self._completed, 0.0)
        self._seconds = self._seconds * decay + dt
        self._time, self._completed = now, completed

    @property
    def rate(self) -> Optional[float]:
        return self._items / self._seconds if self._items > 0 and self._seconds > 0 else None

    def remaining(self, total: Optional[float]) -> Optional[float]:
        """Seconds left to reach `total` at the current rate (None while it is unknown)."""
        rate = self.rate
        if total is None or rate is None:
            return None
        return max(total - self._completed, 0.0) / rate


class _UnseenProgress:
    """What `progress` gives when no one would see the bar: the calls callers make, doing nothing
    (`tasks[id].elapsed` is None, as for a task that has not started)."""

    def __init__(self):
        self.tasks: list = []

    def add_task(self, description, *args, **kwargs) -> int:
        from types import SimpleNamespace

        self.tasks.append(SimpleNamespace(description=description, elapsed=None))
        return len(self.tasks) - 1

    def advance(self, task_id, advance: float = 1) -> None:
        pass

    def update(self, task_id, **kwargs) -> None:
        pass


@contextmanager
def progress(*extra_columns, transient: bool = False) -> Iterator:
    """A rich progress bar on stderr; when stderr is not a terminal, a plain progress line per
    task every minute instead (infra/progress_bar.py); with --quiet, or on a process other than
    the main one, a stand-in that shows nothing."""
    if _quiet or not is_main_process():
        yield _UnseenProgress()
        return
    from delt_cli.infra.progress_bar import progress_bar

    on = console.real() if isinstance(console, _StderrConsole) else console  # (a test may put a Console here)
    with progress_bar(on, *extra_columns, transient=transient) as bar:
        yield bar
