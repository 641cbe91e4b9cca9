"""Scoring: add score columns to every shard of a dataset.

A scorer is an object with

* ``name`` and ``columns`` (the columns it adds; the first is "the" score);
* ``prepare(dataset, dist)``: optional global work before shards are scored
  (load a model, solve an OT problem, fit n-gram statistics); runs on every
  process; may use ``dist`` to split work and to synchronise;
* ``score_table(table) -> dict[column name, pyarrow.Array]``: a pure function
  of one shard (same input, same output), so shards can be scored in any order,
  on any process, and resumed;
* ``provenance() -> dict``: model, fingerprints, hyperparameters (goes into the
  manifest and every shard's metadata).

`delt_cli.scoring.runner.score_dataset` runs a scorer over a dataset,
shard by shard, resumable, multi-process under accelerate/torchrun.
"""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa


class Scorer(Protocol):
    name: str
    columns: list[str]

    def prepare(self, dataset, dist) -> None: ...

    def score_table(self, table: pa.Table) -> dict[str, pa.Array]: ...

    def provenance(self) -> dict: ...
