"""Shared fixtures: small datasets written as real Parquet shards, and a CLI runner."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from delt_cli.cli.app import app

WORDS = "the a of to and in is was for on that with as by at from his her it be this which or".split()


def write_dataset(
    directory: Path,
    n: int,
    *,
    shards: int = 3,
    seed: int = 0,
    score: Sequence[float] | None = None,
    domains: Sequence[str] = ("fiction", "news", "science"),
    extra: dict | None = None,
) -> Path:
    """A dataset of `n` rows in `shards` shards: id, text, score, domain, n (int) and any `extra` columns."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    scores = np.asarray(score, dtype=np.float64) if score is not None else rng.normal(size=n)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 40)))) for _ in range(n)]
    table = pa.table(
        {
            "id": [f"doc-{i:06d}" for i in range(n)],
            "text": texts,
            "score": scores,
            "domain": [domains[i % len(domains)] for i in range(n)],
            "n": np.arange(n, dtype=np.int64),
            **(extra or {}),
        }
    )
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for i in range(shards):
        pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]), directory / f"shard-{i:03d}.parquet")
    return directory


def read_rows(directory: Path) -> pa.Table:
    paths = sorted(Path(directory).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in paths]) if paths else None


def tree_digest(directory: Path) -> dict[str, str]:
    """name -> sha256 of every file under `directory` (to prove inputs were not modified)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(directory).rglob("*"))
        if p.is_file()
    }


def delt(*args, ok: bool = True):
    """Run `delt ARGS...` in process (typer's CliRunner); with `ok`, assert that it succeeded."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "in", 200, shards=3)


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke
