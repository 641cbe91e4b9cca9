"""GOT-D end to end on real text with the real all-MiniLM-L6-v2: embed -> score -> select picks the
target's domain far more often than a random selection does (real subprocesses, as a user runs it)."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from delt_cli.cli.app import app
from delt_cli.dataset import open_dataset
from gotd_corpus import write_pool

pytestmark = [pytest.mark.slow, pytest.mark.assets]


def delt(*args):
    """A real subprocess, as a user runs it."""
    result = subprocess.run([sys.executable, "-m", "delt_cli", *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def delt_inline(*args):
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result


def test_embed_score_select_on_a_mixed_domain_pool(tmp_path):
    pool, target = write_pool(tmp_path, 40, shards=2, target=40, limit=500)
    out = delt("embed", pool, "-o", tmp_path / "pool-emb", "--batch-size", "32")
    assert out.stdout.strip() == str(tmp_path / "pool-emb")
    delt_inline("embed", target, "-o", tmp_path / "target-emb")
    delt("score", tmp_path / "pool-emb", "-o", tmp_path / "scored", "--method", "gotd", "--target", tmp_path / "target-emb", "--epsilon-relative", "0.05", "--tol", "1e-6")
    manifest = json.loads((tmp_path / "scored" / "manifest.json").read_text())
    assert manifest["scorer"]["convergence"]["converged"]
    delt_inline("select", tmp_path / "scored", "-o", tmp_path / "gotd", "--by", "gotd", "--lowest", "--top-k", "40")
    delt_inline("select", tmp_path / "scored", "-o", tmp_path / "random", "--random-r", "0.25", "--seed", "1")
    picked = open_dataset(tmp_path / "gotd").read_column("domain").to_pylist()
    random = open_dataset(tmp_path / "random").read_column("domain").to_pylist()
    assert picked.count("science") >= 30 and picked.count("science") >= 2 * random.count("science")
    delt_inline("stats", tmp_path / "gotd", "--json", tmp_path / "stats.json")
    assert "science" in json.dumps(json.loads((tmp_path / "stats.json").read_text()))
