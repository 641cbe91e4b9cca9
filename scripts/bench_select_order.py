#!/usr/bin/env python
"""Benchmark: `delt select --top-r 0.5` then `delt order --method folding` against three other ways.

Contestants, each a fresh process (start-up included), on the same N documents:

* delt: `delt select IN -o sel --by score --top-r 0.5` then `delt order sel -o ord
  --method folding --by score` (two processes; --variant picks how select writes);
* reference: the papers' published approach: load a JSONL file into a Python list, sort,
  slice, write JSONL (selection, then ordering, as two processes);
* duckdb: one query (row_number() over score descending, file, row keeps the top half;
  the kept rows' ascending position p orders them by p % 3, p), written as zstd Parquet;
* polars: one lazy query doing the same (ordinal ranks), sink_parquet with zstd.

Every contestant must produce the same ids in the same order (checked after every run).

Two kinds of input (--input, default both), 100k rows per file, an `id`, a `text` and a
float `score` column:

* delt: shards as `delt prepare` writes them (zstd, row groups of 16,384 rows, no
  manifest), text of ~500 bytes made of pairs of pieces from a pool of 20k random word
  sequences (repetitive: zstd shrinks it a lot);
* foreign: Parquet as pyarrow writes it with its defaults (snappy, one row group per file,
  no manifest), text of ~500 bytes of uniform random words from a 5,000-word vocabulary
  (closer to the entropy of real text: zstd level 1 keeps ~46% of it, snappy ~95%).

Each round runs every contestant once, in an order rotated from round to round, so runs
compared with each other are seconds apart on a machine whose speed drifts; speed-ups are
medians of the rounds' ratios. Before every run the file system is synced (`os.sync`), so
that no run pays for writing back what the input generation or an earlier contestant left in
the page cache (at 10M rows that is gigabytes; a run's own writes still count). Peak memory
is the process's ru_maxrss (the largest over the rounds). delt runs with DELT_TIMINGS=1 and reports CPU seconds per phase
(delt_cli/dataset/timing.py); start-up and exit are the process's wall time minus the
library call's.

    python scripts/bench_select_order.py --rows 200000 --repeats 1            # quick look
    python scripts/bench_select_order.py --rows 1000000 --repeats 5 --write-docs
    python scripts/bench_select_order.py --rows 10000000 --no-baselines --input foreign
    python scripts/bench_select_order.py --rows 100000000 --text-bytes 40 --no-baselines --input foreign --repeats 1

With --write-docs the tables replace the "Select and order" block of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from delt_cli.dataset import write_shard  # noqa: E402

SHARD_ROWS = 100_000
TOP_R = 0.5
FOLDS = 3

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

# What a user who knows SQL would type: rank by score (ties: earlier file, earlier row), keep
# the top floor(n r), order the kept rows by fold (ascending position mod L), then position.
DUCKDB = r"""
import sys, duckdb
src, out, r, L = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
duckdb.connect().execute(f'''
COPY (
  WITH ranked AS (
    SELECT *, row_number() OVER (ORDER BY score DESC, filename, file_row_number) AS rnk
    FROM read_parquet('{src}/*.parquet', filename = true, file_row_number = true)),
  kept AS (
    SELECT *, row_number() OVER (ORDER BY score, filename, file_row_number) - 1 AS pos
    FROM ranked WHERE rnk <= floor((SELECT count(*) FROM ranked) * {r}))
  SELECT * EXCLUDE (rnk, pos, filename, file_row_number) FROM kept ORDER BY pos % {L}, pos
) TO '{out}' (FORMAT parquet, COMPRESSION zstd)''')
"""

# The same as one polars lazy query: ordinal ranks break ties by row order.
POLARS = r"""
import sys, polars as pl
src, out, r, L = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
(
    pl.scan_parquet(f"{src}/*.parquet").with_row_index("row")
    .filter(pl.struct(pl.col("score").neg(), "row").rank("ordinal") <= (pl.len() * r).floor())
    .with_columns(pos=pl.struct("score", "row").rank("ordinal") - 1)
    .sort(pl.col("pos") % L, "pos")
    .drop("row", "pos")
    .sink_parquet(out, compression="zstd")
)
"""

MEASURE = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": u.ru_utime + u.ru_stime, "rss_kb": u.ru_maxrss, "rc": p.returncode, "stderr": p.stderr[-20000:]}))
"""


