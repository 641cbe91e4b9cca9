"""`delt score`: add score columns to every shard. The method options come from the scorers
themselves (delt_cli/cli/methods.py); this module holds only the command's own flags."""

import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import (
    SCALE,
    InputArg,
    OutputOpt,
    OverwriteOpt,
    ResumeOpt,
    WorldSizeOpt,
    current_run,
    emit,
    rank_opt,
    step,
)
from delt_cli.cli.methods import (
    command_args,
    make_command,
    method_options,
    resolve_scorer,
)
from delt_cli.dataset.provenance import RunInfo
from delt_cli.scoring.registry import SCORERS

EXAMPLES = """
**Examples**

```
delt score raw -o scored --method length --tokenizer gpt2
delt score raw -o ppl --method perplexity --model smollm2 --max-length 256
delt score raw -o ann --method lqs --model llama-3m --tokenizer gpt2 --target target/ --proxy-size 2048
delt distill ann -o scorer --column lqs_z
delt score raw -o lqs --method scorer --scorer scorer
delt score raw -o scored --method perplexity --model smollm2 --processes 2
delt score emb -o scored --method gotd --target target-emb --epsilon-relative 0.05
delt fit emb -o fit --method gotd --target target-emb && delt score 'emb/part-0001*.parquet' -o scored --fit fit
delt score raw -o scored --method kenlm --model wiki.arpa
delt score raw -o scored --method perplexity --model smollm2 --rank 0 --world-size 8   # then: delt finish scored
```

Adds score columns to every shard; all other columns are kept. Per shard, resumable with --resume.
Methods: length (n_chars, n_words, n_tokens), compression (zlib ratio), perplexity (ppl, ppl_nll,
ppl_tokens), lqs (lqs, pds, quality, learnability, lqs_z on a proxy sample, null elsewhere),
scorer (a distilled scorer's prediction), gotd (gotd or gotd_contrast; needs `delt embed`), dsir
(dsir log importance weight), kenlm (n-gram perplexity). With --fit FIT (from `delt fit`) any
input, down to one shard, is scored exactly as in the run that fitted. See docs/scoring.md,
docs/gotd.md and docs/scale.md.
"""

FitOpt = Annotated[
    Optional[Path],
    typer.Option("--fit", help="A fit artifact from `delt fit`: transform only, with its method and options.", show_default=False),
]
RankOpt = rank_opt("Score only shards i with i % WORLD_SIZE == RANK")
WorldOpt = WorldSizeOpt
ProcessesOpt = Annotated[
    int,
    typer.Option("--processes", help="Run N processes (re-launches itself with torchrun; GPUs are used when present).", rich_help_panel=SCALE),
]


def _param(name, annotation, default=inspect.Parameter.empty, kind=inspect.Parameter.KEYWORD_ONLY):
    return inspect.Parameter(name, kind, default=default, annotation=annotation)


def given_options(kwargs: dict) -> dict:
    """The method options that were given (on the command line or in --config)."""
    names = method_options()
    return {k: v for k, v in kwargs.items() if k in names and v is not None}


def score(**kwargs) -> None:
    processes = kwargs.pop("processes")
    rank, world_size = kwargs.pop("rank"), kwargs.pop("world_size")
    if processes > 1:
        if rank is not None or world_size is not None:
            from delt_cli.infra.errors import UsageError

            raise UsageError("--processes and --rank/--world-size: use one or the other")
        from delt_cli.infra.launch import relaunch

        relaunch(processes)
    from delt_cli.infra.distributed import get_dist
    from delt_cli.scoring.runner import score_dataset

    input, output, fit = kwargs.pop("input"), kwargs.pop("output"), kwargs.pop("fit")
    overwrite, resume = kwargs.pop("overwrite"), kwargs.pop("resume")
    scorer = resolve_scorer(kwargs.pop("method"), given_options(kwargs), fit=fit, default_method="length")
    dist = get_dist(rank, world_size)
    opts = scorer.options
    id_column = getattr(opts, "id_column", None) or kwargs.get("id_column") or "id"
    text_column = getattr(opts, "text_column", None) or kwargs.get("text_column") or "text"
    base = current_run()
    fixed = {"input": input, "output": output, "fit": fit, "overwrite": overwrite, "resume": resume, "processes": processes, "rank": rank, "world_size": world_size, "id_column": id_column, "text_column": text_column}
    if "config" in base.args:
        fixed["config"] = base.args["config"]
    run = RunInfo(command=base.command, args=command_args(scorer, fixed), argv=base.argv, started=base.started)
    manifest = score_dataset(input, output, scorer, fit=fit, run=run, overwrite=overwrite, resume=resume, id_column=id_column, text_column=text_column, dist=dist)
    if manifest is not None:
        emit(output)


make_command(
    score,
    [
        _param("input", InputArg, kind=inspect.Parameter.POSITIONAL_OR_KEYWORD),
        _param("output", OutputOpt),
        _param("method", Annotated[Optional[str], typer.Option("--method", help=f"Scoring method: {', '.join(SCORERS)} (default: length; with --fit: the fit's).", show_default=False)], None),
        _param("fit", FitOpt, None),
        _param("rank", RankOpt, None),
        _param("world_size", WorldOpt, None),
        _param("processes", ProcessesOpt, 1),
        _param("overwrite", OverwriteOpt, False),
        _param("resume", ResumeOpt, False),
    ],
)
score_cmd = app.command("score", help="Add score columns to every shard (length, perplexity, LQS, GOT-D, DSIR, KenLM, ...).", epilog=EXAMPLES)(step(score))
