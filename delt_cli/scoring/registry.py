"""`--method NAME` -> a scorer object. Each scoring module registers its factory here."""

from __future__ import annotations

from typing import Callable

from delt_cli.errors import UsageError


def _length(opts: dict):
    from delt_cli.scoring.length import LengthScorer

    return LengthScorer(text_column=opts["text_column"], tokenizer=opts.get("tokenizer"), column=opts.get("column"))


# method -> factory(options dict with every `delt score` flag) -> scorer
FACTORIES: dict[str, Callable[[dict], object]] = {
    "length": _length,
}


def build_scorer(method: str, opts: dict):
    if method not in FACTORIES:
        raise UsageError(f"--method {method}: expected one of {', '.join(sorted(FACTORIES))}")
    return FACTORIES[method](opts)
