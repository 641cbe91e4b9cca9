from pathlib import Path
from typing import Annotated, List, Optional

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import COMMON, IdColumnOpt, OutputOpt, OverwriteOpt, TextColumnOpt, current_run, emit, step
from delt_cli.prepare import prepare_dataset

EXAMPLES = """
**Examples**

```
delt prepare corpus.jsonl.gz -o data/raw
delt prepare plays/ -o data/plays --paragraphs --domain fiction --shard-rows 50000
delt prepare news.csv --text-column body --id-column url -o data/news
```
"""


@app.command("prepare", help="Convert JSONL(.gz), text, CSV or Parquet sources into a dataset of Parquet shards.", epilog=EXAMPLES)
@step
def prepare_cmd(
    sources: Annotated[List[str], typer.Argument(metavar="SRC...", help="Source files or directories (searched recursively).", show_default=False)],
    output: OutputOpt,
    shard_rows: Annotated[int, typer.Option("--shard-rows", help="Rows per output shard.", min=1)] = 100_000,
    paragraphs: Annotated[bool, typer.Option("--paragraphs", help="Text files: one document per blank-line-separated paragraph (default: one per file).")] = False,
    domain: Annotated[Optional[str], typer.Option("--domain", help="Add (or replace) a 'domain' column with this value.")] = None,
    id_column: IdColumnOpt = "id",
    text_column: TextColumnOpt = "text",
    overwrite: OverwriteOpt = False,
) -> None:
    prepare_dataset(
        sources,
        output,
        shard_rows=shard_rows,
        paragraphs=paragraphs,
        id_column=id_column,
        text_column=text_column,
        domain=domain,
        run=current_run(),
        overwrite=overwrite,
    )
    emit(output)
