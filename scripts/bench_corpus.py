#!/usr/bin/env python
"""Benchmark the demo corpus: build time per preset, tokens per split, a trained 8k BPE vs GPT-2.

For each preset, the build runs `--runs` times as a fresh process into an empty
directory (wall time, median reported; every run must give byte-identical shards).
Then each split is tokenised with GPT-2's BPE (`delt_cli.infra.assets.gpt2_tokenizer_dir()`,
the baseline) and a byte-level BPE with an 8,192-token vocabulary is trained on the
train split (`scripts/train_tokenizer.py`); characters per token are measured for both
on train and heldout.

    python scripts/bench_corpus.py                         # demo and full, 3 runs each
    python scripts/bench_corpus.py --preset demo --runs 1
    python scripts/bench_corpus.py --write-docs            # replace the "## Corpus" section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from delt_cli.infra import assets  # noqa: E402
from democorpus.bpe import train_bpe  # noqa: E402
from delt_cli.dataset.reader import open_dataset  # noqa: E402

SECTION = "## Corpus"


def _digest(directory: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*.parquet")):
        h.update(str(p.relative_to(directory)).encode() + p.read_bytes())
    return h.hexdigest()


def time_builds(preset: str, runs: int, keep: Path) -> tuple[list[float], Path]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    times, digests = [], set()
    for i in range(runs):
        out = keep if i == runs - 1 else Path(tempfile.mkdtemp(prefix=f"corpus-{preset}-"))
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "scripts" / "build_corpus.py"), "--preset", preset, "-o", str(out)],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        digests.add(_digest(out))
        if out != keep:
            shutil.rmtree(out)
        print(f"{preset}: build {i + 1}/{runs} {times[-1]:.1f} s", file=sys.stderr)
    if len(digests) != 1:
        raise SystemExit(f"{preset}: the {runs} builds were not byte-identical")
    return times, keep


def tokens(tokenizer, directory: Path) -> tuple[int, int]:
    chars = toks = 0
    for _, table in open_dataset(directory).iter_tables(["text"]):
        batch = table.column("text").to_pylist()
        chars += sum(map(len, batch))
        toks += sum(len(x) for x in tokenizer(batch, add_special_tokens=False)["input_ids"])
    return chars, toks


def measure(preset: str, runs: int, work: Path) -> dict:
    from transformers import AutoTokenizer

    times, out = time_builds(preset, runs, work / preset)
    summary = json.loads((out / "corpus.json").read_text())
    gpt2 = AutoTokenizer.from_pretrained(str(assets.gpt2_tokenizer_dir()))
    splits = {}
    for name in summary["splits"]:
        chars, toks = tokens(gpt2, out / name)
        splits[name] = {"docs": summary["splits"][name]["docs"], "chars": chars, "gpt2_tokens": toks}
    start = time.perf_counter()
    record = train_bpe(out / "train", work / f"{preset}-tok", vocab_size=8192, eval_dataset=out / "heldout", overwrite=True)
    bpe_seconds = time.perf_counter() - start
    return {
        "preset": preset,
        "build_seconds": times,
        "splits": splits,
        "bpe_seconds": bpe_seconds,
        "bpe_vocab": record["actual_vocab_size"],
        "bpe_cpt": {"train": record["chars_per_token_train"], "heldout": record["chars_per_token_eval"]},
        "gpt2_cpt": {s: splits[s]["chars"] / splits[s]["gpt2_tokens"] for s in ("train", "heldout")},
        "domains": {d: v["docs"] for d, v in summary["splits"]["train"]["domains"].items()},
    }


def markdown(results: list[dict], command: str, load: tuple[float, float]) -> str:
    lines = [
        SECTION,
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}; the 1-minute load average was {load[0]:.1f} at the start and {load[1]:.1f} at "
        "the end (other jobs shared the machine), so times are noisy.",
        f"Command: `{command}`",
        "",
        "Build: a fresh process into an empty directory, reading all four wheels, cleaning, cutting and deduplicating "
        "~41k documents, then splitting and writing (every preset reads every source, so the times are close). "
        "Every run gave byte-identical shards.",
        "",
        "| preset | build wall time, median (runs) | train docs | train chars | train GPT-2 tokens | all splits GPT-2 tokens |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["build_seconds"]
        all_tokens = sum(s["gpt2_tokens"] for s in r["splits"].values())
        tr = r["splits"]["train"]
        lines.append(
            f"| {r['preset']} | {statistics.median(t):.1f} s ({', '.join(f'{x:.1f}' for x in t)}) | {tr['docs']:,} | "
            f"{tr['chars']:,} | {tr['gpt2_tokens']:,} | {all_tokens:,} |"
        )
    lines += [
        "",
        "Tokens per split (GPT-2 BPE, no special tokens):",
        "",
        "| preset | " + " | ".join(results[0]["splits"]) + " |",
        "|---|" + "---|" * len(results[0]["splits"]),
    ]
    for r in results:
        lines.append(f"| {r['preset']} | " + " | ".join(f"{s['gpt2_tokens']:,}" for s in r["splits"].values()) + " |")
    lines += [
        "",
        "Characters per token: GPT-2's 50,257-token BPE (baseline) vs a byte-level BPE with 8,192 tokens trained on the "
        "preset's train split (`scripts/train_tokenizer.py`, min frequency 2):",
        "",
        "| preset | GPT-2 train | GPT-2 heldout | 8k BPE train | 8k BPE heldout | 8k BPE training time |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['preset']} | {r['gpt2_cpt']['train']:.3f} | {r['gpt2_cpt']['heldout']:.3f} | {r['bpe_cpt']['train']:.3f} | "
            f"{r['bpe_cpt']['heldout']:.3f} | {r['bpe_seconds']:.1f} s |"
        )
    return "\n".join(lines) + "\n"


def write_docs(text: str) -> Path:
    path = REPO / "docs" / "benchmarks.md"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION in old:
        head, rest = old.split(SECTION, 1)
        tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", choices=["tiny", "demo", "full"], help="preset(s) to measure [demo, full]")
    parser.add_argument("--runs", type=int, default=3, help="builds per preset (median reported)")
    parser.add_argument("--write-docs", action="store_true", help="replace the Corpus section of docs/benchmarks.md")
    args = parser.parse_args()
    presets = args.preset or ["demo", "full"]
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        results = [measure(p, args.runs, Path(tmp)) for p in presets]
    command = "python scripts/bench_corpus.py " + " ".join(sys.argv[1:])
    text = markdown(results, command.strip(), (load_start, os.getloadavg()[0]))
    print(text)
    print(json.dumps(results, indent=1), file=sys.stderr)
    if args.write_docs:
        print(f"wrote {write_docs(text)}", file=sys.stderr)


if __name__ == "__main__":
    main()
