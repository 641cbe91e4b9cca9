"""Per-row text lengths (characters or tokens), streamed shard by shard."""

from __future__ import annotations

import numpy as np
import polars as pl

from delt_cli.infra.console import progress


def char_lengths(dataset) -> np.ndarray:
    """Number of characters (Unicode code points) of the text column, for every row."""
    dataset.require(dataset.text_column, flag="--text-column")
    parts = []
    for _, table in dataset.iter_tables([dataset.text_column]):
        s = pl.from_arrow(table.column(dataset.text_column))
        parts.append(s.str.len_chars().fill_null(0).to_numpy().astype(np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def token_lengths(dataset, tokenizer: str, batch_size: int = 1024) -> np.ndarray:
    """Number of tokens of the text column (no special tokens added), for every row."""
    from delt_cli.models.loading import load_tokenizer

    dataset.require(dataset.text_column, flag="--text-column")
    tok = load_tokenizer(tokenizer)
    parts = []
    with progress() as bar:
        task = bar.add_task("tokenizing", total=dataset.num_rows)
        for _, table in dataset.iter_tables([dataset.text_column]):
            texts = table.column(dataset.text_column).to_pylist()
            for i in range(0, len(texts), batch_size):
                chunk = [t or "" for t in texts[i : i + batch_size]]
                ids = tok(chunk, add_special_tokens=False)["input_ids"]
                parts.append(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)))
                bar.advance(task, len(chunk))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
