"""The cheapest scorer: document length in characters, words and (optionally) tokens."""

from __future__ import annotations

from typing import Optional

import numpy as np
import polars as pl
import pyarrow as pa


class LengthScorer:
    """Columns: n_chars, n_words and, with a tokenizer, n_tokens (no special tokens counted)."""

    name = "length"

    def __init__(self, *, text_column: str = "text", tokenizer: Optional[str] = None, column: Optional[str] = None):
        self.text_column = text_column
        self.tokenizer_spec = tokenizer
        self._tokenizer = None
        self.prefix = column or "n"
        self.columns = [f"{self.prefix}_chars", f"{self.prefix}_words"] + ([f"{self.prefix}_tokens"] if tokenizer else [])

    def prepare(self, dataset, dist) -> None:
        dataset.require(self.text_column, flag="--text-column")
        if self.tokenizer_spec:
            from delt_cli.models.loading import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_spec)

    def score_table(self, table: pa.Table) -> dict[str, pa.Array]:
        text = pl.from_arrow(table.column(self.text_column)).fill_null("")
        out = {
            f"{self.prefix}_chars": pa.array(text.str.len_chars().cast(pl.Int64).to_numpy()),
            f"{self.prefix}_words": pa.array(text.str.count_matches(r"\S+").cast(pl.Int64).to_numpy()),
        }
        if self._tokenizer is not None:
            counts = np.zeros(len(text), dtype=np.int64)
            texts = text.to_list()
            for i in range(0, len(texts), 1024):
                ids = self._tokenizer(texts[i : i + 1024], add_special_tokens=False)["input_ids"]
                counts[i : i + len(ids)] = [len(x) for x in ids]
            out[f"{self.prefix}_tokens"] = pa.array(counts)
        return out

    def provenance(self) -> dict:
        return {"tokenizer": self.tokenizer_spec}
