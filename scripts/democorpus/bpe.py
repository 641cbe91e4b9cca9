"""A small byte-level BPE tokenizer trained on a dataset's text, saved as a Hugging Face directory.

The reproduction's small models need a small vocabulary (GPT-2's 50k embedding
rows would dwarf a 3M-parameter model). This trains GPT-2-style byte-level
BPE (GPT-2's pre-tokenisation regex, no unknown tokens) with the `tokenizers`
library and saves it with ``<|endoftext|>`` as the end-of-text token (also the
BOS token, as in GPT-2; no padding token is set). The directory loads with
``AutoTokenizer.from_pretrained(dir)``; ``training.json`` in it records the
dataset fingerprint, the settings and the measured characters per token.
Training the same dataset with the same settings gives a byte-identical
``tokenizer.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Optional

from delt_cli.infra.console import info
from delt_cli.dataset.reader import Dataset, open_dataset
from delt_cli.infra.errors import UsageError
from delt_cli.infra.guard import OutputGuard, foreign_except, write_dir

EOS = "<|endoftext|>"
PROVENANCE = "training.json"


def _texts(ds: Dataset, column: str) -> Iterator[list[str]]:
    for _, table in ds.iter_tables([column]):
        yield [t for t in table.column(column).to_pylist() if t]


def chars_per_token(tokenizer, ds: Dataset, column: str = "text") -> float:
    """Characters of `column` divided by the tokens `tokenizer` makes of them (no special tokens)."""
    chars = tokens = 0
    for batch in _texts(ds, column):
        chars += sum(len(t) for t in batch)
        tokens += sum(len(ids) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"])
    return chars / tokens if tokens else float("nan")


def _done(output: Path, expected: dict) -> bool:
    try:
        previous = json.loads((output / PROVENANCE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return {k: previous.get(k) for k in expected} == expected


def train_bpe(
    dataset: str | os.PathLike,
    output: Path,
    *,
    vocab_size: int = 8192,
    min_frequency: int = 2,
    text_column: str = "text",
    eval_dataset: Optional[str | os.PathLike] = None,
    overwrite: bool = False,
) -> dict:
    """Train the tokenizer into `output` (or keep it when it was trained the same way); return its record."""
    if vocab_size < 300:
        raise UsageError(f"--vocab-size {vocab_size}: must be >= 300 (256 byte symbols, the end-of-text token and merges)")
    if min_frequency < 1:
        raise UsageError(f"--min-frequency {min_frequency}: must be >= 1")
    ds = open_dataset(dataset, text_column=text_column)
    ds.require(text_column, flag="--text-column")
    evaluation = open_dataset(eval_dataset, text_column=text_column) if eval_dataset is not None else None
    if evaluation is not None:
        evaluation.require(text_column, flag="--text-column")
    output = Path(output)
    expected = {
        "dataset_fingerprint": ds.fingerprint,
        "text_column": text_column,
        "vocab_size": vocab_size,
        "min_frequency": min_frequency,
        "eos_token": EOS,
        "eval_fingerprint": evaluation.fingerprint if evaluation is not None else None,
    }
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: exists and is not a directory")
    with OutputGuard(output, overwrite=overwrite, foreign=foreign_except("*.json", "*.txt", PROVENANCE)) as guard:
        if output.is_dir() and any(output.iterdir()):
            if _done(output, expected) and not overwrite:
                info(f"{output}: already trained on the same data with the same settings; nothing to do")
                return json.loads((output / PROVENANCE).read_text())
            if not overwrite:
                raise UsageError(f"--output {output}: exists and is not empty; pass --overwrite to replace it")
            guard.refuse_foreign()
        return _train(ds, evaluation, output, expected, dataset, eval_dataset, vocab_size, min_frequency, text_column)


def _train(ds, evaluation, output: Path, expected: dict, dataset, eval_dataset, vocab_size: int, min_frequency: int, text_column: str) -> dict:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    info(f"training a {vocab_size}-token byte-level BPE on {ds.num_rows:,} rows of {ds.spec}")
    tok.train_from_iterator(_texts(ds, text_column), trainer=trainer, length=ds.num_rows)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS)

    record = {
        **expected,
        "dataset": str(dataset),
        "actual_vocab_size": tok.get_vocab_size(),
        "chars_per_token_train": round(chars_per_token(fast, ds, text_column), 4),
    }
    if evaluation is not None:
        record["eval_dataset"] = str(eval_dataset)
        record["chars_per_token_eval"] = round(chars_per_token(fast, evaluation, text_column), 4)

    def fill(tmp: Path) -> None:
        fast.save_pretrained(str(tmp))
        (tmp / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")

    write_dir(output, fill)
    return record
