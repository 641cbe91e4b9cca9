"""Whole source documents -> splits, then per-domain quotas.

Within one domain, the groups (source documents, or sets of them that must stay
together) are put in a seeded pseudo-random order. Each reserved split (a
domain target, then the held-out set) takes groups from the front of that order
until it holds at least its quota of documents *and* `min_groups` groups, or
until it reaches `max_frac` of the domain's documents; whatever groups remain
form the training pool. Then each split keeps a seeded sample of its quota.
So a source document is in at most one split, and no text of a held-out or
target document is in train.

Every order comes from a keyed hash of (seed, name), so it is stable: adding a
source or changing a quota does not reshuffle the rest.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional


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


def partition(
    chunks: list[Chunk],
    reserves: list[tuple[str, int]],
    rest: str,
    *,
    seed: int,
    min_groups: int,
    max_frac: float,
) -> dict[str, list[Chunk]]:
    """Give whole groups to each reserved (split, quota) in turn and the remaining groups to `rest`."""
    by_group: dict[str, list[Chunk]] = defaultdict(list)
    for c in chunks:
        by_group[c.source_doc].append(c)
    order = sorted(by_group, key=lambda g: rank(seed, "group", g))
    cap = max_frac * len(chunks)
    out: dict[str, list[Chunk]] = {}
    i = 0
    for name, quota in reserves:
        taken: list[str] = []
        n = 0
        while quota > 0 and i < len(order) and not (n >= quota and len(taken) >= min_groups) and n < cap:
            taken.append(order[i])
            n += len(by_group[order[i]])
            i += 1
        out[name] = [c for g in taken for c in by_group[g]]
    out[rest] = [c for g in order[i:] for c in by_group[g]]
    return out


def sample(chunks: list[Chunk], quota: Optional[int], *, seed: int, split: str) -> list[Chunk]:
    """A seeded sample of `quota` chunks (all of them when quota is None), in seeded order."""
    ordered = shuffled(chunks, seed=seed, split=split)
    return ordered if quota is None else ordered[:quota]


def shuffled(chunks: list[Chunk], *, seed: int, split: str) -> list[Chunk]:
    """The rows of a split in their output order (seeded, so domains are mixed throughout)."""
    return sorted(chunks, key=lambda c: rank(seed, split, c.id))
