"""`--method NAME` -> a scorer class. Adding a scorer: its module plus one line here."""

from __future__ import annotations

import importlib
from typing import Any

from delt_cli.infra.errors import UsageError

# method -> "module:Class" (imported on first use)
SCORERS = {
    "length": "delt_cli.scoring.length:LengthScorer",
    "compression": "delt_cli.scoring.compression:CompressionScorer",
    "perplexity": "delt_cli.scoring.perplexity:PerplexityScorer",
    "lqs": "delt_cli.scoring.lqs.annotate:LQSScorer",
    "scorer": "delt_cli.scoring.distilled:DistilledScorer",
    "gotd": "delt_cli.scoring.gotd.scorer:GOTDScorer",
    "dsir": "delt_cli.scoring.dsir:DSIRScorer",
    "kenlm": "delt_cli.scoring.kenlm:KenLMScorer",
}


def scorer_class(method: str) -> type:
    if method not in SCORERS:
        raise UsageError(f"--method {method}: expected one of {', '.join(sorted(SCORERS))}")
    module, _, name = SCORERS[method].partition(":")
    return getattr(importlib.import_module(module), name)


def scorer_classes() -> dict[str, type]:
    """Every registered scorer class (imports their modules; each imports its heavy libraries lazily)."""
    return {method: scorer_class(method) for method in SCORERS}


def build_scorer(method: str, opts: dict[str, Any]):
    """A scorer from a dict of options; keys that are not options of `method`, and None values, are ignored."""
    import dataclasses

    cls = scorer_class(method)
    names = {f.name for f in dataclasses.fields(cls.Options)}
    return cls(**{k: v for k, v in opts.items() if k in names and v is not None})
