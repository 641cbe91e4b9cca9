from pathlib import Path
from typing import Annotated, Optional

import typer

from delt_cli.cli.app import app
from delt_cli.cli.common import IdColumnOpt, InputArg, OutputOpt, OverwriteOpt, ResumeOpt, SeedOpt, TextColumnOpt, current_run, emit, step
from delt_cli.scoring.registry import FACTORIES, build_scorer
from delt_cli.scoring.runner import score_dataset

MODEL = "Model options"

EXAMPLES = """
**Examples**

```
delt score raw -o scored --method length --tokenizer cache/gpt2
accelerate launch --multi_gpu --num_processes 2 -m delt_cli score raw -o scored --method length
```

Adds score columns to every shard; all other columns are kept. Per shard, resumable with --resume.
"""


@app.command("score", help="Add score columns to every shard (length, perplexity, LQS, GOT-D, DSIR, ...).", epilog=EXAMPLES)
@step
def score_cmd(
    input: InputArg,
    output: OutputOpt,
    method: Annotated[str, typer.Option("--method", help=f"Scoring method: {', '.join(sorted(FACTORIES))}.")] = "length",
    column: Annotated[Optional[str], typer.Option("--column", help="Name (or prefix) of the score column(s) to add (default: per method).")] = None,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Tokenizer directory or cached hub id (length: also count tokens).", rich_help_panel=MODEL)] = None,
    seed: SeedOpt = 0,
    id_column: IdColumnOpt = "id",
    text_column: TextColumnOpt = "text",
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
) -> None:
    run = current_run()
    scorer = build_scorer(method, dict(run.args))
    manifest = score_dataset(input, output, scorer, run=run, overwrite=overwrite, resume=resume, id_column=id_column, text_column=text_column)
    if manifest is not None:
        emit(output)
