"""`delt score --method gotd` on precomputed embeddings: streaming equals the full solve, shard
independence, the planted-domain check, the CLI, and every bad input the issue lists."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from delt_cli.cli.app import app
from delt_cli.dataset import open_dataset
from delt_cli.infra.errors import DeltError
from delt_cli.scoring.gotd.scorer import GOTDScorer, parse_bytes
from delt_cli.scoring.runner import score_dataset
from delt_cli.scoring.gotd.sinkhorn import calibrated_gradient, sinkhorn
from delt_cli.scoring.gotd.vectors import to_arrow

runner = CliRunner()


def write_vectors(directory, matrix, *, shards=1, dtype="float32", column="emb", extra=None):
    directory.mkdir(parents=True, exist_ok=True)
    n = len(matrix)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        lo, hi = bounds[s], bounds[s + 1]
        cols = {"id": [f"r{i}" for i in range(lo, hi)], "text": ["w " * (1 + i % 7) for i in range(lo, hi)], column: to_arrow(matrix[lo:hi], dtype)}
        for name, values in (extra or {}).items():
            cols[name] = values[lo:hi]
        pq.write_table(pa.table(cols), directory / f"part-{s:05d}.parquet")
    return directory


def clusters(rng, n, centers, which, noise=0.35):
    idx = rng.choice(which, size=n)
    z = centers[idx] + rng.normal(size=(n, centers.shape[1])) * noise
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32), idx


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A pool from 4 domains (clusters) and a target drawn from domain 0 only."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 32))
    pool, dom = clusters(rng, 400, centers, [0, 1, 2, 3])
    target, _ = clusters(rng, 40, centers, [0])
    root = tmp_path_factory.mktemp("planted")
    write_vectors(root / "pool", pool, shards=3, extra={"domain": [f"d{d}" for d in dom]})
    write_vectors(root / "target", target)
    return root, pool, target, dom


def read_scores(out, column="gotd"):
    return open_dataset(out).read_column(column).to_numpy()


def test_streaming_scores_equal_the_full_solve(planted, tmp_path):
    root, pool, target, _ = planted
    scorer = GOTDScorer(target=str(root / "target"), pool_size=None, tol=1e-7, max_iter=20_000, ot_dtype="float64")
    score_dataset(root / "pool", tmp_path / "out", scorer)
    got = read_scores(tmp_path / "out", "gotd_potential")
    full = sinkhorn(target, pool, epsilon=0.1, tol=1e-7, max_iter=20_000, momentum=1.3, dtype=torch.float64)
    np.testing.assert_allclose(got, full.g, atol=1e-9)
    np.testing.assert_allclose(read_scores(tmp_path / "out"), calibrated_gradient(full.g, full.g.mean(), len(pool)), atol=1e-9)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    conv = manifest["scorer"]["convergence"]
    assert conv["converged"] and conv["marginal_error"] <= 1e-7 and conv["iterations"] > 0
    assert manifest["scorer"]["epsilon"] == 0.1 and manifest["scorer"]["sample_rows"] == 400


@pytest.mark.parametrize("pool_size", [None, 150])
def test_ranking_does_not_depend_on_sharding(planted, tmp_path, pool_size):
    root, pool, target, dom = planted
    write_vectors(tmp_path / "one", pool, shards=1)
    write_vectors(tmp_path / "seven", pool, shards=7)
    results = []
    for name in ("one", "seven"):
        scorer = GOTDScorer(target=str(root / "target"), pool_size=pool_size, seed=3)
        score_dataset(tmp_path / name, tmp_path / f"{name}-out", scorer)
        results.append(read_scores(tmp_path / f"{name}-out"))
    np.testing.assert_array_equal(np.argsort(results[0], kind="stable"), np.argsort(results[1], kind="stable"))
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)


def test_sampled_solve_agrees_with_full_solve_on_ranking(planted, tmp_path):
    root, pool, target, _ = planted
    full = GOTDScorer(target=str(root / "target"), pool_size=None)
    part = GOTDScorer(target=str(root / "target"), pool_size=200)
    score_dataset(root / "pool", tmp_path / "full", full)
    score_dataset(root / "pool", tmp_path / "part", part)
    a, b = read_scores(tmp_path / "full"), read_scores(tmp_path / "part")
    top_a, top_b = set(np.argsort(a)[:40]), set(np.argsort(b)[:40])
    assert len(top_a & top_b) >= 32  # a half-size sample keeps most of the top 10%
    manifest = json.loads((tmp_path / "part" / "manifest.json").read_text())
    assert manifest["scorer"]["sample_rows"] == 200 and manifest["scorer"]["pool_rows"] == 400


def test_planted_domain_is_selected_and_contrast_avoids_it(planted, tmp_path):
    root, _, _, dom = planted
    result = runner.invoke(app, ["score", str(root / "pool"), "-o", str(tmp_path / "s"), "--method", "gotd", "--target", str(root / "target")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["select", str(tmp_path / "s"), "-o", str(tmp_path / "sel"), "--by", "gotd", "--lowest", "--top-k", "50"])
    assert result.exit_code == 0, result.output
    chosen = open_dataset(tmp_path / "sel").read_column("domain").to_pylist()
    assert chosen.count("d0") >= 45  # random would give ~12 of 50
    # contrast: the same target as a negative target; keep the highest
    result = runner.invoke(app, ["score", str(root / "pool"), "-o", str(tmp_path / "c"), "--method", "gotd", "--target", str(root / "target"), "--contrast"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["scorer"]["columns"] == ["gotd_contrast", "gotd_contrast_potential"] and manifest["scorer"]["prefer"] == "highest"
    result = runner.invoke(app, ["select", str(tmp_path / "c"), "-o", str(tmp_path / "csel"), "--by", "gotd_contrast", "--top-k", "50"])
    assert result.exit_code == 0, result.output
    assert open_dataset(tmp_path / "csel").read_column("domain").to_pylist().count("d0") == 0


def test_relative_epsilon_and_budget_selection(planted, tmp_path):
    root, pool, target, _ = planted
    result = runner.invoke(app, ["score", str(root / "pool"), "-o", str(tmp_path / "s"), "--method", "gotd", "--target", str(root / "target"), "--epsilon-relative", "0.05"])
    assert result.exit_code == 0, result.output
    prov = json.loads((tmp_path / "s" / "manifest.json").read_text())["scorer"]
    cost = ((target[:, None, :].astype(np.float64) - pool[None, :, :]) ** 2).sum(-1)
    assert abs(prov["median_cost"] - np.median(cost)) < 1e-5
    assert abs(prov["epsilon"] - 0.05 * prov["median_cost"]) < 1e-12
    # a token budget (lengths from a column) keeps the best-ranked rows until it is full
    ds = open_dataset(tmp_path / "s")
    lengths = np.array([len(t.split()) for t in ds.read_column("text").to_pylist()])
    score = ds.read_column("gotd").to_numpy()
    table = pa.table({"n_tokens": lengths})
    for shard in ds.shards:  # add a length column in place of `delt score --method length`
        t = pq.read_table(shard.path)
        pq.write_table(t.append_column("n_tokens", table["n_tokens"].slice(int(ds.offsets[ds.shards.index(shard)]), t.num_rows)), shard.path)
    result = runner.invoke(app, ["select", str(tmp_path / "s"), "-o", str(tmp_path / "b"), "--by", "gotd", "--lowest", "--budget-tokens", "300", "--length-column", "n_tokens"])
    assert result.exit_code == 0, result.output
    kept = open_dataset(tmp_path / "b").read_column("id").to_pylist()
    order = np.argsort(score, kind="stable")
    expect = order[: int(np.searchsorted(np.cumsum(lengths[order]), 300, side="right"))]
    assert sorted(kept) == sorted(f"r{i}" for i in expect) and lengths[expect].sum() <= 300
    # a budget larger than the pool keeps everything, with a warning
    result = runner.invoke(app, ["select", str(tmp_path / "s"), "-o", str(tmp_path / "all"), "--by", "gotd", "--lowest", "--budget-tokens", "100000", "--length-column", "n_tokens"])
    assert result.exit_code == 0 and "larger than the pool" in result.output
    assert open_dataset(tmp_path / "all").num_rows == len(pool)


def test_not_converged_warns_and_is_recorded(planted, tmp_path):
    root, *_ = planted
    result = runner.invoke(app, ["score", str(root / "pool"), "-o", str(tmp_path / "s"), "--method", "gotd", "--target", str(root / "target"), "--max-iter", "1", "--tol", "1e-12"])
    assert result.exit_code == 0, result.output
    assert "marginal error" in result.output and "--max-iter" in result.output
    conv = json.loads((tmp_path / "s" / "manifest.json").read_text())["scorer"]["convergence"]
    assert conv["converged"] is False and conv["iterations"] == 1


def test_tiled_and_stored_solves_give_the_same_scores(planted, tmp_path):
    root, *_ = planted
    outs = []
    for mem in ("1GB", "1KB"):
        scorer = GOTDScorer(target=str(root / "target"), max_memory=mem, tol=1e-8, max_iter=20_000, ot_dtype="float64")
        score_dataset(root / "pool", tmp_path / mem, scorer)
        outs.append(read_scores(tmp_path / mem))
        assert scorer.provenance()["convergence"]["cost_matrix"] == ("stored" if mem == "1GB" else "tiled")
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-7)


def test_float16_embeddings_and_resume(planted, tmp_path):
    root, pool, target, _ = planted
    write_vectors(tmp_path / "p16", pool, shards=2, dtype="float16")
    write_vectors(tmp_path / "t16", target, dtype="float16")
    args = ["score", str(tmp_path / "p16"), "-o", str(tmp_path / "s"), "--method", "gotd", "--target", str(tmp_path / "t16")]
    assert runner.invoke(app, args).exit_code == 0
    first = [p.read_bytes() for p in sorted((tmp_path / "s").glob("*.parquet"))]
    result = runner.invoke(app, args + ["--resume"])
    assert result.exit_code == 0 and "already finished" in result.output
    assert [p.read_bytes() for p in sorted((tmp_path / "s").glob("*.parquet"))] == first
    # same inputs and seed -> byte-identical shards
    assert runner.invoke(app, args[:3] + [str(tmp_path / "s2")] + args[4:]).exit_code == 0
    assert [p.read_bytes() for p in sorted((tmp_path / "s2").glob("*.parquet"))] == first


# -- bad input -------------------------------------------------------------------------

def score_cli(pool, target, out, *extra):
    return runner.invoke(app, ["score", str(pool), "-o", str(out), "--method", "gotd", "--target", str(target), *extra])


def test_missing_embedding_column_says_which_command_makes_it(planted, tmp_path):
    root, *_ = planted
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", "y"]}), tmp_path / "raw.parquet")
    result = score_cli(tmp_path / "raw.parquet", root / "target", tmp_path / "o")
    assert result.exit_code == 1 and "'emb'" in result.output and "delt embed" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()
    result = score_cli(root / "pool", tmp_path / "raw.parquet", tmp_path / "o")
    assert result.exit_code == 1 and "delt embed" in result.output and "raw.parquet" in result.output


def test_target_with_fewer_than_two_rows(planted, tmp_path):
    root, _, target, _ = planted
    write_vectors(tmp_path / "t1", target[:1])
    result = score_cli(root / "pool", tmp_path / "t1", tmp_path / "o")
    assert result.exit_code == 1 and "at least 2" in result.output and "1 row" in result.output
    assert not (tmp_path / "o").exists()


def test_dimension_mismatch_names_both(planted, tmp_path):
    root, _, target, _ = planted
    write_vectors(tmp_path / "t8", target[:, :8].copy())
    result = score_cli(root / "pool", tmp_path / "t8", tmp_path / "o")
    assert result.exit_code == 1
    assert "32 dimensions in" in result.output and "but 8 in --target" in result.output and str(tmp_path / "t8") in result.output


def test_nan_embeddings_are_rejected_before_writing(planted, tmp_path):
    root, pool, target, _ = planted
    bad = pool.copy()
    bad[257, 3] = np.nan
    write_vectors(tmp_path / "p", bad, shards=3)
    result = score_cli(tmp_path / "p", root / "target", tmp_path / "o")
    assert result.exit_code == 1 and "NaN" in result.output and "part-00001.parquet" in result.output
    assert not any((tmp_path / "o").glob("*.parquet"))
    bad_t = target.copy()
    bad_t[0, 0] = np.inf
    write_vectors(tmp_path / "t", bad_t)
    result = score_cli(root / "pool", tmp_path / "t", tmp_path / "o2")
    assert result.exit_code == 1 and "--target" in result.output and "infinite" in result.output


def test_flag_errors():
    with pytest.raises(DeltError, match="--target"):
        GOTDScorer(target=None)
    with pytest.raises(DeltError, match="at most one"):
        GOTDScorer(target="t", epsilon=0.1, epsilon_relative=0.1)
    with pytest.raises(DeltError, match="--epsilon -1"):
        GOTDScorer(target="t", epsilon=-1.0)
    with pytest.raises(DeltError, match="--ot-dtype"):
        GOTDScorer(target="t", ot_dtype="float8")
    with pytest.raises(DeltError, match="--max-memory"):
        parse_bytes("lots")
    assert parse_bytes("2GB") == 2 * 10**9 and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("1000") == 1000


def test_divergence_is_an_error(planted, tmp_path):
    """An absurdly small epsilon in float32 cannot be solved: a clear error, no output."""
    root, *_ = planted
    result = score_cli(root / "pool", root / "target", tmp_path / "o", "--epsilon", "1e-30")
    assert result.exit_code == 1 and "epsilon" in result.output
    assert not any((tmp_path / "o").glob("*.parquet"))
