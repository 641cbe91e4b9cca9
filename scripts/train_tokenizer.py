#!/usr/bin/env python
"""Train a small byte-level BPE tokenizer on a dataset split (e.g. the corpus's train split).

    python scripts/train_tokenizer.py data/corpus/demo/train -o data/corpus/demo/tokenizer-8k

Writes a Hugging Face tokenizer directory (``<|endoftext|>`` as EOS) and prints its path.
"""

from typing import Annotated, Optional

import typer

from delt_cli.cli.common import InputArg, OutputOpt, OverwriteOpt, TextColumnOpt, emit, step
from delt_cli.infra.console import info
from democorpus.bpe import train_bpe

EXAMPLES = """
**Examples**

```
python scripts/train_tokenizer.py data/corpus/demo/train -o data/corpus/demo/tokenizer-8k
python scripts/train_tokenizer.py data/corpus/full/train -o data/corpus/full/tokenizer-8k --eval data/corpus/full/heldout
python scripts/train_tokenizer.py data/corpus/full/train -o tok-16k --vocab-size 16384
```

A rerun on the same data with the same settings does nothing.
"""

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="markdown",
                  context_settings={"help_option_names": ["-h", "--help"]})


@app.command(help="Train a byte-level BPE tokenizer on a dataset's text and save it as a Hugging Face tokenizer directory.", epilog=EXAMPLES)
@step
def main(
    input: InputArg,
    output: OutputOpt,
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Vocabulary size, including the 256 byte symbols and <|endoftext|>.")] = 8192,
    min_frequency: Annotated[int, typer.Option("--min-frequency", help="Merge only pairs seen at least this often.")] = 2,
    eval_dataset: Annotated[Optional[str], typer.Option("--eval", help="Also measure characters per token on this dataset (e.g. the heldout split).")] = None,
    text_column: TextColumnOpt = "text",
    overwrite: OverwriteOpt = False,
) -> None:
    record = train_bpe(input, output, vocab_size=vocab_size, min_frequency=min_frequency, text_column=text_column,
                       eval_dataset=eval_dataset, overwrite=overwrite)
    measured = ", ".join(f"{k.removeprefix('chars_per_token_')} {v:.3f}" for k, v in record.items() if k.startswith("chars_per_token"))
    info(f"vocabulary {record['actual_vocab_size']:,}; characters per token: {measured}")
    emit(output)


if __name__ == "__main__":
    app()
