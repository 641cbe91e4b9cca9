"""Token cache: every document of a dataset tokenized once, in dataset order, EOS after each.

A cache directory holds, per input shard (named by the shard's content fingerprint, so
several datasets can share one cache without collisions)::

    <fp>.tokens.npy   the shard's documents' tokens, each document followed by EOS
                      (uint16 when the vocabulary fits in 16 bits, else uint32)
    <fp>.docs.npy     int64 end offset of each row's tokens in the file (empty rows: no tokens)
    <fp>.json         what produced it (shard, tokenizer fingerprint, column, EOS); written last

The concatenation of the shards' token files, in shard-name order, is the training stream.
Text is read one shard at a time and tokens are memory-mapped, so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from delt_cli.infra.atomic import describe_os_error, open_atomic
from delt_cli.infra.console import info, progress
from delt_cli.dataset import Dataset, Shard, read_shard
from delt_cli.dataset.provenance import write_json_atomic
from delt_cli.infra.errors import DeltError

FORMAT = 1


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's full definition (vocabulary, merges, normaliser, special tokens)."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(f"eos={tokenizer.eos_token_id};n={len(tokenizer)}".encode())
    return h.hexdigest()[:32]


def eos_id(tokenizer, spec: str = "--tokenizer") -> int:
    if tokenizer.eos_token_id is None:
        raise DeltError(f"{spec}: the tokenizer has no EOS token, which training puts between documents")
    return int(tokenizer.eos_token_id)


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with open_atomic(path, "wb") as fh:
        np.save(fh, array)


def tokenize_texts(tokenizer, texts: Sequence[Optional[str]], eos: int, dtype, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(tokens with EOS after each non-empty text, int64 end offset per text)."""
    pieces: list[np.ndarray] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        keep = [i for i, t in enumerate(chunk) if t]
        if not keep:
            continue
        ids = tokenizer([chunk[i] for i in keep], add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
        for i, doc in zip(keep, ids):
            arr = np.empty(len(doc) + 1, dtype=dtype)
            arr[:-1] = doc
            arr[-1] = eos
            pieces.append(arr)
            lengths[start + i] = len(arr)
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
    return tokens, np.cumsum(lengths)


@dataclass
class ShardTokens:
    shard: Shard
    tokens_path: Path
    docs_path: Path
    num_tokens: int


class TokenCache:
    """The tokenized stream of one dataset: random access to token windows and to the rows they cover."""

    def __init__(self, dataset: Dataset, parts: list[ShardTokens]):
        self.dataset = dataset
        self.parts = parts
        self.offsets = np.concatenate([[0], np.cumsum([p.num_tokens for p in parts])]).astype(np.int64)
        self._tokens: dict[int, np.ndarray] = {}
        self._docs: dict[int, np.ndarray] = {}
        self._ids: tuple[int, list] | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def _shard_tokens(self, i: int) -> np.ndarray:
        if i not in self._tokens:
            self._tokens[i] = np.load(self.parts[i].tokens_path, mmap_mode="r")
        return self._tokens[i]

    def _shard_docs(self, i: int) -> np.ndarray:
        if i not in self._docs:
            self._docs[i] = np.load(self.parts[i].docs_path)
        return self._docs[i]

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the stream as int64 (may span shards)."""
        if start < 0 or start + length > self.num_tokens:
            raise IndexError(f"token window [{start}, {start + length}) outside the stream of {self.num_tokens}")
        out = np.empty(length, dtype=np.int64)
        filled = 0
        shard = int(np.searchsorted(self.offsets, start, side="right") - 1)
        while filled < length:
            local = start + filled - int(self.offsets[shard])
            take = min(length - filled, int(self.offsets[shard + 1]) - (start + filled))
            if take > 0:
                out[filled : filled + take] = self._shard_tokens(shard)[local : local + take]
                filled += take
            shard += 1
        return out

    def rows_in(self, start: int, end: int) -> list[tuple[int, int]]:
        """(shard index, row index) of the documents with tokens in [start, end), in stream order."""
        rows: list[tuple[int, int]] = []
        shard = int(np.searchsorted(self.offsets, start, side="right") - 1)
        while shard < len(self.parts) and int(self.offsets[shard]) < end:
            base = int(self.offsets[shard])
            a, b = max(start - base, 0), min(end - base, self.parts[shard].num_tokens)
            if b > a:
                ends = self._shard_docs(shard)
                first = int(np.searchsorted(ends, a, side="right"))
                last = int(np.searchsorted(ends, b - 1, side="right"))
                lengths = np.diff(ends, prepend=0)
                rows.extend((shard, r) for r in range(first, last + 1) if lengths[r] > 0)
            shard += 1
        return rows

    def ids_of(self, rows: list[tuple[int, int]]) -> list:
        """The id-column values of (shard, row) pairs (reads one shard's ids at a time)."""
        out = []
        column = self.dataset.id_column
        for shard, row in rows:
            if self._ids is None or self._ids[0] != shard:
                table = read_shard(self.parts[shard].shard, [column])
                self._ids = (shard, table.column(column).to_pylist())
            out.append(self._ids[1][row])
        return out


def build_token_cache(
    dataset: Dataset,
    tokenizer,
    cache_dir: Path,
    *,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> TokenCache:
    """Tokenize the shards that are not cached yet (process r takes shards i % world == r); open the cache."""
    dataset.require(dataset.text_column, flag="--text-column")
    eos = eos_id(tokenizer)
    vocab = len(tokenizer)
    dtype = token_dtype(vocab)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tok_fp = tokenizer_fingerprint(tokenizer)
    expected = {"format": FORMAT, "tokenizer": tok_fp, "text_column": dataset.text_column, "eos": eos, "dtype": np.dtype(dtype).name}

    def paths(shard: Shard) -> tuple[Path, Path, Path]:
        stem = f"{shard.fingerprint}-{hashlib.sha256(json.dumps(expected, sort_keys=True).encode()).hexdigest()[:12]}"
        return cache_dir / f"{stem}.tokens.npy", cache_dir / f"{stem}.docs.npy", cache_dir / f"{stem}.json"

    def cached(shard: Shard) -> Optional[dict]:
        tokens_path, docs_path, meta_path = paths(shard)
        if not (meta_path.is_file() and tokens_path.is_file() and docs_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        same = all(meta.get(k) == v for k, v in expected.items()) and meta.get("shard_fingerprint") == shard.fingerprint
        return meta if same else None

    todo = [s for i, s in enumerate(dataset.shards) if i % world == rank and cached(s) is None]
    if todo:
        with progress() as bar:
            task = bar.add_task("tokenizing", total=sum(s.num_rows for s in todo))
            for shard in todo:
                texts = read_shard(shard, [dataset.text_column]).column(dataset.text_column).to_pylist()
                tokens, ends = tokenize_texts(tokenizer, texts, eos, dtype)
                tokens_path, docs_path, meta_path = paths(shard)
                meta = {**expected, "shard": shard.name, "shard_fingerprint": shard.fingerprint, "rows": len(texts), "tokens": int(len(tokens))}
                for path, write in ((tokens_path, lambda p: _save_npy_atomic(p, tokens)), (docs_path, lambda p: _save_npy_atomic(p, ends)), (meta_path, lambda p: write_json_atomic(p, meta))):
                    try:
                        write(path)
                    except OSError as exc:  # a full disk: np.save's error names no file
                        raise DeltError(
                            f"cannot write the token cache: {describe_os_error(exc, path)}; shards tokenized so far are kept: free space and rerun with --resume"
                        ) from exc
                bar.advance(task, shard.num_rows)
        info(f"tokenized {len(todo)} shard(s) into {cache_dir}")
    barrier()
    parts = []
    for shard in dataset.shards:
        meta = cached(shard)
        if meta is None:
            raise DeltError(f"token cache {cache_dir}: shard {shard.name} is missing after tokenization")
        tokens_path, docs_path, _ = paths(shard)
        parts.append(ShardTokens(shard, tokens_path, docs_path, int(meta["tokens"])))
    return TokenCache(dataset, parts)
