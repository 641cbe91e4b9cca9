"""Scorer options, declared once: a dataclass per scorer whose fields are its flags.

A field is declared with `option(default, help)`; its flag is ``--field-name`` unless
`flags` says otherwise. `delt score` and `delt fit` build their command-line options and
YAML config keys from these fields (delt_cli/cli/score.py), one `--help` panel per method;
a field declared on a shared base below (`ModelOptions`, `TargetOptions`, ...) is one flag
for every method that inherits it, with its help and panel written here once.

Fields marked ``runtime=True`` only say how to run (batch sizes, the name of the added
column): they may differ between `delt fit` and `delt score --fit`. Every other field is
part of the fit and is recorded in the fit artifact.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

COMMON = "Common options"
MODEL = "Model options"
TARGET = "Target options (gotd, dsir, lqs)"


def option(default: Any, help: str, *, flags: tuple[str, ...] = (), panel: Optional[str] = None, runtime: bool = False):
    """A dataclass field that is also a flag of `delt score` / `delt fit`."""
    return field(default=default, metadata={"help": help, "flags": tuple(flags), "panel": panel, "runtime": runtime})


def default_of(base: type, name: str, default: Any):
    """Re-declare the field `name` of `base` with another default (same flag, help and panel)."""
    meta = next(f for f in dataclasses.fields(base) if f.name == name).metadata
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    """One field of an options dataclass, as the CLI sees it."""

    name: str
    type: Any  # the field's annotation (int, Optional[str], bool, ...)
    default: Any
    help: str
    flags: tuple[str, ...]
    panel: Optional[str]
    runtime: bool

    @property
    def flag(self) -> str:
        """The main flag (for messages): --pool-size."""
        return self.flags[0].split("/")[0]


def specs(cls: type) -> list[OptionSpec]:
    """The options of a dataclass, in declaration order (bases first)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        out.append(
            OptionSpec(
                name=f.name,
                type=hints[f.name],
                default=f.default,
                help=meta.get("help", ""),
                flags=meta.get("flags") or (f"--{f.name.replace('_', '-')}",),
                panel=meta.get("panel"),
                runtime=bool(meta.get("runtime")),
            )
        )
    return out


def to_dict(options) -> dict[str, Any]:
    """Options as JSON-able values (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(options).items()}


def fit_dict(options) -> dict[str, Any]:
    """The options that are part of a fit (all but the runtime ones)."""
    runtime = {s.name for s in specs(type(options)) if s.runtime}
    return {k: v for k, v in to_dict(options).items() if k not in runtime}


# -- shared bases: each field written once ----------------------------------------------------


@dataclass
class TextInput:
    text_column: str = option("text", "Name of the text column.", panel=COMMON)


@dataclass
class IdInput:
    id_column: str = option("id", "Name of the id column.", panel=COMMON)


@dataclass
class Seeded:
    seed: int = option(0, "Random seed (samples, random-init models, noise).")


@dataclass
class Named:
    column: Optional[str] = option(None, "Name (or prefix) of the score column(s) to add (default: per method).", runtime=True)


@dataclass
class ModelRef:
    model: Optional[str] = option(
        None,
        "perplexity: the reference LM; lqs: the proxy LM (a model directory, a .gguf file, a configs/models name "
        "(random init, needs --tokenizer) or a cached hub id); kenlm: an ARPA or binary KenLM file.",
        flags=("--model", "--proxy-model"),
        panel=MODEL,
    )


@dataclass
class Tokenized:
    tokenizer: Optional[str] = option(None, "Tokenizer directory or cached hub id (length: also count tokens; model scorers: default the model's).", panel=MODEL)


@dataclass
class Typed:
    dtype: str = option("auto", "auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16 or float16.", panel=MODEL)


@dataclass
class ModelOptions(ModelRef, Tokenized, Typed, TextInput, IdInput, Seeded):
    """What every causal-LM scorer shares (perplexity, lqs)."""

    trust_remote_code: bool = option(False, "Allow model code from the model directory (off by default).", panel=MODEL)
    max_length: int = option(1024, "Tokens per document, prefix included; longer ones are truncated (or strided with --stride).", panel=MODEL)
    prefix_token: str = option("bos", "Token before every document: bos, eos, none or a token string.", panel=MODEL)


@dataclass
class Batched:
    batch_tokens: Optional[int] = option(
        None,
        "Tokens per batch (rows x longest row) for inference (perplexity default: 512 on CPU, 16384 on GPU; at least --max-length). "
        "Changes the speed, not the scores.",
        panel=MODEL,
        runtime=True,
    )


@dataclass
class TargetOptions:
    target: Optional[str] = option(
        None,
        "The target dataset (directory / Parquet file / glob). gotd: embeddings made by `delt embed` (same column); "
        "dsir: text whose n-gram model the weights favour; lqs: documents whose mean loss the proxy trajectory is scored against.",
        panel=TARGET,
    )


@dataclass
class PoolOptions:
    pool_size: Optional[int] = option(
        50_000,
        "Pool rows the fit sees: gotd: candidates in the OT solve (and per group with --group-by); dsir: rows of the raw "
        "n-gram model (a seeded uniform sample when the pool is larger).",
        panel=TARGET,
    )
