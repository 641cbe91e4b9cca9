"""Benchmarks for GOT-D: the OT solve vs POT, streaming scoring of a large pool, embedding throughput.

    python scripts/bench_gotd.py                         # everything at the issue's sizes (~15 min on 2 cores)
    python scripts/bench_gotd.py --parts solve --n-candidates 5000 --n-targets 500   # small
    python scripts/bench_gotd.py --write docs/benchmarks.md                          # record the figures

Parts:

* solve: our Sinkhorn (float32 and float64) vs POT's log-domain Sinkhorn
  (`ot.sinkhorn(..., method="sinkhorn_log")`) on the same problem: L2-normalised
  embeddings drawn from a 64-cluster mixture, uniform weights, squared-Euclidean cost,
  absolute epsilon. Each solver runs in its own process (peak RSS is that process's).
  All stop at the same rule as POT (L2 error of the target marginal <= --tol), and ours
  also at the stricter L1 <= --tol; the final errors and the potentials' distance to a
  tightly converged reference (after fixing the dual constant) are computed afterwards
  from the returned potentials, in float64.
* stream: `delt score --method gotd` (a subprocess) on --stream-rows precomputed embeddings
  in shards against --n-targets targets: the solve on a --pool-size sample plus the
  per-shard c-transform of every row; wall time and the subprocess's peak RSS.
* embed: documents/s of `delt_cli.scoring.gotd.embedding.Encoder.embed_documents` vs
  `SentenceTransformer.encode` on the same real texts, same batch size, alternating runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# -- data ------------------------------------------------------------------------------

def mixture(rows: int, dim: int, seed: int, *, clusters: int = 64, noise: float = 0.8) -> np.ndarray:
    """L2-normalised points around `clusters` random centres (a stand-in for sentence embeddings)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(size=(clusters, dim)) / math.sqrt(dim)
    out = np.empty((rows, dim), dtype=np.float32)
    for s in range(0, rows, 100_000):
        k = min(100_000, rows - s)
        z = centres[rng.integers(0, clusters, size=k)] + rng.normal(size=(k, dim)) * noise / math.sqrt(dim)
        out[s : s + k] = z / np.linalg.norm(z, axis=1, keepdims=True)
    return out


def peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


# -- child: one solve --------------------------------------------------------------------

def child_solve(args) -> None:
    data = np.load(args.data)
    x, y = data["x"], data["y"]
    started = time.perf_counter()
    if args.solver == "pot":
        import ot

        n, big_n = len(x), len(y)
        cost = ot.dist(y.astype(np.float64), x.astype(np.float64))  # candidates x targets
        # POT updates the candidate side last and measures the L2 error of the target marginal.
        _, log = ot.sinkhorn(np.full(big_n, 1 / big_n), np.full(n, 1 / n), cost, args.epsilon, method="sinkhorn_log", stopThr=args.tol, numItermax=args.max_iter, log=True)
        f, g, iters = args.epsilon * log["log_v"], args.epsilon * log["log_u"], int(log["niter"]) + 1
    else:
        import torch

        from delt_cli.scoring.gotd.sinkhorn import sinkhorn

        dtype = torch.float32 if args.solver == "ours-float32" else torch.float64
        sol = sinkhorn(x, y, epsilon=args.epsilon, tol=args.tol, max_iter=args.max_iter, momentum=args.momentum, dtype=dtype, norm=args.norm, max_memory=8 << 30)
        f, g, iters = sol.f, sol.g, sol.iterations
    seconds = time.perf_counter() - started
    np.savez(args.out, f=f, g=g)
    Path(args.out + ".json").write_text(json.dumps({"seconds": seconds, "iterations": iters, "peak_rss_mb": peak_rss_mb()}))


def marginal_errors(x, y, f, g, eps) -> tuple[float, float]:
    """(L1, L2) error of the target marginal of the plan given by (f, g), in float64."""
    import torch

    xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    rows = torch.zeros(len(x), dtype=torch.float64)
    ft, gt = torch.tensor(f), torch.tensor(g)
    for s in range(0, len(y), 4096):
        c = torch.cdist(xt, yt[s : s + 4096]) ** 2
        rows += torch.exp((ft[:, None] + gt[None, s : s + 4096] - c) / eps).sum(1)
    d = rows - 1.0 / len(x)
    return float(d.abs().sum()), float(d.norm())


