from pathlib import Path
from typing import Annotated, Optional

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import COMMON, IdColumnOpt, InputArg, OverwriteOpt, SeedOpt, TextColumnOpt, current_run, emit, step
from delt_cli.training.config import TrainConfig
from delt_cli.training.loop import train_run

MODEL = "Model and data"
OPTIM = "Optimizer and schedule"
RUN = "Checkpoints and logs"
D = TrainConfig()

EXAMPLES = """
**Examples**

```
delt train data/ordered -o runs/fold --config configs/train/cpu-small.yaml
delt train data/ordered -o runs/fold --config configs/train/cpu-small.yaml --lr 3e-3 --epochs 3
delt train data/ordered -o runs/fold --config configs/train/cpu-small.yaml --resume
delt train data/ordered -o runs/tuned --model runs/fold/model --max-tokens 2000000
accelerate launch --num_processes 2 -m delt_cli train data/ordered -o runs/fold --config configs/train/paper-160m.yaml
```

Documents are read exactly in dataset order (shards by name, rows in order), each followed by
EOS, and packed into --seq-len windows without padding; later epochs repeat the same order.
The run directory gets metrics.jsonl, loss.png, checkpoints/, model/ (a Hugging Face model
directory) and manifest.json. `--resume` continues from the last checkpoint exactly, refuses a
different configuration, and does nothing on a finished run.
"""


@app.command("train", help="Train a causal LM on a dataset in dataset order (packed, no shuffling); checkpoints and exact resume.", epilog=EXAMPLES)
@step
def train_cmd(
    input: InputArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Run directory (created).", show_default=False)],
    model: Annotated[str, typer.Option("--model", help="A configs/models name or file (random init, e.g. llama-5m), smollm2 (offline asset) or a Hugging Face model directory to continue training.", rich_help_panel=MODEL)] = D.model,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Tokenizer: gpt2 or smollm2 (offline assets), a directory, a .gguf file or a hub id in the local Hugging Face cache; default: the model's own.", rich_help_panel=MODEL)] = D.tokenizer,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per packed training sequence.", rich_help_panel=MODEL)] = D.seq_len,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the data, each in the same order.", rich_help_panel=MODEL)] = D.epochs,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Stop after this many training tokens (whole steps).", rich_help_panel=MODEL)] = D.max_tokens,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many optimizer steps (the schedule spans them).", rich_help_panel=MODEL)] = D.max_steps,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per micro-batch per process.", rich_help_panel=OPTIM)] = D.batch_size,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Micro-batches per optimizer step (global batch = processes x batch size x this).", rich_help_panel=OPTIM)] = D.grad_accum,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.", rich_help_panel=OPTIM)] = D.lr,
    min_lr_ratio: Annotated[float, typer.Option("--min-lr-ratio", help="Cosine decay ends at lr x this.", rich_help_panel=OPTIM)] = D.min_lr_ratio,
    warmup_steps: Annotated[Optional[int], typer.Option("--warmup-steps", help="Linear warmup steps (capped at the run's length).", rich_help_panel=OPTIM)] = D.warmup_steps,
    warmup_ratio: Annotated[Optional[float], typer.Option("--warmup-ratio", help="Warmup as a fraction of all steps (wins over --warmup-steps when given).", rich_help_panel=OPTIM)] = D.warmup_ratio,
    beta1: Annotated[float, typer.Option("--beta1", help="AdamW beta1.", rich_help_panel=OPTIM)] = D.beta1,
    beta2: Annotated[float, typer.Option("--beta2", help="AdamW beta2.", rich_help_panel=OPTIM)] = D.beta2,
    eps: Annotated[float, typer.Option("--eps", help="AdamW epsilon.", rich_help_panel=OPTIM)] = D.eps,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (matrices and embeddings; not norms or biases).", rich_help_panel=OPTIM)] = D.weight_decay,
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="Clip the global gradient norm to this (0: no clipping).", rich_help_panel=OPTIM)] = D.grad_clip,
    precision: Annotated[str, typer.Option("--precision", help="auto (bf16 autocast on GPU, fp32 on CPU), fp32 or bf16.", rich_help_panel=OPTIM)] = D.precision,
    seed: SeedOpt = D.seed,
    save_every: Annotated[int, typer.Option("--save-every", help="Checkpoint every N optimizer steps (0: only the final model).", rich_help_panel=RUN)] = 500,
    keep_checkpoints: Annotated[int, typer.Option("--keep-checkpoints", help="How many recent checkpoints to keep.", rich_help_panel=RUN)] = 1,
    log_every: Annotated[int, typer.Option("--log-every", help="Print a progress line every N steps (metrics.jsonl gets every step).", rich_help_panel=RUN)] = 10,
    log_order: Annotated[bool, typer.Option("--log-order", help="Write the document ids of every step to order.jsonl (audit the order).", rich_help_panel=RUN)] = False,
    token_cache: Annotated[Optional[Path], typer.Option("--token-cache", help="Directory for the tokenized dataset, shareable between runs (default: RUN_DIR/tokens).", rich_help_panel=RUN)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output from its last checkpoint (a finished run is left as it is).", rich_help_panel=COMMON)] = False,
    id_column: IdColumnOpt = D.id_column,
    text_column: TextColumnOpt = D.text_column,
    overwrite: OverwriteOpt = False,
) -> None:
    run = current_run()
    config = TrainConfig.from_args(run.args)
    manifest = train_run(
        input,
        output,
        config,
        run=run,
        save_every=save_every,
        keep_checkpoints=keep_checkpoints,
        log_every=log_every,
        log_order=log_order,
        token_cache=token_cache,
        resume=resume,
        overwrite=overwrite,
    )
    if manifest is not None:
        emit(output)
