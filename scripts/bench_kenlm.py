#!/usr/bin/env python
"""Benchmark: `delt score --method kenlm` against `--method perplexity` on the demo corpus.

The n-gram model is a word bigram (ARPA) counted with tests/kenlm_data.py (absolute discounting,
add-one unigrams) on CCNet-normalised lines of every document except the scored ones: the
held-out and target splits and the train split after its first --docs documents. Both methods score the first --docs documents of the train split as
real `delt score` subprocesses (start-up, model loading, reading and writing included: docs/s
is documents / the manifest's elapsed_s); KenLM also scores the whole train split. The rank
correlation (Spearman) of the two perplexities is over the documents both score.

    python scripts/bench_kenlm.py --corpus data/corpus/demo            # prints markdown
    python scripts/bench_kenlm.py --corpus data/corpus/demo --docs 300 --max-length 128 --model smollm2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from delt_cli.dataset import open_dataset  # noqa: E402
from delt_cli.scoring.distill import spearman  # noqa: E402
from delt_cli.scoring.kenlm import normalise  # noqa: E402
from kenlm_data import corpus_model  # noqa: E402


def delt(*args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "delt_cli", *map(str, args)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    out = Path(proc.stdout.strip())
    manifest = json.loads((out / "manifest.json").read_text())
    return {"out": out, "wall_s": time.perf_counter() - start, "elapsed_s": manifest["elapsed_s"], "rows": manifest["outputs"]["rows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=REPO / "data" / "corpus" / "demo")
    ap.add_argument("--docs", type=int, default=300, help="train documents scored by both methods")
    ap.add_argument("--model", default="smollm2", help="reference LM of --method perplexity")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ppl-from", type=Path, default=None, help="reuse the perplexity output of an earlier run on the same documents (its manifest's time is reported)")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-kenlm-"))
    fit_texts = []
    for split in sorted(p for p in args.corpus.iterdir() if p.is_dir() and p.name != "train"):
        fit_texts += [normalise(t) for t in open_dataset(split).read_column("text").to_pylist() if t]
    train = open_dataset(args.corpus / "train")
    table = pa.concat_tables([pq.read_table(s.path) for s in train.shards]).replace_schema_metadata(None)
    head = table.slice(0, args.docs)
    fit_texts += [normalise(t) for t in table.column("text").to_pylist()[args.docs :] if t]
    model, arpa = corpus_model(fit_texts, work / "bigram.arpa")
    (work / "sub").mkdir()
    pq.write_table(head, work / "sub" / "part-00000.parquet")
    full = delt("score", args.corpus / "train", "-o", work / "kenlm-all", "--method", "kenlm", "--model", arpa)
    ken = delt("score", work / "sub", "-o", work / "kenlm", "--method", "kenlm", "--model", arpa)
    if args.ppl_from is None:
        ppl = delt("score", work / "sub", "-o", work / "ppl", "--method", "perplexity", "--model", args.model, "--max-length", args.max_length)
    else:
        manifest = json.loads((args.ppl_from / "manifest.json").read_text())
        assert manifest["inputs"]["rows"] == args.docs, "--ppl-from: another number of documents"
        ppl = {"out": args.ppl_from, "elapsed_s": manifest["elapsed_s"], "rows": manifest["outputs"]["rows"]}
    k = open_dataset(ken["out"]).read_column("kenlm").to_numpy(zero_copy_only=False)
    p = open_dataset(ppl["out"]).read_column("ppl").to_numpy(zero_copy_only=False)
    both = np.isfinite(k) & np.isfinite(p)
    rho = spearman(k[both], p[both])
    domains = head.column("domain").to_pylist() if "domain" in head.column_names else None
    print("## KenLM vs perplexity (scripts/bench_kenlm.py)\n")
    print(f"`python scripts/bench_kenlm.py {' '.join(sys.argv[1:])}`; "
          f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={args.threads}, load average {load:.1f} at the start"
          + (" (other work was running on this shared machine: absolute figures are noisy)" if load > 1.5 else "") + ".\n")
    print(f"Bigram model: {len(model.p_uni):,} words, {len(model.p_bi):,} bigrams, counted from {len(fit_texts):,} documents that are not scored ({arpa.stat().st_size / 1e6:.1f} MB ARPA).\n")
    print("| run | documents | elapsed s | docs/s |")
    print("|---|---:|---:|---:|")
    for name, r in (("kenlm, whole train split", full), (f"kenlm, first {args.docs}", ken), (f"perplexity ({args.model}, --max-length {args.max_length}), first {args.docs}", ppl)):
        print(f"| {name} | {r['rows']:,} | {r['elapsed_s']:.1f} | {r['rows'] / r['elapsed_s']:,.1f} |")
    print(f"\nSpearman rank correlation of kenlm and ppl over {int(both.sum())} documents: **{rho:.3f}**")
    if domains:
        print("\n| domain | documents | mean rank by kenlm | mean rank by ppl |\n|---|---:|---:|---:|")
        rk, rp = np.argsort(np.argsort(k)), np.argsort(np.argsort(p))
        for d in sorted(set(domains)):
            m = np.asarray([x == d for x in domains])
            print(f"| {d} | {int(m.sum())} | {rk[m].mean():.0f} | {rp[m].mean():.0f} |")


if __name__ == "__main__":
    main()
