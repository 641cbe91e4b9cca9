"""`delt score --method dsir`: hashed n-gram features, the importance weight formula, a planted
domain on real text, seeded Gumbel resampling that ignores sharding, and bad input."""

import hashlib
import json
import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from delt_cli.cli.app import app
from delt_cli.dataset import open_dataset
from delt_cli.scoring.dsir import _mix, gumbel_noise, log_ratio, ngram_buckets
from gotd_corpus import write_pool

runner = CliRunner()


def manual_features(text, buckets):
    words = re.findall(r"\w+|[^\w\s]+", text.lower())
    h = [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") for w in words]
    keys = [x % buckets for x in h]
    for a, b in zip(h, h[1:]):
        keys.append(int(_mix(np.array([a], np.uint64), np.array([b], np.uint64))[0]) % buckets)
    return Counter(keys)


def test_ngram_features_match_a_direct_computation():
    texts = ["The cat sat. The cat!", "", None, "Ünïcode wörds, and punctuation!?"]
    rows, keys = ngram_buckets(texts, 997)
    for i, text in enumerate(texts):
        assert Counter(keys[rows == i].tolist()) == manual_features(text or "", 997)
    assert (rows == 0).sum() == 7 + 6  # the cat sat . the cat ! : 7 unigrams, 6 bigrams
    assert (rows == 1).sum() == 0 and (rows == 2).sum() == 0
    # bigrams never cross documents
    rows2, _ = ngram_buckets(["a b", "c"], 50)
    assert sorted(rows2.tolist()) == [0, 0, 0, 1]


def test_log_ratio_is_add_one_smoothed():
    t, r = np.array([3, 0, 1]), np.array([1, 1, 6])
    expect = np.log((t + 1) / (4 + 3)) - np.log((r + 1) / (8 + 3))
    np.testing.assert_allclose(log_ratio(t, r), expect)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsir")
    pool, target = write_pool(root, 60, shards=3, target=40, limit=500)
    return root, pool, target


def test_weights_follow_the_formula_and_select_the_target_domain(corpus, tmp_path):
    root, pool, target = corpus
    result = runner.invoke(app, ["score", str(pool), "-o", str(tmp_path / "s"), "--method", "dsir", "--target", str(target), "--dsir-buckets", "4096"])
    assert result.exit_code == 0, result.output
    ds = open_dataset(tmp_path / "s")
    weights = ds.read_column("dsir").to_numpy()
    # the formula, computed independently
    t_counts, r_counts = Counter(), Counter()
    for text in open_dataset(target).read_column("text").to_pylist():
        t_counts.update(manual_features(text, 4096))
    texts = open_dataset(pool).read_column("text").to_pylist()
    for text in texts:
        r_counts.update(manual_features(text, 4096))
    lr = log_ratio(np.array([t_counts[k] for k in range(4096)]), np.array([r_counts[k] for k in range(4096)]))
    for i in (0, 5, 77, 200):
        feats = manual_features(texts[i], 4096)
        assert abs(weights[i] - sum(c * lr[k] for k, c in feats.items())) < 1e-9
    # planted: the target is held-out science text
    result = runner.invoke(app, ["select", str(tmp_path / "s"), "-o", str(tmp_path / "sel"), "--by", "dsir", "--top-k", "40"])
    assert result.exit_code == 0, result.output
    domains = open_dataset(tmp_path / "sel").read_column("domain").to_pylist()
    assert domains.count("science") >= 32  # random: ~10 of 40
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["scorer"]["prefer"] == "highest" and manifest["scorer"]["fit_rows"] == 240


def test_gumbel_resampling_is_seeded_and_ignores_sharding(corpus, tmp_path):
    root, pool, target = corpus
    one = tmp_path / "one"
    one.mkdir()
    pq.write_table(pa.concat_tables([pq.read_table(p) for p in sorted(pool.glob("*.parquet"))]), one / "all.parquet")
    outs = {}
    for name, src, seed in (("a", pool, 1), ("b", one, 1), ("c", pool, 2)):
        result = runner.invoke(app, ["score", str(src), "-o", str(tmp_path / name), "--method", "dsir", "--target", str(target), "--seed", str(seed)])
        assert result.exit_code == 0, result.output
        outs[name] = open_dataset(tmp_path / name).read_column("dsir_gumbel").to_numpy()
    np.testing.assert_array_equal(outs["a"], outs["b"])
    assert not np.array_equal(outs["a"], outs["c"])
    noise = gumbel_noise(pa.array([f"x{i}" for i in range(20000)]), 0)
    assert abs(noise.mean() - 0.5772) < 0.03 and abs(noise.std() - 1.2825) < 0.05  # standard Gumbel


def test_pool_sample_for_the_raw_model(corpus, tmp_path):
    root, pool, target = corpus
    result = runner.invoke(app, ["score", str(pool), "-o", str(tmp_path / "s"), "--method", "dsir", "--target", str(target), "--pool-size", "50"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["scorer"]["fit_rows"] == 50 and manifest["scorer"]["pool_rows"] == 240


def test_dsir_bad_input(corpus, tmp_path):
    root, pool, target = corpus
    result = runner.invoke(app, ["score", str(pool), "-o", str(tmp_path / "o"), "--method", "dsir"])
    assert result.exit_code == 2 and "--target" in result.output
    no_text = tmp_path / "t"
    no_text.mkdir()
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), no_text / "part-00000.parquet")
    result = runner.invoke(app, ["score", str(pool), "-o", str(tmp_path / "o"), "--method", "dsir", "--target", str(no_text)])
    assert result.exit_code == 1 and "'text'" in result.output and str(no_text) in result.output
    result = runner.invoke(app, ["score", str(pool), "-o", str(tmp_path / "o"), "--method", "dsir", "--target", str(target), "--dsir-buckets", "1"])
    assert result.exit_code == 2 and "--dsir-buckets" in result.output
    assert not (tmp_path / "o").exists()
