"""Run an experiment of configs/experiments/ and write its results table and plots.

    python scripts/reproduce.py configs/experiments/delt.yaml            # run what is missing, then report
    python scripts/reproduce.py configs/experiments/delt.yaml --dry-run  # the commands and a time estimate
    python scripts/reproduce.py configs/experiments/delt.yaml --report-only

Every step is a `delt` command (see the config); finished steps are skipped on a rerun, so an
interrupted run continues where it stopped and any cell can be rerun alone (`--cells`).
Work goes to runs/<name>/ (logs in runs/<name>/logs), results to results/<name>.md.
"""

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from delt_cli.cli.common import step
from delt_cli.infra.console import info
from experiment.plan import load_experiment
from experiment.results import write_results
from experiment.runner import estimate, is_done, run_experiment

EXAMPLES = """
**Examples**

```
python scripts/reproduce.py configs/experiments/delt.yaml --dry-run     # commands still to run, time estimate
python scripts/reproduce.py configs/experiments/delt.yaml --seeds 0     # a first pass with one seed
python scripts/reproduce.py configs/experiments/delt.yaml --cells shuffle,lqs-fold3
python scripts/reproduce.py configs/experiments/delt.yaml --report-only # tables and plots of what finished
```

Work goes to runs/NAME/ (one log per command in runs/NAME/logs), results to results/NAME.md and
results/NAME-*.png. Finished commands are skipped on a rerun; see docs/reproduction.md.
"""

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="markdown", context_settings={"help_option_names": ["-h", "--help"]})


@app.command(help="Run an experiment of configs/experiments/ (every step a delt command) and write its results table and plots.", epilog=EXAMPLES)
@step
def main(
    experiment: Annotated[Path, typer.Argument(help="Experiment config (configs/experiments/*.yaml).")],
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Training runs at once (each gets cores / jobs threads; default: the config's).")] = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Comma-separated seeds instead of the config's (e.g. 0 for a first pass).")] = None,
    cells: Annotated[Optional[str], typer.Option("--cells", help="Comma-separated cells to run (default: all).")] = None,
    work: Annotated[Path, typer.Option("--work", help="Root of the work directories.")] = Path("runs"),
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Results markdown (default: the config's, else results/NAME.md).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the commands still to run and the time estimate; run nothing.")] = False,
    report_only: Annotated[bool, typer.Option("--report-only", help="Only write the results from the runs finished so far.")] = False,
) -> None:
    exp = load_experiment(
        experiment,
        work_root=work,
        seeds=[int(s) for s in seeds.split(",")] if seeds else None,
        cells=[c.strip() for c in cells.split(",")] if cells else None,
    )
    n_jobs = jobs or exp.jobs
    if dry_run:
        for cmd in exp.steps + [c for u in exp.units for c in u.commands]:
            if not is_done(exp, cmd):
                print(cmd.cmd)
        info(estimate(exp, n_jobs))
        return
    if not report_only:
        run_experiment(exp, jobs=n_jobs)
    command = "python scripts/reproduce.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    path = write_results(exp, output, command=command)
    print(path)


if __name__ == "__main__":
    app()
