"""Scoring: add score columns to every shard of a dataset.

A scorer (`delt_cli.scoring.base.Scorer`) declares its options once (a dataclass, see
`delt_cli.scoring.options`), may fit on the whole input (`fit` -> `Fitted`, saved as an
artifact by `delt_cli.scoring.artifact`) and transforms one shard at a time (`transform`:
a pure function of the shard and the fitted state). `delt_cli.scoring.runner` runs it:
`fit_dataset` for `delt fit`, `score_dataset` for `delt score` (resumable, split across
processes or independent ranks). `delt_cli.scoring.registry` maps `--method` to a class.
"""
