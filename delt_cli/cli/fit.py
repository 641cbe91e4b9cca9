"""`delt fit`: a scorer's global work, once, saved as an artifact that `delt score --fit` reads anywhere."""

import inspect
from typing import Annotated

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import InputArg, OverwriteOpt, ResumeOpt, current_run, emit, step
from delt_cli.cli.methods import command_args, make_command, resolve_scorer
from delt_cli.cli.score import ProcessesOpt, given_options
from delt_cli.dataset.provenance import RunInfo
from delt_cli.scoring.registry import SCORERS

EXAMPLES = """
**Examples**

```
delt fit pool-emb -o gotd-fit --method gotd --target target-emb
delt fit pool-emb -o gotd-fit --method gotd --target target-emb --group-by domain   # + OT distance per domain
delt fit raw -o dsir-fit --method dsir --target target
delt fit raw -o lqs-fit --method lqs --model llama-3m --tokenizer gpt2 --target target
delt score pool-emb/part-00007.parquet -o scored --fit gotd-fit     # any shard, anywhere: the same scores
```

Writes FIT/fit.json (method, options, input fingerprint, delt version, model fingerprints,
facts such as epsilon and convergence) and the fitted data (GOT-D: target embeddings, their
potential and the sample's rows; DSIR: the two n-gram count vectors; LQS: the annotation).
For methods without global work (length, compression, perplexity, scorer, kenlm) the artifact
records the options and the model's fingerprint, so every transform uses the same model.
See docs/scale.md.
"""


def fit(**kwargs) -> None:
    processes = kwargs.pop("processes")
    if processes > 1:
        from delt_cli.infra.launch import relaunch

        relaunch(processes)
    from delt_cli.scoring.runner import fit_dataset

    input, output = kwargs.pop("input"), kwargs.pop("output")
    overwrite, resume = kwargs.pop("overwrite"), kwargs.pop("resume")
    scorer = resolve_scorer(kwargs.pop("method"), given_options(kwargs))
    opts = scorer.options
    id_column = getattr(opts, "id_column", None) or kwargs.get("id_column") or "id"
    text_column = getattr(opts, "text_column", None) or kwargs.get("text_column") or "text"
    base = current_run()
    fixed = {"input": input, "output": output, "overwrite": overwrite, "resume": resume, "processes": processes, "id_column": id_column, "text_column": text_column}
    if "config" in base.args:
        fixed["config"] = base.args["config"]
    run = RunInfo(command=base.command, args=command_args(scorer, fixed), argv=base.argv, started=base.started)
    manifest = fit_dataset(input, output, scorer, run=run, overwrite=overwrite, resume=resume, id_column=id_column, text_column=text_column)
    if manifest is not None:
        emit(output)


make_command(
    fit,
    [
        inspect.Parameter("input", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=InputArg),
        inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[__import__("pathlib").Path, typer.Option("--output", "-o", help="The fit artifact directory to write.", show_default=False)]),
        inspect.Parameter("method", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[str, typer.Option("--method", help=f"Scoring method: {', '.join(SCORERS)}.", show_default=False)]),
        inspect.Parameter("processes", inspect.Parameter.KEYWORD_ONLY, default=1, annotation=ProcessesOpt),
        inspect.Parameter("overwrite", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=OverwriteOpt),
        inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=ResumeOpt),
    ],
)
fit_cmd = app.command("fit", help="Fit a scorer once (GOT-D's OT solve, DSIR's n-gram models, LQS's annotation, a model reference) for `delt score --fit`.", epilog=EXAMPLES)(step(fit))
