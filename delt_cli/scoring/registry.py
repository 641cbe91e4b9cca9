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


def _compression(opts: dict):
    from delt_cli.scoring.compression import CompressionScorer

    return CompressionScorer(text_column=opts["text_column"], column=opts.get("column"))


def _model_opts(opts: dict, *, max_length: int) -> dict:
    """The flags every model scorer shares (Model options panel)."""
    return dict(
        model=opts.get("model"),
        tokenizer=opts.get("tokenizer"),
        text_column=opts["text_column"],
        id_column=opts.get("id_column", "id"),
        dtype=opts.get("dtype") or "auto",
        trust_remote_code=bool(opts.get("trust_remote_code")),
        max_length=opts.get("max_length") or max_length,
        prefix_token=opts.get("prefix_token") or "bos",
        seed=opts.get("seed", 0),
    )


def _perplexity(opts: dict):
    from delt_cli.scoring.perplexity import PerplexityScorer

    return PerplexityScorer(
        **_model_opts(opts, max_length=1024),
        column=opts.get("column"),
        stride=opts.get("stride") or 0,
        batch_tokens=opts.get("batch_tokens"),
    )


def _lqs(opts: dict):
    from delt_cli.scoring.lqs.annotate import LQSScorer

    if opts.get("column"):
        raise UsageError("--column: --method lqs writes fixed columns (lqs, pds, quality, learnability, lqs_z)")
    return LQSScorer(
        **_model_opts(opts, max_length=512),
        target=opts.get("target"),
        target_text_column=opts.get("target_text_column"),
        target_size=opts.get("target_size", 1024),
        proxy_size=opts.get("proxy_size", 4096),
        steps=opts.get("proxy_steps", 100),
        batch_size=opts.get("proxy_batch_size", 16),
        lr=opts.get("proxy_lr", 0.008),
        interval=opts.get("interval", 10),
        warmup_steps=opts.get("proxy_warmup_steps", 0),
        warmup_lr=opts.get("proxy_warmup_lr", 1e-3),
        per_sample=opts.get("per_sample", "auto"),
        per_sample_batch=opts.get("per_sample_batch", 32),
        chunk=opts.get("micro_batch", 8),
        checkpoint_every=opts.get("checkpoint_every", 0),
        last_norm=opts.get("last_norm", "next"),
        output=opts.get("output"),
        resume=bool(opts.get("resume")),
    )


def _scorer(opts: dict):
    from delt_cli.scoring.distilled import DistilledScorer

    return DistilledScorer(
        scorer=opts.get("scorer"),
        column=opts.get("column"),
        text_column=opts["text_column"],
        dtype=opts.get("dtype") or "auto",
        batch_tokens=opts.get("batch_tokens") or 4096,
    )


# method -> factory(options dict with every `delt score` flag) -> scorer
FACTORIES: dict[str, Callable[[dict], object]] = {
    "length": _length,
    "compression": _compression,
    "perplexity": _perplexity,
    "lqs": _lqs,
    "scorer": _scorer,
    "gotd": _gotd,
    "dsir": _dsir,
}


def build_scorer(method: str, opts: dict):
    if method not in FACTORIES:
        raise UsageError(f"--method {method}: expected one of {', '.join(sorted(FACTORIES))}")
    return FACTORIES[method](opts)
