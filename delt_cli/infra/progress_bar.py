"""The rich progress bar behind `console.progress` (imported only when a bar can be seen).

ETAs come from a `RateEstimate` per task (infra/console.py); when stderr is not a
terminal, the bar is not drawn and a plain line per task is written at most once a minute.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator, Optional

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from delt_cli.infra.console import RateEstimate


class EtaColumn(ProgressColumn):
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


class LoggedProgress(Progress):
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
        self.console.print(f"{task.description}: {task.completed:,.0f}/{task.total:,.0f} ({task.elapsed or 0:,.0f} s{eta})", markup=False)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._track(task_id)

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._track(task_id)



@contextmanager
def progress_bar(on, *extra_columns, transient: bool = False) -> Iterator[Progress]:
    """A progress bar drawn on console `on` when it is a terminal, logged a line a minute otherwise."""
    estimates: dict = {}
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TextColumn("eta"),
        EtaColumn(estimates),
    ]
    every = 0.0 if on.is_terminal else 60.0
    with LoggedProgress(*columns, console=on, disable=not on.is_terminal, transient=transient, every=every, estimates=estimates) as bar:
        yield bar
