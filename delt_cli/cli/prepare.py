from typing import Annotated, List, Optional

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import (
    COMMON,
    OutputOpt,
    OverwriteOpt,
    ResumeOpt,
    WorldSizeOpt,
    current_run,
    emit,
    rank_opt,
    step,
)
from delt_cli.dataset.prepare import IdPrefix, prepare_dataset
from delt_cli.dataset.prepare_sources import Utf8Policy

EXAMPLES = """
**Examples**

```
delt prepare corpus.jsonl.gz -o data/raw
delt prepare plays/ -o data/plays --paragraphs --domain fiction --shard-rows 50000
delt prepare news.csv --text-column body --id-column url -o data/news
delt prepare dump-2023.jsonl dump-2024.jsonl -o data/both --id-prefix source
delt prepare scraped/ -o data/scraped --on-invalid-utf8 replace
for r in 0 1 2; do delt prepare plays/ -o data/plays3 --rank $r --world-size 3; done; delt finish data/plays3
```

The output always has the columns `id` and `text` first: `--text-column` and `--id-column`
name the source columns that become them, so later commands need neither flag.
"""


@app.command(
    "prepare",
    help="Convert JSON lines or CSV/TSV (plain, .gz or .zst), text, Parquet, Arrow or Hugging Face save_to_disk sources into a dataset of Parquet shards.",
    epilog=EXAMPLES,
)
@step
def prepare_cmd(
    sources: Annotated[List[str], typer.Argument(metavar="SRC...", help="Source files or directories (searched recursively; a save_to_disk directory gives its Arrow files in state.json's order), or s3:// objects and prefixes.", show_default=False)],
    output: OutputOpt,
    shard_rows: Annotated[int, typer.Option("--shard-rows", help="Rows per output shard.", min=1)] = 100_000,
    paragraphs: Annotated[bool, typer.Option("--paragraphs", help="Text files: one document per blank-line-separated paragraph (default: one per file).")] = False,
    domain: Annotated[Optional[str], typer.Option("--domain", help="Add (or replace) a 'domain' column with this value.")] = None,
    id_prefix: Annotated[
        IdPrefix,
        typer.Option("--id-prefix", help="source: write every id as NAME:ID, NAME being the SRC it came from (its file or directory name without the format suffix), so that sources numbered alike can be combined."),
    ] = IdPrefix.none,
    on_invalid_utf8: Annotated[
        Utf8Policy,
        typer.Option("--on-invalid-utf8", help="Invalid UTF-8 in a source: error (name the file and line), replace (with U+FFFD) or skip the record (JSONL line, CSV record, text document, Parquet or Arrow row)."),
    ] = Utf8Policy.error,
    id_column: Annotated[str, typer.Option("--id-column", help="Source column holding the ids, written as 'id' (sources without it get generated ids).", rich_help_panel=COMMON)] = "id",
    text_column: Annotated[str, typer.Option("--text-column", help="Source column holding the text, written as 'text'.", rich_help_panel=COMMON)] = "text",
    rank: rank_opt("Convert only the sources i with i % WORLD_SIZE == RANK, each into its own shards") = None,
    world_size: WorldSizeOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
) -> None:
    from delt_cli.infra.distributed import independent_rank

    ranked = independent_rank(rank, world_size)
    manifest = prepare_dataset(
        sources,
        output,
        shard_rows=shard_rows,
        paragraphs=paragraphs,
        id_column=id_column,
        text_column=text_column,
        id_prefix=id_prefix,
        on_invalid_utf8=on_invalid_utf8,
        domain=domain,
        run=current_run(),
        overwrite=overwrite,
        resume=resume,
        rank=ranked,
    )
    if manifest is not None:  # None: one rank's part, incomplete until `delt finish`
        emit(output)
