"""The run directory: refuse to clobber, resume only the same configuration, skip finished runs.

    RUN_DIR/
      run.json          the run's identity (hyperparameters + input/model/tokenizer fingerprints), written first
      tokens/           token cache (unless --token-cache points elsewhere)
      checkpoints/      step-XXXXXXXX/ + latest.json
      metrics.jsonl     one line per optimizer step
      order.jsonl       document ids per step (--log-order)
      model/            the final Hugging Face model directory (safetensors + tokenizer)
      loss.png
      manifest.json     written last: the run is finished
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

from delt_cli.dataset.provenance import MANIFEST_NAME, read_manifest, write_json_atomic
from delt_cli.infra.errors import DeltError, UsageError
from delt_cli.training.config import differing_keys

IDENTITY = "run.json"
MODEL_DIR = "model"
RUN_FILES = (IDENTITY, "metrics.jsonl", MANIFEST_NAME, "checkpoints")
# Everything a run directory may hold (what `--overwrite` may delete): the layout above, plus
# `delt eval RUN_DIR`'s default results beside the model.
RUN_LAYOUT = (*RUN_FILES, "tokens", MODEL_DIR, "order.jsonl", "loss.png", "eval.json", "eval.samples.jsonl")


def run_key_of(identity: dict[str, Any]) -> str:
    """What makes the processes of one training run share RUN_DIR's lock: its identity (configuration,
    input, model and tokenizer fingerprints, number of processes)."""
    import hashlib

    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_run_dir(path: Path) -> bool:
    return any((Path(path) / name).exists() for name in RUN_FILES)


def finished_manifest(run_dir: Path) -> Optional[dict]:
    manifest = read_manifest(run_dir)
    if manifest and manifest.get("command") == "train" and (Path(run_dir) / MODEL_DIR / "config.json").is_file():
        return manifest
    return None


def read_identity(run_dir: Path) -> Optional[dict]:
    try:
        return json.loads((Path(run_dir) / IDENTITY).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = differing_keys(old, new)
    shown = [f"{k.replace('_', '-')} ({old.get(k)!r} -> {new.get(k)!r})" for k in keys[:6]]
    more = f" and {len(keys) - 6} more" if len(keys) > 6 else ""
    return ", ".join(shown) + more


def prepare_run_dir(run_dir: Path, identity: dict[str, Any], *, resume: bool, overwrite: bool) -> str:
    """Decide what to do with RUN_DIR; returns 'fresh', 'resume' or 'finished'. Creates the directory."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise UsageError("--overwrite and --resume: pass at most one")
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--output {run_dir}: exists and is not a directory")
    nonempty = run_dir.is_dir() and any(run_dir.iterdir())
    if nonempty and not is_run_dir(run_dir):
        raise UsageError(f"--output {run_dir}: not empty and not a delt run directory; choose another directory")
    if nonempty and overwrite:
        shutil.rmtree(run_dir)
        nonempty = False
    if nonempty:
        if not resume:
            raise UsageError(f"--output {run_dir}: a run directory already exists; pass --resume to continue it or --overwrite to replace it")
        previous = read_identity(run_dir)
        if previous is not None and previous != identity:
            raise DeltError(
                f"--resume: {run_dir} was started with a different configuration; differing key(s): "
                f"{describe_difference(previous, identity)}. Use the same configuration, or a new --output"
            )
        if finished_manifest(run_dir) is not None:
            return "finished"
        if previous is None:
            write_json_atomic(run_dir / IDENTITY, identity)
        return "resume"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / IDENTITY, identity)
    return "fresh"
