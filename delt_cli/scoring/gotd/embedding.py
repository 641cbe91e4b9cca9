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

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from delt_cli.infra.console import warn
from delt_cli.dataset import RunInfo
from delt_cli.infra.distributed import Dist
from delt_cli.infra.errors import DeltError, UsageError
from delt_cli.scoring.base import Scorer
from delt_cli.scoring.options import TextInput, option
from delt_cli.scoring.gotd.vectors import DTYPES, to_arrow


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


def sentence_transformers_layout(model: str | Path) -> tuple[str, dict]:
    """Where a sentence-transformers directory keeps its transformer, and the defaults its config sets.

    Returns (the directory or spec to load, {"max_length": int | None, "normalize": bool,
    "pooling": str | None}); a plain Hugging Face directory or hub id gives (model, defaults of None/False).
    """
    root = Path(model)
    defaults: dict = {"max_length": None, "normalize": False, "pooling": None}
    if not (root / "modules.json").is_file():
        return str(model), defaults
    where = root
    for module in json.loads((root / "modules.json").read_text()):
        kind, path = module.get("type", ""), root / module.get("path", "")
        if kind.endswith(".Transformer"):
            where = path
            for name in ("sentence_bert_config.json", "sentence_transformers_config.json"):
                if (path / name).is_file():
                    defaults["max_length"] = json.loads((path / name).read_text()).get("max_seq_length")
                    break
        elif kind.endswith(".Pooling") and (path / "config.json").is_file():
            modes = json.loads((path / "config.json").read_text())
            defaults["pooling"] = next((k[len("pooling_mode_") :] for k, v in modes.items() if k.startswith("pooling_mode_") and v), None)
        elif kind.endswith(".Normalize"):
            defaults["normalize"] = True
    return str(where), defaults


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
        compute_dtype: str = "float32",
    ):
        from transformers.utils import logging as hf_logging

        from delt_cli.models.loading import fingerprint, load_encoder, resolve

        if batch_size < 1:
            raise UsageError(f"--batch-size {batch_size}: must be >= 1")
        if max_length is not None and max_length < 2:
            raise UsageError(f"--max-length {max_length}: must be >= 2")
        self.spec = str(model)
        self.device = device
        hf_logging.disable_progress_bar()  # stderr carries our progress, not transformers' loading bars
        where, defaults = sentence_transformers_layout(resolve(model, use="encoder", flag="--model"))
        self.model, self.tokenizer = load_encoder(where, dtype=compute_dtype, device=device)
        if max_length is None:
            limit = defaults["max_length"] or getattr(self.tokenizer, "model_max_length", None)
            max_length = limit if isinstance(limit, int) and limit < 100_000 else getattr(self.model.config, "max_position_embeddings", 512)
        self.max_length = int(max_length)
        self.normalize = defaults["normalize"] if normalize is None else bool(normalize)
        self.pooling = defaults["pooling"]
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.fingerprint = fingerprint(where)

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


@dataclass
class EmbedOptions(TextInput):
    model: Optional[str] = option(None, "Encoder directory or cached hub id (default: all-MiniLM-L6-v2 from the asset cache).")
    column: str = option("emb", "Name of the embedding column to add.")
    chunk_chars: int = option(1000, "Split longer documents into chunks of at most this many characters and average their embeddings.")
    normalize: Optional[bool] = option(None, "L2-normalise the embeddings (default: as the model's sentence-transformers config says).")
    batch_size: int = option(64, "Chunks per forward pass.", runtime=True)
    dtype: str = option("float32", "Storage type of the column: float32 or float16.")
    max_length: Optional[int] = option(None, "Truncate chunks to this many tokens (default: the model's max_seq_length).")


class EmbeddingScorer(Scorer):
    """`delt embed` as a per-shard column adder (run by the scoring runner): one vector column."""

    name = "embed"
    title = "Embedding"
    Options = EmbedOptions

    def validate(self) -> None:
        o = self.options
        if o.chunk_chars < 1:
            raise UsageError(f"--chunk-chars {o.chunk_chars}: must be >= 1")
        if o.dtype not in DTYPES:
            raise UsageError(f"--dtype {o.dtype}: expected one of {', '.join(DTYPES)}")
        if o.model is None:
            from delt_cli.infra.assets import minilm_dir

            self.options = dataclasses.replace(o, model=str(minilm_dir()))
        self.encoder: Optional[Encoder] = None

    @property
    def columns(self) -> list[str]:
        return [self.options.column]

    def check(self, dataset) -> None:
        text_type = dataset.require(self.options.text_column, flag="--text-column")
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type) or pa.types.is_string_view(text_type)):
            raise DeltError(f"--text-column '{self.options.text_column}' in {dataset.spec} has type {text_type}, not text")

    def prepare(self, dist) -> None:
        o = self.options
        on_gpu = str(dist.device).startswith("cuda")
        compute_dtype = "float16" if (o.dtype == "float16" and on_gpu) else "float32"
        self.encoder = Encoder(o.model, device=dist.device, batch_size=o.batch_size, max_length=o.max_length, normalize=o.normalize, compute_dtype=compute_dtype)
        if self.encoder.pooling not in (None, "mean_tokens") and dist.is_main:
            warn(f"--model {o.model} was trained with {self.encoder.pooling} pooling; delt embed uses mean pooling")

    def transform(self, table: pa.Table) -> dict[str, pa.Array]:
        assert self.encoder is not None, "prepare() must run before transform()"
        vectors = self.encoder.embed_documents(table.column(self.options.text_column).to_pylist(), chunk_chars=self.options.chunk_chars)
        return {self.options.column: to_arrow(vectors, self.options.dtype)}

    def provenance(self) -> dict:
        o = self.options
        out = {"chunk_chars": o.chunk_chars, "dtype": o.dtype, "column": o.column}
        return {**self.encoder.provenance(), **out} if self.encoder is not None else {"model": o.model, **out}


def embed_dataset(input: str | Path, output: Path, *, run: Optional[RunInfo] = None, overwrite: bool = False, resume: bool = False,
                  id_column: str = "id", text_column: str = "text", dist: Optional[Dist] = None, **options) -> Optional[dict]:
    """Add an embedding column to every shard of `input` (options: see `EmbeddingScorer`); the manifest on the main process."""
    from delt_cli.scoring.runner import score_dataset

    scorer = EmbeddingScorer(text_column=text_column, **options)
    run = run or RunInfo(command="embed", args={k: v for k, v in options.items()})
    return score_dataset(input, output, scorer, run=run, overwrite=overwrite, resume=resume, id_column=id_column, text_column=text_column, dist=dist)
