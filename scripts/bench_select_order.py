#!/usr/bin/env python
"""Benchmark: `delt select --top-r 0.5` then `delt order --method folding` vs an in-memory reference.

The reference is the approach of the papers' published code: load a JSONL file into a
Python list, sort it, slice, write JSONL (selection, then ordering, as two steps).
Both run as subprocesses on the same N synthetic documents (~500 bytes of text and a
float score each; Parquet shards of 100k rows for delt, one JSONL file for the
reference); wall time and peak RSS (ru_maxrss of the process) are measured.

    python scripts/bench_select_order.py --rows 1000000              # delt vs reference
    python scripts/bench_select_order.py --rows 10000000 --no-reference
    python scripts/bench_select_order.py --rows 1000000 --rows 10000000 --write-docs
    python scripts/bench_select_order.py --rows 1000000 --codec zstd --codec lz4   # codecs side by side

With --write-docs the table replaces the "Select and order" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from delt_cli.dataset import write_shard  # noqa: E402
SHARD_ROWS = 100_000

REFERENCE_SELECT = r"""
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
k = int(len(rows) * float(sys.argv[3]))
rows.sort(key=lambda r: r["score"])          # stable ascending sort, keep the top k
selected = rows[len(rows) - k:]
with open(sys.argv[2], "w") as out:
    for r in selected:
        out.write(json.dumps(r) + "\n")
"""

REFERENCE_ORDER = r"""
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
L = int(sys.argv[3])
rows.sort(key=lambda r: r["score"])
folded = [r for l in range(L) for r in rows[l::L]]
with open(sys.argv[2], "w") as out:
    for r in folded:
        out.write(json.dumps(r) + "\n")
