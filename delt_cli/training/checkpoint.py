"""Checkpoints that survive a crash at any moment, and exact resume.

``RUN_DIR/checkpoints/step-00000100/`` is a Hugging Face model directory (config.json,
model.safetensors, tokenizer) plus ``optimizer.pt``, ``scheduler.pt``, one
``rng-<rank>.pt`` per process and ``trainer_state.json`` (step, tokens, data position).
A checkpoint is written under a hidden temporary name, renamed into place when complete,
and only then does ``checkpoints/latest.json`` (itself replaced atomically) point to it;
older checkpoints are pruned after that. A crash or a full disk while saving therefore
leaves the previous checkpoint valid and pointed to.

Nothing is unpickled beyond tensors and plain values: every ``.pt`` file is read with
``torch.load(weights_only=True)``, and the RNG states are stored in that form (lists of
ints and tensors, not Python or numpy objects). ``latest.json`` may only name a checkpoint
directly inside ``checkpoints/``; when it is missing, damaged or names an incomplete
checkpoint, resume falls back to the newest complete one with a warning.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from delt_cli.infra.console import is_main_process, warn
from delt_cli.infra.atomic import parse_temporary, remove, staged_dir
from delt_cli.dataset.provenance import write_json_atomic
from delt_cli.infra.errors import DeltError

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
STATE = "trainer_state.json"
WEIGHTS = "model.safetensors"
# What a checkpoint needs to be loaded (rng-<rank>.pt files are optional: a missing one keeps the seed's RNG).
REQUIRED = (STATE, WEIGHTS, "optimizer.pt", "scheduler.pt")
_STEP_DIR = re.compile(r"step-(\d+)")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


# --- RNG state: plain values and tensors only, so that it loads with weights_only=True ---


def rng_state() -> dict[str, Any]:
    import torch

    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    py, npy = state["python"], state["numpy"]
    if isinstance(py, dict):
        random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    else:  # written by delt before the plain form: the tuple random.getstate() returns
        random.setstate(py)
    if isinstance(npy, dict):
        np.random.set_state((npy["kind"], np.asarray(npy["keys"], dtype=np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    else:
        np.random.set_state(npy)
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _legacy_rng_globals() -> list:
    """What an rng-<rank>.pt written by an earlier delt needs beyond plain values: numpy's
    MT19937 key array (a uint32 ndarray). Allowed only while loading an RNG file."""
    return [np.ndarray, np.dtype, np.dtypes.UInt32DType, np._core.multiarray._reconstruct]


# --- writing ---


class _KeepWriteError:
    """A file for torch.save that remembers why a write failed: torch turns the OSError into a
    RuntimeError ('[enforce fail at inline_container.cc] unexpected pos ...') naming neither
    the file nor the cause."""

    def __init__(self, fh):
        self._fh = fh
        self.error: Optional[OSError] = None

    @property
    def name(self) -> str:
        return self._fh.name

    def write(self, data) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self._fh.flush()


def _with_path(exc: OSError, path: Path) -> OSError:
    return exc if exc.filename else OSError(exc.errno, exc.strerror or str(exc), str(path))


def torch_save(obj: Any, path: Path) -> None:
    """torch.save whose failed writes (disk full, file-size limit) raise the OSError, with the path."""
    import torch

    try:
        with open(path, "wb") as fh:
            sink = _KeepWriteError(fh)
            try:
                torch.save(obj, sink)
            except RuntimeError as exc:
                if sink.error is None:
                    raise
                raise sink.error from exc
    except OSError as exc:
        raise _with_path(exc, path) from exc


def save_model_dir(model, tokenizer, directory: Path) -> None:
    """`save_pretrained` of model (safetensors) and tokenizer into `directory`; a failed write
    raises OSError (safetensors reports it as SafetensorError '... I/O error: ... (os error N)')."""
    from safetensors import SafetensorError

    directory = Path(directory)
    try:
        model.save_pretrained(str(directory), safe_serialization=True)
    except SafetensorError as exc:
        code = re.search(r"\(os error (\d+)\)", str(exc))
        if code is None:
            raise
        written = sorted(directory.glob("*.safetensors"), key=lambda p: p.stat().st_mtime_ns)
        path = written[-1] if written else directory / WEIGHTS
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from exc
    tokenizer.save_pretrained(str(directory))


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
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    final = root / name
    try:
        with staged_dir(final) as tmp:
            save_model_dir(model, tokenizer, tmp)
            torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
            for rank, rng in enumerate(rng_states):
                torch_save(rng, tmp / f"rng-{rank:05d}.pt")
            write_json_atomic(tmp / STATE, {**state, "step": step})
        write_json_atomic(root / LATEST, {"step": step, "dir": name})
    except OSError as exc:
        try:
            previous = latest_checkpoint(run_dir, quiet=True)
        except DeltError:
            previous = None
        kept = f"the previous checkpoint {previous.name} is intact" if previous else "no earlier checkpoint exists"
        where = f"{Path(exc.filename).name}: " if exc.filename else ""
        raise DeltError(
            f"cannot write checkpoint {final} ({where}{exc.strerror or exc}); {kept}; free space and rerun with --resume"
        ) from exc
    _prune(root, keep=max(int(keep), 1), current=name)
    return final


def _prune(root: Path, *, keep: int, current: str) -> None:
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for path in done[:-keep]:
        if path.name != current:
            shutil.rmtree(path, ignore_errors=True)
    for path in root.iterdir():  # temporaries (a checkpoint, latest.json) left by a process killed while saving
        tmp = parse_temporary(path)
        if tmp is not None and not tmp.mine:
            remove(path)


# --- finding the checkpoint to resume from ---


def is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED)


def _step_dirs(root: Path) -> list[Path]:
    """The step-N directories directly inside `root` (symlinks leading elsewhere excluded), oldest first."""
    if not root.is_dir():
        return []
    base = root.resolve()
    found = [p for p in root.iterdir() if _STEP_DIR.fullmatch(p.name) and p.resolve().parent == base]
    return sorted(found, key=lambda p: int(p.name[len("step-") :]))


def latest_checkpoint(run_dir: Path, *, quiet: bool = False) -> Optional[Path]:
    """The checkpoint to resume from, or None when the run has none yet.

    That is the one latest.json names. When latest.json is missing, damaged or names a
    checkpoint that is missing or incomplete, the newest complete checkpoint (with a warning
    unless `quiet`); an error when there is none. A name outside checkpoints/ is refused.
    """
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    try:
        name = json.loads(pointer.read_text())["dir"]
        if not isinstance(name, str) or not name:
            raise ValueError("no checkpoint name")
    except FileNotFoundError:
        problem = "is missing"
    except (OSError, ValueError, KeyError, TypeError):
        problem = "is damaged (not JSON naming a checkpoint)"
    else:
        path = root / name
        if path.resolve().parent != root.resolve():
            raise DeltError(f"{pointer}: 'dir' {name!r} is not a checkpoint inside {root}; refusing to load files from there")
        if is_complete(path):
            return path
        problem = f"names {name}, which is missing or incomplete"
    dirs = _step_dirs(root)
    complete = [p for p in dirs if is_complete(p)]
    if complete:
        if not quiet and is_main_process():
            warn(f"{pointer} {problem}; resuming from the newest complete checkpoint, {complete[-1].name}")
        return complete[-1]
    if not dirs and problem == "is missing":
        return None  # no checkpoint was ever completed
    raise DeltError(f"{pointer} {problem}, and {root} holds no complete checkpoint; rerun with --overwrite to start over")


# --- loading ---


def _reason(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        return "it holds Python objects other than tensors and plain values; loading them could run code, so it is refused"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


def _older_checkpoint(checkpoint: Path) -> Optional[Path]:
    match = _STEP_DIR.fullmatch(checkpoint.name)
    step = int(match.group(1)) if match else None
    older = [p for p in _step_dirs(checkpoint.parent) if step is None or int(p.name[len("step-") :]) < step]
    older = [p for p in older if is_complete(p) and p.name != checkpoint.name]
    return older[-1] if older else None


@contextmanager
def _loading(checkpoint: Path, name: str) -> Iterator[Path]:
    """Turn any failure to read or apply checkpoint file `name` into one line naming it."""
    path = checkpoint / name
    try:
        yield path
    except DeltError:
        raise
    except Exception as exc:
        older = _older_checkpoint(checkpoint)
        if older is not None:
            hint = f"the older checkpoint {older.name} is complete: delete {checkpoint} and rerun with --resume to continue from it"
        else:
            hint = "no older complete checkpoint exists; rerun with --overwrite to start over"
        raise DeltError(f"cannot load {path} ({_reason(exc)}); {hint}") from exc


def read_state(checkpoint: Path) -> dict[str, Any]:
    with _loading(checkpoint, STATE) as path:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no integer 'step'")
    return state


def load_checkpoint(checkpoint: Path, *, model, optimizer, scheduler, rank: int) -> dict[str, Any]:
    """Restore model weights, optimizer, scheduler and this process's RNG; return the trainer state."""
    import torch
    from safetensors.torch import load_file

    state = read_state(checkpoint)
    with _loading(checkpoint, WEIGHTS) as path:
        weights = load_file(str(path), device=str(next(model.parameters()).device))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not _is_tied(model, k)]
        if missing or unexpected:
            raise DeltError(f"{path}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    with _loading(checkpoint, "optimizer.pt") as path:
        optimizer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    with _loading(checkpoint, "scheduler.pt") as path:
        scheduler.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    rng_path = checkpoint / f"rng-{rank:05d}.pt"
    if rng_path.is_file():
        with _loading(checkpoint, rng_path.name) as path, torch.serialization.safe_globals(_legacy_rng_globals()):
            set_rng_state(torch.load(path, map_location="cpu", weights_only=True))
    return state


def _is_tied(model, key: str) -> bool:
    return key == "lm_head.weight" and bool(getattr(model.config, "tie_word_embeddings", False))
