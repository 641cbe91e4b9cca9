from pathlib import Path
from typing import Annotated, Optional

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import IdColumnOpt, InputArg, OverwriteOpt, ResumeOpt, SeedOpt, TextColumnOpt, current_run, emit, step
from delt_cli.scoring.distill import distill

TRAIN = "Training options"

EXAMPLES = """
**Examples**

```
delt score raw -o ann --method lqs --model llama-3m --tokenizer gpt2 --target target/ --proxy-size 2048
delt distill ann -o lqs-scorer --column lqs_z
delt distill ann -o lqs-scorer --column lqs_z --freeze-encoder
delt score raw -o scored --method scorer --scorer lqs-scorer
```

Trains encoder + mean pooling + linear head (MSE) on rows where --column has a value, keeps a
held-out split and records its Spearman and Pearson correlations in scorer.json and manifest.json.
The default encoder is all-MiniLM-L6-v2 from the offline asset cache.
"""


@app.command("distill", help="Train a small scorer (encoder + linear head) on annotated scores, e.g. LQS.", epilog=EXAMPLES)
@step
def distill_cmd(
    input: InputArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Scorer directory to write.", show_default=False)],
    column: Annotated[str, typer.Option("--column", help="Numeric column to learn (rows where it is null are skipped).")] = "lqs_z",
    encoder: Annotated[Optional[str], typer.Option("--encoder", help="Encoder: minilm (all-MiniLM-L6-v2, offline asset; the default), a directory or a hub id in the local Hugging Face cache.")] = None,
    max_length: Annotated[int, typer.Option("--max-length", help="Encoder tokens per document.", rich_help_panel=TRAIN)] = 256,
    epochs: Annotated[int, typer.Option("--epochs", help="Fine-tuning epochs (the best held-out epoch is kept).", rich_help_panel=TRAIN)] = 5,
    lr: Annotated[float, typer.Option("--lr", help="AdamW peak learning rate.", rich_help_panel=TRAIN)] = 1e-4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Documents per step.", rich_help_panel=TRAIN)] = 32,
    heldout: Annotated[float, typer.Option("--heldout", help="Fraction of rows held out for Spearman / Pearson.", rich_help_panel=TRAIN)] = 0.1,
    freeze_encoder: Annotated[bool, typer.Option("--freeze-encoder", help="Keep the encoder fixed and fit the head by ridge regression (fast).", rich_help_panel=TRAIN)] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="Encoder dtype: auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, float16.", rich_help_panel=TRAIN)] = "auto",
    seed: SeedOpt = 0,
    id_column: IdColumnOpt = "id",
    text_column: TextColumnOpt = "text",
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
) -> None:
    distill(
        input,
        output,
        column=column,
        encoder=encoder,
        text_column=text_column,
        id_column=id_column,
        max_length=max_length,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        heldout=heldout,
        freeze_encoder=freeze_encoder,
        dtype=dtype,
        seed=seed,
        run=current_run(),
        overwrite=overwrite,
        resume=resume,
    )
    emit(output)