def measure(cmd: list[str], env=None) -> dict:
    """Wall seconds, CPU seconds (user + system, all threads and child processes), peak RSS (MB)
    and delt's timing lines of one subprocess."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *map(str, cmd)], capture_output=True, text=True, env=env)
    r = json.loads(out.stdout)
    if r["rc"] != 0:
        raise SystemExit(f"command failed: {' '.join(map(str, cmd))}\n{r['stderr']}")
    timings = {t["command"]: t for t in (json.loads(line.split(" ", 1)[1]) for line in r["stderr"].splitlines() if line.startswith("delt-timings "))}
    return {"s": r["wall"], "cpu_s": r["cpu"], "rss_mb": r["rss_kb"] / 1024, "timings": timings}


# -- inputs ------------------------------------------------------------------------------


def vocabulary(rng: np.random.Generator, size: int = 5000) -> list[bytes]:
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    return [letters[rng.integers(0, 26, n)].tobytes() for n in rng.integers(2, 10, size)]


def random_words(rng: np.random.Generator, words: list[bytes], m: int, target: int, chunk: int = 10_000) -> pa.Array:
    """m documents of whole uniform random words joined by spaces, at most `target` bytes each."""
    blob = np.frombuffer(b"".join(w + b" " for w in words), dtype=np.uint8)
    size = np.array([len(w) + 1 for w in words], dtype=np.int64)  # with the space after it
    where = np.concatenate([[0], np.cumsum(size)[:-1]])
    per_doc = int(target / size.mean() * 1.6) + 8  # enough draws to pass `target` bytes
    data, ends, base = [], [np.zeros(1, np.int64)], 0
    for lo in range(0, m, chunk):
        c = min(chunk, m - lo)
        ids = rng.integers(0, len(words), (c, per_doc))
        take = np.cumsum(size[ids], axis=1) <= target + 1  # + 1: the last word's space is dropped
        take[:, 0] = True
        picked = ids[take]
        n = size[picked]
        first = np.concatenate([[0], np.cumsum(n)[:-1]])
        buf = blob[np.repeat(where[picked] - first, n) + np.arange(int(n.sum()))]
        doc_bytes = np.where(take, size[ids], 0).sum(axis=1)
        keep = np.ones(len(buf), bool)
        keep[np.cumsum(doc_bytes) - 1] = False  # each document's trailing space
        data.append(buf[keep])
        ends.append(base + np.cumsum(doc_bytes - 1))
        base = int(ends[-1][-1])
    offsets = np.concatenate(ends).astype(np.int64)
    return pa.LargeStringArray.from_buffers(m, pa.py_buffer(offsets), pa.py_buffer(np.concatenate(data))).cast(pa.string())


def pool_text(rng: np.random.Generator, words: list[bytes], m: int, target: int, pool: list[str]) -> pa.Array:
    """The original benchmark text: two pieces from a pool of 20k random word sequences, cut to `target` bytes."""
    a = np.array(pool, dtype=object)[rng.integers(0, len(pool), m)]
    b = np.array(pool, dtype=object)[rng.integers(0, len(pool), m)]
    return pa.array([(x + " " + y)[:target] for x, y in zip(a, b)], type=pa.string())


def generate(kind: str, directory: Path, n: int, jsonl: Path | None, text_bytes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = vocabulary(rng)
    pool = [" ".join(w.decode() for w in rng.choice(np.array(words, dtype=object), size=40)) for _ in range(20_000)] if kind == "delt" else None
    directory.mkdir(parents=True)
    fh = open(jsonl, "w") if jsonl else None
    for i, start in enumerate(range(0, n, SHARD_ROWS)):
        m = min(SHARD_ROWS, n - start)
        text = random_words(rng, words, m, text_bytes) if kind == "foreign" else pool_text(rng, words, m, text_bytes, pool)
        table = pa.table({"id": pa.array([f"doc-{j:09d}" for j in range(start, start + m)]), "text": text, "score": rng.random(m)})
        if kind == "foreign":
            pq.write_table(table, directory / f"data-{i:05d}.parquet")  # pyarrow's defaults: snappy, one row group
        else:
            write_shard(table, directory / f"shard-{i:05d}.parquet")  # as `delt prepare` writes them
        if fh:
            import polars as pl

            fh.write(pl.from_arrow(table).write_ndjson())
    if fh:
        fh.close()


# -- contestants --------------------------------------------------------------------------

VARIANTS = {
    "lazy": ["--lazy"],  # select records the kept rows; order reads them from the input
    "lazy-pipe": ["--lazy"],  # the same as one shell pipeline: select --lazy | order - (order starts meanwhile)
    "eager": [],  # select writes the kept rows as Parquet shards
}


def run_delt(data: Path, work: Path, variant: str, codec: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DELT_PARQUET_COMPRESSION": codec, "DELT_TIMINGS": "1"}
    delt = [sys.executable, "-m", "delt_cli", "--quiet"]
    for p in ("sel", "ord"):
        shutil.rmtree(work / p, ignore_errors=True)
    select = [*delt, "select", data, "-o", work / "sel", "--by", "score", "--top-r", TOP_R, *VARIANTS[variant]]
    order = [*delt, "order", work / "sel", "-o", work / "ord", "--method", "folding", "--by", "score", "--folds", FOLDS]
    if variant.endswith("-pipe"):
        order[order.index(work / "sel")] = "-"
        line = " ".join(shlex.quote(str(a)) for a in select) + " | " + " ".join(shlex.quote(str(a)) for a in order) + " >/dev/null"
        both = measure(["bash", "-o", "pipefail", "-c", line], env)
        out = {"s": both["s"], "cpu_s": both["cpu_s"], "rss_mb": both["rss_mb"], "select": {"timings": both["timings"]}, "order": {"timings": both["timings"]}}
    else:
        sel, ord_ = measure(select, env), measure(order, env)
        out = {"s": sel["s"] + ord_["s"], "cpu_s": sel["cpu_s"] + ord_["cpu_s"], "rss_mb": max(sel["rss_mb"], ord_["rss_mb"]), "select": sel, "order": ord_}
    out["output"] = work / "ord"
    out["output_mb"] = sum(f.stat().st_size for f in (work / "ord").glob("*.parquet")) / 1e6
    return out


def run_reference(jsonl: Path, work: Path) -> dict:
    s = measure([sys.executable, "-c", REFERENCE_SELECT, jsonl, work / "ref-sel.jsonl", TOP_R])
    o = measure([sys.executable, "-c", REFERENCE_ORDER, work / "ref-sel.jsonl", work / "ref-ord.jsonl", FOLDS])
    return {"s": s["s"] + o["s"], "cpu_s": s["cpu_s"] + o["cpu_s"], "rss_mb": max(s["rss_mb"], o["rss_mb"]), "output": work / "ref-ord.jsonl",
            "output_mb": (work / "ref-ord.jsonl").stat().st_size / 1e6}


def run_query(script: str, name: str, data: Path, work: Path) -> dict:
    out = work / f"{name}.parquet"
    out.unlink(missing_ok=True)
    r = measure([sys.executable, "-c", script, data, out, TOP_R, FOLDS])
    return {**r, "output": out, "output_mb": out.stat().st_size / 1e6}


def output_ids(path: Path) -> pa.Array:
    if path.suffix == ".jsonl":
        import polars as pl

        return pl.scan_ndjson(path).select("id").collect()["id"].to_arrow().cast(pa.string())
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    return pa.concat_arrays([c for f in files for c in pq.read_table(f, columns=["id"]).column("id").chunks]).cast(pa.string())


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


FLOORS = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from delt_cli.cli.main import prepare_arrow_process
prepare_arrow_process()  # as a data command starts: jemalloc, no pandas, one BLAS thread
import bench_select_order as bench
print(json.dumps(bench.floors_here(Path(sys.argv[1]), Path(sys.argv[2]))))
"""


