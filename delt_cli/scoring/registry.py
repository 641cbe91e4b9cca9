"""`--method NAME` -> a scorer object. Each scoring module registers its factory here."""

from __future__ import annotations

from typing import Callable

from delt_cli.errors import UsageError


def _length(opts: dict):
    from delt_cli.scoring.length import LengthScorer

    return LengthScorer(text_column=opts["text_column"], tokenizer=opts.get("tokenizer"), column=opts.get("column"))


def _gotd(opts: dict):
    from delt_cli.scoring.gotd import GOTDScorer

    return GOTDScorer(
        target=opts.get("target"),
        embedding_column=opts.get("embedding_column") or "emb",
        epsilon=opts.get("epsilon"),
        epsilon_relative=opts.get("epsilon_relative"),
        pool_size=opts.get("pool_size", 50_000),
        max_iter=opts.get("max_iter", 2000),
        tol=opts.get("tol", 1e-4),
        max_memory=opts.get("max_memory") or "2GB",
        contrast=bool(opts.get("contrast")),
        column=opts.get("column"),
        seed=opts.get("seed", 0),
        dtype=opts.get("ot_dtype") or "float32",
    )


def _dsir(opts: dict):
    from delt_cli.scoring.dsir import DSIRScorer

    return DSIRScorer(
        target=opts.get("target"),
        text_column=opts.get("text_column", "text"),
        id_column=opts.get("id_column", "id"),
        buckets=opts.get("dsir_buckets", 10_000),
        pool_size=opts.get("pool_size", 50_000),
        column=opts.get("column"),
        seed=opts.get("seed", 0),
    )


# method -> factory(options dict with every `delt score` flag) -> scorer
FACTORIES: dict[str, Callable[[dict], object]] = {
    "length": _length,
    "gotd": _gotd,
    "dsir": _dsir,
}


def build_scorer(method: str, opts: dict):
    if method not in FACTORIES:
        raise UsageError(f"--method {method}: expected one of {', '.join(sorted(FACTORIES))}")
    return FACTORIES[method](opts)
