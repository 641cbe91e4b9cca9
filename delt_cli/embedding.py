"""Sentence embeddings of a text column: chunk, tokenize, batch by length, mean-pool, normalise.

For every document:

1. the text is split into consecutive chunks of at most ``chunk_chars`` characters,
   each ending after the last whitespace of its window when that lies in the
   window's second half (a document that fits is one chunk; a null text is the
   empty string);
2. each chunk is tokenized (truncated to ``max_length`` tokens) and encoded; chunks
   are sorted by token length and batched, so padding is minimal;
3. a chunk's embedding is the mean of the encoder's last hidden states over its
   real tokens (the attention mask excludes padding), L2-normalised with
   ``normalize``;
4. the document's embedding is the average of its chunks' embeddings weighted by
   their number of characters, L2-normalised again with ``normalize``.

With one chunk per document and ``normalize`` this is exactly what
sentence-transformers computes for mean-pooling models such as all-MiniLM-L6-v2.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from delt_cli.console import info, progress
from delt_cli.dataset import RunInfo, ShardwiseOutput, open_dataset, read_shard, run_shardwise
from delt_cli.distributed import Dist, get_dist
from delt_cli.errors import DeltError, UsageError
from delt_cli.scoring.runner import add_columns
from delt_cli.vectors import DTYPES, to_arrow


def split_chunks(text: Optional[str], chunk_chars: int) -> list[str]:
    """Consecutive pieces of at most `chunk_chars` characters that concatenate to `text`.

    A piece ends after the last whitespace of its window when that lies in the window's
    second half, else exactly at the window's end. A null text is one empty piece.
    """
    text = text or ""
    chunks = []
    start = 0
    while len(text) - start > chunk_chars:
        end = start + chunk_chars
        space = max(text.rfind(ws, start + chunk_chars // 2, end) for ws in (" ", "\n", "\t"))
        cut = space + 1 if space >= 0 else end
        chunks.append(text[start:cut])
        start = cut
    chunks.append(text[start:])
    return chunks


def model_fingerprint(spec: str | Path) -> str:
    """sha256 (32 hex) of a model directory's config and weight files (sizes + first and last MiB)."""
    root = Path(spec)
    if not root.is_dir():
        return "hub:" + str(spec)
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and (p.suffix in (".json", ".safetensors", ".bin", ".txt", ".model")))
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(root)}:{size};".encode())
        with open(p, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(size - (1 << 20))
                h.update(fh.read())
    return h.hexdigest()[:32]


class Encoder:
    """A Hugging Face encoder with mean pooling over real tokens."""

    def __init__(
        self,
        model: str | Path,
        *,
        device="cpu",
        batch_size: int = 64,
        max_length: Optional[int] = None,
        normalize: Optional[bool] = None,
        compute_dtype=None,
    ):
        import torch

        from delt_cli.models.loading import load_encoder

        if batch_size < 1:
            raise UsageError(f"--batch-size {batch_size}: must be >= 1")
        if max_length is not None and max_length < 2:
            raise UsageError(f"--max-length {max_length}: must be >= 2")
        self.spec = str(model)
        self.device = device
        self.model, self.tokenizer, defaults = load_encoder(model, dtype=compute_dtype or torch.float32, device=device)
        self.max_length = int(max_length or defaults["max_length"])
        self.normalize = defaults["normalize"] if normalize is None else bool(normalize)
        self.pooling = defaults["pooling"]
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.fingerprint = model_fingerprint(model)

    def provenance(self) -> dict:
        return {
            "model": self.spec,
            "model_fingerprint": self.fingerprint,
            "dim": self.dim,
            "max_length": self.max_length,
            "normalize": self.normalize,
            "pooling": "mean over attention mask",
        }

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled (optionally L2-normalised) float32 embeddings, one row per text (no chunking)."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True)["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                batch = order[s : s + self.batch_size]
                width = int(lengths[batch[0]])
                input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, : lengths[i]] = torch.as_tensor(ids[i])
                    mask[row, : lengths[i]] = 1
                input_ids, mask = input_ids.to(self.device), mask.to(self.device)
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[batch] = pooled.cpu().numpy()
        return out

    def embed_documents(self, texts: Sequence[Optional[str]], *, chunk_chars: int) -> np.ndarray:
        """One embedding per document: chunk embeddings averaged with character weights (module docstring)."""
        chunks: list[str] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            pieces = split_chunks(text, chunk_chars)
            chunks.extend(pieces)
            owner.extend([i] * len(pieces))
        vectors = self.encode(chunks)
        if len(chunks) == len(texts):
            return vectors
        owner_arr = np.asarray(owner, dtype=np.int64)
        weights = np.fromiter((max(1, len(c)) for c in chunks), dtype=np.float64, count=len(chunks))
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        np.add.at(sums, owner_arr, vectors * weights[:, None])
        docs = sums / np.bincount(owner_arr, weights=weights, minlength=len(texts))[:, None]
        if self.normalize:
            docs /= np.maximum(np.linalg.norm(docs, axis=1, keepdims=True), 1e-12)
        return docs.astype(np.float32)