def run_solver(args, tmp: Path, data: Path, solver: str, norm: int, tol: float) -> dict:
    out = str(tmp / f"{solver}-L{norm}-{tol:g}.npz")
    cmd = [sys.executable, __file__, "--child-solve", solver, "--data", str(data), "--out", out, "--norm", str(norm),
           "--epsilon", str(args.epsilon), "--tol", str(tol), "--max-iter", str(args.max_iter), "--momentum", str(args.momentum)]
    print(f"[solve] {solver}, stop at L{norm} <= {tol:g} ...", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    res = json.loads(Path(out + ".json").read_text())
    pot = np.load(out)
    res.update(solver=solver, stop=f"L{norm} <= {tol:g}", f=pot["f"], g=pot["g"])
    return res


def bench_solve(args, tmp: Path) -> dict:
    x = mixture(args.n_targets, args.dim, seed=1)
    y = mixture(args.n_candidates, args.dim, seed=2)
    data = tmp / "problem.npz"
    np.savez(data, x=x, y=y)
    ref = run_solver(args, tmp, data, "ours-float64", 1, args.ref_tol)
    runs = [] if args.skip_pot else [("pot", 2)]
    runs += [("ours-float32", 2), ("ours-float64", 2), ("ours-float32", 1), ("ours-float64", 1)]
    results = []
    for solver, norm in runs:
        res = run_solver(args, tmp, data, solver, norm, args.tol)
        res["l1_error"], res["l2_error"] = marginal_errors(x, y, res["f"], res["g"], args.epsilon)
        c = float(np.mean(ref["g"] - res["g"]))
        res["max_df"] = float(np.abs(res["f"] - c - ref["f"]).max())
        res["max_dg"] = float(np.abs(res["g"] + c - ref["g"]).max())
        del res["f"], res["g"]
        results.append(res)
        print(f"[solve] {res}", file=sys.stderr, flush=True)
    del ref["f"], ref["g"]
    return {"problem": {"n_targets": args.n_targets, "n_candidates": args.n_candidates, "dim": args.dim, "epsilon": args.epsilon, "tol": args.tol, "momentum": args.momentum},
            "reference": ref, "results": results}


# -- streaming ---------------------------------------------------------------------------

def bench_stream(args, tmp: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from delt_cli.scoring.gotd.vectors import to_arrow

    pool, target = tmp / "pool", tmp / "target"
    pool.mkdir()
    target.mkdir()
    t0 = time.perf_counter()
    pq.write_table(pa.table({"id": [f"t{i}" for i in range(args.n_targets)], "emb": to_arrow(mixture(args.n_targets, args.dim, seed=1))}), target / "part-00000.parquet")
    shards = -(-args.stream_rows // args.shard_rows)
    for s in range(shards):
        lo, hi = s * args.shard_rows, min(args.stream_rows, (s + 1) * args.shard_rows)
        emb = mixture(hi - lo, args.dim, seed=100 + s)
        pq.write_table(pa.table({"id": [f"r{i}" for i in range(lo, hi)], "emb": to_arrow(emb)}), pool / f"part-{s:05d}.parquet")
    print(f"[stream] wrote {args.stream_rows:,} x {args.dim} embeddings in {shards} shards ({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "delt_cli", "score", str(pool), "-o", str(tmp / "scored"), "--method", "gotd", "--target", str(target),
           "--epsilon", str(args.epsilon), "--tol", str(args.stream_tol)]
    if args.pool_size:
        cmd += ["--pool-size", str(args.pool_size)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    # Run `delt` through a wrapper that records its own peak RSS and CPU time at exit.
    usage = tmp / "usage.json"
    wrapper = ("import atexit, json, resource, runpy, sys\n"
               "out = sys.argv.pop(1)\n"
               "def done():\n"
               "    r = resource.getrusage(resource.RUSAGE_SELF)\n"
               "    open(out, 'w').write(json.dumps({'rss_mb': r.ru_maxrss / 1024, 'cpu_s': r.ru_utime + r.ru_stime}))\n"
               "atexit.register(done)\n"
               "sys.argv[0] = 'delt'\n"
               "runpy.run_module('delt_cli', run_name='__main__')\n")
    cmd = [sys.executable, "-c", wrapper, str(usage)] + cmd[3:]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    used = json.loads(usage.read_text())
    cpu = used["cpu_s"]
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    manifest = json.loads((tmp / "scored" / "manifest.json").read_text())
    conv = manifest["scorer"]["convergence"]
    solve_line = next((ln for ln in proc.stderr.splitlines() if "iteration(s)" in ln), "")
    result = {
        "rows": args.stream_rows, "shards": shards, "targets": args.n_targets, "dim": args.dim, "sample_rows": manifest["scorer"]["sample_rows"],
        "wall_s": wall, "cpu_s": cpu, "load_before": load, "threads": args.threads or "default",
        "peak_rss_mb": used["rss_mb"], "iterations": conv["iterations"],
        "marginal_error": conv["marginal_error"], "converged": conv["converged"], "solve_log": solve_line.strip(),
        "command": " ".join(["delt"] + cmd[4:]).replace(str(tmp), "$TMP"),
    }
    print(f"[stream] {wall:.1f}s wall, peak RSS {result['peak_rss_mb']:.0f} MB; {solve_line.strip()}", file=sys.stderr, flush=True)
    return result


# -- embedding throughput ---------------------------------------------------------------

def bench_embed(args) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from sentence_transformers import SentenceTransformer

    from delt_cli.infra.assets import minilm_dir
    from delt_cli.scoring.gotd.embedding import Encoder
    from gotd_corpus import domain_texts

    per = -(-args.embed_texts // 4)
    texts, _ = domain_texts(per, limit=900)
    docs = [t for name in texts for t in texts[name]][: args.embed_texts]
    ours = Encoder(minilm_dir(), batch_size=args.batch_size)
    ref = SentenceTransformer(str(minilm_dir()), device="cpu")
    ours.embed_documents(docs[:32], chunk_chars=1000)
    ref.encode(docs[:32], batch_size=args.batch_size)
    times = {"delt": [], "sentence-transformers": []}
    for _ in range(args.reps):
        t = time.perf_counter()
        a = ref.encode(docs, batch_size=args.batch_size, convert_to_numpy=True)
        times["sentence-transformers"].append(time.perf_counter() - t)
        t = time.perf_counter()
        b = ours.embed_documents(docs, chunk_chars=1000)
        times["delt"].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    result = {
        "texts": len(docs), "mean_chars": float(np.mean([len(d) for d in docs])), "batch_size": args.batch_size, "reps": args.reps,
        "docs_per_s": {k: len(docs) / v for k, v in med.items()}, "ratio_delt_over_st": med["sentence-transformers"] / med["delt"],
        "max_abs_diff": float(np.abs(a - b).max()),
    }
    print(f"[embed] {result}", file=sys.stderr, flush=True)
    return result


# -- report ------------------------------------------------------------------------------

def markdown(report: dict) -> str:
    lines = ["## GOT-D (embeddings, OT solve, streaming scores)", ""]
    lines.append(f"Measured on {report['machine']}; the machine was shared with other work (load average 4-8 on its 2 cores "
                 "during these runs), so the times are noisy and every solver ran under the same conditions. "
                 "Each part gives the command that produced it.")
    lines.append("")
    if "solve" in report:
        s = report["solve"]
        p = s["problem"]
        ref = s["reference"]
        lines += [
            f"**OT solve**: {p['n_candidates']:,} candidates x {p['n_targets']:,} targets, {p['dim']}-d L2-normalised "
            f"embeddings (64-cluster mixture), epsilon {p['epsilon']} (absolute), uniform weights, squared-Euclidean cost. "
            f"Each solver stops when the error of the target marginal is at most {p['tol']:g}, in POT's norm (L2) and in ours (L1, stricter). "
            f"Potentials are compared with a reference solve (ours, float64, L1 <= {ref['stop'].split('<= ')[1]}, {ref['iterations']} iterations) "
            f"after fixing the dual constant; errors are recomputed in float64 from the returned potentials. "
            f"Ours uses momentum {p['momentum']}; POT has none.",
            "",
            f"`{s['bench_command']}` ({s['date']})",
            "",
            "| solver | stop rule | time (s) | iterations | peak RSS (MB) | final L1 / L2 error | max abs diff f / g to reference |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in s["results"]:
            lines.append(f"| {r['solver']} | {r['stop']} | {r['seconds']:.1f} | {r['iterations']} | {r['peak_rss_mb']:.0f} | "
                         f"{r['l1_error']:.1e} / {r['l2_error']:.1e} | {r['max_df']:.1e} / {r['max_dg']:.1e} |")
        pot = next((r for r in s["results"] if r["solver"] == "pot"), None)
        if pot:
            same = [r for r in s["results"] if r["stop"] == pot["stop"] and r["solver"] != "pot"]
            lines.append("")
            lines.append(f"Speed-up over POT at the same stop rule ({pot['stop']}): " + ", ".join(f"{r['solver']} {pot['seconds'] / r['seconds']:.0f}x" for r in same) + ".")
        worst = {r["stop"]: max(max(q["max_df"], q["max_dg"]) for q in s["results"] if q["stop"] == r["stop"]) for r in s["results"]}
        lines.append("")
        lines.append("How close the potentials are depends on the stop rule, not on the solver or the dtype: "
                     + "; ".join(f"at {stop} every solver is within {d:.1e} of the reference" for stop, d in worst.items())
                     + " (a float32 solve that reaches float32's rounding floor first finishes in float64, see docs/gotd.md).")
        lines.append("")
    if "stream" in report:
        r = report["stream"]
        lines += [
            f"**Streaming scores**: {r['rows']:,} precomputed {r['dim']}-d embeddings in {r['shards']} shards against {r['targets']:,} targets, "
            f"solve on a {r['sample_rows']:,}-row sample ({r['iterations']} iterations, marginal error {r['marginal_error']:.1e}), "
            f"then the c-transform of every row: **{r['wall_s']:.0f} s wall ({r['cpu_s']:.0f} s CPU), peak RSS {r['peak_rss_mb']:.0f} MB** "
            f"(the whole `delt score` subprocess, including start-up, reading the shards and writing them with the new columns; "
            f"torch threads: {r['threads']}; load average {r['load_before']:.1f} when it started). Command: `{r['command']}`, "
            f"run by `{r['bench_command']}` ({r['date']}).",
            "",
        ]
    if "embed" in report:
        r = report["embed"]
        dps = r["docs_per_s"]
        lines += [
            f"**Embedding throughput** (all-MiniLM-L6-v2, CPU, {r['texts']} real texts of {r['mean_chars']:.0f} characters on average, "
            f"batch {r['batch_size']}, median of {r['reps']} alternating runs): delt {dps['delt']:.1f} docs/s, "
            f"SentenceTransformer.encode {dps['sentence-transformers']:.1f} docs/s (ratio {r['ratio_delt_over_st']:.2f}); "
            f"max abs difference of the embeddings {r['max_abs_diff']:.1e}. `{r['bench_command']}` ({r['date']}).",
            "",
        ]
    lines.append("No GPU was available for these runs, so the GPU figures (embeddings/s, the 2M x 5k solve) are not measured.")
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    head = section.splitlines()[0]
    if head in text:
        start = text.index(head)
        nxt = text.find("\n## ", start + len(head))
        text = text[:start] + section + (text[nxt + 1 :] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="solve,stream,embed")
    ap.add_argument("--n-candidates", type=int, default=20_000)
    ap.add_argument("--n-targets", type=int, default=2_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--epsilon", type=float, default=0.1)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--ref-tol", type=float, default=1e-9)
    ap.add_argument("--norm", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--max-iter", type=int, default=5000)
    ap.add_argument("--momentum", type=float, default=1.3)
    ap.add_argument("--skip-pot", action="store_true")
    ap.add_argument("--stream-rows", type=int, default=1_000_000)
    ap.add_argument("--shard-rows", type=int, default=50_000)
    ap.add_argument("--pool-size", type=int, default=None, help="stream: --pool-size for delt score (default: its default)")
    ap.add_argument("--threads", type=int, default=None, help="stream: OMP_NUM_THREADS for the delt score subprocess")
    ap.add_argument("--stream-tol", type=float, default=1e-4)
    ap.add_argument("--embed-texts", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--write", type=Path, help="Write the figures into this markdown file under the GOT-D heading.")
    ap.add_argument("--json", type=Path, help="Also write the raw figures as JSON.")
    ap.add_argument("--reuse", type=Path, help="Start from the figures of an earlier --json report (parts run now replace its parts).")
    ap.add_argument("--child-solve", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--solver", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_solve:
        args.solver = args.child_solve
        child_solve(args)
        return
    import torch

    parts = set(args.parts.split(","))
    previous = json.loads(args.reuse.read_text()) if args.reuse else {}
    report = {**previous, "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} threads",
              "date": time.strftime("%Y-%m-%d")}
    skip = {"--write", "--json", "--reuse"}
    argv = [a for i, a in enumerate(sys.argv[1:]) if a not in skip and (i == 0 or sys.argv[i] not in skip)]
    stamp = {"bench_command": " ".join(["python scripts/bench_gotd.py", *argv]), "date": time.strftime("%Y-%m-%d")}
    tmp = Path(tempfile.mkdtemp(prefix="bench-gotd-"))
    try:
        if "solve" in parts:
            report["solve"] = {**bench_solve(args, tmp), **stamp}
        if "stream" in parts:
            report["stream"] = {**bench_stream(args, tmp), **stamp}
        if "embed" in parts:
            report["embed"] = {**bench_embed(args), **stamp}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    section = markdown(report)
    print(section)
    if args.write:
        write_section(args.write, section)


if __name__ == "__main__":
    main()
