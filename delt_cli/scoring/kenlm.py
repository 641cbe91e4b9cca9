"""`--method kenlm`: perplexity under an n-gram model (KenLM, ARPA or binary).

The DELT paper's perplexity baseline and what CCNet and datatrove filter web text on. Per
document, every non-empty line is normalised (``--kenlm-normalize ccnet``: digits to 0,
typographic punctuation to ASCII, non-printing characters removed, whitespace collapsed,
case kept; ``none``: whitespace only), split on whitespace and scored with a sentence start
and end (so a line of n words predicts n + 1 tokens). With L the sum of the lines' log10
probabilities and T their predicted tokens:

    kenlm_nll = -L ln(10) / T    (nats per predicted token)
    kenlm     = exp(kenlm_nll)   (= 10^(-L / T), CCNet's document perplexity)
    kenlm_tokens = T

Documents without a word get null. The model is the user's (a CCNet/edugp model expects the
SentencePiece pieces it was trained on; score text tokenised the same way, or train a model on
whitespace words with KenLM's lmplz). Needs the ``kenlm`` package: ``pip install 'delt_cli[kenlm]'``
(a source distribution; it compiles in about a minute).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from delt_cli.infra.errors import DeltError, UsageError
from delt_cli.scoring.base import Scorer
from delt_cli.scoring.options import ModelRef, Named, TextInput, option

NORMALISATIONS = ("ccnet", "none")
BINARY_MAGIC = b"mmap lm "  # the first bytes of a KenLM binary file (build_binary)
_PUNCT = str.maketrans(
    {
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"', "\u2033": '"',
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'", "\u00b4": "'", "`": "'",
        "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
        "\u2026": "...", "\u00a0": " ", "\u3000": " ",
        "\uff0c": ",", "\u3001": ",", "\uff0e": ".", "\u3002": ".", "\uff01": "!", "\uff1f": "?",
        "\uff1a": ":", "\uff1b": ";", "\uff08": "(", "\uff09": ")",
    }
)
_DIGITS = re.compile(r"\d")


def normalise(line: str, how: str = "ccnet") -> str:
    """One line as the model sees it: words separated by single spaces."""
    if how == "ccnet":
        line = _DIGITS.sub("0", line.translate(_PUNCT))
        line = "".join(ch for ch in line if ch.isspace() or unicodedata.category(ch)[0] != "C")
    return " ".join(line.split())


@contextmanager
def _quiet_stderr():
    """Send what C++ code writes to file descriptor 2 nowhere for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_model_file(path: Path) -> None:
    """An ARPA file (its first non-blank line is \\data\\) or a KenLM binary; one line otherwise."""
    if not path.is_file():
        raise DeltError(f"--model {path}: no such file (an ARPA or binary KenLM model)")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(BINARY_MAGIC) or head.lstrip().startswith(b"\\data\\"):
        return
    raise DeltError(f"--model {path}: not a KenLM model (an ARPA file starts with \\data\\, a binary one with 'mmap lm')")


@dataclass
class KenLMOptions(ModelRef, TextInput, Named):
    kenlm_normalize: str = option("ccnet", "Text normalisation before scoring: ccnet (digits to 0, typographic punctuation to ASCII, non-printing characters removed; case kept) or none.")


class KenLMScorer(Scorer):
    """Columns: kenlm (perplexity), kenlm_nll (nats per predicted token), kenlm_tokens."""

    name = "kenlm"
    title = "KenLM"
    Options = KenLMOptions

    def validate(self) -> None:
        if importlib.util.find_spec("kenlm") is None:
            raise DeltError("--method kenlm needs the kenlm package: pip install 'delt_cli[kenlm]' (it compiles from source, about a minute)")
        if not self.options.model:
            raise UsageError("--method kenlm needs --model FILE (an ARPA or binary KenLM model)")
        if self.options.kenlm_normalize not in NORMALISATIONS:
            raise UsageError(f"--kenlm-normalize {self.options.kenlm_normalize}: expected one of {', '.join(NORMALISATIONS)}")
        self.counts = {"documents": 0, "scored": 0, "empty (null)": 0, "tokens": 0}

    @property
    def columns(self) -> list[str]:
        prefix = self.options.column or "kenlm"
        return [prefix, f"{prefix}_nll", f"{prefix}_tokens"]

    def references(self) -> dict:
        path = Path(self.options.model)
        check_model_file(path)
        from delt_cli.dataset.provenance import sha256_file

        return {"model": str(path), "model_fingerprint": sha256_file(path)[:32]}

    def prepare(self, dist) -> None:
        import kenlm

        path = Path(self.options.model)
        check_model_file(path)
        config = kenlm.Config()
        config.show_progress = False  # no loading messages or bars on stderr
        try:
            with _quiet_stderr():  # KenLM's C++ tells stderr that a binary file would load faster
                self.model = kenlm.Model(str(path), config)
        except (OSError, RuntimeError, ValueError) as exc:
            text = " ".join(str(exc).split())
            reason = text.split("Exception.", 1)[1].strip() if "Exception." in text else text  # KenLM's own words, not its source location
            while reason.endswith(")") and reason.count(")") > reason.count("("):
                reason = reason[:-1]
            raise DeltError(f"--model {path}: KenLM cannot load it ({reason or type(exc).__name__})") from exc

    def transform(self, table: pa.Table) -> dict[str, pa.Array]:
        how = self.options.kenlm_normalize
        texts = table.column(self.options.text_column).to_pylist()
        log10 = np.zeros(len(texts))
        tokens = np.zeros(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            for line in (text or "").splitlines():
                words = normalise(line, how)
                if words:
                    log10[i] += self.model.score(words, bos=True, eos=True)
                    tokens[i] += words.count(" ") + 2
            if self.on_progress:
                self.on_progress(1, int(tokens[i]))
        valid = tokens > 0
        nll = np.where(valid, -log10 * math.log(10) / np.maximum(tokens, 1), np.nan)
        with np.errstate(over="ignore"):
            ppl = np.exp(nll)
        self.counts["documents"] += len(texts)
        self.counts["scored"] += int(valid.sum())
        self.counts["empty (null)"] += int((~valid).sum())
        self.counts["tokens"] += int(tokens.sum())
        ppl_col, nll_col, tokens_col = self.columns
        return {
            ppl_col: pa.array(ppl, mask=~valid, type=pa.float64()),
            nll_col: pa.array(nll, mask=~valid, type=pa.float64()),
            tokens_col: pa.array(tokens, type=pa.int64()),
        }

    def summary(self) -> dict:
        return dict(self.counts)

    def describe(self) -> dict:
        return {
            "normalize": self.options.kenlm_normalize,
            "tokens": "whitespace words of each non-empty line + an end-of-sentence token",
            "units": "nats per predicted token; kenlm = exp(nll) = 10^(-log10 prob / tokens); null for empty documents",
        }
