"""scripts/demo.sh (what `make demo` runs) end to end on the tiny corpus preset with a few steps."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainkit import REPO, task_dir  # noqa: E402

pytestmark = pytest.mark.assets


def test_demo_runs_end_to_end_and_reports_both_recipes(tmp_path):
    tasks = task_dir("sciq", "arc_easy")
    env = {
        **os.environ,
        "BIN": str(Path(sys.executable).parent),
        "DEMO_PRESET": "tiny",
        "DEMO_CORPUS": str(tmp_path / "corpus"),
        "DEMO_OUT": str(tmp_path / "demo"),
        "DEMO_STEPS": "4",
        "DEMO_LIMIT": "10",
        "DELT_TASKS": str(tasks),
    }
    result = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "demo" / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| random 50% shuffled |") and rows[2].startswith("| DELT: ppl top 50% + folding |")
    assert "heldout loss" in rows[0] and "sciq" in rows[0]
    assert "demo finished in" in result.stderr and result.stdout == ""
    # the DELT data is the grouped-folded lowest-perplexity half: half of every domain
    import polars as pl

    delt = pl.read_parquet(str(tmp_path / "demo" / "delt-data" / "*.parquet"))
    pool = pl.read_parquet(str(tmp_path / "corpus" / "train" / "*.parquet"))
    assert delt.height == sum(n // 2 for n in pool.group_by("domain").len()["len"].to_list())
