"""Plain-text rules shared by every source: whitespace, sentence segments, packing into documents.

A source document is a list of paragraphs. `pack` cuts it into documents of
about `target` characters: a document ends at a paragraph end once it holds
at least 60% of the target, or at a sentence end once it reaches the target;
it never ends mid-word. A paragraph longer than the target is cut at sentence
ends (and a sentence longer than the target at spaces). Documents are at most
1.5 x target characters; a short tail is merged into the previous document when
that fits, kept when it has at least `min_chars`, and dropped otherwise.
Paragraphs inside a document are separated by one newline.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from dataclasses import dataclass

_SPACES = re.compile(r"[ \t\f\v\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff\x00-\x08\x0b\x0e-\x1f\x7f]")
# A sentence ends at . ! ? or an ellipsis, possibly followed by closing quotes or brackets,
# then spaces, then something that can start a sentence.
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*[ ]+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])|\n")
_NON_WORD = re.compile(r"[\W_]+")
_EMPTY_PARENS = re.compile(r" ?\(\s*[,;:]?\s*\)")
_LETTER = re.compile(r"[^\W\d_]")
_NON_LATIN_LETTER = re.compile(r"[^\W\d_A-Za-z\u00c0-\u024f\u1e00-\u1eff]")


# UTF-8 text that was once decoded as Windows-1252 ("Â£" for "£", "â€™" for "’"): a lead byte
# then one to three continuation bytes, as cp1252 shows them
_MOJIBAKE = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201a\u201c-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]{1,3}"
)


def _unmojibake(m: re.Match) -> str:
    try:
        return m.group().encode("cp1252").decode("utf-8")
    except UnicodeError:
        return m.group()


# formatting tags that some sources keep (PubMed abstracts, news): the tag goes, its text stays
_HTML_TAG = re.compile(r"</?(?:b|i|u|em|strong|sup|sub|span|font|small|big|tt|a)\b[^<>]*>", re.I)
_HTML_BREAK = re.compile(r"<br\s*/?>|</?(?:p|div|abstracttext|copyrightinformation)\b[^<>]*>", re.I)
# LaTeX or RTF commands (\displaystyle, \frac, \tab): text that holds them is not running prose
_COMMAND = re.compile(r"\\[A-Za-z]{2,}")


def clean_line(line: str) -> str:
    """Mojibake repaired, formatting tags and HTML entities resolved, NFC, no invisible or
    control characters, runs of spaces collapsed, trimmed."""
    line = html.unescape(_HTML_BREAK.sub(" ", _HTML_TAG.sub("", _MOJIBAKE.sub(_unmojibake, line))))
    line = _INVISIBLE.sub("", unicodedata.normalize("NFC", line))
    return _SPACES.sub(" ", line).strip()


def paragraph(text: str, *, keep_lines: bool = False) -> str:
    """One normalised paragraph: empty lines dropped, lines joined by a space (or kept, for verse).

    Empty parentheses (left where a source removed a pronunciation or a number) are dropped.
    """
    lines = [clean_line(_EMPTY_PARENS.sub("", x)) for x in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return ("\n" if keep_lines else " ").join(x for x in lines if x)


def has_commands(text: str) -> bool:
    """True when `text` holds LaTeX or RTF commands (it is dropped from the corpus)."""
    return _COMMAND.search(text) is not None


def latin_share(text: str) -> float:
    """Share of the letters that are Latin script (1.0 for text without letters)."""
    letters = len(_LETTER.findall(text))
    return 1.0 - len(_NON_LATIN_LETTER.findall(text)) / letters if letters else 1.0


def segments(par: str, limit: int) -> list[str]:
    """`par` cut after sentence ends and line breaks into pieces of at most `limit` characters.

    Each piece keeps its trailing separator, so ``"".join(segments(p, n)) == p``.
    """
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(par):
        pieces.append(par[start : m.end()])
        start = m.end()
    if start < len(par):
        pieces.append(par[start:])
    out = []
    for piece in pieces:
        while len(piece) > limit:
            cut = piece.rfind(" ", 1, limit + 1)
            cut = cut + 1 if cut > 0 else limit  # one 'word' longer than the limit: hard cut
            out.append(piece[:cut])
            piece = piece[cut:]
        if piece:
            out.append(piece)
    return out


def _finish(text: str) -> str:
    return "\n".join(line.strip() for line in text.split("\n")).strip()


@dataclass
class Packed:
    docs: list[str]
    dropped_chars: int = 0  # characters of short tails that could not be kept or merged


def pack(paragraphs: list[str], target: int, min_chars: int) -> Packed:
    """Cut a source document (its paragraphs, in order) into documents of about `target` characters."""
    high, low, end_par = int(target * 1.5), target // 2, int(target * 0.6)
    docs: list[str] = []
    cur = ""

    def flush() -> None:
        nonlocal cur
        text = _finish(cur)
        if text:
            docs.append(text)
        cur = ""

    for par in paragraphs:
        if not par:
            continue
        if cur:
            cur += "\n"
        for seg in segments(par, target):
            if cur.strip() and len(cur) + len(seg) > high and len(cur) >= low:
                flush()
            cur += seg
            if len(cur) >= target:
                flush()
        if len(cur) >= end_par:
            flush()
    tail = _finish(cur)
    result = Packed(docs)
    if tail:
        if docs and len(docs[-1]) + 1 + len(tail) <= high:
            docs[-1] = docs[-1] + "\n" + tail
        elif len(tail) >= min_chars:
            docs.append(tail)
        else:
            result.dropped_chars += len(tail)
    return result


def normalized(text: str) -> str:
    """Text reduced for duplicate detection: NFKC, case-folded, words only, single spaces."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_key(text: str) -> str:
    """A hash of the normalised text: equal for texts that differ only in case, punctuation or spacing."""
    return hashlib.blake2b(normalized(text).encode(), digest_size=16).hexdigest()
