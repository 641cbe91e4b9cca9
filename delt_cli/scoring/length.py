"""The cheapest scorer: document length in characters, words and (optionally) tokens."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from delt_cli.scoring.base import Scorer
from delt_cli.scoring.options import Named, TextInput, Tokenized


@dataclass
class LengthOptions(Tokenized, TextInput, Named):
    pass


class LengthScorer(Scorer):
    """Columns: n_chars, n_words and, with a tokenizer, n_tokens (no special tokens counted)."""

    name = "length"
    title = "Length"
    Options = LengthOptions

    @property
    def columns(self) -> list[str]:
        prefix = self.options.column or "n"
        return [f"{prefix}_chars", f"{prefix}_words"] + ([f"{prefix}_tokens"] if self.options.tokenizer else [])

    def prepare(self, dist) -> None:
        self._tokenizer = None
        if self.options.tokenizer:
            from delt_cli.models.loading import load_tokenizer

            self._tokenizer = load_tokenizer(self.options.tokenizer)

    def transform(self, table: pa.Table) -> dict[str, pa.Array]:
        chars, words, *tokens = self.columns
        text = pl.from_arrow(table.column(self.options.text_column)).fill_null("")
        out = {
            chars: pa.array(text.str.len_chars().cast(pl.Int64).to_numpy()),
            words: pa.array(text.str.count_matches(r"\S+").cast(pl.Int64).to_numpy()),
        }
        if tokens:
            counts = np.zeros(len(text), dtype=np.int64)
            texts = text.to_list()
            for i in range(0, len(texts), 1024):
                ids = self._tokenizer(texts[i : i + 1024], add_special_tokens=False)["input_ids"]
                counts[i : i + len(ids)] = [len(x) for x in ids]
            out[tokens[0]] = pa.array(counts)
        return out

    def describe(self) -> dict:
        return {"tokenizer": self.options.tokenizer}
