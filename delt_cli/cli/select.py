from typing import Annotated, Optional

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import IdColumnOpt, InputArg, OutputOpt, OverwriteOpt, ResumeOpt, SeedOpt, TextColumnOpt, current_run, emit, step
from delt_cli.selection import parse_rule, select_dataset

RULES = "Selection rule (exactly one)"

EXAMPLES = """
**Examples**

```
delt select scored -o top --by lqs --top-r 0.5
delt select scored -o cheap --by gotd --lowest --top-k 10000
delt select scored -o rand --random-r 0.5 --seed 1
delt select scored -o budget --by lqs --budget-tokens 2000000 --tokenizer gpt2
delt select scored -o fair --by ppl --lowest --top-r 0.5 --group-by domain
delt select scored -o sel --by lqs --top-r 0.5 | delt order - -o ord --method folding --by lqs
delt select scored -o sel --by lqs --top-r 0.5 --lazy | delt order - -o ord --method folding --by lqs
```

Selection is global across shards and keeps dataset order; ties at the cut go to the earlier row.
"""


@app.command("select", help="Keep rows by a score column (top-k, top-r, threshold, random, token budget), in dataset order.", epilog=EXAMPLES)
@step
def select_cmd(
    input: InputArg,
    output: OutputOpt,
    by: Annotated[Optional[str], typer.Option("--by", help="Numeric column to rank by.")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Keep the N rows with the highest values.", rich_help_panel=RULES)] = None,
    top_r: Annotated[Optional[float], typer.Option("--top-r", help="Keep floor(rows x R) rows with the highest values; R in [0, 1].", rich_help_panel=RULES)] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Keep rows with value > T (< T with --lowest).", rich_help_panel=RULES)] = None,
    random_r: Annotated[Optional[float], typer.Option("--random-r", help="Keep a uniform random floor(rows x R) rows (use --seed).", rich_help_panel=RULES)] = None,
    budget_tokens: Annotated[Optional[int], typer.Option("--budget-tokens", help="Keep the best-ranked rows until N tokens are filled (needs --tokenizer or --length-column).", rich_help_panel=RULES)] = None,
    budget_chars: Annotated[Optional[int], typer.Option("--budget-chars", help="Like --budget-tokens, counting characters of the text column.", rich_help_panel=RULES)] = None,
    lowest: Annotated[bool, typer.Option("--lowest", help="Prefer the lowest values instead of the highest.")] = False,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Tokenizer that counts tokens for --budget-tokens: gpt2 or smollm2 (offline assets), a directory, a .gguf file or a hub id in the local Hugging Face cache.")] = None,
    length_column: Annotated[Optional[str], typer.Option("--length-column", help="Column with per-row lengths for budgets (e.g. n_tokens from `delt score --method length`).")] = None,
    group_by: Annotated[Optional[str], typer.Option("--group-by", help="Apply the rule inside each group of this column, keeping each group's share.")] = None,
    drop_null: Annotated[bool, typer.Option("--drop-null", help="Skip rows whose --by value is null or NaN (an error otherwise).")] = False,
    lazy: Annotated[bool, typer.Option("--lazy", help="Record which rows are kept (a bitmap), not the rows: `delt order` then reads them straight from the input, decoding and encoding the text once, and checks their ids as it moves them. Other commands write them out first (docs/datasets.md).")] = False,
    seed: SeedOpt = 0,
    id_column: IdColumnOpt = "id",
    text_column: TextColumnOpt = "text",
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
) -> None:
    rule = parse_rule(top_k=top_k, top_r=top_r, threshold=threshold, random_r=random_r, budget_tokens=budget_tokens, budget_chars=budget_chars, seed=seed)
    select_dataset(
        input,
        output,
        by=by,
        rule=rule,
        lowest=lowest,
        drop_null=drop_null,
        group_by=group_by,
        tokenizer=tokenizer,
        length_column=length_column,
        id_column=id_column,
        text_column=text_column,
        lazy=lazy,
        run=current_run(),
        overwrite=overwrite,
        resume=resume,
    )
    emit(output)
