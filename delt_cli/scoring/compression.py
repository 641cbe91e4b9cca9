"""A cheap content score: how well the text compresses (zlib), a proxy for repetitiveness.

``compression_ratio`` = compressed bytes / UTF-8 bytes (level 6). Boilerplate, lists and
repeated lines compress well (low ratio); natural prose sits around 0.4-0.6 for
documents of a few kilobytes; very short texts have ratios near or above 1 because
of the fixed header. Empty texts get null.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from delt_cli.scoring.base import Scorer
from delt_cli.scoring.options import Named, TextInput

LEVEL = 6


@dataclass
class CompressionOptions(TextInput, Named):
    pass


class CompressionScorer(Scorer):
    name = "compression"
    title = "Compression"
    Options = CompressionOptions

    def validate(self) -> None:
        self.empty = 0

    @property
    def columns(self) -> list[str]:
        return [self.options.column or "compression_ratio"]

    def transform(self, table: pa.Table) -> dict[str, pa.Array]:
        texts = table.column(self.options.text_column).to_pylist()
        ratio = np.full(len(texts), np.nan)
        for i, text in enumerate(texts):
            raw = (text or "").encode("utf-8")
            if raw:
                ratio[i] = len(zlib.compress(raw, LEVEL)) / len(raw)
        empty = np.isnan(ratio)
        self.empty += int(empty.sum())
        return {self.columns[0]: pa.array(ratio, mask=empty, type=pa.float64())}

    def summary(self) -> dict:
        return {"empty (null)": self.empty}

    def describe(self) -> dict:
        return {"codec": "zlib", "level": LEVEL, "definition": "compressed bytes / utf-8 bytes"}
