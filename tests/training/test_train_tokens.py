"""The token cache: dataset order, EOS after every document, windows across shards, row lookup."""

import numpy as np
import pyarrow as pa
import pytest

from delt_cli.infra import assets
from delt_cli.dataset import open_dataset, write_shard
from delt_cli.models.loading import load_tokenizer
from delt_cli.training.tokens import build_token_cache, tokenizer_fingerprint

pytestmark = pytest.mark.assets


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer(assets.gpt2_tokenizer_dir())


def make(tmp_path, shards):
    d = tmp_path / "data"
    d.mkdir(parents=True)
    for i, rows in enumerate(shards):
        write_shard(pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows]}), d / f"part-{i:05d}.parquet")
    return open_dataset(d)


def test_stream_is_every_document_in_dataset_order_followed_by_eos(tmp_path, gpt2):
    shards = [
        [("a", "The quick brown fox."), ("b", ""), ("c", "Jumps over\nthe lazy dog!")],
        [("d", None), ("e", "Ünïcödé text, 2024."), ("f", "Last one")],
    ]
    ds = make(tmp_path, shards)
    cache = build_token_cache(ds, gpt2, tmp_path / "tok")
    expected = []
    for rows in shards:
        for _, text in rows:
            if text:
                expected += gpt2(text, add_special_tokens=False)["input_ids"] + [gpt2.eos_token_id]
    assert cache.num_tokens == len(expected)
    assert cache.window(0, cache.num_tokens).tolist() == expected
    # a window that crosses the shard boundary
    boundary = cache.parts[0].num_tokens
    assert cache.window(boundary - 3, 6).tolist() == expected[boundary - 3 : boundary + 3]
    # rows covered by a token range; empty/null rows have no tokens and never appear
    rows = cache.rows_in(0, cache.num_tokens)
    assert cache.ids_of(rows) == ["a", "c", "e", "f"]
    first_len = len(gpt2("The quick brown fox.", add_special_tokens=False)["input_ids"]) + 1
    assert cache.ids_of(cache.rows_in(first_len - 1, first_len + 1)) == ["a", "c"]
    assert cache.ids_of(cache.rows_in(first_len, first_len + 1)) == ["c"]
    assert cache.parts[0].tokens_path.name.endswith(".tokens.npy")
    assert np.load(cache.parts[0].tokens_path).dtype == np.uint16  # 50257 fits in 16 bits


def test_cache_is_reused_and_keyed_by_content(tmp_path, gpt2):
    ds = make(tmp_path, [[("a", "one two three"), ("b", "four five")]])
    cache = build_token_cache(ds, gpt2, tmp_path / "tok")
    mtime = cache.parts[0].tokens_path.stat().st_mtime_ns
    again = build_token_cache(ds, gpt2, tmp_path / "tok")
    assert again.parts[0].tokens_path.stat().st_mtime_ns == mtime
    other = make(tmp_path / "x", [[("a", "different text entirely")]])
    third = build_token_cache(other, gpt2, tmp_path / "tok")
    assert third.parts[0].tokens_path != cache.parts[0].tokens_path
    assert len(tokenizer_fingerprint(gpt2)) == 32