def floors(data: Path, work: Path) -> dict:
    """CPU seconds (one thread, in a fresh process set up as delt's data commands are) of the
    work that any select + order of these files must do, as delt does it: decode every column of
    every row of the input (the kept half lies on every page, so no page can be skipped), then
    write the kept rows as Parquet with delt's settings (zstd level 1, the output's shard size);
    and zstd level 1 alone on the kept text in 1 MiB pages (the codec's share of the writing).
    (Measured in the benchmark's own process, which holds the JSONL writer's polars and ~1 GB,
    decoding took up to 1.6x what order's decode phase spends.)"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", FLOORS, str(data), str(work), str(REPO / "scripts")], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def floors_here(data: Path, work: Path) -> dict:
    """floors(), in this process."""
    from delt_cli.dataset.permute import parquet_pieces, release_memory_sooner
    from delt_cli.dataset.writer import ShardWriter

    release_memory_sooner()
    files = sorted(data.glob("*.parquet"))
    for _ in parquet_pieces(files[0]):  # warm-up: first-use costs are not the floor
        pass
    decode = 0.0
    kept = []
    for f in files:
        score = pq.read_table(f, columns=["score"]).column("score").to_numpy()
        kept.append(score)
    score = np.concatenate(kept)
    keep = np.zeros(len(score), dtype=bool)
    keep[np.argsort(-score, kind="stable")[: int(len(score) * TOP_R)]] = True
    kept, at = [], 0
    for f in files:
        pieces = parquet_pieces(f)
        while True:
            c = time.process_time()
            piece = next(pieces, None)
            decode += time.process_time() - c
            if piece is None:
                break
            start, table = piece
            kept.append(table.filter(pa.array(keep[at + start : at + start + table.num_rows])))
        at += pq.ParquetFile(f).metadata.num_rows
    table = pa.concat_tables(kept).combine_chunks()
    del kept
    out = work / "floor"
    out.mkdir(exist_ok=True)
    shard = int(SHARD_ROWS * TOP_R)
    c = time.process_time()
    for i, lo in enumerate(range(0, table.num_rows, shard)):
        with ShardWriter(out / f"part-{i:05d}.parquet", table.schema) as w:
            w.write(table.slice(lo, shard))
    encode = time.process_time() - c
    shutil.rmtree(out)
    text = table.column("text").combine_chunks()
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset : text.offset + len(text) + 1]
    data_buf = text.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    codec = pa.Codec("zstd", compression_level=1)
    c = time.process_time()
    for lo in range(0, data_buf.size, 1 << 20):
        codec.compress(data_buf.slice(lo, min(1 << 20, data_buf.size - lo)))
    zstd = time.process_time() - c
    return {"decode_s": decode, "encode_s": encode, "zstd_s": zstd, "kept_text_mb": data_buf.size / 1e6}


def run(n: int, kind: str, work: Path, args) -> dict:
    data = work / f"{kind}-{n}"
    baselines = [b for b in args.baseline if n <= args.baseline_max_rows]
    jsonl = work / f"{kind}-{n}.jsonl" if "reference" in baselines else None
    t = time.perf_counter()
    generate(kind, data, n, jsonl, args.text_bytes)
    gen = time.perf_counter() - t
    floor = floors(data, work) if baselines else None
    contestants = [f"delt:{v}:{c}" for v in args.variant for c in args.codec] + baselines
    runs: dict[str, list[dict]] = {c: [] for c in contestants}
    expected = None
    load = [loadavg()]
    for r in range(args.repeats):
        for c in contestants[r % len(contestants):] + contestants[: r % len(contestants)]:
            os.sync()
            if c.startswith("delt:"):
                _, variant, codec = c.split(":")
                res = run_delt(data, work, variant, codec)
            elif c == "reference":
                res = run_reference(jsonl, work)
            else:
                res = run_query(DUCKDB if c == "duckdb" else POLARS, c, data, work)
            ids = output_ids(res["output"])
            if expected is None:
                expected = ids
            res["same_ids"] = bool(ids.equals(expected))
            if not res["same_ids"]:
                print(f"warning: {c} gave different ids ({len(ids)} rows vs {len(expected)})", file=sys.stderr)
            res.pop("output")
            runs[c].append(res)
            print(f"  {n:,} {kind} round {r + 1}: {c} {res['s']:.2f} s {res['rss_mb']:.0f} MB (load {loadavg():.1f})", file=sys.stderr)
        load.append(loadavg())
    shutil.rmtree(data, ignore_errors=True)
    for p in [*work.glob("*.jsonl"), *work.glob("*.parquet")]:
        p.unlink()
    for p in ("sel", "ord"):
        shutil.rmtree(work / p, ignore_errors=True)
    return {"rows": n, "input": kind, "generate_s": gen, "repeats": args.repeats, "load": load, "floors": floor, "runs": runs}


# -- report -------------------------------------------------------------------------------


def med(xs) -> float:
    return float(np.median(xs))


def spread(xs) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f}"


INPUT_LABEL = {"delt": "delt shards (zstd, 16k-row groups, repetitive text)", "foreign": "foreign Parquet (pyarrow defaults: snappy, 1 row group/file; random words)"}


def label(c: str) -> str:
    if c.startswith("delt:"):
        _, variant, codec = c.split(":")
        what = {"lazy": "delt select --lazy, then order", "lazy-pipe": "delt select --lazy \\| delt order -", "eager": "delt select, then order"}[variant]
        return what + ("" if codec == "zstd" else f" ({codec})")
    return {"reference": "published approach (JSONL, in memory)", "duckdb": "DuckDB, one query", "polars": "polars, one lazy query"}[c]


def table(results: list[dict]) -> str:
    lines = [
        "| rows | input | contestant | time, median (range) | CPU (user + system) | rows/s | peak RSS | output | same ids | delt's speed-up over it | delt's memory / its |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        delt = [c for c in r["runs"] if c.startswith("delt:")]
        best = delt[0]
        for c, runs in r["runs"].items():
            times = [x["s"] for x in runs]
            cpu = [x["cpu_s"] for x in runs if "cpu_s" in x]
            cells = [f"{r['rows']:,}", r["input"], label(c), f"{med(times):.2f} s ({spread(times)})", f"{med(cpu):.2f} s" if cpu else "-", f"{r['rows'] / med(times):,.0f}",
                     f"{max(x['rss_mb'] for x in runs):,.0f} MB", f"{runs[-1]['output_mb']:,.0f} MB", str(all(x["same_ids"] for x in runs))]
            if c.startswith("delt:"):
                cells += ["-", "-"]
            else:
                ours = r["runs"][best]
                cells += [f"{med([t['s'] / o['s'] for t, o in zip(runs, ours)]):.2f}x",
                          f"{max(x['rss_mb'] for x in ours) / max(x['rss_mb'] for x in runs):.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: list[dict]) -> str:
    """One line per (rows, input, delt variant): the issue's targets."""
    out = []
    for r in results:
        engines = [c for c in ("duckdb", "polars") if c in r["runs"]]
        for delt in (c for c in r["runs"] if c.startswith("delt:")):
            ours = r["runs"][delt]
            rss = max(x["rss_mb"] for x in ours)
            parts = []
            if engines:
                fastest = [min(r["runs"][e][i]["s"] for e in engines) for i in range(len(ours))]
                ratios = [f / o["s"] for f, o in zip(fastest, ours)]
                mem = min(max(x["rss_mb"] for x in r["runs"][e]) for e in engines)
                parts.append(f"vs the faster of {' and '.join(engines)}: {med(ratios):.2f}x (rounds {', '.join(f'{x:.2f}' for x in ratios)}; target >= 1.5x), "
                             f"memory {rss / mem:.2f} of the smaller peak (target <= 0.5)")
            if "reference" in r["runs"]:
                ref = r["runs"]["reference"]
                parts.append(f"vs the published approach: {med([a['s'] / o['s'] for a, o in zip(ref, ours)]):.2f}x (target >= 5x), "
                             f"memory {rss / max(x['rss_mb'] for x in ref):.2f} (target <= 0.33)")
            parts.append(f"peak {rss:,.0f} MB")
            out.append(f"* {r['rows']:,} rows, {r['input']} input, {label(delt)}: " + "; ".join(parts) + ".")
    for kind in sorted({r["input"] for r in results}):
        same = [r for r in results if r["input"] == kind]
        for big in same[1:]:
            base = same[0]
            for d in (c for c in big["runs"] if c.startswith("delt:") and c in base["runs"]):
                t0, t1 = med([x["s"] for x in base["runs"][d]]), med([x["s"] for x in big["runs"][d]])
                out.append(f"* {kind} input, {label(d)}: {big['rows']:,} rows took {t1 / t0:.1f}x the time of {base['rows']:,} rows ({big['rows'] / base['rows']:.0f}x the rows).")
    return "\n".join(out)


