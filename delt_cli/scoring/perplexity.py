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

from typing import Optional

import numpy as np
import pyarrow as pa

from delt_cli.errors import DeltError
from delt_cli.scoring.backoff import Backoff
from delt_cli.scoring.tokens import encode, length_batches, prefix_token_id, windows


class PerplexityScorer:
    name = "perplexity"

    def __init__(
        self,
        *,
        model: Optional[str],
        tokenizer: Optional[str] = None,
        column: Optional[str] = None,
        text_column: str = "text",
        id_column: str = "id",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        max_length: int = 1024,
        stride: int = 0,
        batch_tokens: Optional[int] = None,
        head_chunk: Optional[int] = None,
        prefix_token: str = "bos",
        seed: int = 0,
    ):
        self.model_spec = model
        self.tokenizer_spec = tokenizer
        self.prefix = column or "ppl"
        self.columns = [self.prefix, f"{self.prefix}_nll", f"{self.prefix}_tokens"]
        self.text_column = text_column
        self.id_column = id_column
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.max_length = max_length
        self.stride = stride
        self.batch_tokens = batch_tokens  # None: per device (see prepare)
        self.head_chunk = head_chunk
        self.prefix_token = prefix_token
        self.seed = seed
        self.counts = {"documents": 0, "scored": 0, "empty (null)": 0, "truncated": 0, "windows": 0, "tokens": 0}
        self.on_progress = None  # set by the runner: callable(documents, tokens)

    def prepare(self, dataset, dist) -> None:
        from delt_cli.models.causal_lm import split_lm
        from delt_cli.models.loading import load_lm_with_tokenizer

        dataset.require(self.text_column, flag="--text-column")
        dataset.require(self.id_column, flag="--id-column")
        windows([], max_length=self.max_length, stride=self.stride)  # validates the flags before loading anything
        self.model, self.tokenizer = load_lm_with_tokenizer(
            self.model_spec, self.tokenizer_spec, dtype=self.dtype, device=dist.device, trust_remote_code=self.trust_remote_code, seed=self.seed
        )
        self.parts = split_lm(self.model)
        self.device = dist.device
        self.prefix_id = prefix_token_id(self.tokenizer, self.prefix_token)
        self.pad_id = self.prefix_id if self.prefix_id is not None else 0
        self.backoff = Backoff("perplexity batch")
        on_gpu = str(self.device).startswith("cuda")
        # CPU: small batches keep the elementwise work in cache (bigger ones measured slower, docs/benchmarks.md);
        # GPU: big batches. Logits of at most ~8M floats (32 MB) at a time unless --head-chunk says otherwise.
        self.batch_tokens = max(self.batch_tokens or (16384 if on_gpu else 512), self.max_length)
        vocab = self.parts.head.weight.shape[0]
        self.head_chunk = self.head_chunk or max(16, (1 << 23) // vocab) * (8 if on_gpu else 1)

    def score_table(self, table: pa.Table) -> dict[str, pa.Array]:
        import torch

        from delt_cli.models.causal_lm import token_nll
        from delt_cli.scoring.lqs.losses import pad_batch

        texts = table.column(self.text_column).to_pylist()
        docs = encode(self.tokenizer, texts, prefix=self.prefix_id, max_length=None if self.stride else self.max_length)
        rows, truncated = windows(docs, max_length=self.max_length, stride=self.stride)
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
            doc_id = table.column(self.id_column)[int(np.argmax(bad))].as_py()
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
        return {
            self.prefix: pa.array(ppl, mask=mask, type=pa.float64()),
            f"{self.prefix}_nll": pa.array(mean, mask=mask, type=pa.float64()),
            f"{self.prefix}_tokens": pa.array(n_tok, type=pa.int64()),
        }

    def summary(self) -> dict:
        out = dict(self.counts)
        if getattr(self, "backoff", None) is not None and self.backoff.events:
            out["out-of-memory retries"] = self.backoff.events
        return out

    def provenance(self) -> dict:
        from delt_cli.models.loading import fingerprint

        return {
            "model": str(self.model_spec),
            "model_fingerprint": fingerprint(self.model_spec, seed=self.seed),
            "tokenizer": str(self.tokenizer_spec or self.model_spec),
            "max_length": self.max_length,
            "stride": self.stride,
            "prefix_token": self.prefix_token,
            "prefix_token_id": getattr(self, "prefix_id", None),
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", "") if hasattr(self, "model") else self.dtype,
            "units": "nats per predicted token; ppl = exp(nll); null for empty documents",
        }
