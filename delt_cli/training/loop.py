"""`train_run`: train a causal LM on a dataset, reading documents exactly in dataset order.

Single process::

    delt train data/ordered -o runs/fold --config configs/train/cpu-small.yaml

Several processes (one node or many; each reads its slice of every global batch)::

    accelerate launch --num_processes 2 -m delt_cli train data/ordered -o runs/fold --config ...
    torchrun --nproc_per_node 8 -m delt_cli train data/ordered -o runs/fold --config ...

The model sees the same sequences at every optimizer step for any number of processes
with the same global batch (processes x --batch-size x --grad-accum); see batches.py.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from delt_cli import __version__
from delt_cli.infra.atomic import staged_dir
from delt_cli.infra.console import info, progress
from delt_cli.dataset import RunInfo, open_dataset
from delt_cli.dataset.provenance import MANIFEST_NAME, write_json_atomic
from delt_cli.dataset.writer import check_output_location
from delt_cli.infra.distributed import Dist, get_dist
from delt_cli.infra.errors import DeltError
from delt_cli.infra.guard import OutputGuard, foreign_except
from delt_cli.models.loading import fingerprint as model_fingerprint
from delt_cli.models.loading import load_causal_lm, load_tokenizer
from delt_cli.training import checkpoint as ckpt
from delt_cli.training.batches import Layout, check_layout, sequences_per_epoch
from delt_cli.training.config import TrainConfig, identity
from delt_cli.training.runlog import LOSS_PLOT, METRICS, ORDER, StepLog, dedupe_consecutive, plot_loss, read_log
from delt_cli.training.rundir import MODEL_DIR, RUN_LAYOUT, finished_manifest, prepare_run_dir, run_key_of
from delt_cli.training.schedule import make_scheduler, resolve_warmup
from delt_cli.training.tokens import TokenCache, build_token_cache, tokenizer_fingerprint


def resolve_tokenizer_spec(spec: Optional[str], model: str) -> str:
    """The tokenizer to use: --tokenizer (a directory, GGUF, cached hub id, or a short name such as gpt2 /
    smollm2 from the offline assets), else the model's own tokenizer (a model directory or short name)."""
    from delt_cli.models.loading import resolve

    if spec is None:
        where = resolve(model, use="model", flag="--model")
        if Path(where).is_dir() and any((Path(where) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            return str(where)
        raise DeltError(f"--tokenizer: required when --model {model} is not a model directory with a tokenizer (e.g. --tokenizer gpt2)")
    return str(resolve(spec, use="tokenizer", flag="--tokenizer"))


def resolve_precision(precision: str, device: str):
    import torch

    name = {"auto": "bf16" if str(device).startswith("cuda") else "fp32", "float32": "fp32", "bfloat16": "bf16"}.get(precision, precision)
    if name not in ("fp32", "bf16"):
        raise DeltError(f"--precision {precision}: expected auto, fp32 or bf16")
    return name, (torch.bfloat16 if name == "bf16" else None)


def build_optimizer(model, config: TrainConfig):
    """AdamW; weight decay on matrices and embeddings only (not on norms or biases)."""
    import torch

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)


def batch_tensors(cache: TokenCache, layout: Layout, sequences: range, device) -> tuple[Any, Any]:
    """(inputs, targets) for the given global sequence indices: [B, L] int64 tensors."""
    import torch

    windows = np.stack([cache.window(layout.window_start(g), layout.seq_len + 1) for g in sequences])
    tensor = torch.from_numpy(windows)
    return tensor[:, :-1].to(device), tensor[:, 1:].to(device)


def step_document_ids(cache: TokenCache, layout: Layout, step: int) -> list:
    """Ids of the documents whose tokens the global batch of `step` contains, in stream order."""
    rows = []
    for g in layout.step_sequences(step):
        start = layout.window_start(g)
        rows.extend(cache.rows_in(start, start + layout.seq_len + 1))
    return cache.ids_of(dedupe_consecutive(rows))


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"delt_cli": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def train_run(
    input: str | Path,
    run_dir: Path,
    config: TrainConfig,
    *,
    run: Optional[RunInfo] = None,
    save_every: int = 500,
    keep_checkpoints: int = 1,
    log_every: int = 10,
    log_order: bool = False,
    token_cache: Optional[Path] = None,
    resume: bool = False,
    overwrite: bool = False,
    dist: Optional[Dist] = None,
) -> Optional[dict]:
    """Train; return the run manifest on the main process (None on the others)."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    dist = dist or get_dist()
    run = run or RunInfo(command="train", args=config.to_dict())
    run_dir = Path(run_dir)
    started = time.time()

    ds = open_dataset(input, id_column=config.id_column, text_column=config.text_column)
    check_output_location(run_dir, [ds])
    ds.require(config.text_column, flag="--text-column")
    if log_order:
        ds.require(config.id_column, flag="--id-column")
    tokenizer = load_tokenizer(resolve_tokenizer_spec(config.tokenizer, config.model))
    precision, autocast_dtype = resolve_precision(config.precision, str(dist.device))
    run_id = identity(
        config,
        input_fingerprint=ds.fingerprint,
        model_fingerprint=model_fingerprint(config.model, seed=config.seed),
        tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
        processes=dist.world,
    )

    guard = OutputGuard(
        run_dir, overwrite=overwrite, resume=resume, foreign=foreign_except(*RUN_LAYOUT), run_key=run_key_of(run_id), rank=dist.rank, world=dist.world
    )
    with guard:  # one run at a time on RUN_DIR; --overwrite never deletes what delt did not write
        mode = prepare_run_dir(run_dir, run_id, resume=resume, overwrite=overwrite) if dist.is_main else None
        mode = dist.broadcast_object(mode)
        if mode == "finished":
            info(f"{run_dir}: finished with the same configuration; nothing to do")
            return finished_manifest(run_dir) if dist.is_main else None

        try:  # a fresh run that fails its checks leaves nothing behind
            model, cache, layout = _prepare(ds, config, tokenizer, run_dir, token_cache, dist)
        except BaseException:
            if mode == "fresh" and dist.is_main:
                import shutil

                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        total = layout.total_steps
        warmup = resolve_warmup(total, config.warmup_steps, config.warmup_ratio)
        optimizer = build_optimizer(model, config)
        scheduler = make_scheduler(optimizer, warmup_steps=warmup, total_steps=total, min_lr_ratio=config.min_lr_ratio)
        torch.manual_seed(config.seed)

        start_step = 0
        latest = ckpt.latest_checkpoint(run_dir) if mode == "resume" else None
        if latest is not None:
            start_step = ckpt.load_checkpoint(latest, model=model, optimizer=optimizer, scheduler=scheduler, rank=dist.rank)["step"]
            info(f"resuming {run_dir} from {latest.name} (step {start_step:,} of {total:,})")
        elif mode == "resume":
            info(f"{run_dir}: no checkpoint was written yet; training from step 0")
        dist.barrier()

        train_model = model
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            train_model = DistributedDataParallel(model, device_ids=[dist.device.index] if str(dist.device).startswith("cuda") else None)

        metrics = order = None
        if dist.is_main:
            keep = start_step if mode == "resume" else None
            metrics = StepLog(run_dir / METRICS, keep_until=keep)
            order = StepLog(run_dir / ORDER, keep_until=keep) if log_order else None
            info(
                f"training {sum(p.numel() for p in model.parameters()):,} parameters on {cache.num_tokens:,} tokens x {config.epochs} epoch(s): "
                f"{total:,} steps of {layout.global_batch} x {layout.seq_len} tokens ({dist.world} process(es), {precision}, warmup {warmup})"
            )

        device_type = "cuda" if str(dist.device).startswith("cuda") else "cpu"
        autocast = (lambda: torch.autocast(device_type=device_type, dtype=autocast_dtype)) if autocast_dtype else contextlib.nullcontext
        loss_fn = torch.nn.functional.cross_entropy
        train_seconds = 0.0
        last_loss = float("nan")
        with progress() as bar:
            task = bar.add_task("training", total=total, completed=start_step)
            for step in range(start_step, total):
                t0 = time.perf_counter()
                lr = optimizer.param_groups[0]["lr"]
                loss_sum = torch.zeros((), device=dist.device)
                for micro in range(layout.grad_accum):
                    inputs, targets = batch_tensors(cache, layout, layout.micro_batch(step, micro, dist.rank), dist.device)
                    sync = contextlib.nullcontext() if (dist.world == 1 or micro == layout.grad_accum - 1) else train_model.no_sync()
                    with sync:
                        with autocast():
                            logits = train_model(input_ids=inputs, use_cache=False).logits
                        loss = loss_fn(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
                        (loss / layout.grad_accum).backward()
                    loss_sum += loss.detach()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip if config.grad_clip > 0 else math.inf)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step_loss = loss_sum / layout.grad_accum
                if dist.world > 1:
                    torch.distributed.all_reduce(step_loss, op=torch.distributed.ReduceOp.AVG)
                last_loss = float(step_loss)
                if not math.isfinite(last_loss):
                    raise DeltError(f"loss became {last_loss} at step {step + 1}; lower --lr or check the data (the last checkpoint is intact)")
                seconds = time.perf_counter() - t0
                train_seconds += seconds
                done = step + 1
                if dist.is_main:
                    metrics.write(
                        {
                            "step": done,
                            "epoch": round(done * layout.global_batch / layout.sequences_per_epoch, 6),
                            "tokens": done * layout.tokens_per_step,
                            "loss": last_loss,
                            "lr": lr,
                            "grad_norm": float(grad_norm),
                            "tokens_per_s": round(layout.tokens_per_step / seconds, 1),
                            "elapsed_s": round(time.time() - started, 3),
                        }
                    )
                    if order is not None:
                        order.write({"step": done, "ids": step_document_ids(cache, layout, step)})
                    if log_every and (done % log_every == 0 or done == total):
                        info(f"step {done:,}/{total:,}  loss {last_loss:.4f}  lr {lr:.3g}  grad-norm {float(grad_norm):.3g}  {layout.tokens_per_step / seconds:,.0f} tokens/s")
                bar.advance(task)
                if save_every and done % save_every == 0 and done < total:
                    _save(run_dir, done, model, tokenizer, optimizer, scheduler, dist, layout, keep_checkpoints)

        if not dist.is_main:
            dist.barrier()
            return None
        metrics.close()
        if order is not None:
            order.close()
        manifest = _finish_run(
            run_dir, run, ds, config, run_id, model=model, tokenizer=tokenizer, layout=layout, cache=cache,
            warmup=warmup, precision=precision, processes=dist.world, start_step=start_step, train_seconds=train_seconds, log_order=log_order,
        )
        dist.barrier()
        info(f"trained {total:,} steps ({manifest['training']['tokens']:,} tokens), final loss {last_loss:.4f}; model in {run_dir / MODEL_DIR}")
        return manifest


def _finish_run(
    run_dir: Path,
    run: RunInfo,
    ds,
    config: TrainConfig,
    run_id: dict,
    *,
    model,
    tokenizer,
    layout: Layout,
    cache: TokenCache,
    warmup: int,
    precision: str,
    processes: int,
    start_step: int,
    train_seconds: float,
    log_order: bool,
) -> dict:
    """After the last step, on the main process: the final model, the loss plot, then the run
    manifest (written last: a run directory with a manifest is a finished run)."""
    _save_final_model(model, tokenizer, run_dir / MODEL_DIR)
    records = read_log(run_dir / METRICS)
    plot_loss(records, run_dir / LOSS_PLOT, title=f"{Path(ds.spec).name}: {config.model}")
    training = training_summary(
        layout, cache, warmup=warmup, precision=precision, processes=processes, parameters=sum(p.numel() for p in model.parameters()),
        records=records, start_step=start_step, train_seconds=train_seconds,
    )
    manifest = run_manifest(run, ds.describe(), run_id, training, model_spec=config.model, model_dir=run_dir / MODEL_DIR, log_order=log_order)
    write_json_atomic(run_dir / MANIFEST_NAME, manifest)
    return manifest


def training_summary(
    layout: Layout,
    cache: TokenCache,
    *,
    warmup: int,
    precision: str,
    processes: int,
    parameters: int,
    records: list[dict],
    start_step: int,
    train_seconds: float,
) -> dict:
    """The manifest's "training" section: what was trained, and how fast (steps since the resume)."""
    total = layout.total_steps
    return {
        "steps": total,
        "tokens": total * layout.tokens_per_step,
        "dataset_tokens": cache.num_tokens,
        "sequences_per_epoch": layout.sequences_per_epoch,
        "global_batch": layout.global_batch,
        "warmup_steps": warmup,
        "precision": precision,
        "processes": processes,
        "parameters": parameters,
        "final_loss": records[-1]["loss"] if records else None,
        "tokens_per_s": round((total - start_step) * layout.tokens_per_step / train_seconds, 1) if train_seconds else None,
        "resumed_from_step": start_step or None,
    }


def run_manifest(run: RunInfo, inputs: dict, run_id: dict, training: dict, *, model_spec: str, model_dir: Path, log_order: bool) -> dict:
    """The run's manifest.json: the command, the input, the run identity, the training summary,
    the final model's fingerprint (read from `model_dir`, so write the model first) and versions."""
    return run.manifest(
        inputs=inputs,
        outputs=[],
        extra={
            "outputs": {"model": MODEL_DIR, "metrics": METRICS, "loss_plot": LOSS_PLOT, **({"order": ORDER} if log_order else {})},
            "run": run_id,
            "training": training,
            "model": {"spec": model_spec, "fingerprint": model_fingerprint(model_dir)},
            "versions": _versions(),
        },
    )


def _prepare(ds, config: TrainConfig, tokenizer, run_dir: Path, token_cache: Optional[Path], dist: Dist):
    """Build or load the model, tokenize the data, and check that they fit together."""
    model = load_causal_lm(config.model, dtype="float32", device=dist.device, vocab_size=len(tokenizer), seed=config.seed)
    vocab = model.get_input_embeddings().num_embeddings
    if vocab < len(tokenizer):
        raise DeltError(
            f"--tokenizer {config.tokenizer or config.model}: {len(tokenizer):,} tokens do not fit the model's "
            f"vocabulary of {vocab:,} (--model {config.model}); use the model's own tokenizer or a model config"
        )
    model.train()
    cache = build_token_cache(ds, tokenizer, Path(token_cache) if token_cache else run_dir / "tokens", rank=dist.rank, world=dist.world, barrier=dist.barrier)
    layout = Layout(
        seq_len=config.seq_len,
        batch_size=config.batch_size,
        grad_accum=config.grad_accum,
        processes=dist.world,
        sequences_per_epoch=sequences_per_epoch(cache.num_tokens, config.seq_len),
        epochs=config.epochs,
        max_tokens=config.max_tokens,
        max_steps=config.max_steps,
    )
    check_layout(layout, num_tokens=cache.num_tokens, what=ds.spec)
    return model, cache, layout


def _save(run_dir, step, model, tokenizer, optimizer, scheduler, dist: Dist, layout: Layout, keep: int) -> None:
    from delt_cli.training.checkpoint import rng_state

    rngs = dist.gather_objects(rng_state())
    if dist.is_main:
        state = {"tokens": step * layout.tokens_per_step, "sequences": step * layout.global_batch, "epoch": layout.epoch_of(step * layout.global_batch)}
        ckpt.save_checkpoint(run_dir, step, model=model, tokenizer=tokenizer, optimizer=optimizer, scheduler=scheduler, rng_states=rngs, state=state, keep=keep)
    dist.barrier()


def _save_final_model(model, tokenizer, target: Path) -> None:
    """The final Hugging Face model directory, written beside and renamed into place."""
    try:
        with staged_dir(target) as tmp:
            ckpt.save_model_dir(model, tokenizer, tmp)
    except OSError as exc:
        where = f"{Path(exc.filename).name}: " if exc.filename else ""
        raise DeltError(f"cannot write the final model to {target} ({where}{exc.strerror or exc}); rerun with --resume") from exc