def floor_lines(results: list[dict]) -> str:
    """Per input: the CPU that decoding the input and writing the kept rows cost at least (floors),
    against what each contestant spent in all and the time the speed target asks for."""
    out = []
    for r in results:
        f = r.get("floors")
        if not f:
            continue
        need = f["decode_s"] + f["encode_s"]
        cpu = {c: med([x["cpu_s"] for x in runs]) for c, runs in r["runs"].items() if all("cpu_s" in x for x in runs)}
        engines = [c for c in ("duckdb", "polars") if c in r["runs"]]
        line = (f"* {r['rows']:,} rows, {r['input']} input: decoding every column of the input {f['decode_s']:.2f} CPU-s; writing the kept rows "
                f"({f['kept_text_mb']:.0f} MB of text) as delt writes them {f['encode_s']:.2f} CPU-s, of which zstd level 1 alone {f['zstd_s']:.2f}; "
                f"together {need:.2f} CPU-s, {need / 2:.2f} s on 2 cores split perfectly. CPU spent in all (medians): "
                + ", ".join(f"{label(c)} {v:.2f} s" for c, v in cpu.items()) + ".")
        if engines:
            fastest = med([min(r["runs"][e][i]["s"] for e in engines) for i in range(r["repeats"])])
            line += f" 1.5x the faster engine ({fastest:.2f} s, median of the rounds' faster) means {fastest / 1.5:.2f} s."
        out.append(line)
    return "\n".join(out)


