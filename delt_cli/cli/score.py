from pathlib import Path
from typing import Annotated, Optional

import typer

from delt_cli.cli.base import app
from delt_cli.cli.common import IdColumnOpt, InputArg, OutputOpt, OverwriteOpt, ResumeOpt, SeedOpt, TextColumnOpt, current_run, emit, step
from delt_cli.scoring.registry import FACTORIES, build_scorer
from delt_cli.scoring.runner import score_dataset

MODEL = "Model options"
PPL = "Perplexity options"
LQS = "LQS options (--method lqs)"
SCORER = "Distilled scorer options (--method scorer)"
COMMON = "Common options"
TARGETED = "GOT-D / DSIR options"

EXAMPLES = """
**Examples**

```
delt score raw -o scored --method length --tokenizer gpt2
delt score raw -o ppl --method perplexity --model smollm2 --max-length 256
delt score raw -o ann --method lqs --model llama-3m --tokenizer gpt2 --target target/ --proxy-size 2048
delt distill ann -o scorer --column lqs_z
delt score raw -o lqs --method scorer --scorer scorer
accelerate launch --multi_gpu --num_processes 2 -m delt_cli score raw -o scored --method perplexity --model smollm2
delt score raw -o scored --method perplexity --model smollm2 --processes 2
delt score emb -o scored --method gotd --target target-emb --epsilon-relative 0.05
delt score raw -o scored --method dsir --target target
```

Adds score columns to every shard; all other columns are kept. Per shard, resumable with --resume.
Methods: length (n_chars, n_words, n_tokens), compression (zlib ratio), perplexity (ppl, ppl_nll,
ppl_tokens), lqs (lqs, pds, quality, learnability, lqs_z on a proxy sample, null elsewhere),
scorer (a distilled scorer's prediction), gotd (gotd or gotd_contrast; needs `delt embed`), dsir
(dsir log importance weight). See docs/scoring.md and docs/gotd.md.

Model names: smollm2 (SmolLM2-135M-Instruct, 4-bit Q4_1 GGUF dequantised to fp32, BOS <|im_start|>),
gpt2 (GPT-2's BPE tokenizer, no weights), minilm (all-MiniLM-L6-v2), the configs/models names
(random init), a local directory or .gguf file, or a hub id already in the local Hugging Face
cache (never downloaded: `hf download ID` first).
"""


