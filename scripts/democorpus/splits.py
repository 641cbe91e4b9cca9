"""Whole source documents -> splits, with per-domain quotas stratified by source.

Within one domain, each reserved split (a domain target, then the held-out set)
gets a quota of documents, shared among the domain's sources in proportion to
their numbers of documents (largest remainder), so a held-out set mixes the
sources as the domain does. For each source, its groups (source documents, or
sets of them that must stay together) are put in a seeded pseudo-random order;
a reserved split takes groups from the front of that order until it holds at
least its share *and* `min_groups` groups, or until it reaches `max_frac` of the
source's documents, and keeps a seeded sample of its share from them. All
remaining groups form the rest (the training pool). So a source document is in
at most one split, and no text of a held-out or target document is in train.

Every order comes from a keyed hash of (seed, name), so it is stable: adding a
source or changing a quota does not reshuffle the rest.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

import numpy as np

from delt_cli.selection import apportion


@dataclass(frozen=True)
class Chunk:
    id: str
    text: str
    domain: str
    source: str
    source_doc: str  # the group: never split across train / held-out / target


def rank(seed: int, *parts: str) -> bytes:
    """A seeded pseudo-random sort key."""
    return hashlib.blake2b("\x00".join([str(seed), *parts]).encode(), digest_size=16).digest()


def shuffled(chunks: list[Chunk], *, seed: int, split: str) -> list[Chunk]:
    """The chunks in a seeded order (the output order of a split: domains mixed throughout)."""
    return sorted(chunks, key=lambda c: rank(seed, split, c.id))


def sample(chunks: list[Chunk], quota: Optional[int], *, seed: int, split: str) -> list[Chunk]:
    """A seeded sample of `quota` chunks (all of them when quota is None), in seeded order."""
    ordered = shuffled(chunks, seed=seed, split=split)
    return ordered if quota is None else ordered[:quota]


def allocate(quota: int, sizes: dict[str, int]) -> dict[str, int]:
    """`quota` shared among keys in proportion to `sizes` (largest remainder; ties go to the earlier key)."""
    keys = sorted(sizes)
    shares = apportion(quota, np.array([sizes[k] for k in keys], dtype=np.float64))
    return {k: int(shares[i]) for i, k in enumerate(keys)} if keys else {}


def partition(
    chunks: list[Chunk],
    reserves: list[tuple[str, int]],
    rest: str,
    *,
    seed: int,
    min_groups: int,
    max_frac: float,
) -> dict[str, list[Chunk]]:
    """Each reserved (split, quota) gets up to `quota` chunks from whole groups, stratified by source;
    every group not reserved goes, whole, to `rest`."""
    by_source: dict[str, list[Chunk]] = defaultdict(list)
    for c in chunks:
        by_source[c.source].append(c)
    sizes = {s: len(v) for s, v in sorted(by_source.items())}
    shares = {name: allocate(quota, sizes) for name, quota in reserves}
    out: dict[str, list[Chunk]] = {name: [] for name, _ in reserves}
    out[rest] = []
    for source, members in sorted(by_source.items()):
        groups: dict[str, list[Chunk]] = defaultdict(list)
        for c in members:
            groups[c.source_doc].append(c)
        order = sorted(groups, key=lambda g: rank(seed, "group", g))
        cap = max_frac * len(members)
        i = 0
        for name, _ in reserves:
            share = shares[name][source]
            taken: list[Chunk] = []
            n_groups = 0
            while share > 0 and i < len(order) and not (len(taken) >= share and n_groups >= min_groups) and len(taken) < cap:
                taken += groups[order[i]]
                n_groups += 1
                i += 1
            out[name] += sample(taken, share, seed=seed, split=name)
        out[rest] += [c for g in order[i:] for c in groups[g]]
    return out
