from pathlib import Path
from typing import Annotated, Optional

import typer

from delt_cli.cli.app import app
from delt_cli.cli.common import IdColumnOpt, InputArg, OutputOpt, OverwriteOpt, ResumeOpt, SeedOpt, TextColumnOpt, current_run, emit, step
from delt_cli.scoring.registry import FACTORIES, build_scorer
from delt_cli.scoring.runner import score_dataset

MODEL = "Model options"
TARGETED = "GOT-D / DSIR options"

EXAMPLES = """
**Examples**

```
delt score raw -o scored --method length --tokenizer cache/gpt2
delt score emb -o scored --method gotd --target target-emb --epsilon-relative 0.05
delt score raw -o scored --method dsir --target target
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
    # -- GOT-D / DSIR options ------------------------------------------------------
    target: Annotated[Optional[str], typer.Option("--target", help="gotd, dsir: the target dataset (gotd: with the same embedding column, made by `delt embed`).", rich_help_panel=TARGETED)] = None,
    embedding_column: Annotated[str, typer.Option("--embedding-column", help="gotd: the embedding column of the pool and the target.", rich_help_panel=TARGETED)] = "emb",
    epsilon: Annotated[Optional[float], typer.Option("--epsilon", help="gotd: absolute entropic regularisation (default 0.1, the paper's).", rich_help_panel=TARGETED)] = None,
    epsilon_relative: Annotated[Optional[float], typer.Option("--epsilon-relative", help="gotd: epsilon = R x the median target-pool cost (instead of --epsilon).", rich_help_panel=TARGETED)] = None,
    pool_size: Annotated[int, typer.Option("--pool-size", help="gotd: candidates in the OT solve; dsir: pool rows the raw n-gram model is fitted on (a seeded uniform sample when the pool is larger).", rich_help_panel=TARGETED)] = 50_000,
    max_iter: Annotated[int, typer.Option("--max-iter", help="gotd: maximum Sinkhorn iterations.", rich_help_panel=TARGETED)] = 2000,
    tol: Annotated[float, typer.Option("--tol", help="gotd: stop when the L1 error of the target marginal is at most this (a warning when not reached).", rich_help_panel=TARGETED)] = 1e-4,
    max_memory: Annotated[str, typer.Option("--max-memory", help="gotd: keep the target x sample kernel in memory up to this size (e.g. 2GB), else recompute it in tiles.", rich_help_panel=TARGETED)] = "2GB",
    ot_dtype: Annotated[str, typer.Option("--ot-dtype", help="gotd: float32 or float64 for the solve and the scores.", rich_help_panel=TARGETED)] = "float32",
    contrast: Annotated[bool, typer.Option("--contrast", help="gotd: --target is a negative target (GOT-D contrast); column gotd_contrast, higher = more useful.", rich_help_panel=TARGETED)] = False,
    dsir_buckets: Annotated[int, typer.Option("--dsir-buckets", help="dsir: hash buckets for unigram + bigram features.", rich_help_panel=TARGETED)] = 10_000,
    # -- end of GOT-D / DSIR options -----------------------------------------------
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
