"""A cheap content score: how well the text compresses (zlib), a proxy for repetitiveness.

``compression_ratio`` = compressed bytes / UTF-8 bytes (level 6). Boilerplate, lists and
repeated lines compress well (low ratio); natural prose sits around 0.4-0.6 for
documents of a few kilobytes; very short texts have ratios near or above 1 because
of the fixed header. Empty texts get null.
"""

from __future__ import annotations

import zlib
from typing import Optional

import numpy as np
import pyarrow as pa


class CompressionScorer:
    name = "compression"

    def __init__(self, *, text_column: str = "text", column: Optional[str] = None, level: int = 6):
        self.text_column = text_column
        self.level = level
        self.columns = [column or "compression_ratio"]
        self.empty = 0

    def prepare(self, dataset, dist) -> None:
        dataset.require(self.text_column, flag="--text-column")

    def score_table(self, table: pa.Table) -> dict[str, pa.Array]:
        texts = table.column(self.text_column).to_pylist()
        ratio = np.full(len(texts), np.nan)
        for i, text in enumerate(texts):
            raw = (text or "").encode("utf-8")
            if raw:
                ratio[i] = len(zlib.compress(raw, self.level)) / len(raw)
        empty = np.isnan(ratio)
        self.empty += int(empty.sum())
        return {self.columns[0]: pa.array(ratio, mask=empty, type=pa.float64())}

    def summary(self) -> dict:
        return {"empty (null)": self.empty}

    def provenance(self) -> dict:
        return {"codec": "zlib", "level": self.level, "definition": "compressed bytes / utf-8 bytes"}
