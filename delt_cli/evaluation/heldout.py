"""Held-out loss: mean token negative log-likelihood of a dataset's documents, overall and per group.

Each document is scored as it appears in training: after an EOS (the document separator;
BOS if the tokenizer has one and no EOS), its tokens and the EOS that ends it are predicted.
A document longer than ``max_len`` tokens is cut into consecutive windows; each window
after the first is conditioned on the token before it. Reported: loss (nats per token,
token-weighted), perplexity = exp(loss), bits per byte (total nats / ln 2 / UTF-8 bytes,
comparable across tokenizers), and token and document counts.

Documents are read one shard at a time and batched by length, so memory stays bounded.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Optional

import numpy as np
import torch

from delt_cli.dataset import open_dataset, read_shard
from delt_cli.errors import DeltError


def windows(tokens: list[int], max_len: int) -> list[list[int]]:
    """Windows of at most max_len + 1 tokens, overlapping by one, that predict tokens[1:] exactly once."""
    return [tokens[start : start + max_len + 1] for start in range(0, max(len(tokens) - 1, 0), max_len)]


@torch.no_grad()
def heldout_loss(
    model,
    tokenizer,
    dataset: str,
    *,
    text_column: str = "text",
    group_by: Optional[str] = None,
    max_len: int = 1024,
    batch_size: int = 16,
    limit: Optional[int] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> dict:
    ds = open_dataset(dataset, text_column=text_column)
    ds.require(text_column, flag="--text-column")
    if group_by:
        ds.require(group_by, flag="--group-by")
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    if sep is None:
        raise DeltError("heldout: the tokenizer has neither EOS nor BOS to mark document boundaries")
    device = next(model.parameters()).device
    totals: dict = defaultdict(lambda: np.zeros(4))  # nats, tokens, bytes, documents
    seen = 0
    for shard in ds.shards:
        if limit is not None and seen >= limit:
            break
        columns = [text_column] + ([group_by] if group_by else [])
        table = read_shard(shard.path, columns)
        texts = table.column(text_column).to_pylist()
        groups = table.column(group_by).to_pylist() if group_by else [None] * len(texts)
        if limit is not None:
            texts, groups = texts[: limit - seen], groups[: limit - seen]
        seen += len(texts)
        docs = [(t, g) for t, g in zip(texts, groups) if t]
        encoded = tokenizer([t for t, _ in docs], add_special_tokens=False, verbose=False)["input_ids"] if docs else []
        pieces = []  # (window tokens, doc index)
        for d, ids in enumerate(encoded):
            pieces.extend((window, d) for window in windows([sep, *ids, sep], max_len))
        doc_nats = np.zeros(len(docs))
        order = sorted(range(len(pieces)), key=lambda k: -len(pieces[k][0]))
        for b in range(0, len(order), batch_size):
            chunk = [pieces[k] for k in order[b : b + batch_size]]
            width = max(len(w) for w, _ in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, (w, _) in enumerate(chunk):
                ids[r, : len(w)] = torch.tensor(w)
                mask[r, : len(w)] = 1
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=False).logits.float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            nll = (nll * mask[:, 1:]).sum(dim=1).cpu().numpy()
            for (w, d), value in zip(chunk, nll):
                doc_nats[d] += value
        for (text, group), ids, nats in zip(docs, encoded, doc_nats):
            row = np.array([nats, len(ids) + 1, len(text.encode("utf-8")), 1.0])
            totals["all"] += row
            if group_by:
                totals[str(group)] += row
        if progress:
            progress(len(texts))
    if totals["all"][1] == 0:
        raise DeltError(f"heldout {dataset}: no non-empty documents in '{text_column}'")
    result = _summary(totals.pop("all"))
    result["dataset"] = {"spec": ds.spec, "fingerprint": ds.fingerprint, "rows": ds.num_rows}
    if group_by:
        result["group_by"] = group_by
        result["groups"] = {g: _summary(v) for g, v in sorted(totals.items())}
    result["primary"] = "loss"
    result["score"] = result["loss"]
    return result


def _summary(row: np.ndarray) -> dict:
    nats, tokens, nbytes, docs = row
    loss = nats / tokens
    return {
        "loss": float(loss),
        "perplexity": float(math.exp(min(loss, 700))),
        "bits_per_byte": float(nats / math.log(2) / nbytes) if nbytes else float("nan"),
        "tokens": int(tokens),
        "documents": int(docs),
    }
