"""Checkpoints that survive a crash at any moment, and exact resume.

``RUN_DIR/checkpoints/step-00000100/`` is a Hugging Face model directory (config.json,
model.safetensors, tokenizer) plus ``optimizer.pt``, ``scheduler.pt``, one
``rng-<rank>.pt`` per process and ``trainer_state.json`` (step, tokens, data position).
A checkpoint is written under a hidden temporary name, renamed into place when complete,
and only then does ``checkpoints/latest.json`` (itself replaced atomically) point to it;
older checkpoints are pruned after that. A crash or a full disk while saving therefore
leaves the previous checkpoint valid and pointed to.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np

from delt_cli.dataset.provenance import write_json_atomic
from delt_cli.errors import DeltError

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
STATE = "trainer_state.json"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model,
    tokenizer,
    optimizer,
    scheduler,
    rng_states: list[dict],
    state: dict[str, Any],
    keep: int = 1,
) -> Path:
    """Write checkpoint `step` atomically, point latest.json at it, prune to the newest `keep`."""
    import torch

    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    final = root / name
    tmp = root / f".{name}.tmp-{os.getpid()}"
    previous = latest_checkpoint(run_dir)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        for rank, rng in enumerate(rng_states):
            torch.save(rng, tmp / f"rng-{rank:05d}.pt")
        write_json_atomic(tmp / STATE, {**state, "step": step})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_json_atomic(root / LATEST, {"step": step, "dir": name})
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous checkpoint {previous.name} is intact" if previous else "no earlier checkpoint exists"
        raise DeltError(
            f"cannot write checkpoint {final} ({exc.strerror or exc}); {kept}; free space and rerun with --resume"
        ) from exc
    _prune(root, keep=max(int(keep), 1), current=name)
    return final


def _prune(root: Path, *, keep: int, current: str) -> None:
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for path in done[:-keep]:
        if path.name != current:
            shutil.rmtree(path, ignore_errors=True)
    for path in root.iterdir():  # temporaries left by a process that was killed while saving
        if path.name.startswith(".step-") and f"-{os.getpid()}" not in path.name:
            shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The checkpoint latest.json points to, or None (no checkpoint yet)."""
    root = Path(run_dir) / CHECKPOINTS
    try:
        pointer = json.loads((root / LATEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    path = root / str(pointer.get("dir", ""))
    if not (path / STATE).is_file():
        raise DeltError(f"{root / LATEST} points to {path.name}, which is incomplete; remove the run directory or restore it")
    return path


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE).read_text())


def load_checkpoint(checkpoint: Path, *, model, optimizer, scheduler, rank: int) -> dict[str, Any]:
    """Restore model weights, optimizer, scheduler and this process's RNG; return the trainer state."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(checkpoint / "model.safetensors"), device=str(next(model.parameters()).device))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not _is_tied(model, k)]
    if missing or unexpected:
        raise DeltError(f"{checkpoint}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", map_location="cpu", weights_only=False))
    rng_path = checkpoint / f"rng-{rank:05d}.pt"
    if rng_path.is_file():
        set_rng_state(torch.load(rng_path, map_location="cpu", weights_only=False))
    return read_state(checkpoint)


def _is_tied(model, key: str) -> bool:
    return key == "lm_head.weight" and bool(getattr(model.config, "tie_word_embeddings", False))
