"""`evaluate_model`: score one model on benchmark tasks and/or a held-out dataset; write the results JSON.

MODEL may be a Hugging Face model directory, a GGUF file, a cached hub id, a `delt train`
run directory (its final model is used) or a checkpoint inside one, or '-' (the path on stdin).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from delt_cli import __version__
from delt_cli.infra.atomic import describe_os_error, open_atomic
from delt_cli.infra.console import info, progress
from delt_cli.dataset import RunInfo
from delt_cli.dataset.provenance import read_manifest, write_json_atomic
from delt_cli.infra.errors import DeltError, UsageError
from delt_cli.infra.guard import OutputGuard
from delt_cli.evaluation import choice
from delt_cli.evaluation.results import benchmark_average, print_table
from delt_cli.evaluation.tasks import TASKS, default_tasks_dir, load_task, resolve_names


def resolve_model(spec: str, stdin=None) -> tuple[Path | str, Optional[dict]]:
    """(model location, the training run's manifest when MODEL is a run directory)."""
    if spec == "-":
        lines = [ln.strip() for ln in (stdin or sys.stdin).read().splitlines() if ln.strip()]
        if len(lines) != 1:
            raise DeltError(f"MODEL '-': expected one path on stdin, got {len(lines)} line(s)")
        spec = lines[0]
    path = Path(spec)
    manifest = read_manifest(path) if path.is_dir() else None
    if manifest and manifest.get("command") == "train":
        return path / "model", manifest
    if path.is_dir() and not (path / "config.json").is_file() and (path / "run.json").is_file():
        raise DeltError(f"MODEL {spec}: a training run that has not finished (no manifest.json); evaluate one of its checkpoints/ instead")
    from delt_cli.models.loading import resolve

    return resolve(spec, use="model", flag="MODEL"), None  # a short name (smollm2) or cached hub id; never the network


def split_tasks(spec: str) -> tuple[list[str], bool]:
    names = [t.strip() for t in spec.split(",") if t.strip()]
    heldout = any(n.lower() == "heldout" for n in names)
    return resolve_names([n for n in names if n.lower() != "heldout"]), heldout


def _run_summary(manifest: Optional[dict]) -> Optional[dict]:
    if not manifest:
        return None
    return {
        "input": manifest.get("inputs", {}).get("spec"),
        "input_fingerprint": manifest.get("inputs", {}).get("fingerprint"),
        "config": manifest.get("run"),
        "training": manifest.get("training"),
    }


def _same_results(path: Path, run: RunInfo, fingerprint: str) -> bool:
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return old.get("content_args") == run.content_args() and old.get("model", {}).get("fingerprint") == fingerprint


@dataclass
class EvalPlan:
    """What `evaluate_model` checked before loading anything heavy."""

    model: str
    location: Path | str
    train_manifest: Optional[dict]
    fingerprint: str
    output: Path
    names: list[str]
    heldout: Optional[str]
    task_items: dict[str, list]
    tasks_dir: Path
    device: str


def evaluate_model(
    model: str,
    output: Optional[Path],
    *,
    tasks: str,
    run: Optional[RunInfo] = None,
    heldout: Optional[str] = None,
    group_by: Optional[str] = None,
    text_column: str = "text",
    tasks_dir: Optional[Path] = None,
    limit: Optional[int] = None,
    batch_size: int = 32,
    max_length: Optional[int] = None,
    add_prefix_token: bool = False,
    share_prefix: bool = True,
    dtype: str = "auto",
    device: Optional[str] = None,
    harness: bool = False,
    log_samples: bool = False,
    overwrite: bool = False,
    resume: bool = False,
) -> tuple[Path, dict]:
    """Evaluate; return (results path, results). Validate everything, then hold the output
    (delt_cli/infra/guard.py) while the model runs and the results are written."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.time()
    run = run or RunInfo(command="eval", args={"tasks": tasks, "limit": limit})
    plan = validate(model, output, tasks=tasks, heldout=heldout, tasks_dir=tasks_dir, limit=limit, device=device, overwrite=overwrite, resume=resume)
    with OutputGuard(plan.output, overwrite=overwrite, resume=resume, foreign=_foreign_results, run_key=f"eval-{plan.fingerprint}") as guard:
        if plan.output.exists():
            if resume and _same_results(plan.output, run, plan.fingerprint):
                info(f"{plan.output}: already evaluated with the same arguments and model; nothing to do")
                return plan.output, json.loads(plan.output.read_text())
            if not (overwrite or resume):
                raise UsageError(f"--output {plan.output}: exists; pass --overwrite to replace it (or --resume to keep it when unchanged)")
            guard.refuse_foreign()
        results, samples, model_info = run_tasks(
            plan, group_by=group_by, text_column=text_column, limit=limit, batch_size=batch_size, max_length=max_length,
            add_prefix_token=add_prefix_token, share_prefix=share_prefix, dtype=dtype, harness=harness, log_samples=log_samples,
        )
        out = {
            "delt_version": __version__,
            "command": "eval",
            "args": json.loads(json.dumps(run.args, default=str)),
            "content_args": run.content_args(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "elapsed_s": round(time.time() - started, 3),
            "model": {"spec": str(model), "path": str(plan.location), "fingerprint": plan.fingerprint, **model_info, "device": str(plan.device), "run": _run_summary(plan.train_manifest)},
            "settings": {"limit": limit, "add_prefix_token": add_prefix_token, "batch_size": batch_size, "engine": "lm-eval" if harness else "delt", "tasks_dir": str(plan.tasks_dir)},
            "tasks": results,
            "average": benchmark_average(results),
        }
        write_results(plan.output, out, samples)
    print_table(out)
    return plan.output, out


def validate(
    model: str,
    output: Optional[Path],
    *,
    tasks: str,
    heldout: Optional[str],
    tasks_dir: Optional[Path],
    limit: Optional[int],
    device: Optional[str],
    overwrite: bool,
    resume: bool,
) -> EvalPlan:
    """Every check that needs no model weights: flags, the model's location and fingerprint, the
    output, and the task files (read here, so a bad task fails before the model loads)."""
    from delt_cli.models.loading import default_device, fingerprint

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("delt eval runs as a single process; launch it without accelerate/torchrun (use --device to pick a GPU)")
    if overwrite and resume:
        raise UsageError("--overwrite and --resume: pass at most one")
    location, train_manifest = resolve_model(model)
    names, want_heldout = split_tasks(tasks)
    if want_heldout and not heldout:
        raise UsageError("--tasks heldout needs --heldout DATASET (a directory of shards)")
    if not names and not (want_heldout or heldout):
        raise UsageError("--tasks: nothing to evaluate")
    if output is None:
        if train_manifest is None:
            raise UsageError("--output: required unless MODEL is a `delt train` run directory (then RUN_DIR/eval.json)")
        output = Path(location).parent / "eval.json"
    output = Path(output)
    if output.is_dir():
        raise UsageError(f"--output {output}: is a directory; give the results file to write (e.g. {output / 'eval.json'})")
    tasks_dir = Path(tasks_dir) if tasks_dir else default_tasks_dir()
    task_items = {name: load_task(tasks_dir, name, limit) for name in names}
    return EvalPlan(
        model=model, location=location, train_manifest=train_manifest, fingerprint=fingerprint(location), output=output, names=names,
        heldout=heldout, task_items=task_items, tasks_dir=tasks_dir, device=device or default_device(),
    )


def run_tasks(
    plan: EvalPlan,
    *,
    group_by: Optional[str],
    text_column: str,
    limit: Optional[int],
    batch_size: int,
    max_length: Optional[int],
    add_prefix_token: bool,
    share_prefix: bool,
    dtype: str,
    harness: bool,
    log_samples: bool,
) -> tuple[dict[str, dict], dict[str, list], dict]:
    """Load the model and score every task: (results per task, samples per task, model facts)."""
    from delt_cli.models.loading import load_causal_lm, load_tokenizer

    results: dict[str, dict] = {}
    samples: dict[str, list] = {}
    names, location, device = list(plan.names), plan.location, plan.device
    if harness and names:
        from delt_cli.evaluation.harness import run_harness

        if not Path(location).is_dir():
            raise DeltError(f"--harness: MODEL {plan.model} must be a Hugging Face model directory")
        results.update(run_harness(Path(location), names, limit=limit, batch_size=batch_size, device=device, dtype="float32" if dtype == "auto" and device == "cpu" else dtype, add_prefix_token=add_prefix_token))
        names = []
    lm = load_causal_lm(location, dtype=dtype, device=device)
    tokenizer = load_tokenizer(location if Path(str(location)).exists() else plan.model)
    if names:
        from delt_cli.evaluation.loglik import LoglikScorer

        scorer = LoglikScorer(lm, tokenizer, batch_size=batch_size, max_length=max_length, add_prefix_token=add_prefix_token, share_prefix=share_prefix)
        with progress() as bar:
            for name in names:
                task, items = TASKS[name], plan.task_items[name]
                t0 = time.perf_counter()
                bar_task = bar.add_task(name, total=len(items))
                scores = scorer.score([[tuple(r) for r in item["requests"]] for item in items], progress=lambda n, t=bar_task: bar.advance(t, n))
                per_item = [choice.item_metrics(task, item, s) for item, s in zip(items, scores)]
                seconds = time.perf_counter() - t0
                results[name] = {**choice.aggregate(task, per_item), "seconds": round(seconds, 3), "items_per_s": round(len(items) / seconds, 2) if seconds else None}
                if log_samples:
                    samples[name] = [{"id": item["id"], "gold": item["gold"], "lls": [s[0] for s in sc], "greedy": [s[1] for s in sc], **m} for item, sc, m in zip(items, scores, per_item)]
    if plan.heldout:
        from delt_cli.evaluation.heldout import heldout_loss

        t0 = time.perf_counter()
        with progress() as bar:
            bar_task = bar.add_task("heldout", total=None)
            results["heldout"] = heldout_loss(
                lm, tokenizer, plan.heldout, text_column=text_column, group_by=group_by, max_len=max_length or 1024, batch_size=max(batch_size // 2, 1), limit=limit,
                progress=lambda n: bar.advance(bar_task, n),
            )
        results["heldout"]["seconds"] = round(time.perf_counter() - t0, 3)
    model_info = {"parameters": sum(p.numel() for p in lm.parameters()), "dtype": str(next(lm.parameters()).dtype).replace("torch.", "")}
    return results, samples, model_info


def write_results(output: Path, out: dict, samples: dict[str, list]) -> None:
    """The results JSON and, when samples were logged, OUTPUT.samples.jsonl beside it."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output, out)
        if samples:
            with open_atomic(output.with_suffix(".samples.jsonl")) as fh:
                for name, rows in samples.items():
                    for row in rows:
                        fh.write(json.dumps({"task": name, **row}) + "\n")
    except OSError as exc:
        raise DeltError(f"--output {output}: cannot write the results ({describe_os_error(exc)})") from exc


def _foreign_results(path: Path) -> list[str]:
    """An existing --output that is not a delt eval results file is the user's: never replaced."""
    try:
        ours = json.loads(path.read_text()).get("command") == "eval"
    except (OSError, ValueError, AttributeError):
        ours = False
    return [] if ours else [path.name]
