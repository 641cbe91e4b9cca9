"""Text -> token rows for model scorers: a prefix token, truncation or strided windows, length buckets.

Every model scorer sees a document as ``[prefix] + tokens(text)``. The prefix
(``--prefix-token``: ``bos`` by default, ``eos``, ``none`` or a literal token
such as ``<|endoftext|>``) gives the first real token a context, so a document
of n tokens has n predicted tokens (n - 1 with ``none``). A document with no
predicted token (an empty text) gets no score (null).

Long documents are cut to ``--max-length`` tokens (prefix included), or, with
``--stride S``, covered by windows of ``max_length`` tokens that start every S
tokens, each window predicting only the tokens the previous ones did not
(the standard strided perplexity; every token is predicted once, with at
least ``max_length - S`` tokens of context after the first window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import pyarrow as pa

from delt_cli.dataset import read_shard
from delt_cli.errors import DeltError


def prefix_token_id(tokenizer, choice: str = "bos") -> Optional[int]:
    """Token id put before every document (None for no prefix)."""
    choice = (choice or "bos").strip()
    if choice == "none":
        return None
    if choice in ("bos", "eos"):
        ordered = [tokenizer.bos_token_id, tokenizer.eos_token_id] if choice == "bos" else [tokenizer.eos_token_id, tokenizer.bos_token_id]
        for token_id in ordered:
            if token_id is not None:
                return int(token_id)
        return None
    token_id = tokenizer.convert_tokens_to_ids(choice)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise DeltError(f"--prefix-token {choice}: not a token of the tokenizer (use bos, eos, none or a token string)")
    return int(token_id)


def encode(tokenizer, texts: Sequence[Optional[str]], *, prefix: Optional[int], batch: int = 512) -> list[np.ndarray]:
    """Token ids per text (int32, prefix first); None and '' give just the prefix."""
    out: list[np.ndarray] = []
    head = [prefix] if prefix is not None else []
    for i in range(0, len(texts), batch):
        chunk = [t or "" for t in texts[i : i + batch]]
        ids = tokenizer(chunk, add_special_tokens=False)["input_ids"] if chunk else []
        out.extend(np.asarray(head + list(x), dtype=np.int32) for x in ids)
    return out


@dataclass
class Window:
    doc: int  # index of the document
    ids: np.ndarray  # token ids of this window
    score_from: int  # first target index (in the window) that this window predicts


def windows(docs: Sequence[np.ndarray], *, max_length: int, stride: int = 0) -> tuple[list[Window], np.ndarray]:
    """Rows to run: truncated documents, or strided windows; also how many tokens each doc had cut off."""
    if max_length < 2:
        raise DeltError(f"--max-length {max_length}: must be at least 2")
    if stride < 0 or stride > max_length - 1:
        raise DeltError(f"--stride {stride}: must be between 1 and --max-length - 1 (or 0 to truncate)")
    rows: list[Window] = []
    truncated = np.zeros(len(docs), dtype=np.int64)
    for d, ids in enumerate(docs):
        if len(ids) < 2:
            continue
        if len(ids) <= max_length or stride == 0:
            rows.append(Window(d, ids[:max_length], 1))
            truncated[d] = max(0, len(ids) - max_length)
            continue
        done = 1  # targets [1, done) are predicted already
        begin = 0
        while done < len(ids):
            end = min(begin + max_length, len(ids))
            rows.append(Window(d, ids[begin:end], max(1, done - begin)))
            done = end
            begin += stride
    return rows, truncated


def length_batches(lengths: Sequence[int], *, batch_tokens: int, max_batch: int = 256) -> list[np.ndarray]:
    """Index batches, longest rows first, each with (rows x longest length) <= batch_tokens."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches, current, width = [], [], 0
    for i in order:
        n = int(lengths[i])
        w = max(width, n)
        if current and (w * (len(current) + 1) > batch_tokens or len(current) >= max_batch):
            batches.append(np.asarray(current))
            current, w = [], n
        current.append(int(i))
        width = w
    if current:
        batches.append(np.asarray(current))
    return batches


def read_rows(dataset, rows: np.ndarray, columns: Iterable[str]) -> pa.Table:
    """The given global rows (sorted ascending) of a dataset, streaming one shard at a time."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and np.any(np.diff(rows) < 0):
        raise ValueError("read_rows needs ascending row indices")
    columns = list(columns)
    offsets = dataset.offsets
    parts = []
    for k, shard in enumerate(dataset.shards):
        lo, hi = np.searchsorted(rows, [offsets[k], offsets[k + 1]])
        if hi > lo:
            table = read_shard(shard.path, columns)
            parts.append(table.take(pa.array(rows[lo:hi] - offsets[k])))
    if not parts:
        return pa.table({c: pa.array([], type=dataset.schema.field(c).type) for c in columns})
    return pa.concat_tables(parts)
