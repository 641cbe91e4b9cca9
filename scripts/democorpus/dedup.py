"""Duplicate removal across the whole corpus: exact and near-exact.

Documents are given in a priority order and the first copy wins.

* exact: equal normalised text (case, punctuation and spacing ignored, see
  `text.normalized`);
* near-exact: Jaccard similarity >= `threshold` (0.8 by default) of the sets
  of 24-character windows of the normalised text that start at a word
  (about five words each). Candidates come from MinHash (64 hashes, 16 bands
  of 4 rows; a pair with Jaccard 0.8 becomes a candidate with probability
  0.9998) and are confirmed on the exact window sets, so there are no false
  positives.

Hashes are computed with numpy over many documents at once and derived from
the text with fixed constants, so the result does not depend on Python's hash
seed, the batch size or the machine.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import numpy as np

from democorpus.text import normalized

WINDOW = 24
BANDS, ROWS = 16, 4
BATCH = 2048
_P = np.uint64(0x100000001B3)  # polynomial base of the rolling hash (arithmetic wraps mod 2^64)
_MASK61 = np.uint64((1 << 61) - 1)
_rng = np.random.default_rng(20250626)
_A = _rng.integers(1, 1 << 61, size=BANDS * ROWS, dtype=np.uint64) | np.uint64(1)
_B = _rng.integers(0, 1 << 61, size=BANDS * ROWS, dtype=np.uint64)


def _mix(h: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser (splitmix64), so similar windows get unrelated hashes."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def shingle_sets(norms: Sequence[str]) -> list[np.ndarray]:
    """Sorted unique hashes of the word-initial 24-character windows of each normalised text."""
    encoded = [s.encode() for s in norms]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    buf = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.uint64)
    n = max(len(buf) - WINDOW + 1, 0)
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(WINDOW):
            h = h * _P + buf[k : k + n]
    h = _mix(h)
    starts = np.zeros(len(buf), dtype=bool)
    starts[offsets[:-1][lengths > 0]] = True
    starts[1:] |= buf[:-1] == ord(" ")
    out = []
    for i, raw in enumerate(encoded):
        a, b = offsets[i], offsets[i + 1]
        if b - a < WINDOW:  # shorter than one window: the whole text is the only shingle
            whole = int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")
            out.append(np.array([whole], dtype=np.uint64) if raw else np.zeros(0, dtype=np.uint64))
        else:
            out.append(np.unique(h[np.flatnonzero(starts[a : b - WINDOW + 1]) + a]))
    return out


def signatures(sets: Sequence[np.ndarray]) -> np.ndarray:
    """MinHash signatures (len(sets) x 64); a row of an empty set is all-ones."""
    sig = np.full((len(sets), BANDS * ROWS), np.iinfo(np.uint64).max, dtype=np.uint64)
    nonempty = [i for i, s in enumerate(sets) if s.size]
    if nonempty:
        flat = np.concatenate([sets[i] for i in nonempty]) & _MASK61
        starts = np.concatenate([[0], np.cumsum([sets[i].size for i in nonempty])[:-1]])
        rows = np.asarray(nonempty)
        with np.errstate(over="ignore"):
            for k in range(BANDS * ROWS):
                sig[rows, k] = np.minimum.reduceat((flat * _A[k] + _B[k]) & _MASK61, starts)
    return sig


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique arrays."""
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def find_duplicates(ids: Sequence[str], texts: Sequence[str], threshold: float = 0.8) -> list[Optional[tuple[str, str]]]:
    """For each text in order: None if it is kept, else ('exact' | 'near', id of the earlier kept copy)."""
    exact: dict[str, str] = {}
    bands: list[dict[bytes, list[int]]] = [{} for _ in range(BANDS)]
    kept_sets: dict[int, np.ndarray] = {}
    result: list[Optional[tuple[str, str]]] = []
    for start in range(0, len(texts), BATCH):
        norms = [normalized(t) for t in texts[start : start + BATCH]]
        sets = shingle_sets(norms)
        sigs = signatures(sets)
        for j, norm in enumerate(norms):
            i = start + j
            key = hashlib.blake2b(norm.encode(), digest_size=16).hexdigest()
            if key in exact:
                result.append(("exact", exact[key]))
                continue
            keys = [sigs[j, b * ROWS : (b + 1) * ROWS].tobytes() for b in range(BANDS)] if sets[j].size else []
            candidates = dict.fromkeys(c for table, k in zip(bands, keys) for c in table.get(k, ()))
            twin = next((c for c in candidates if jaccard(sets[j], kept_sets[c]) >= threshold), None)
            if twin is not None:
                result.append(("near", ids[twin]))
                continue
            for table, k in zip(bands, keys):
                table.setdefault(k, []).append(i)
            kept_sets[i] = sets[j]
            exact[key] = ids[i]
            result.append(None)
    return result