@app.command("score", help="Add score columns to every shard (length, perplexity, LQS, GOT-D, DSIR, ...).", epilog=EXAMPLES)
@step
def score_cmd(
    input: InputArg,
    output: OutputOpt,
    method: Annotated[str, typer.Option("--method", help=f"Scoring method: {', '.join(sorted(FACTORIES))}.")] = "length",
    column: Annotated[Optional[str], typer.Option("--column", help="Name (or prefix) of the score column(s) to add (default: per method).")] = None,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Tokenizer: gpt2, smollm2 or minilm (offline assets), a directory, a .gguf file or a hub id in the local Hugging Face cache (length: also count tokens; perplexity/lqs: default the model's own).", rich_help_panel=MODEL)] = None,
    # -- model scorers (perplexity, lqs, scorer) ------------------------------------------------
    model: Annotated[Optional[str], typer.Option("--model", "--proxy-model", help="Reference LM (perplexity) or proxy LM (lqs): smollm2 (SmolLM2-135M-Instruct, Q4_1-quantised GGUF dequantised to fp32, offline asset), a configs/models name such as llama-3m (random init, needs --tokenizer), a model directory, a .gguf file or a hub id in the local Hugging Face cache (never downloaded).", rich_help_panel=MODEL)] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16 or float16.", rich_help_panel=MODEL)] = "auto",
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow model code from the model directory (off by default).", rich_help_panel=MODEL)] = False,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Tokens per document, prefix included (default: 1024 perplexity, 512 lqs and scorer); longer ones are truncated (or strided with --stride).", rich_help_panel=MODEL)] = None,
    prefix_token: Annotated[str, typer.Option("--prefix-token", help="Token before every document: bos, eos, none or a token string.", rich_help_panel=MODEL)] = "bos",
    batch_tokens: Annotated[Optional[int], typer.Option("--batch-tokens", help="Tokens per batch (rows x longest row) for perplexity and scorer inference (default: 512 on CPU, 16384 on GPU; at least --max-length).", rich_help_panel=MODEL)] = None,
    stride: Annotated[int, typer.Option("--stride", help="Perplexity of documents longer than --max-length by windows starting every STRIDE tokens (0: truncate).", rich_help_panel=PPL)] = 0,
    target: Annotated[Optional[str], typer.Option("--target", help="The target dataset (directory / Parquet file / glob). lqs: the documents whose mean loss J the proxy trajectory is scored against; gotd: with the same embedding column, made by `delt embed`; dsir: the text whose n-gram model the weights favour.", rich_help_panel=TARGETED)] = None,
    target_size: Annotated[int, typer.Option("--target-size", help="Use the first N non-empty target documents (0: all).", rich_help_panel=LQS)] = 1024,
    target_text_column: Annotated[Optional[str], typer.Option("--target-text-column", help="Text column of --target (default: --text-column).", rich_help_panel=LQS)] = None,
    proxy_size: Annotated[int, typer.Option("--proxy-size", help="Documents annotated (uniform sample, seeded); the others get null.", rich_help_panel=LQS)] = 4096,
    proxy_steps: Annotated[int, typer.Option("--proxy-steps", help="SGD steps T of the proxy trajectory.", rich_help_panel=LQS)] = 100,
    proxy_batch_size: Annotated[int, typer.Option("--proxy-batch-size", help="Documents per SGD step.", rich_help_panel=LQS)] = 16,
    proxy_lr: Annotated[float, typer.Option("--proxy-lr", help="SGD learning rate eta.", rich_help_panel=LQS)] = 0.008,
    interval: Annotated[int, typer.Option("--interval", help="Score the proxy sample every N steps (t = 0, N, 2N, ... < T).", rich_help_panel=LQS)] = 10,
    last_norm: Annotated[str, typer.Option("--last-norm", help="Denominator of the last annotated step: next (||g|| at step T, the paper) or one (the published code).", rich_help_panel=LQS)] = "next",
    proxy_warmup_steps: Annotated[int, typer.Option("--proxy-warmup-steps", help="AdamW steps on the corpus before the SGD trajectory (for a proxy trained from scratch).", rich_help_panel=LQS)] = 0,
    proxy_warmup_lr: Annotated[float, typer.Option("--proxy-warmup-lr", help="AdamW learning rate of the warm-up.", rich_help_panel=LQS)] = 1e-3,
    per_sample: Annotated[str, typer.Option("--per-sample", help="Per-sample gradient method: auto (hooks when supported), hooks, loop or vmap.", rich_help_panel=LQS)] = "auto",
    per_sample_batch: Annotated[int, typer.Option("--per-sample-batch", help="Proxy documents per per-sample pass.", rich_help_panel=LQS)] = 32,
    micro_batch: Annotated[int, typer.Option("--micro-batch", help="Rows per forward/backward of the proxy (step and target gradients, Hessian-vector products, per-sample head gradients): bounds memory, not results.", rich_help_panel=LQS)] = 8,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Keep parameters every K steps and recompute the rest (0: ceil(sqrt(T))).", rich_help_panel=LQS)] = 0,
    scorer: Annotated[Optional[Path], typer.Option("--scorer", help="Directory written by `delt distill`.", rich_help_panel=SCORER)] = None,
    processes: Annotated[int, typer.Option("--processes", help="Run N processes (re-launches itself with torchrun; GPUs are used when present).", rich_help_panel=COMMON)] = 1,
    # -- GOT-D / DSIR options ------------------------------------------------------
    embedding_column: Annotated[str, typer.Option("--embedding-column", help="gotd: the embedding column of the pool and the target.", rich_help_panel=TARGETED)] = "emb",
    epsilon: Annotated[Optional[float], typer.Option("--epsilon", help="gotd: absolute entropic regularisation (default 0.1, the paper's).", rich_help_panel=TARGETED)] = None,
    epsilon_relative: Annotated[Optional[float], typer.Option("--epsilon-relative", help="gotd: epsilon = R x the median target-pool cost (instead of --epsilon).", rich_help_panel=TARGETED)] = None,
    pool_size: Annotated[int, typer.Option("--pool-size", help="gotd: candidates in the OT solve; dsir: pool rows the raw n-gram model is fitted on (a seeded uniform sample when the pool is larger).", rich_help_panel=TARGETED)] = 50_000,
    max_iter: Annotated[int, typer.Option("--max-iter", help="gotd: maximum Sinkhorn iterations.", rich_help_panel=TARGETED)] = 2000,
    tol: Annotated[float, typer.Option("--tol", help="gotd: stop when the L1 error of the target marginal is at most this (a warning when not reached).", rich_help_panel=TARGETED)] = 1e-4,
    max_memory: Annotated[str, typer.Option("--max-memory", help="gotd: keep the target x sample kernel in memory up to this size (e.g. 2GB), else recompute it in tiles.", rich_help_panel=TARGETED)] = "2GB",
    ot_dtype: Annotated[str, typer.Option("--ot-dtype", help="gotd: float32 or float64 for the solve and the scores.", rich_help_panel=TARGETED)] = "float32",
    contrast: Annotated[bool, typer.Option("--contrast", help="gotd: --target is a negative target (GOT-D contrast); column gotd_contrast, higher = more useful.", rich_help_panel=TARGETED)] = False,
    dsir_buckets: Annotated[int, typer.Option("--dsir-buckets", help="dsir: hash buckets for unigram + bigram features.", rich_help_panel=TARGETED)] = 10_000,
    # -------------------------------------------------------------------------------------------
    seed: SeedOpt = 0,
    id_column: IdColumnOpt = "id",
    text_column: TextColumnOpt = "text",
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
) -> None:
    if processes > 1:
        from delt_cli.launch import relaunch

        relaunch(processes)
    run = current_run()
    scorer = build_scorer(method, dict(run.args))
    manifest = score_dataset(input, output, scorer, run=run, overwrite=overwrite, resume=resume, id_column=id_column, text_column=text_column)
    if manifest is not None:
        emit(output)
