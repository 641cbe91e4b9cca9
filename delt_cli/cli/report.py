from pathlib import Path
from typing import Annotated, List, Optional

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import emit, step
from delt_cli.infra.console import console
from delt_cli.evaluation.report import collect, markdown, write_report

EXAMPLES = """
**Examples**

```
delt report runs/shuffle runs/sort runs/fold -o reports/ordering.md
delt report a/eval.json b/eval.json --labels baseline,delt -o report.md
```

Writes a markdown table (one row per run: each task's primary metric in percent, the
average, held-out loss, each ± one standard error, with n) and a bar plot with error bars
beside it (same name, .png); prints the table on stderr. Put the baseline first: a later
run's number within noise of the first run's (a difference under twice its standard
error) is marked ≈ in the table and hatched in the plot.
"""


@app.command("report", help="Put several evaluated runs side by side, with standard errors: a markdown table and a bar plot (PNG).", epilog=EXAMPLES)
@step
def report_cmd(
    inputs: Annotated[List[str], typer.Argument(metavar="RUN_OR_RESULTS...", help="Run directories (with eval.json) or `delt eval` results files.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Markdown file to write (the plot goes beside it as .png).", show_default=False)],
    labels: Annotated[Optional[str], typer.Option("--labels", help="Comma-separated row labels (default: run directory or file names).")] = None,
) -> None:
    names = [s.strip() for s in labels.split(",")] if labels else None
    path, _ = write_report(inputs, output, labels=names)
    console.print(markdown(collect(inputs, names)), markup=False)
    emit(path)
