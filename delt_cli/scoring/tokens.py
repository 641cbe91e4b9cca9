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

When a document is cut (no ``--stride``), only a prefix of its text is
tokenized (`encode` with ``max_length``): a 20 MB document costs what its first
few thousand characters cost, not gigabytes of token offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import pyarrow as pa

from delt_cli.dataset import read_shard
from delt_cli.infra.errors import DeltError


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


def encode(
    tokenizer, texts: Sequence[Optional[str]], *, prefix: Optional[int], batch: int = 512, max_length: Optional[int] = None
) -> list[np.ndarray]:
    """Token ids per text (int32, prefix first); None and '' give just the prefix.

    With `max_length` (documents will be cut to that many tokens, prefix included), a
    text longer than that needs is tokenized only as far as it must be: the result is
    the first ``max_length + 1`` ids of the full tokenization (one more than is kept,
    so that `windows` still counts the document as truncated), not all of them.
    """
    out: list[np.ndarray] = []
    head = [prefix] if prefix is not None else []
    keep = None if max_length is None else max(max_length - len(head) + 1, 1)  # text tokens needed
    for i in range(0, len(texts), batch):
        chunk = [t or "" for t in texts[i : i + batch]]
        long = {j for j, t in enumerate(chunk) if keep is not None and len(t) > LONG_TEXT_CHARS_PER_TOKEN * keep}
        short = [t for j, t in enumerate(chunk) if j not in long]
        ids = iter(tokenizer(short, add_special_tokens=False)["input_ids"] if short else [])
        for j, text in enumerate(chunk):
            x = _first_ids(tokenizer, text, keep) if j in long else next(ids)[:keep]
            out.append(np.asarray(head + list(x), dtype=np.int32))
    return out


# Texts longer than this many characters per needed token take the prefix path of `_first_ids`.
LONG_TEXT_CHARS_PER_TOKEN = 32
PREFIX_CHARS_PER_TOKEN = 8  # first prefix tried: about twice the tokens needed for English text


def _first_ids(tokenizer, text: str, keep: int) -> list[int]:
    """The first `keep` token ids of `text`, tokenizing prefixes instead of the whole text.

    A prefix of c characters is tokenized, then one of 2c; when both have `keep` tokens
    and agree on them, the cut at c changed none of them, and neither does the rest of
    the text: tokenizers decide a token from the text near it (GPT-2's byte-level BPE
    from the pre-token, a word or a run of spaces or punctuation, it belongs to). A cut
    that does change them (inside a long run with no break, say) makes the prefixes
    differ, and the next try is four times as long, up to the whole text.
    """
    chars = PREFIX_CHARS_PER_TOKEN * keep
    while 2 * chars < len(text):
        first = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
        if len(first) >= keep:
            second = tokenizer(text[: 2 * chars], add_special_tokens=False)["input_ids"]
            if first[:keep] == second[:keep]:
                return second[:keep]
        chars *= 4
    return tokenizer(text, add_special_tokens=False)["input_ids"][:keep]


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
            table = read_shard(shard, columns)
            parts.append(table.take(pa.array(rows[lo:hi] - offsets[k])))
    if not parts:
        return pa.table({c: pa.array([], type=dataset.schema.field(c).type) for c in columns})
    return pa.concat_tables(parts)
