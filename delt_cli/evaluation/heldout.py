"""Held-out loss: mean token negative log-likelihood of a dataset's documents, overall and per group.

Each document is scored as it appears in training: after an EOS (the document separator;
BOS if the tokenizer has one and no EOS), its tokens and the EOS that ends it are predicted.
A document longer than ``max_len`` tokens is cut into consecutive windows; each window
after the first is conditioned on the token before it. Reported: loss (nats per token,
token-weighted), perplexity = exp(loss), bits per byte (total nats / ln 2 / UTF-8 bytes,
comparable across tokenizers), and token and document counts, with the standard error of
loss and bits per byte over documents (below).

``limit`` scores a sample of that many documents, not the first ones (a split's first rows
need not be representative): stratified by ``group_by``, else by a ``domain`` column when
there is one (each group gets its share of the documents, largest remainder; a seeded random
sample within it), else a seeded random sample. `sample_rows` says which rows.

Standard error: the loss is a ratio over documents (nats_i / tokens_i summed), so its
standard error is the delta-method one of a ratio estimator,
``sqrt(sum((nats_i - loss * tokens_i)^2) / (D * (D - 1))) / mean(tokens_i)`` over the D
documents, treating them as a sample from their domain (no finite-population correction);
the same with bytes for bits per byte.

Documents are read one shard at a time and batched by length, so memory stays bounded
(plus three numbers per document for the standard errors).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Optional

import numpy as np
import torch

from delt_cli.dataset import open_dataset, read_shard
from delt_cli.infra.errors import DeltError


def windows(tokens: list[int], max_len: int) -> list[list[int]]:
    """Windows of at most max_len + 1 tokens, overlapping by one, that predict tokens[1:] exactly once."""
    return [tokens[start : start + max_len + 1] for start in range(0, max(len(tokens) - 1, 0), max_len)]


SAMPLE_SEED = 0  # the seed of --limit's sample (results stay comparable across runs)


def sample_rows(ds, limit: Optional[int], *, stratify: Optional[str], seed: int = SAMPLE_SEED) -> Optional[list[np.ndarray]]:
    """Per shard of `ds`, the sorted row indices of a sample of `limit` rows (None: every row).

    With `stratify` (a column), each value gets its share of `limit` in proportion to its rows
    (largest remainder, ties to the earlier value) and a seeded random sample of that many.
    """
    if limit is None or limit >= ds.num_rows:
        return None
    bounds = ds.offsets
    rng = np.random.default_rng(seed)
    if stratify is None:
        chosen = rng.choice(ds.num_rows, size=limit, replace=False)
    else:
        from delt_cli.selection import apportion

        values = np.array([str(v) for shard in ds.shards for v in read_shard(shard, [stratify]).column(0).to_pylist()], dtype=object)
        members = {v: np.flatnonzero(values == v) for v in sorted(set(values))}
        shares = apportion(limit, np.array([len(rows) for rows in members.values()], dtype=np.float64))
        chosen = np.concatenate([rng.choice(rows, size=int(n), replace=False) for rows, n in zip(members.values(), shares)])
    chosen = np.sort(chosen)
    return [chosen[(chosen >= lo) & (chosen < hi)] - lo for lo, hi in zip(bounds[:-1], bounds[1:])]


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
    if limit is not None and limit < 1:
        raise DeltError(f"--limit {limit}: must be >= 1")
    stratify = group_by or ("domain" if "domain" in ds.columns else None)
    picked = sample_rows(ds, limit, stratify=stratify)
    device = next(model.parameters()).device
    per_doc: dict = defaultdict(list)  # group -> [(nats, tokens, bytes)] per document
    for i, shard in enumerate(ds.shards):
        if picked is not None and len(picked[i]) == 0:
            continue
        columns = [text_column] + ([group_by] if group_by else [])
        table = read_shard(shard, columns)
        if picked is not None:
            table = table.take(picked[i])
        texts = table.column(text_column).to_pylist()
        groups = table.column(group_by).to_pylist() if group_by else [None] * len(texts)
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
            row = (float(nats), len(ids) + 1, len(text.encode("utf-8")))
            per_doc["all"].append(row)
            if group_by:
                per_doc[str(group)].append(row)
        if progress:
            progress(len(texts))
    if not per_doc["all"]:
        raise DeltError(f"heldout {dataset}: no non-empty documents in '{text_column}'")
    result = _summary(np.array(per_doc.pop("all"), dtype=np.float64))
    result["dataset"] = {"spec": ds.spec, "fingerprint": ds.fingerprint, "rows": ds.num_rows}
    result["sample"] = {"limit": limit, "rows": ds.num_rows if picked is None else int(sum(len(p) for p in picked)), "stratified_by": stratify if picked is not None else None, "seed": SAMPLE_SEED if picked is not None else None}
    if group_by:
        result["group_by"] = group_by
        result["groups"] = {g: _summary(np.array(v, dtype=np.float64)) for g, v in sorted(per_doc.items())}
    result["primary"] = "loss"
    result["score"] = result["loss"]
    return result


def ratio_stderr(numerator: np.ndarray, denominator: np.ndarray) -> float:
    """Standard error of sum(numerator) / sum(denominator) over independent units (delta method)."""
    n = len(numerator)
    if n < 2 or denominator.sum() == 0:
        return float("nan")
    ratio = numerator.sum() / denominator.sum()
    residual = numerator - ratio * denominator
    return float(math.sqrt((residual**2).sum() / (n * (n - 1))) / denominator.mean())


def _summary(docs: np.ndarray) -> dict:
    """Metrics of documents given as rows (nats, tokens, UTF-8 bytes)."""
    nats, tokens, nbytes = docs[:, 0], docs[:, 1], docs[:, 2]
    loss = nats.sum() / tokens.sum()
    bits = nats / math.log(2)
    return {
        "loss": float(loss),
        "loss_stderr": ratio_stderr(nats, tokens),
        "perplexity": float(math.exp(min(loss, 700))),
        "bits_per_byte": float(bits.sum() / nbytes.sum()) if nbytes.sum() else float("nan"),
        "bits_per_byte_stderr": ratio_stderr(bits, nbytes),
        "tokens": int(tokens.sum()),
        "documents": len(docs),
    }
