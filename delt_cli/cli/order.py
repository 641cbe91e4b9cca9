from enum import Enum
from typing import Annotated, Optional

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import IdColumnOpt, InputArg, OutputOpt, OverwriteOpt, ResumeOpt, SeedOpt, TextColumnOpt, current_run, emit, step
from delt_cli.ordering import order_dataset


class Method(str, Enum):
    shuffle = "shuffle"
    sort = "sort"
    folding = "folding"


EXAMPLES = """
**Examples**

```
delt order scored -o shuffled --method shuffle --seed 1
delt order scored -o curriculum --method sort --by lqs
delt order scored -o folded --method folding --by lqs --folds 3
delt order scored -o folded-by-domain --method folding --by ppl --group-by domain
```

Folding (DELT): stable ascending sort, then for l = 0..L-1 the rows whose sorted rank r has r mod L = l.
Output shards are named part-00000, part-00001, ... in training order.
"""


@app.command("order", help="Reorder a dataset (shuffle, sort, DELT folding); the output order is the training order.", epilog=EXAMPLES)
@step
def order_cmd(
    input: InputArg,
    output: OutputOpt,
    method: Annotated[Method, typer.Option("--method", help="Ordering method.", case_sensitive=False)] = Method.folding,
    by: Annotated[Optional[str], typer.Option("--by", help="Numeric column to sort by (sort, folding).")] = None,
    folds: Annotated[int, typer.Option("--folds", "-L", help="Folding: number of folds L (L=1 is an ascending sort).")] = 3,
    descending: Annotated[bool, typer.Option("--descending", help="Sort from the highest value to the lowest.")] = False,
    group_by: Annotated[Optional[str], typer.Option("--group-by", help="Sort/fold inside each group of this column and interleave groups in proportion.")] = None,
    shard_rows: Annotated[Optional[int], typer.Option("--shard-rows", help="Rows per output shard (default: the largest input shard).")] = None,
    drop_null: Annotated[bool, typer.Option("--drop-null", help="Drop rows whose --by value is null or NaN (an error otherwise).")] = False,
    seed: SeedOpt = 0,
    id_column: IdColumnOpt = "id",
    text_column: TextColumnOpt = "text",
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
) -> None:
    order_dataset(
        input,
        output,
        method=method.value,
        by=by,
        folds=folds,
        descending=descending,
        seed=seed,
        shard_rows=shard_rows,
        group_by=group_by,
        drop_null=drop_null,
        id_column=id_column,
        text_column=text_column,
        run=current_run(),
        overwrite=overwrite,
        resume=resume,
    )
    emit(output)
