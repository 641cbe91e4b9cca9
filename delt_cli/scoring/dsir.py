"""DSIR (Xie et al., 2023): importance weights from hashed n-gram features, the baseline of GOT-D.

Features: the text is lower-cased and split into word and punctuation tokens
(regex ``\\w+|[^\\w\\s]+``, NLTK's wordpunct rule); every unigram and bigram is hashed
into one of ``buckets`` buckets (a 64-bit blake2b hash of each word, bigrams mixed
from their two word hashes, so the buckets are stable across runs and machines).

Fit: bag-of-n-grams models of the target and of the raw pool (a seeded
uniform sample of ``pool_size`` rows, or all of it), each with add-one smoothing:
p(k) = (count_k + 1) / (total + buckets).

Score (per shard): the log importance weight of a document with bucket counts c,

    dsir = sum_k c_k (log p_target(k) - log p_raw(k)),

higher = more target-like. ``dsir_gumbel`` adds Gumbel noise drawn from a hash of
(seed, row id), so ``delt select --by dsir_gumbel --top-k N`` is DSIR's importance
resampling without replacement (the Gumbel top-k trick), independent of sharding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from delt_cli.infra.console import info
from delt_cli.dataset import open_dataset
from delt_cli.infra.errors import DeltError, UsageError
from delt_cli.scoring.base import Fitted, Scorer
from delt_cli.scoring.options import IdInput, Named, PoolOptions, Seeded, TargetOptions, TextInput, option
from delt_cli.scoring.pool import fit_on_main, iter_sample, sample_rows

TOKEN_PATTERN = r"\w+|[^\w\s]+"
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _hash64(words: Sequence[str]) -> np.ndarray:
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little") for w in words),
        dtype=np.uint64,
        count=len(words),
    )


def _mix(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """A 64-bit hash of the pair (h1, h2) (splitmix64's finaliser over h1 * golden ^ h2)."""
    with np.errstate(over="ignore"):
        z = (h1 * _MIX) ^ h2
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def ngram_buckets(texts: pa.Array | pa.ChunkedArray | Sequence[Optional[str]], buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(row index, bucket) for every unigram and bigram of every text."""
    series = pl.Series("t", texts, dtype=pl.String) if not isinstance(texts, (pa.Array, pa.ChunkedArray)) else pl.from_arrow(texts)
    words = series.fill_null("").str.to_lowercase().str.extract_all(TOKEN_PATTERN)
    tokens = pl.DataFrame({"w": words}).with_row_index("row").explode("w").drop_nulls("w")
    if tokens.height == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    vocab = tokens.select(pl.col("w").unique(maintain_order=True))
    vocab = vocab.with_columns(pl.Series("h", _hash64(vocab["w"].to_list()), dtype=pl.UInt64))
    h = tokens.join(vocab, on="w", how="left", maintain_order="left")["h"].to_numpy()
    row = tokens["row"].to_numpy().astype(np.int64)
    same_doc = row[1:] == row[:-1]
    bigram = _mix(h[:-1][same_doc], h[1:][same_doc])
    b = np.uint64(buckets)
    rows = np.concatenate([row, row[:-1][same_doc]])
    keys = np.concatenate([h % b, bigram % b]).astype(np.int64)
    return rows, keys


def bucket_counts(texts, buckets: int) -> np.ndarray:
    _, keys = ngram_buckets(texts, buckets)
    return np.bincount(keys, minlength=buckets).astype(np.int64)


def log_ratio(target_counts: np.ndarray, raw_counts: np.ndarray) -> np.ndarray:
    """log p_target - log p_raw per bucket, both add-one smoothed."""
    buckets = len(target_counts)
    p_t = (target_counts + 1.0) / (target_counts.sum() + buckets)
    p_r = (raw_counts + 1.0) / (raw_counts.sum() + buckets)
    return np.log(p_t) - np.log(p_r)


def gumbel_noise(ids: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """Standard Gumbel noise, one value per id, from a hash of (seed, id): independent of row position."""
    key = str(seed).encode()
    u = np.fromiter(
        (
            (int.from_bytes(hashlib.blake2b(str(v).encode("utf-8"), digest_size=8, key=key).digest(), "little") >> 11) + 0.5
            for v in ids.to_pylist()
        ),
        dtype=np.float64,
        count=len(ids),
    ) / float(1 << 53)
    return -np.log(-np.log(u))


@dataclass
class DSIROptions(TargetOptions, PoolOptions, TextInput, IdInput, Seeded, Named):
    dsir_buckets: int = option(10_000, "Hash buckets for unigram + bigram features.")


class DSIRScorer(Scorer):
    """Columns: dsir (log importance weight) and dsir_gumbel (the same plus seeded Gumbel noise)."""

    name = "dsir"
    title = "DSIR"
    Options = DSIROptions
    global_fit = True

    def validate(self) -> None:
        o = self.options
        if not o.target:
            raise UsageError("--method dsir needs --target TARGET (a dataset with the same text column)")
        if o.dsir_buckets < 2:
            raise UsageError(f"--dsir-buckets {o.dsir_buckets}: must be >= 2")
        if o.pool_size is not None and o.pool_size < 1:
            raise UsageError(f"--pool-size {o.pool_size}: must be >= 1")

    @property
    def columns(self) -> list[str]:
        base = self.options.column or "dsir"
        return [base, f"{base}_gumbel"]

    def check(self, dataset) -> None:
        dataset.require(self.options.text_column, flag="--text-column")
        dataset.require(self.options.id_column, flag="--id-column")

    def _fit_main(self, dataset) -> Fitted:
        o = self.options
        target = open_dataset(o.target, text_column=o.text_column)
        target.require(o.text_column, flag="--text-column")
        if target.num_rows < 1:
            raise DeltError(f"--target {o.target} has no rows")
        t_counts = np.zeros(o.dsir_buckets, np.int64)
        for _, table in target.iter_tables([o.text_column]):
            t_counts += bucket_counts(table.column(o.text_column), o.dsir_buckets)
        if t_counts.sum() == 0:
            raise DeltError(f"--target {o.target}: column '{o.text_column}' has no words")
        rows = sample_rows(dataset.num_rows, o.pool_size, o.seed)
        r_counts = np.zeros(o.dsir_buckets, np.int64)
        for _, table, local in iter_sample(dataset, [o.text_column], rows):
            r_counts += bucket_counts(table.column(o.text_column).take(pa.array(local)), o.dsir_buckets)
        fit_rows = dataset.num_rows if rows is None else len(rows)
        info(f"DSIR: fitted on {target.num_rows:,} target rows ({int(t_counts.sum()):,} n-grams) and {fit_rows:,} pool rows ({int(r_counts.sum()):,} n-grams)")
        facts = {
            "target_fingerprint": target.fingerprint,
            "target_rows": target.num_rows,
            "target_ngrams": int(t_counts.sum()),
            "fit_rows": int(fit_rows),
            "fit_ngrams": int(r_counts.sum()),
            "pool_rows": dataset.num_rows,
        }
        return Fitted(facts=facts, arrays={"target_counts": t_counts, "raw_counts": r_counts})

    def fit(self, dataset, dist) -> Fitted:
        return fit_on_main(dist, lambda: self._fit_main(dataset))

    def prepare(self, dist) -> None:
        self._log_ratio = log_ratio(self.fitted.arrays["target_counts"], self.fitted.arrays["raw_counts"])

    def transform(self, table: pa.Table) -> dict[str, pa.Array]:
        o = self.options
        rows, keys = ngram_buckets(table.column(o.text_column), o.dsir_buckets)
        weights = np.bincount(rows, weights=self._log_ratio[keys], minlength=table.num_rows)
        noisy = weights + gumbel_noise(table.column(o.id_column), o.seed)
        score, gumbel = self.columns
        return {score: pa.array(weights, type=pa.float64()), gumbel: pa.array(noisy, type=pa.float64())}

    def describe(self) -> dict:
        o = self.options
        return {
            "target": o.target,
            "features": "hashed unigrams + bigrams of lower-cased wordpunct tokens (blake2b-64)",
            "buckets": o.dsir_buckets,
            "smoothing": "add-one",
            "score": "sum_k count_k * (log p_target(k) - log p_raw(k))",
            "prefer": "highest",
            "pool_size": o.pool_size,
            "seed": o.seed,
        }
