"""Benchmarks for `delt score`: per-sample gradient information, perplexity, LQS annotation.

    python scripts/bench_score.py                  # everything, prints a markdown section
    python scripts/bench_score.py persample        # one part: persample | perplexity | lqs
    python scripts/bench_score.py --write          # also replace the "## Scoring" section of docs/benchmarks.md

Every measurement runs in a fresh subprocess (so its peak RSS is its own); each
configuration is repeated --repeats times, interleaved with its baselines, and the
median is reported. Peak memory = the subprocess's peak RSS minus its RSS just
before the measured call (the model and inputs already built).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one measurement (runs in a child process) ---------------------------------------------------
def persample_child(method: str, batch: int, seq: int, vocab: int) -> dict:
    import torch

    from delt_cli.models.causal_lm import split_lm
    from delt_cli.models.loading import model_from_config
    from delt_cli.scoring.lqs.losses import params_of, sample_losses
    from delt_cli.scoring.lqs.persample import HookPerSample, loop_per_sample, vmap_per_sample

    torch.manual_seed(0)
    model = model_from_config("llama-3m", vocab_size=vocab, seed=1).eval()
    parts = split_lm(model)
    lam = {k: torch.randn_like(v) for k, v in params_of(model).items()}
    n = batch if method in ("batched", "hooks") else max(4, batch // 4)  # the slow ones on a quarter batch
    ids = torch.randint(0, vocab, (n, seq))
    lengths = torch.full((n,), seq)
    warm_ids, warm_lengths = ids[:2], lengths[:2]

    def run(ids=ids, lengths=lengths):
        if method == "batched":
            loss = sample_losses(parts, ids, lengths).mean()
            loss.backward()
            model.zero_grad(set_to_none=True)
        elif method == "hooks":
            HookPerSample(parts, chunk=8)(ids, lengths, lam)
        elif method == "loop":
            loop_per_sample(parts, ids, lengths, lam)
        elif method == "vmap":
            vmap_per_sample(parts, ids, lengths, lam, chunk=4)

    run(warm_ids, warm_lengths)  # warm-up (first-call allocations, lazy imports)
    base = rss_mb()
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    return {"samples_per_s": n / wall, "peak_mb": peak_mb() - base, "samples": n, "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def perplexity_child(method: str, model_spec: str, tokenizer: str, docs: int, max_length: int) -> dict:
    import numpy as np
    import pyarrow as pa
    import torch

    from delt_cli.infra.distributed import Dist
    from delt_cli.models.loading import load_lm_with_tokenizer
    from delt_cli.scoring.perplexity import PerplexityScorer
    from delt_cli.scoring.tokens import encode, prefix_token_id

    texts = bench_texts(docs)
    model, tok = load_lm_with_tokenizer(model_spec, tokenizer, seed=0)
    prefix = prefix_token_id(tok, "bos")
    rows = [d[:max_length] for d in encode(tok, texts, prefix=prefix)]
    n_tokens = sum(len(r) - 1 for r in rows)
    if method == "delt":
        scorer = PerplexityScorer(model=model_spec, tokenizer=tokenizer, max_length=max_length)

        class DS:
            def require(self, column, flag):
                return None

        scorer.fit_prepare(DS(), Dist())
        table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
        scorer.transform(table.slice(0, 4))  # warm-up
        base = rss_mb()
        start = time.perf_counter()
        out = scorer.transform(table)
        wall = time.perf_counter() - start
        nll = out["ppl_nll"].to_numpy()
    elif method == "loop":
        with torch.inference_mode():
            for r in rows[:4]:  # warm-up
                model(input_ids=torch.tensor([r], dtype=torch.long), labels=torch.tensor([r], dtype=torch.long))
        base = rss_mb()
        start = time.perf_counter()
        with torch.inference_mode():
            nll = np.array([float(model(input_ids=torch.tensor([r], dtype=torch.long), labels=torch.tensor([r], dtype=torch.long)).loss) for r in rows])
        wall = time.perf_counter() - start
    else:  # naive: length-sorted batches of 16, padding masked, full logits
        base = rss_mb()
        start = time.perf_counter()
        order = np.argsort([-len(r) for r in rows])
        nll = np.zeros(len(rows))
        with torch.inference_mode():
            for k in range(0, len(rows), 16):
                sel = order[k : k + 16]
                width = max(len(rows[i]) for i in sel)
                ids = torch.zeros((len(sel), width), dtype=torch.long)
                mask = torch.zeros((len(sel), width), dtype=torch.long)
                for j, i in enumerate(sel):
                    ids[j, : len(rows[i])] = torch.from_numpy(rows[i].astype(np.int64))
                    mask[j, : len(rows[i])] = 1
                labels = ids.masked_fill(mask == 0, -100)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="none", ignore_index=-100)
                nll[sel] = (ce.sum(1) / (labels[:, 1:] != -100).sum(1)).numpy()
        wall = time.perf_counter() - start
    return {"tokens_per_s": n_tokens / wall, "peak_mb": peak_mb() - base, "tokens": n_tokens, "nll_mean": float(np.mean(nll))}


def lqs_child(corpus: str, target: str, tokenizer: str, model: str, proxy_size: int, steps: int, interval: int, max_length: int, target_size: int) -> dict:
    from delt_cli.scoring.lqs.annotate import LQSScorer
    from delt_cli.dataset import open_dataset
    from delt_cli.infra.distributed import Dist

    ds = open_dataset(corpus)
    scorer = LQSScorer(model=model, tokenizer=tokenizer, target=target, proxy_size=proxy_size, proxy_steps=steps, interval=interval, max_length=max_length, target_size=target_size)
    base = rss_mb()
    start = time.perf_counter()
    scorer.fit_prepare(ds, Dist())
    wall = time.perf_counter() - start
    passes = len(range(0, steps, interval)) + 1
    phases = {f"phase {k}": v for k, v in scorer.report()["seconds"].items()}
    return {"wall_s": wall, "proxy_per_s": proxy_size / wall, "sample_passes_per_s": proxy_size * passes / wall, "peak_mb": peak_mb() - base, **phases}


def bench_texts(n: int) -> list[str]:
    sys.path.insert(0, str(REPO / "tests"))
    from scoring_data import news, science

    texts = []
    for a, b in zip(science(), news()):
        texts.extend([a, b])
    return texts[:n]


# -- the parent: repeat, interleave, take medians --------------------------------------------------
THREADS = None


def child(kind: str, **kwargs) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, json.dumps(kwargs)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if THREADS:
        env["OMP_NUM_THREADS"] = str(THREADS)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def medians(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], (int, float))}


def bench_persample(repeats: int) -> list[str]:
    cfg = dict(batch=32, seq=256, vocab=8192)
    results = {m: [] for m in ("batched", "hooks", "loop", "vmap")}
    for _ in range(repeats):
        for m in results:
            results[m].append(child("persample", method=m, **cfg))
    med = {m: medians(r) for m, r in results.items()}
    floor = med["batched"]["samples_per_s"]
    lines = [
        f"Per-sample lambda.g_n and ||g_n|| (llama-3m: {med['batched']['params_m']:.2f}M parameters, vocabulary 8192, batch 32 x 256 tokens, fp32, CPU; median of {repeats}):",
        "",
        "| method | samples/s | vs batched backward | vs loop | peak extra memory |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    names = {"batched": "one batched backward (the floor)", "hooks": "hooks (delt's `auto`)", "loop": "per-sample loop", "vmap": "torch.func vmap(grad)"}
    for m in ("batched", "hooks", "loop", "vmap"):
        s = med[m]["samples_per_s"]
        lines.append(f"| {names[m]} | {s:.1f} | {s / floor:.2f}x | {s / med['loop']['samples_per_s']:.2f}x | {med[m]['peak_mb']:.0f} MB |")
    return lines


def bench_perplexity(repeats: int) -> list[str]:
    from delt_cli.infra.assets import gpt2_tokenizer_dir, smollm2_dir

    setups = [
        ("SmolLM2-135M (fp32)", dict(model_spec=str(smollm2_dir()), tokenizer=str(smollm2_dir()), docs=48, max_length=256)),
        ("llama-tiny + GPT-2 vocabulary (50257)", dict(model_spec="llama-tiny", tokenizer=str(gpt2_tokenizer_dir()), docs=96, max_length=256)),
    ]
    lines = [
        f"Perplexity on SciQ + XSum documents (first 256 tokens), CPU, fp32; median of {repeats}:",
        "",
        "| model | method | tokens/s | vs loop | peak extra memory |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, cfg in setups:
        results = {m: [] for m in ("delt", "loop", "naive")}
        for _ in range(repeats):
            for m in results:
                results[m].append(child("perplexity", method=m, **cfg))
        med = {m: medians(r) for m, r in results.items()}
        loop = med["loop"]["tokens_per_s"]
        labels = {"delt": "delt (length buckets, head on real tokens)", "loop": "transformers, one document at a time", "naive": "transformers, padded batches of 16"}
        for m in ("delt", "loop", "naive"):
            lines.append(f"| {name} | {labels[m]} | {med[m]['tokens_per_s']:.0f} | {med[m]['tokens_per_s'] / loop:.2f}x | {med[m]['peak_mb']:.0f} MB |")
        assert abs(med["delt"]["nll_mean"] - med["loop"]["nll_mean"]) < 1e-3 * max(1.0, med["loop"]["nll_mean"]), med
    return lines


def bench_lqs(repeats: int) -> list[str]:
    import tempfile

    sys.path.insert(0, str(REPO / "tests"))
    from scoring_data import drama, news, science, write_dataset

    from delt_cli.infra.assets import gpt2_tokenizer_dir

    root = Path(tempfile.mkdtemp(prefix="bench-lqs-"))
    texts = list(science()[:500]) + list(news()[:800]) + list(drama()[:1700])
    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)]
    write_dataset(root / "corpus", rows, shards=4)
    write_dataset(root / "target", [{"id": f"t{i}", "text": t} for i, t in enumerate(science()[500:628])])
    cfg = dict(corpus=str(root / "corpus"), target=str(root / "target"), tokenizer=str(gpt2_tokenizer_dir()), model="llama-tiny", proxy_size=256, steps=10, interval=5, max_length=128, target_size=32)
    runs = [child("lqs", **cfg) for _ in range(repeats)]
    med = medians(runs)
    phases = ", ".join(f"{k[6:]} {v:.0f} s" for k, v in med.items() if k.startswith("phase "))
    return [
        f"LQS annotation end to end at demo scale (corpus of {len(rows):,} documents, proxy sample {cfg['proxy_size']}, llama-tiny (64 wide) with GPT-2's 50k vocabulary, "
        f"T={cfg['steps']} SGD steps of 16 documents, interval {cfg['interval']}, {cfg['target_size']} target documents, max length {cfg['max_length']}, CPU fp32; median of {repeats}):",
        "",
        f"- {med['wall_s']:.0f} s wall, {med['proxy_per_s']:.2f} proxy documents/s end to end "
        f"({med['sample_passes_per_s']:.1f} per-sample gradient passes/s over the {len(range(0, cfg['steps'], cfg['interval'])) + 1} passes), peak extra memory {med['peak_mb']:.0f} MB.",
        f"- time by phase: {phases}.",
    ]


PARTS = {"persample": bench_persample, "perplexity": bench_perplexity, "lqs": bench_lqs}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, kwargs = sys.argv[2], json.loads(sys.argv[3])
        fn = {"persample": persample_child, "perplexity": perplexity_child, "lqs": lqs_child}[kind]
        print(json.dumps(fn(**kwargs)))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("parts", nargs="*", default=list(PARTS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="replace the '## Scoring' section of docs/benchmarks.md")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the measured processes (0: torch's default)")
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    load = os.getloadavg()[0]
    flags = f" --threads {args.threads}" if args.threads else ""
    lines = ["## Scoring", "", f"Measured with `python scripts/bench_score.py {' '.join(args.parts)} --repeats {args.repeats}{flags}` on {os.cpu_count()} CPU cores "
             f"(load average {load:.1f} at the start{': other work was running on this shared machine, so absolute numbers are noisy' if load > 1.5 else ''}; the ratios compare runs interleaved in the same period).", ""]
    print("\n".join(lines), flush=True)
    for part in args.parts:
        part_lines = PARTS[part](args.repeats) + [""]
        print("\n".join(part_lines), flush=True)
        lines.extend(part_lines)
    text = "\n".join(lines)
    if args.write:
        path = REPO / "docs" / "benchmarks.md"
        old = path.read_text() if path.exists() else "# Benchmarks\n"
        start = old.find("## Scoring")
        if start >= 0:
            end = old.find("\n## ", start + 1)
            old = old[:start] + old[end + 1 :] if end >= 0 else old[:start]
        path.write_text(old.rstrip() + "\n\n" + text + "\n")


if __name__ == "__main__":
    main()