def embed_dataset(
    input: str | Path,
    output: Path,
    *,
    model: Optional[str] = None,
    column: str = "emb",
    chunk_chars: int = 1000,
    normalize: Optional[bool] = None,
    batch_size: int = 64,
    dtype: str = "float32",
    max_length: Optional[int] = None,
    run: Optional[RunInfo] = None,
    overwrite: bool = False,
    resume: bool = False,
    id_column: str = "id",
    text_column: str = "text",
    dist: Optional[Dist] = None,
) -> Optional[dict]:
    """Add an embedding column to every shard of `input`; returns the manifest on the main process."""
    if chunk_chars < 1:
        raise UsageError(f"--chunk-chars {chunk_chars}: must be >= 1")
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
    dist = dist or get_dist()
    if model is None:
        from delt_cli.assets import minilm_dir

        model = str(minilm_dir())
    run = run or RunInfo(command="embed", args={"model": model, "column": column, "chunk_chars": chunk_chars})
    ds = open_dataset(input, id_column=id_column, text_column=text_column)
    ds.require(text_column, flag="--text-column")
    text_type = ds.schema.field(text_column).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type) or pa.types.is_string_view(text_type)):
        raise DeltError(f"--text-column '{text_column}' in {ds.spec} has type {text_type}, not text")
    out = ShardwiseOutput(output, ds, run=run, overwrite=overwrite, resume=resume)
    out.check()
    import torch

    compute_dtype = torch.float16 if (dtype == "float16" and str(dist.device).startswith("cuda")) else torch.float32
    encoder = Encoder(model, device=dist.device, batch_size=batch_size, max_length=max_length, normalize=normalize, compute_dtype=compute_dtype)
    if encoder.pooling not in (None, "mean_tokens") and dist.is_main:
        from delt_cli.console import warn

        warn(f"--model {model} was trained with {encoder.pooling} pooling; delt embed uses mean pooling")
    provenance = {**encoder.provenance(), "chunk_chars": chunk_chars, "dtype": dtype, "column": column}
    run.args["embedding"] = provenance
    started = time.time()
    with progress() as bar:
        task = bar.add_task("embedding", total=sum(s.num_rows for i, s in enumerate(ds.shards) if i % dist.world == dist.rank))

        def embed_shard(shard):
            table = read_shard(shard.path)
            texts = table.column(text_column).to_pylist()
            vectors = encoder.embed_documents(texts, chunk_chars=chunk_chars)
            return add_columns(table, {column: to_arrow(vectors, dtype)})

        run_shardwise(out, embed_shard, rank=dist.rank, world=dist.world, barrier=dist.barrier, on_shard=lambda s, rows: bar.advance(task, rows))
    if not dist.is_main:
        return None
    manifest = out.finish(extra={"embedding": provenance, "processes": dist.world})
    elapsed = time.time() - started
    info(f"embedded {ds.num_rows:,} rows into '{column}' ({encoder.dim}-d, {dtype}) in {elapsed:.1f}s ({dist.world} process(es))")
    return manifest
