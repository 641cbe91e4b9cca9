"""stderr console, progress bars and log lines.

stdout is reserved for machine-readable output (the output path), so every
human-facing line goes through `console`, which writes to stderr. Progress bars
are drawn only when stderr is a terminal, and only on the main process when
several processes run under accelerate/torchrun. When stderr is not a terminal, tables
are printed whole (no 80-column cut) and progress becomes a plain line a minute. ETAs
come from `RateEstimate`, an average that one slow or quick stretch does not swing.
"""

from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator, Optional

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

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


console = Console(stderr=True, highlight=False, soft_wrap=True, width=_width())

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


class _EtaColumn(ProgressColumn):
    """Time remaining from the progress's RateEstimate of the task (rich's own column swings)."""

    def __init__(self, estimates: dict):
        super().__init__()
        self._estimates = estimates

    def render(self, task) -> Text:
        estimate = self._estimates.get(task.id)
        seconds = None if estimate is None or task.finished else estimate.remaining(task.total)
        if seconds is None:
            return Text("-:--:--", style="progress.remaining")
        return Text(str(timedelta(seconds=int(seconds))), style="progress.remaining")


class _LoggedProgress(Progress):
    """A Progress whose ETA comes from a RateEstimate per task and that, when it cannot draw
    (stderr is a file or a pipe), writes a plain line per task at most every `every` seconds,
    and one when a task that ran that long completes, so logs of long unattended runs show how
    far they got (quick tasks print nothing)."""

    def __init__(self, *columns, every: float = 0.0, estimates: Optional[dict] = None, **kwargs):
        super().__init__(*columns, **kwargs)
        self._every = every
        self._logged: dict = {}
        self.estimates: dict = {} if estimates is None else estimates

    def _task(self, task_id):
        return next((t for t in self.tasks if t.id == task_id), None)

    def add_task(self, description, *args, **kwargs):
        task_id = super().add_task(description, *args, **kwargs)
        task = self._task(task_id)
        self.estimates[task_id] = RateEstimate(task.start_time if task.start_time is not None else self.get_time(), task.completed)
        return task_id

    def eta(self, task_id) -> Optional[float]:
        task, estimate = self._task(task_id), self.estimates.get(task_id)
        return None if task is None or estimate is None else estimate.remaining(task.total)

    def _track(self, task_id) -> None:
        task, estimate = self._task(task_id), self.estimates.get(task_id)
        if task is not None and estimate is not None:
            estimate.update(self.get_time(), task.completed)
        if self._every:
            self._log(task_id)

    def _log(self, task_id) -> None:
        task = self._task(task_id)
        if task is None or task.total is None:
            return
        now = self.get_time()
        finished = task.completed >= task.total
        last = self._logged.get(task_id, task.start_time if task.start_time is not None else now)
        if last == "done" or (task.elapsed or 0) < self._every:  # quick tasks stay silent
            return
        if not finished and now - last < self._every:
            return
        self._logged[task_id] = "done" if finished else now
        remaining = None if finished else self.eta(task_id)
        eta = "" if remaining is None else f", eta {remaining:,.0f} s"
        console.print(f"{task.description}: {task.completed:,.0f}/{task.total:,.0f} ({task.elapsed or 0:,.0f} s{eta})", markup=False)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._track(task_id)

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._track(task_id)


@contextmanager
def progress(*extra_columns, transient: bool = False) -> Iterator[Progress]:
    """A rich progress bar on stderr; when stderr is not a terminal, a plain progress line per
    task every minute instead. ETAs come from a RateEstimate (steadier than rich's)."""
    estimates: dict = {}
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TextColumn("eta"),
        _EtaColumn(estimates),
    ]
    visible = not _quiet and is_main_process()
    every = 60.0 if visible and not console.is_terminal else 0.0
    with _LoggedProgress(*columns, console=console, disable=not visible or not console.is_terminal, transient=transient, every=every, estimates=estimates) as bar:
        yield bar
