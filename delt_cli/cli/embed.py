from typing import Annotated, Optional

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import (
    IdColumnOpt,
    InputArg,
    OutputOpt,
    OverwriteOpt,
    ResumeOpt,
    TextColumnOpt,
    WorldSizeOpt,
    current_run,
    emit,
    rank_opt,
    step,
)
from delt_cli.scoring.gotd.embedding import embed_dataset

MODEL = "Model options"

EXAMPLES = """
**Examples**

```
delt embed raw -o embedded
delt embed target -o target-emb --model minilm --dtype float16
accelerate launch --num_processes 2 -m delt_cli embed raw -o embedded --batch-size 256
delt embed raw -o emb | delt score - -o scored --method gotd --target target-emb
delt embed raw -o emb --rank 3 --world-size 16   # one of 16 independent ranks; then: delt finish emb
```

Adds a fixed-size-list float column (default 'emb') to every shard; all other columns are kept.
Documents longer than --chunk-chars are split into chunks whose embeddings are averaged
(weighted by characters). Per shard, resumable with --resume.
"""


@app.command("embed", help="Add a sentence-embedding column (mean pooling over real tokens) to every shard.", epilog=EXAMPLES)
@step
def embed_cmd(
    input: InputArg,
    output: OutputOpt,
    model: Annotated[Optional[str], typer.Option("--model", help="Encoder: minilm (all-MiniLM-L6-v2, offline asset; the default), a Hugging Face or sentence-transformers directory, or a hub id in the local Hugging Face cache.", rich_help_panel=MODEL)] = None,
    column: Annotated[str, typer.Option("--column", help="Name of the embedding column to add.")] = "emb",
    chunk_chars: Annotated[int, typer.Option("--chunk-chars", help="Split longer documents into chunks of at most this many characters and average their embeddings.")] = 1000,
    normalize: Annotated[Optional[bool], typer.Option("--normalize/--no-normalize", help="L2-normalise the embeddings (default: as the model's sentence-transformers config says; all-MiniLM-L6-v2: yes).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Chunks per forward pass (chunks are sorted by length first).", rich_help_panel=MODEL)] = 64,
    dtype: Annotated[str, typer.Option("--dtype", help="Storage type of the column: float32 or float16.")] = "float32",
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Truncate chunks to this many tokens (default: the model's max_seq_length).", rich_help_panel=MODEL)] = None,
    rank: rank_opt("Embed only shards i with i % WORLD_SIZE == RANK") = None,
    world_size: WorldSizeOpt = None,
    id_column: IdColumnOpt = "id",
    text_column: TextColumnOpt = "text",
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
) -> None:
    from delt_cli.infra.distributed import get_dist

    dist = get_dist(rank, world_size)
    manifest = embed_dataset(
        input,
        output,
        model=model,
        column=column,
        chunk_chars=chunk_chars,
        normalize=normalize,
        batch_size=batch_size,
        dtype=dtype,
        max_length=max_length,
        run=current_run(),
        overwrite=overwrite,
        resume=resume,
        id_column=id_column,
        text_column=text_column,
        dist=dist,
    )
    if manifest is not None:
        emit(output)