PHASES = ["open", "ids", "keys", "decide", "decode", "filter", "bucket", "gather", "encode", "manifest"]


def breakdown(results: list[dict]) -> str:
    """Where delt's time goes: per command, wall in the process, start-up + exit, CPU per phase (medians)."""
    lines = ["| rows | input | contestant | command | wall | start-up + exit | in the call | process CPU | " + " | ".join(f"{p} (CPU)" for p in PHASES) + " |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(PHASES)]
    for r in results:
        for c, runs in r["runs"].items():
            if not c.startswith("delt:"):
                continue
            for cmd in ("select", "order"):
                timed = [(x[cmd].get("s"), x[cmd]["timings"][cmd]) for x in runs if cmd in x[cmd]["timings"]]
                if not timed:
                    continue
                walls = [w for w, _ in timed if w is not None]
                inside = med([t["wall_s"] for _, t in timed])
                cpu = {p: med([t["cpu_s"].get(p, 0.0) for _, t in timed]) for p in PHASES}
                lines.append(f"| {r['rows']:,} | {r['input']} | {label(c)} | {cmd} | " + (f"{med(walls):.2f} s | {med([w - t['wall_s'] for w, t in timed]):.2f} s" if walls else "(one pipeline) | -")
                             + f" | {inside:.2f} s | {med([t['process_cpu_s'] for _, t in timed]):.2f} s | " + " | ".join(f"{cpu[p]:.2f}" if cpu[p] else "-" for p in PHASES) + " |")
    return "\n".join(lines)


def write_docs(text: str, block: str) -> None:
    path = REPO / "docs" / "benchmarks.md"
    doc = path.read_text()
    start, end = f"<!-- BEGIN {block} -->", f"<!-- END {block} -->"
    block = f"{start}\n{text}\n{end}"
    if start in doc:
        doc = doc[: doc.index(start)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)


def versions() -> str:
    import duckdb
    import polars

    return f"Python {platform.python_version()}, pyarrow {pa.__version__}, DuckDB {duckdb.__version__}, polars {polars.__version__}"


ENCODE_SETTINGS = [  # (label, changes to delt's ParquetWriter arguments)
    ("delt's settings: zstd level 1, no dictionary or statistics for long unique text, 1 MiB pages, row groups of 16,384", {}),
    ("zstd level 3 (Arrow's default level; DuckDB's and polars' outputs are about this size)", {"compression_level": 3}),
    ("zstd level -1 (a fast level)", {"compression_level": -1}),
    ("lz4", {"compression": "lz4", "compression_level": None}),
    ("snappy", {"compression": "snappy", "compression_level": None}),
    ("no compression", {"compression": "none", "compression_level": None}),
    ("dictionary tried on every column", {"use_dictionary": True}),
    ("no dictionary on any column", {"use_dictionary": False}),
    ("statistics on every column", {"write_statistics": True}),
    ("no statistics", {"write_statistics": False}),
    ("data pages of 8 MiB", {"data_page_size": 8 << 20}),
    ("data pages of 64 KiB", {"data_page_size": 64 << 10}),
    ("data page v2", {"data_page_version": "2.0"}),
    ("no page index", {"write_page_index": False}),
    ("row groups of 65,536", {"row_group_size": 65_536}),
    ("row groups of 100,000 (one per shard)", {"row_group_size": 100_000}),
    ("text as DELTA_LENGTH_BYTE_ARRAY", {"use_dictionary": ["score"], "column_encoding": {"text": "DELTA_LENGTH_BYTE_ARRAY"}}),
]


def encode_settings(work: Path, text_bytes: int, repeats: int) -> str:
    """Parquet writer settings for the kept rows, measured on this benchmark's realistic-entropy
    text (the foreign input's random words): 100,000 kept rows written as one shard, one thread;
    the smallest CPU time of `repeats` writes, the file size, and one thread's CPU to read it back."""
    from delt_cli.dataset.writer import ROW_GROUP_SIZE, column_encodings, compression_options

    data = work / "encode-settings"
    generate("foreign", data, 2 * SHARD_ROWS, None, text_bytes)
    table = pa.concat_tables([pq.read_table(f) for f in sorted(data.glob("*.parquet"))])
    score = table.column("score").to_numpy()
    table = table.take(pa.array(np.sort(np.argsort(-score, kind="stable")[: int(len(score) * TOP_R)]))).combine_chunks()
    out = work / "encode-settings.parquet"
    lines = ["| writer settings (kept rows: 100,000 documents, "
             f"{table.column('text').nbytes / 1e6:.0f} MB of text) | write, CPU | size | read back, CPU |", "|---|---|---|---|"]
    base = None
    for name, change in ENCODE_SETTINGS:
        kw = {"row_group_size": ROW_GROUP_SIZE, **column_encodings(table), **compression_options(), **change}
        write = read = float("inf")
        for _ in range(repeats):
            c = time.thread_time()
            pq.write_table(table, out, **kw)
            write = min(write, time.thread_time() - c)
            c = time.thread_time()
            with pq.ParquetFile(out) as pf:
                for g in range(pf.num_row_groups):
                    pf.read_row_group(g, use_threads=False)
            read = min(read, time.thread_time() - c)
        size = out.stat().st_size / 1e6
        base = base or (write, size)
        lines.append(f"| {name} | {write * 1000:.0f} ms ({write / base[0]:.2f}x) | {size:.1f} MB ({size / base[1]:.2f}x) | {read * 1000:.0f} ms |")
    shutil.rmtree(data)
    out.unlink()
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, action="append", help="number of documents (repeatable; default 1,000,000)")
    ap.add_argument("--input", action="append", choices=["delt", "foreign"], help="input kind (repeatable; default both)")
    ap.add_argument("--variant", action="append", choices=list(VARIANTS), help="lazy (select --lazy, then order), lazy-pipe (the same as one shell pipeline) or eager (select writes shards); repeatable; default all; the targets are computed for the first")
    ap.add_argument("--codec", action="append", default=None, help="DELT_PARQUET_COMPRESSION values to time delt with (repeatable; default zstd)")
    ap.add_argument("--baseline", action="append", choices=["reference", "duckdb", "polars"], help="baselines (repeatable; default all three)")
    ap.add_argument("--no-baselines", action="store_true", help="time delt alone")
    ap.add_argument("--baseline-max-rows", type=int, default=2_000_000, help="run the baselines only up to this size")
    ap.add_argument("--text-bytes", type=int, default=500, help="bytes of text per document (default 500)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds per size and input; tables show medians (default 3)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--docs-block", default="select-order", help="the marked block of docs/benchmarks.md that --write-docs replaces (default select-order)")
    ap.add_argument("--report-from", type=Path, default=None, help="rebuild the tables from the result lines (JSON, on stderr) of an earlier run with the same arguments; runs nothing")
    ap.add_argument("--wait-load", type=float, default=None, help="before starting, wait until the 1-minute load average is below this (at most --wait-max seconds)")
    ap.add_argument("--wait-max", type=float, default=3600)
    ap.add_argument("--floors-only", action="store_true", help="generate the inputs and print their floors (see `floors`), nothing else")
    ap.add_argument("--encode-settings", action="store_true", help="measure Parquet writer settings for the kept rows instead (docs block select-order-encode with --write-docs)")
    args = ap.parse_args()
    sizes = args.rows or [1_000_000]
    args.input = args.input or ["delt", "foreign"]
    args.variant = args.variant or list(VARIANTS)
    args.codec = args.codec or ["zstd"]
    args.baseline = [] if args.no_baselines else (args.baseline or ["reference", "duckdb", "polars"])
    if args.report_from is not None:
        results = [json.loads(line) for line in args.report_from.read_text().splitlines() if line.startswith("{")]
    elif args.wait_load is not None:
        deadline = time.time() + args.wait_max
        while loadavg() >= args.wait_load and time.time() < deadline:
            time.sleep(15)
        print(f"starting at load {loadavg():.1f}", file=sys.stderr)
    if args.floors_only:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-select-order-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            for n in sizes:
                for kind in args.input:
                    data = work / f"{kind}-{n}"
                    generate(kind, data, n, None, args.text_bytes)
                    runs = [floors(data, work) for _ in range(args.repeats)]
                    best = {k: min(r[k] for r in runs) for k in runs[0]}
                    print(f"* {n:,} rows, {kind} input (smallest of {args.repeats}, load {loadavg():.1f}): decoding every column of the input "
                          f"{best['decode_s']:.2f} CPU-s; writing the kept rows ({best['kept_text_mb']:.0f} MB of text) as delt writes them "
                          f"{best['encode_s']:.2f} CPU-s, of which zstd level 1 alone {best['zstd_s']:.2f}")
                    shutil.rmtree(data)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    if args.encode_settings:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-select-order-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            load = [loadavg()]
            rows = encode_settings(work, args.text_bytes, args.repeats)
            load.append(loadavg())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        text = ("### Parquet writer settings for the kept rows (`python scripts/bench_select_order.py --encode-settings"
                f" --repeats {args.repeats}{' --write-docs' * args.write_docs}`)\n\n"
                f"One thread, the smallest CPU time of {args.repeats} writes; {os.cpu_count()} cores, {versions()}; "
                f"1-minute load average {min(load):.1f}-{max(load):.1f}.\n\n" + rows + "\n")
        print(text)
        if args.write_docs:
            write_docs(text, "select-order-encode")
        return
    if args.report_from is None:
        # delt's modules byte-compiled, as an install leaves them (a checkout run with
        # PYTHONDONTWRITEBYTECODE would otherwise compile them in every process)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "delt_cli")], check=True, stdout=subprocess.DEVNULL)
        work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-select-order-"))
        work.mkdir(parents=True, exist_ok=True)
        results = []
        try:
            for n in sizes:
                for kind in args.input:
                    r = run(n, kind, work, args)
                    print(json.dumps(r, default=str), file=sys.stderr)
                    results.append(r)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    cmd = ("python scripts/bench_select_order.py" + "".join(f" --rows {n}" for n in sizes) + "".join(f" --input {k}" for k in args.input)
           + "".join(f" --variant {v}" for v in args.variant) + "".join(f" --codec {c}" for c in args.codec if args.codec != ["zstd"])
           + (" --no-baselines" if args.no_baselines else "".join(f" --baseline {b}" for b in args.baseline)) + f" --text-bytes {args.text_bytes}" * (args.text_bytes != 500)
           + f" --repeats {args.repeats}" + " --write-docs" * args.write_docs + (f" --docs-block {args.docs_block}" if args.docs_block != "select-order" else ""))
    loads = [x for r in results for x in r["load"]]
    heading = ("## Select and order (`scripts/bench_select_order.py`)\n\n" if args.docs_block == "select-order"
               else f"### Select and order at {', '.join(f'{n:,}' for n in sizes)} rows\n\n")
    text = (
        heading + f"`delt select --top-r {TOP_R}` then `delt order --method folding` ({FOLDS} folds) "
        + ("alone" if args.no_baselines else "against the published approach, one DuckDB query and one polars lazy query")
        + ", on the same documents (~"
        f"{args.text_bytes} bytes of text each, files of {SHARD_ROWS:,} rows); every contestant a fresh process, start-up included; "
        f"{args.repeats} rounds, each running every contestant once (order rotated per round); times are medians with the range of the rounds, CPU the median of user + system seconds over all threads and processes, "
        "speed-ups the median of the rounds' ratios, peak RSS the largest of the rounds. "
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, {versions()}; "
        f"1-minute load average {min(loads):.1f}-{max(loads):.1f} during the runs.\n"
        f"Command: `{cmd}`\n\n" + table(results) + "\n\nTargets (issue 17):\n\n" + targets(results)
        + ("\n\nFloors: the CPU that decoding the input and writing the kept rows take at least (one thread, measured in the benchmark's own process "
           "on the same files; scripts/bench_select_order.py, `floors`):\n\n" + floor_lines(results) if any(r.get("floors") for r in results) else "")
        + "\n\nWhere delt's time goes (medians; CPU seconds summed over threads, from DELT_TIMINGS=1):\n\n" + breakdown(results) + "\n"
    )
    print(text)
    if args.write_docs:
        write_docs(text, args.docs_block)


if __name__ == "__main__":
    main()
