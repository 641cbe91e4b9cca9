"""A small bigram model in ARPA format, computed here by hand from counts, and its exact log10 scores.

Unigrams: add-one over the vocabulary (the words, </s> and <unk>): p(w) = (c(w) + 1) / (N + V),
N = tokens including one </s> per sentence; <s> is never predicted (log10 -99).
Bigrams: absolute discounting, p(b | a) = (c(a b) - D) / c(a) for seen pairs; the mass left,
D * (distinct followers of a) / c(a), goes to the unigrams of unseen followers through the
backoff weight bo(a) = left / (1 - sum of p(b) over the seen followers b).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

D = 0.5


class Bigram:
    def __init__(self, sentences: list[list[str]]):
        self.uni = Counter()
        self.bi = Counter()
        self.ctx = Counter()
        for words in sentences:
            seq = ["<s>", *words, "</s>"]
            self.uni.update(seq[1:])
            for a, b in zip(seq, seq[1:]):
                self.bi[(a, b)] += 1
                self.ctx[a] += 1
        vocab = sorted(set(self.uni) | {"</s>", "<unk>"})
        total = sum(self.uni.values())
        self.p_uni = {w: (self.uni[w] + 1) / (total + len(vocab)) for w in vocab}
        self.p_bi = {(a, b): (c - D) / self.ctx[a] for (a, b), c in self.bi.items()}
        self.bo = {}
        for a in self.ctx:
            followers = [b for (x, b) in self.bi if x == a]
            left = D * len(followers) / self.ctx[a]
            self.bo[a] = left / (1 - sum(self.p_uni[b] for b in followers))

    def log10(self, a: str, b: str) -> float:
        """log10 p(b | a), backing off to the unigram (an unknown word is <unk>)."""
        b = b if b in self.p_uni else "<unk>"
        if (a, b) in self.p_bi:
            return math.log10(self.p_bi[(a, b)])
        return math.log10(self.bo.get(a, 1.0)) + math.log10(self.p_uni[b])

    def score(self, line: str) -> float:
        """What kenlm.Model.score(line, bos=True, eos=True) should return."""
        seq = ["<s>", *line.split(), "</s>"]
        total = 0.0
        for a, b in zip(seq, seq[1:]):
            a = a if a == "<s>" or a in self.p_uni else "<unk>"
            total += self.log10(a, b)
        return total

    def write_arpa(self, path: Path) -> Path:
        unigrams = [("<s>", -99.0, math.log10(self.bo["<s>"]))]
        for w in sorted(self.p_uni):
            unigrams.append((w, math.log10(self.p_uni[w]), math.log10(self.bo[w]) if w in self.bo else None))
        bigrams = sorted(self.p_bi.items())
        lines = ["", "\\data\\", f"ngram 1={len(unigrams)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
        for w, lp, bo in unigrams:
            lines.append(f"{lp:.7f}\t{w}" + (f"\t{bo:.7f}" if bo is not None else ""))
        lines += ["", "\\2-grams:"]
        lines += [f"{math.log10(p):.7f}\t{a} {b}" for (a, b), p in bigrams]
        lines += ["", "\\end\\", ""]
        Path(path).write_text("\n".join(lines))
        return Path(path)


def corpus_model(texts: list[str], path: Path) -> tuple[Bigram, Path]:
    """A bigram model of the lines of `texts` (whitespace words), written to `path`."""
    model = Bigram([line.split() for t in texts for line in t.splitlines() if line.split()])
    return model, model.write_arpa(path)
