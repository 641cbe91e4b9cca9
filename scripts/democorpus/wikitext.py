"""MediaWiki markup -> plain paragraphs (our own rules; gensim is not imported).

Removed: comments, references and other tag blocks (<ref>, <math>, <gallery>, ...),
templates ``{{...}}`` (nested), tables ``{|...|}``, file/image/category and
interlanguage links, external-link URLs (their label is kept), bold/italic quotes,
magic words, table and template leftovers, and everything from the first
"References"/"See also"/"External links"-style section on. Kept: article text,
section headings as plain lines, link labels (``[[a|b]]`` -> b), list items
without their markers (each its own paragraph).
"""

from __future__ import annotations

import html
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Iterator

from democorpus.text import paragraph

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_DROP_BLOCKS = re.compile(
    r"<(ref|math|gallery|timeline|score|syntaxhighlight|source|imagemap|hiero|chem|graph|mapframe|templatedata)\b[^>]*?(?<!/)>.*?</\1\s*>",
    re.S | re.I,
)
_SELF_CLOSING = re.compile(r"<(ref|references)\b[^>]*/>", re.I)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*\b[^>]*>")
_TEMPLATE = re.compile(r"\{\{([^{}]*)\}\}")
_MEDIA = re.compile(r"\[\[\s*(?:file|image)\s*:", re.I)
_LEFTOVER = re.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}")
_TABLE = re.compile(r"\{\|(?:(?!\{\||\|\}).)*\|\}", re.S)
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]+\s*([^\]]*)\]")
_BARE_URL = re.compile(r"https?://\S+")
_QUOTES = re.compile(r"'{2,}")
_MAGIC = re.compile(r"__[A-Z]+__")
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")
_LIST = re.compile(r"^[*#:;]+\s*")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_DROPPED_LINK_PREFIXES = ("file:", "image:", "category:", "media:", "wikipedia:", "wp:", "help:", "template:", "portal:", "talk:", "user:", "special:")
_INTERLANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z]+)?:")

END_SECTIONS = {
    "references", "see also", "external links", "notes", "further reading", "bibliography", "sources",
    "footnotes", "citations", "notes and references", "references and notes", "works cited", "literature",
}


def _repeat(pattern: re.Pattern, repl, text: str) -> str:
    """Apply `pattern` until nothing changes (innermost-first removal of nested constructs)."""
    while True:
        new = pattern.sub(repl, text)
        if new == text:
            return new
        text = new


def _link(m: re.Match) -> str:
    inner = m.group(1)
    target = inner.split("|", 1)[0].strip()
    lowered = target.lower().lstrip(":")
    if lowered.startswith(_DROPPED_LINK_PREFIXES) or (not target.startswith(":") and _INTERLANGUAGE.match(lowered)):
        return ""
    label = inner.rsplit("|", 1)[-1] if "|" in inner else target.lstrip(":")
    return label.strip() or target.lstrip(":").split("#")[0]


def _drop_media(text: str) -> str:
    """Remove ``[[File:...]]`` / ``[[Image:...]]`` with their captions, counting nested ``[[ ]]``."""
    out, i = [], 0
    while (m := _MEDIA.search(text, i)) is not None:
        out.append(text[i : m.start()])
        depth, j = 0, m.start()
        while j < len(text):
            if text.startswith("[[", j):
                depth, j = depth + 1, j + 2
            elif text.startswith("]]", j):
                depth, j = depth - 1, j + 2
                if depth == 0:
                    break
            else:
                j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def _template(m: re.Match) -> str:
    """Templates that carry running text keep it ({{convert|5|km}} -> 5 km, {{lang|fr|mot}} -> mot)."""
    parts = [p.strip() for p in m.group(1).split("|")]
    name = parts[0].lower()
    args = [p for p in parts[1:] if "=" not in p]
    if ":" in name and name.split(":", 1)[0] in ("formatnum", "lc", "uc", "lcfirst", "ucfirst"):
        return parts[0].split(":", 1)[1]
    if name in ("convert", "cvt") and len(args) >= 2:
        return f"{args[0]} {args[1]}"
    if name in ("circa", "c.") and args:
        return f"c. {args[0]}"
    if name.startswith("lang-") and args:
        return args[0]
    if name in ("lang", "transl") and len(args) >= 2:
        return args[-1]
    if name in ("nowrap", "small", "nobr", "em", "strong") and args:
        return args[0]
    return ""


def strip_markup(wikitext: str) -> str:
    """Wikitext without markup; headings stay as ``== X ==`` lines for `wiki_paragraphs`."""
    text = _COMMENT.sub("", wikitext)
    text = _DROP_BLOCKS.sub("", text)
    text = _SELF_CLOSING.sub("", text)
    text = _drop_media(text)
    text = _repeat(_TEMPLATE, _template, text)
    text = _repeat(_TABLE, "", text)
    text = _repeat(_LINK, _link, text)
    text = _EXTERNAL.sub(lambda m: m.group(1), text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    text = _TAG.sub("", text)  # tags that were entity-escaped in the source
    text = _BARE_URL.sub("", text)
    text = _QUOTES.sub("", text)
    return _MAGIC.sub("", text)


def wiki_paragraphs(wikitext: str) -> list[str]:
    """Plain paragraphs of one article, up to its first reference-like section.

    A heading is kept only when text follows it before the next heading.
    """
    blocks: list[tuple[str, bool]] = []  # (text, is_heading)
    prose: list[str] = []

    def end_prose() -> None:
        if prose:
            blocks.append((_tidy(" ".join(prose)), False))
            prose.clear()

    for raw in strip_markup(wikitext).split("\n"):
        line = raw.strip()
        if not line:
            end_prose()
            continue
        if m := _HEADING.match(line):
            end_prose()
            title = _tidy(m.group(2))
            if title.lower() in END_SECTIONS:
                break
            blocks.append((title, True))
        elif line.startswith(("|", "!", "{", "}")) or line.lower().startswith("#redirect"):
            continue  # leftovers of tables and templates that spanned malformed markup
        elif _LIST.match(line):
            end_prose()
            blocks.append((_tidy(_LIST.sub("", line)), False))
        else:
            prose.append(line)
    end_prose()
    # a paragraph that still holds markup (malformed or exotic templates) is dropped whole
    blocks = [(t, h) for t, h in blocks if t and not _LEFTOVER.search(t)]
    return [t for i, (t, h) in enumerate(blocks) if not h or (i + 1 < len(blocks) and not blocks[i + 1][1])]


def _tidy(text: str) -> str:
    return _SPACE_BEFORE_PUNCT.sub(r"\1", paragraph(text))


@dataclass
class Page:
    page_id: str
    title: str
    text: str


def iter_pages(xml_bytes: bytes) -> Iterator[Page]:
    """Articles (namespace 0, not redirects) of a MediaWiki XML export."""
    for _, elem in ET.iterparse(io.BytesIO(xml_bytes), events=("end",)):
        if elem.tag.rsplit("}", 1)[-1] != "page":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: child for child in elem}
        ns = fields.get("ns")
        revision = fields.get("revision")
        if "redirect" not in fields and ns is not None and ns.text == "0" and revision is not None:
            text = next((c.text for c in revision if c.tag.endswith("text")), None) or ""
            if not text.lower().lstrip().startswith("#redirect"):
                yield Page(fields["id"].text, fields["title"].text or "", text)
        elem.clear()
