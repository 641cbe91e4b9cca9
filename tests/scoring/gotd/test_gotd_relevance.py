"""GOT-D domain relevance: `delt fit --method gotd --group-by domain` solves OT between the target
and each group of the pool and reports the transport cost <P, C> per group (nearest first), on
stderr and in the artifact's manifest; checked against POT's Sinkhorn, on planted clusters, and on
real text embedded with all-MiniLM-L6-v2 (science nearest to a science target)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delt_cli.scoring.gotd.vectors import to_arrow
from conftest import delt
from gotd_corpus import write_pool


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Three domains as clusters at growing distance from the target's cluster."""
    rng = np.random.default_rng(4)
    centre = rng.normal(size=12)
    away = rng.normal(size=12)
    away /= np.linalg.norm(away)
    root = tmp_path_factory.mktemp("rel")
    rows, domains = [], []
    for name, shift, n in (("near", 0.2, 40), ("middle", 1.0, 60), ("far", 2.5, 50)):
        rows.append(centre + shift * away + rng.normal(size=(n, 12)) * 0.3)
        domains += [name] * n
    pool = np.concatenate(rows).astype(np.float32)
    perm = rng.permutation(len(pool))
    pool, domains = pool[perm], [domains[i] for i in perm]
    target = (centre + rng.normal(size=(25, 12)) * 0.3).astype(np.float32)
    (root / "pool").mkdir()
    for s, (lo, hi) in enumerate(((0, 70), (70, 150))):
        pq.write_table(pa.table({"id": [f"r{i}" for i in range(lo, hi)], "domain": domains[lo:hi], "emb": to_arrow(pool[lo:hi])}), root / "pool" / f"part-{s:05d}.parquet")
    (root / "target").mkdir()
    pq.write_table(pa.table({"id": [f"t{i}" for i in range(25)], "emb": to_arrow(target)}), root / "target" / "part-00000.parquet")
    return root, pool, np.asarray(domains), target


def test_groups_are_ranked_by_ot_distance_and_match_pot(planted, tmp_path):
    ot = pytest.importorskip("ot")
    root, pool, domains, target = planted
    result = delt("fit", root / "pool", "-o", tmp_path / "fit", "--method", "gotd", "--target", root / "target",
                  "--group-by", "domain", "--epsilon", "0.5", "--ot-dtype", "float64", "--tol", "1e-9", "--max-iter", "20000")
    assert "GOT-D domain relevance" in result.output and "near" in result.output
    rel = json.loads((tmp_path / "fit" / "fit.json").read_text())["report"]["domain_relevance"]
    assert [r["group"] for r in rel] == ["near", "middle", "far"]
    assert [r["rows"] for r in rel] == [40, 60, 50] and all(r["converged"] for r in rel)
    for r in rel:  # the same plan from an independent solver
        y = pool[domains == r["group"]].astype(np.float64)
        cost = ((target[:, None, :].astype(np.float64) - y[None, :, :]) ** 2).sum(-1)
        plan = ot.sinkhorn(np.full(len(target), 1 / len(target)), np.full(len(y), 1 / len(y)), cost, 0.5, method="sinkhorn_log", stopThr=1e-12, numItermax=100000)
        assert r["ot_distance"] == pytest.approx(float((plan * cost).sum()), rel=1e-6)


def test_relevance_in_the_score_manifest_and_per_group_sample(planted, tmp_path):
    root, pool, domains, target = planted
    delt("score", root / "pool", "-o", tmp_path / "s", "--method", "gotd", "--target", root / "target", "--group-by", "domain", "--pool-size", "45")
    report = json.loads((tmp_path / "s" / "manifest.json").read_text())["report"]["domain_relevance"]
    assert [r["group"] for r in report][0] == "near"
    assert {r["group"]: r["sample_rows"] for r in report} == {"near": 40, "middle": 45, "far": 45}


def test_group_by_bad_input(planted, tmp_path):
    root, *_ = planted
    result = delt("fit", root / "pool", "-o", tmp_path / "f", "--method", "gotd", "--target", root / "target", "--group-by", "topic", ok=False)
    assert result.exit_code == 1 and "--group-by" in result.output and "'topic'" in result.output and not (tmp_path / "f").exists()
    (tmp_path / "nulls").mkdir()
    t = pq.read_table(root / "pool" / "part-00000.parquet")
    pq.write_table(t.set_column(1, "domain", pa.array([None] * t.num_rows, pa.string())), tmp_path / "nulls" / "part-00000.parquet")
    result = delt("fit", tmp_path / "nulls", "-o", tmp_path / "f", "--method", "gotd", "--target", root / "target", "--group-by", "domain", ok=False)
    assert result.exit_code == 1 and "null" in result.output and not (tmp_path / "f").exists()


@pytest.mark.slow
@pytest.mark.assets
def test_science_is_nearest_to_a_science_target_on_real_text(tmp_path):
    pool, target = write_pool(tmp_path, 25, shards=2, target=25, limit=500)
    delt("embed", pool, "-o", tmp_path / "pool-emb")
    delt("embed", target, "-o", tmp_path / "target-emb")
    delt("fit", tmp_path / "pool-emb", "-o", tmp_path / "fit", "--method", "gotd", "--target", tmp_path / "target-emb", "--group-by", "domain")
    rel = json.loads((tmp_path / "fit" / "fit.json").read_text())["report"]["domain_relevance"]
    assert rel[0]["group"] == "science" and len(rel) == 4, rel
    assert rel[0]["ot_distance"] < 0.9 * rel[1]["ot_distance"]