"""

MEASURE = r"""
import resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t
print(f"{wall} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {rc}")
"""


def measure(cmd: list[str], env=None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one subprocess."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, env=env)
    wall, rss_kb, rc = out.stdout.split()
    if rc != "0":
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{out.stderr}")
    return float(wall), int(rss_kb) / 1024


def generate(directory: Path, n: int, jsonl: Path | None, seed: int = 0) -> None:
    """N docs of ~500 bytes: pairs of pieces from a pool of random word sequences, a float score."""
    rng = np.random.default_rng(seed)
    words = np.array(["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=rng.integers(2, 10))) for _ in range(5000)])
    pool = pl.Series([" ".join(rng.choice(words, size=40)) for _ in range(20000)])
    directory.mkdir(parents=True)
    fh = open(jsonl, "w") if jsonl else None
    for start in range(0, n, SHARD_ROWS):
        m = min(SHARD_ROWS, n - start)
        a = pool.gather(rng.integers(0, len(pool), m))
        b = pool.gather(rng.integers(0, len(pool), m))
        df = pl.DataFrame(
            {
                "id": pl.Series([f"doc-{i:09d}" for i in range(start, start + m)]),
                "text": (a + " " + b).str.slice(0, 500),
                "score": rng.random(m),
            }
        )
        write_shard(df.to_arrow(), directory / f"shard-{start // SHARD_ROWS:05d}.parquet")  # as `delt prepare` writes
        if fh:
            fh.write(df.write_ndjson())
    if fh:
        fh.close()


def median(xs: list[float]) -> float:
    return float(np.median(xs))


def run(n: int, work: Path, reference: bool, repeats: int, codecs: list[str]) -> dict:
    """Medians over `repeats` rounds; each round runs delt once per codec, then the reference.

    Interleaving matters on a shared machine whose speed drifts by tens of percent over a
    minute: the speed-up is the median of the per-round ratios, each taken from runs made
    seconds apart, not a ratio of medians gathered minutes apart.
    """
    data = work / f"data-{n}"
    jsonl = work / f"data-{n}.jsonl" if reference else None
    t = time.perf_counter()
    generate(data, n, jsonl)
    gen = time.perf_counter() - t
    delt = [sys.executable, "-m", "delt_cli", "--quiet"]
    runs: dict[str, dict[str, list[float]]] = {c: {"select": [], "order": [], "rss": []} for c in codecs}
    ref_times, ref_rss = [], []
    sizes = {}
    for _ in range(repeats):
        for codec in codecs:
            env = {**os.environ, "PYTHONPATH": str(REPO), "DELT_PARQUET_COMPRESSION": codec}
            for p in ("sel", "ord"):
                shutil.rmtree(work / p, ignore_errors=True)
            sel_t, sel_rss = measure([*delt, "select", str(data), "-o", str(work / "sel"), "--by", "score", "--top-r", "0.5"], env)
            ord_t, ord_rss = measure([*delt, "order", str(work / "sel"), "-o", str(work / "ord"), "--method", "folding", "--by", "score"], env)
            r = runs[codec]
            r["select"].append(sel_t), r["order"].append(ord_t), r["rss"].append(max(sel_rss, ord_rss))
            sizes[codec] = sum(f.stat().st_size for f in (work / "ord").glob("*.parquet")) / 1e6
        if reference:
            rs_t, rs_rss = measure([sys.executable, "-c", REFERENCE_SELECT, str(jsonl), str(work / "ref-sel.jsonl"), "0.5"])
            ro_t, ro_rss = measure([sys.executable, "-c", REFERENCE_ORDER, str(work / "ref-sel.jsonl"), str(work / "ref-ord.jsonl"), "3"])
            ref_times.append(rs_t + ro_t), ref_rss.append(max(rs_rss, ro_rss))
    result = {"rows": n, "generate_s": gen, "repeats": repeats, "delt": {}}
    for codec, r in runs.items():
        totals = [a + b for a, b in zip(r["select"], r["order"])]
        result["delt"][codec] = {
            "s": median(totals), "select_s": median(r["select"]), "order_s": median(r["order"]), "rss_mb": max(r["rss"]),
            "output_mb": sizes[codec], "totals": totals,
        }
        if reference:
            result["delt"][codec]["speedup"] = median([ref / ours for ref, ours in zip(ref_times, totals)])
    if reference:
        result.update(ref_s=median(ref_times), ref_rss_mb=max(ref_rss), ref_totals=ref_times)
        # Same rows in the same order: compare the ids of both outputs (of the last codec's run).
        ours = pl.read_parquet(str(work / "ord" / "*.parquet"), columns=["id"])["id"].to_list()
        theirs = [json.loads(line)["id"] for line in open(work / "ref-ord.jsonl")]
        result["same_output"] = ours == theirs
    for p in ("sel", "ord"):
        shutil.rmtree(work / p, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    for p in work.glob("*.jsonl"):
        p.unlink()
    return result


def codec_label(codec: str) -> str:
    return "zstd level 1 (default)" if codec == "zstd" else codec


def table(results: list[dict]) -> str:
    lines = [
        "| rows | codec | delt select+order (median) | delt rows/s | delt peak RSS | output size | reference (JSONL, in memory) | reference rows/s | reference peak RSS | speed-up (median of rounds) | memory ratio | same output |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ref = "ref_s" in r
        for codec, d in r["delt"].items():
            lines.append(
                f"| {r['rows']:,} | {codec_label(codec)} | {d['s']:.2f} s (select {d['select_s']:.2f} + order {d['order_s']:.2f}) | {r['rows'] / d['s']:,.0f} | {d['rss_mb']:,.0f} MB | {d['output_mb']:,.0f} MB | "
                + (f"{r['ref_s']:.2f} s | {r['rows'] / r['ref_s']:,.0f} | {r['ref_rss_mb']:,.0f} MB | {d['speedup']:.1f}x | {d['rss_mb'] / r['ref_rss_mb']:.2f} | {r['same_output']} |"
                   if ref else "- | - | - | - | - | - |")
            )
    return "\n".join(lines)


def write_docs(text: str) -> None:
    path = REPO / "docs" / "benchmarks.md"
    doc = path.read_text() if path.exists() else "# Benchmarks\n\nFigures measured on this project's machines, with the commands that produced them.\n"
    start, end = "<!-- BEGIN select-order -->", "<!-- END select-order -->"
    block = f"{start}\n{text}\n{end}"
    if start in doc:
        doc = doc[: doc.index(start)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, action="append", help="number of documents (repeatable; default 1,000,000)")
    ap.add_argument("--no-reference", action="store_true", help="skip the in-memory JSONL reference")
    ap.add_argument("--reference-max-rows", type=int, default=2_000_000, help="run the reference only up to this size")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side per size; the table shows medians (default 3)")
    ap.add_argument("--codec", action="append", default=None, help="DELT_PARQUET_COMPRESSION values to time delt with (repeatable; default zstd)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    sizes = args.rows or [1_000_000]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-select-order-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for n in sizes:
            r = run(n, work, reference=not args.no_reference and n <= args.reference_max_rows, repeats=args.repeats, codecs=args.codec or ["zstd"])
            print(json.dumps(r), file=sys.stderr)
            results.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(results)
    if len(results) > 1:
        base, big = results[0], results[-1]
        for codec in big["delt"]:
            text += f"\n\nTime ratio {big['rows']:,} / {base['rows']:,} rows ({codec_label(codec)}): {big['delt'][codec]['s'] / base['delt'][codec]['s']:.1f}x for {big['rows'] / base['rows']:.0f}x the rows."
    cmd = ("python scripts/bench_select_order.py " + " ".join(f"--rows {n}" for n in sizes) + "".join(f" --codec {c}" for c in args.codec or [])
           + (f" --repeats {args.repeats}" if args.repeats != 3 else "") + (" --no-reference" if args.no_reference else "") + " --write-docs")
    text = (
        "## Select and order (`scripts/bench_select_order.py`)\n\n"
        f"`delt select --top-r 0.5` then `delt order --method folding` (two processes, Parquet shards of 100k rows, "
        f"~500 bytes of text per row) against the papers' approach (load JSONL into a list, sort, slice, write JSONL; "
        f"also two processes), same documents, same run; {args.repeats} rounds, each running delt then the reference; times are medians, "
        f"the speed-up is the median of the rounds' ratios. Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}.\n"
        f"Command: `{cmd}`\n\n" + text + "\n"
    )
    print(text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
