"""`--method perplexity`: mean token negative log-likelihood and perplexity under a reference LM.

Per document: nll = (sum of -log p(token | prefix, previous tokens)) / (predicted
tokens), in nats, and ppl = exp(nll). Tokens and windows follow
`delt_cli.scoring.tokens` (prefix token, ``--max-length`` truncation or ``--stride``
windows). Empty documents (nothing to predict) get null in all three columns and
are counted in the summary.

Speed: rows are sorted by length and batched up to ``--batch-tokens`` tokens
(longest first), right-padded without an attention mask (causal models never
look at the later padding), and the output head runs only on the real
positions, ``--head-chunk`` rows at a time, so no logits exist for padding and
the full-vocabulary logits in memory are bounded. On an accelerator, an
out-of-memory error halves the batch and retries (with a warning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa

from delt_cli.infra.errors import DeltError, UsageError
from delt_cli.scoring.backoff import Backoff
from delt_cli.scoring.base import Scorer
from delt_cli.scoring.options import Batched, ModelOptions, Named, option
from delt_cli.scoring.tokens import encode, length_batches, prefix_token_id, windows


@dataclass
class PerplexityOptions(ModelOptions, Batched, Named):
    stride: int = option(0, "Perplexity of documents longer than --max-length by windows starting every STRIDE tokens (0: truncate).")
    head_chunk: Optional[int] = option(None, "Rows of hidden states per output-head call (default: about 8M logits at a time).", runtime=True)


def model_references(options, key: str = "model") -> dict:
    """The model a model scorer reads, its fingerprint and tokenizer (`key`: the manifest's name for it)."""
    from delt_cli.models.loading import fingerprint

    return {
        key: str(options.model),
        f"{key}_fingerprint": fingerprint(options.model, seed=options.seed),
        "tokenizer": str(options.tokenizer or options.model),
    }


class PerplexityScorer(Scorer):
    name = "perplexity"
    title = "Perplexity"
    Options = PerplexityOptions

    def validate(self) -> None:
        if not self.options.model:
            raise UsageError("--model: required for --method perplexity (a model directory, .gguf file, configs/models name or cached hub id)")
        windows([], max_length=self.options.max_length, stride=self.options.stride)  # the flags, before loading anything
        self.counts = {"documents": 0, "scored": 0, "empty (null)": 0, "truncated": 0, "windows": 0, "tokens": 0}
        self.backoff = None

    @property
    def columns(self) -> list[str]:
        prefix = self.options.column or "ppl"
        return [prefix, f"{prefix}_nll", f"{prefix}_tokens"]

    def check(self, dataset) -> None:
        dataset.require(self.options.text_column, flag="--text-column")
        dataset.require(self.options.id_column, flag="--id-column")

    def references(self) -> dict:
        return model_references(self.options)

    def prepare(self, dist) -> None:
        from delt_cli.models.causal_lm import split_lm
        from delt_cli.models.loading import load_lm_with_tokenizer

        o = self.options
        self.model, self.tokenizer = load_lm_with_tokenizer(
            o.model, o.tokenizer, dtype=o.dtype, device=dist.device, trust_remote_code=o.trust_remote_code, seed=o.seed
        )
        self.parts = split_lm(self.model)
        self.device = dist.device
        self.prefix_id = prefix_token_id(self.tokenizer, o.prefix_token)
        self.pad_id = self.prefix_id if self.prefix_id is not None else 0
        self.backoff = Backoff("perplexity batch")
        on_gpu = str(self.device).startswith("cuda")
        # CPU: small batches keep the elementwise work in cache (bigger ones measured slower, docs/benchmarks.md);
        # GPU: big batches. Logits of at most ~8M floats (32 MB) at a time unless --head-chunk says otherwise.
        self.batch_tokens = max(o.batch_tokens or (16384 if on_gpu else 512), o.max_length)
        vocab = self.parts.head.weight.shape[0]
        self.head_chunk = o.head_chunk or max(16, (1 << 23) // vocab) * (8 if on_gpu else 1)

    def transform(self, table: pa.Table) -> dict[str, pa.Array]:
        import torch

        from delt_cli.models.causal_lm import token_nll
        from delt_cli.scoring.lqs.losses import pad_batch

        o = self.options
        texts = table.column(o.text_column).to_pylist()
        docs = encode(self.tokenizer, texts, prefix=self.prefix_id, max_length=None if o.stride else o.max_length)
        rows, truncated = windows(docs, max_length=o.max_length, stride=o.stride)
        nll_sum = np.zeros(len(docs))
        n_tok = np.zeros(len(docs), dtype=np.int64)
        batches = length_batches([len(r.ids) for r in rows], batch_tokens=self.batch_tokens)

        def run(batch: np.ndarray) -> None:
            ids, lengths = pad_batch([rows[i].ids for i in batch], self.pad_id, self.device)
            score_from = torch.tensor([rows[i].score_from for i in batch], device=self.device)
            with torch.inference_mode():
                sums, counts = token_nll(self.parts, ids, lengths, score_from=score_from, chunk_rows=self.head_chunk)
            # Accumulate now and keep no tensor of this batch: small tensors kept alive across
            # batches pinned glibc heap memory between the large freed logits, and peak RSS grew
            # by ~25 MB per batch (4 GB for 1,000 short documents under a tiny model).
            doc_idx = np.asarray([rows[i].doc for i in batch])
            np.add.at(nll_sum, doc_idx, sums.cpu().numpy())
            np.add.at(n_tok, doc_idx, counts.cpu().numpy())
            if self.on_progress:
                first_windows = sum(1 for i in batch if rows[i].score_from == 1)
                self.on_progress(first_windows, int(counts.sum()))

        self.backoff.run(batches, run)
        valid = n_tok > 0
        mean = np.where(valid, nll_sum / np.maximum(n_tok, 1), np.nan)
        bad = valid & ~np.isfinite(mean)
        if bad.any():
            doc_id = table.column(o.id_column)[int(np.argmax(bad))].as_py()
            raise DeltError(f"perplexity: non-finite loss for document id {doc_id!r} ({int(bad.sum())} document(s) in this shard); check the model weights and --dtype")
        self.counts["documents"] += len(docs)
        self.counts["scored"] += int(valid.sum())
        self.counts["empty (null)"] += int((~valid).sum())
        self.counts["truncated"] += int((truncated > 0).sum())
        self.counts["windows"] += len(rows)
        self.counts["tokens"] += int(n_tok.sum())
        if self.on_progress:
            self.on_progress(len(docs) - len({r.doc for r in rows}), 0)  # documents without a window (empty)
        with np.errstate(over="ignore"):
            ppl = np.exp(mean)
        mask = ~valid
        ppl_col, nll_col, tokens_col = self.columns
        return {
            ppl_col: pa.array(ppl, mask=mask, type=pa.float64()),
            nll_col: pa.array(mean, mask=mask, type=pa.float64()),
            tokens_col: pa.array(n_tok, type=pa.int64()),
        }

    def summary(self) -> dict:
        out = dict(self.counts)
        if self.backoff is not None and self.backoff.events:
            out["out-of-memory retries"] = self.backoff.events
        return out

    def describe(self) -> dict:
        o = self.options
        return {
            "max_length": o.max_length,
            "stride": o.stride,
            "prefix_token": o.prefix_token,
            "dtype": o.dtype,
            "units": "nats per predicted token; ppl = exp(nll); null for empty documents",
        }
