"""GOT-D (Get More for Less, ICLR 2024): the scorer and what only it needs.

scorer.py    `--method gotd`: embed, one entropic OT solve against the target, scores from the
             dual potential; domain relevance (`--group-by`)
sinkhorn.py  log-domain entropic OT in torch
vectors.py   embedding columns as float matrices
embedding.py sentence embeddings (`delt embed`, and the scorer's own when no column is given)

Importing the package imports none of them (torch loads only with the module that needs it).
"""
