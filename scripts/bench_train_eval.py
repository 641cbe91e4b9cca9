#!/usr/bin/env python
"""Benchmark: `delt train` vs transformers' Trainer, and `delt eval` scoring vs lm-evaluation-harness.

Training: the same random-init model (a configs/models config with GPT-2's 50k vocabulary,
fp32, CPU), the same packed sequences (the token cache of `delt train`, in order), the same
micro-batch, sequence length, AdamW and schedule, in the same process. Both are timed per
optimizer step after warm-up steps; we report the median tokens/s and the ratio. The runs
alternate (ours, Trainer, ours, Trainer) so load from other work hits both alike.

Multiple choice: SmolLM2-135M (fp32, CPU) on the first items of ARC-Easy and HellaSwag.
`delt`'s batched shared-prefix scorer vs lm-evaluation-harness' HF model (`HFLM.loglikelihood`
on exactly the same (context, continuation) requests, batch size 32, when lm-eval is installed)
and vs a one-request-at-a-time loop. Items/s and the ratio are reported; the log-likelihoods are
checked to agree.

    python scripts/bench_train_eval.py                        # both, prints markdown
    python scripts/bench_train_eval.py --write-docs           # and replace our section of docs/benchmarks.md
    python scripts/bench_train_eval.py --skip-eval --model llama-5m --steps 30
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from delt_cli.infra import assets  # noqa: E402
from delt_cli.dataset import open_dataset  # noqa: E402
from delt_cli.training.config import TrainConfig  # noqa: E402
from delt_cli.training.loop import train_run  # noqa: E402
from delt_cli.training.runlog import read_log  # noqa: E402


def make_corpus(directory: Path, docs: int) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from trainkit import corpus

    return corpus(directory, n=docs, shards=2)


def bench_ours(data: Path, config: TrainConfig, steps: int, warmup: int, work: Path, cache: Path) -> list[float]:
    run_dir = work / f"ours-{time.time_ns()}"
    cfg = TrainConfig(**{**config.to_dict(), "max_steps": steps + warmup})
    train_run(data, run_dir, cfg, save_every=0, log_every=0, token_cache=cache)
    return [r["tokens_per_s"] for r in read_log(run_dir / "metrics.jsonl")][warmup:]


def bench_trainer(data: Path, config: TrainConfig, steps: int, warmup: int, work: Path, cache: Path) -> list[float]:
    """transformers.Trainer on the same windows, model init, batch, optimizer and schedule."""
    import numpy as np
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from delt_cli.models.loading import load_causal_lm, load_tokenizer
    from delt_cli.training.batches import sequences_per_epoch
    from delt_cli.training.loop import resolve_tokenizer_spec
    from delt_cli.training.tokens import build_token_cache

    tok = load_tokenizer(resolve_tokenizer_spec(config.tokenizer, config.model))
    token_cache = build_token_cache(open_dataset(data), tok, cache)
    n = min(sequences_per_epoch(token_cache.num_tokens, config.seq_len), (steps + warmup) * config.batch_size)
    windows = [token_cache.window(k * config.seq_len, config.seq_len).astype(np.int64) for k in range(n)]

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return len(windows)

        def __getitem__(self, i):
            ids = torch.from_numpy(windows[i])
            return {"input_ids": ids, "labels": ids}

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    model = load_causal_lm(config.model, dtype="float32", device="cpu", vocab_size=len(tok), seed=config.seed).train()
    args = TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        max_steps=steps + warmup, learning_rate=config.lr, lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio},
        warmup_steps=1, adam_beta1=config.beta1, adam_beta2=config.beta2, adam_epsilon=config.eps, weight_decay=config.weight_decay,
        max_grad_norm=config.grad_clip, use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, seed=config.seed, optim="adamw_torch",
    )
    Trainer(model=model, args=args, train_dataset=Windows(), callbacks=[Timer()]).train()
    tokens = config.batch_size * config.grad_accum * config.seq_len
    return [tokens / t for t in times[warmup:]]


def bench_training(args) -> str:
    config = TrainConfig(model=args.model, tokenizer="gpt2", seq_len=args.seq_len, batch_size=args.batch_size, grad_accum=1, lr=1e-3, warmup_ratio=0.05)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_corpus(work / "data", args.docs)
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours += bench_ours(data, config, args.steps, args.warmup, work, work / "tokens")
            theirs += bench_trainer(data, config, args.steps, args.warmup, work, work / "tokens")
    o, t = statistics.median(ours), statistics.median(theirs)
    params = sum(p.numel() for p in __import__("delt_cli.models.loading", fromlist=["x"]).model_from_config(args.model, vocab_size=50257).parameters())
    return (
        f"### Training throughput (`delt train` vs `transformers.Trainer`)\n\n"
        f"{args.model} ({params / 1e6:.1f}M parameters with GPT-2's 50,257-token vocabulary), fp32 on CPU, micro-batch "
        f"{args.batch_size} x {args.seq_len} tokens, AdamW + cosine schedule, {args.steps} timed steps after {args.warmup} warm-up steps, "
        f"{args.repeats} alternating repeat(s) of each.\n\n"
        f"| trainer | median tokens/s | min | max |\n|---|---:|---:|---:|\n"
        f"| delt train | {o:,.0f} | {min(ours):,.0f} | {max(ours):,.0f} |\n"
        f"| transformers Trainer | {t:,.0f} | {min(theirs):,.0f} | {max(theirs):,.0f} |\n\n"
        f"Ratio (median): **{o / t:.2f}x** (goal >= 1.0x).\n"
    )


def bench_eval(args) -> str:
    from delt_cli.evaluation.loglik import LoglikScorer
    from delt_cli.evaluation.tasks import build_task_files, default_tasks_dir, load_task, task_path
    from delt_cli.models.loading import load_causal_lm, load_tokenizer

    tasks_dir = default_tasks_dir()
    for name in ("arc_easy", "hellaswag"):
        if not task_path(tasks_dir, name).is_file():
            build_task_files(tasks_dir, [name])
    items = []
    for name, n in (("arc_easy", args.items), ("hellaswag", args.items)):
        items += [[tuple(r) for r in it["requests"]] for it in load_task(tasks_dir, name, n)]
    requests = sum(len(i) for i in items)
    model_dir = assets.smollm2_dir()
    model = load_causal_lm(model_dir, dtype="float32", device="cpu")
    tok = load_tokenizer(model_dir)
    rows = []

    packed = LoglikScorer(model, tok, batch_size=32)
    plain = LoglikScorer(model, tok, batch_size=32, share_prefix=False)
    flat = [r for item in items for r in item]
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM

        hf = HFLM(pretrained=str(model_dir), device="cpu", batch_size=32, dtype="float32")
        harness = f"lm-eval {__import__('lm_eval').__version__} HFLM (batch 32)"
    except ImportError:
        hf, harness = None, None
    times: dict[str, list[float]] = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    ours_name, plain_name = "delt eval (batch 32, packed shared prefixes)", "delt eval --no-share-prefix (batch 32)"
    for _ in range(max(1, args.eval_repeats)):  # alternating, so load changes hit every scorer alike
        ours = [s for item in timed(ours_name, lambda: packed.score(items)) for s in item]
        timed(plain_name, lambda: plain.score(items))
        if hf is not None:
            theirs = timed(harness, lambda: hf.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(flat)], disable_tqdm=True))
    rows = [(name, statistics.median(t)) for name, t in times.items()]
    t_ours = dict(rows)[ours_name]
    baseline_name = harness
    if hf is not None:
        worst = max(abs(a[0] - b[0]) for a, b in zip(ours, theirs))
        agree = f"max |log-likelihood difference| vs lm-eval: {worst:.1e} nats over {requests} requests."
    else:
        agree = "lm-eval is not installed: the baseline is the one-request-at-a-time loop."

    one = LoglikScorer(model, tok, batch_size=1, share_prefix=False)
    t0 = time.perf_counter()
    one.score(items[: max(len(items) // 4, 1)])
    t_one = (time.perf_counter() - t0) * len(items) / max(len(items) // 4, 1)
    rows.append(("one request at a time (extrapolated from a quarter)", t_one))
    baseline = dict(rows)[baseline_name] if baseline_name else t_one
    lines = [f"| {name} | {len(items) / t:,.2f} | {t_ours and t / t_ours:.2f}x |" for name, t in rows]
    return (
        f"### Multiple-choice scoring (`delt eval` vs lm-evaluation-harness)\n\n"
        f"SmolLM2-135M, fp32 on CPU, the first {args.items} items of ARC-Easy and of HellaSwag ({len(items)} items, {requests} requests), same requests for all; "
        f"median of {max(1, args.eval_repeats)} alternating run(s) of each scorer.\n\n"
        f"| scorer | items/s | delt's speed-up over it |\n|---|---:|---:|\n" + "\n".join(lines) + "\n\n"
        f"Ratio vs the baseline: **{baseline / t_ours:.2f}x** (goal >= 2x). {agree}\n"
    )


def write_docs(key: str, text: str) -> None:
    """Replace the `key` block (train or eval) of our section in docs/benchmarks.md, keeping the other."""
    path = REPO / "docs" / "benchmarks.md"
    doc = path.read_text() if path.exists() else "# Benchmarks\n\nFigures measured on this project's machines, with the commands that produced them.\n"
    heading = "## Training and evaluation"
    if heading not in doc:
        doc = doc.rstrip() + f"\n\n{heading}\n\nFigures from `scripts/bench_train_eval.py`; each block says when and how it was measured.\n"
    start, end = f"<!-- BEGIN train-eval/{key} -->", f"<!-- END train-eval/{key} -->"
    block = f"{start}\n{text}\n{end}"
    if start in doc:
        doc = doc[: doc.index(start)] + block + doc[doc.index(end) + len(end) :]
    else:
        after = doc.index(heading) + len(heading)
        nxt = doc.find("\n## ", after)
        at = len(doc) if nxt < 0 else nxt
        doc = doc[:at].rstrip() + "\n\n" + block + "\n" + doc[at:]
    path.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="llama-16m", help="configs/models name for the training benchmark")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12, help="timed optimizer steps per repeat")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--docs", type=int, default=400, help="documents in the training corpus")
    ap.add_argument("--items", type=int, default=40, help="items per task for the multiple-choice benchmark")
    ap.add_argument("--eval-repeats", type=int, default=3, help="alternating runs of each multiple-choice scorer")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for every measured scorer and trainer (0: torch's default, one per core)")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()[0]
    command = "python scripts/bench_train_eval.py " + " ".join(sys.argv[1:])
    footer = (
        f"\nMeasured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; 1-minute load average {load:.1f} at the start ("
        + ("other work shared this machine, so absolute figures are noisy; " if load > 1.5 else "")
        + f"each ratio compares runs made one after the other in the same process). Command: `{command.strip()}`.\n"
    )
    for key, skip, bench in (("train", args.skip_train, bench_training), ("eval", args.skip_eval, bench_eval)):
        if skip:
            continue
        text = bench(args) + footer
        print(text)
        if args.write_docs:
            write_docs(key, text)


if __name__ == "__main__":
    main()
