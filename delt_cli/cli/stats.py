import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from delt_cli.infra.atomic import write_text_atomic
from delt_cli.cli.base import app
from delt_cli.cli.common import IdColumnOpt, InputArg, TextColumnOpt, emit, step
from delt_cli.infra.errors import DeltError
from delt_cli.dataset.stats import plot, render, stats_command

EXAMPLES = """
**Examples**

```
delt stats data/raw
delt stats data/folded --by lqs --plot folded.png
delt stats data/scored --allow-incomplete      # a run still going, or killed
delt order scored -o ord --method folding --by ppl | delt stats - --by ppl --group-by domain
```

Prints tables on stderr and the input path on stdout, so it can sit inside a pipeline.
"""


@app.command("stats", help="Rows, sizes, distributions, a score along the dataset order and the group mix.", epilog=EXAMPLES)
@step
def stats_cmd(
    input: InputArg,
    by: Annotated[Optional[str], typer.Option("--by", help="Numeric column to follow along the dataset order.")] = None,
    group_by: Annotated[Optional[str], typer.Option("--group-by", help="Group column for counts and the mix along the order (default: 'domain' if present).")] = None,
    plot_path: Annotated[Optional[Path], typer.Option("--plot", help="Also draw the statistics into this PNG file.")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the statistics as JSON to this file.")] = None,
    allow_incomplete: Annotated[bool, typer.Option("--allow-incomplete", help="Inspect an unfinished delt output (no manifest, or shards missing from it) instead of refusing it.")] = False,
    id_column: IdColumnOpt = "id",
    text_column: TextColumnOpt = "text",
) -> None:
    ds, stats = stats_command(input, by=by, group_by=group_by, id_column=id_column, text_column=text_column, allow_incomplete=allow_incomplete)
    render(stats)
    if plot_path is not None:
        plot(stats, plot_path)
    if json_path is not None:
        try:
            write_text_atomic(json_path, json.dumps(stats, indent=2) + "\n")
        except OSError as exc:
            raise DeltError(f"--json {json_path}: cannot write ({exc.strerror or exc})") from exc
    emit(ds.spec)
