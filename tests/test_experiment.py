"""scripts/reproduce.py and delt_cli.experiment: a small experiment end to end, reruns, bad configs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from trainkit import REPO, corpus  # noqa: E402

from delt_cli.errors import DeltError, UsageError  # noqa: E402
from delt_cli.experiment.plan import load_experiment  # noqa: E402
from delt_cli.experiment.results import write_results  # noqa: E402
from delt_cli.experiment.runner import estimate, run_experiment  # noqa: E402

pytestmark = pytest.mark.assets

CONFIG = """
name: mini
seeds: [0, 1]
jobs: 2
vars:
  pool: {pool}
steps:
  scored: delt score {{pool}} -o {{out}} --method length
cells:
  shuffle: {{label: random order, data: "delt order {{pool}} -o {{out}} --method shuffle --seed {{seed}}"}}
  sort: {{label: longest last, data: "delt order {{scored}} -o {{out}} --method sort --by n_chars"}}
  gfold: {{data: "delt order {{scored}} -o {{out}} --method folding --by n_chars --folds 2 --group-by domain", seeds: [0]}}
train: >-
  delt train {{data}} -o {{run}} --model llama-tiny --tokenizer gpt2 --seq-len 32 --batch-size 2
  --max-steps 3 --lr 3e-3 --warmup-steps 1 --save-every 0 --seed {{seed}}
eval: delt eval {{run}} --tasks heldout --heldout {pool} --group-by domain --limit 8
results:
  baseline: shuffle
  scores:
    length: {{data: scored, column: n_chars}}
  order_plots:
    gfold: n_chars
"""


def reproduce(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "reproduce.py"), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    pool = corpus(root / "pool", n=24)
    config = root / "mini.yaml"
    config.write_text(CONFIG.format(pool=pool))
    result = reproduce(config, "--work", root / "runs", "-o", root / "results" / "mini.md", cwd=root)
    assert result.returncode == 0, result.stderr
    return root, config, result


def test_every_cell_and_seed_is_trained_evaluated_and_reported(finished):
    root, config, result = finished
    assert result.stdout.strip() == str(root / "results" / "mini.md")
    exp = load_experiment(config, work_root=root / "runs")
    assert [(u.cell, u.seed) for u in exp.units] == [("shuffle", 0), ("sort", 0), ("gfold", 0), ("shuffle", 1), ("sort", 1)]
    for unit in exp.units:
        out = json.loads((unit.run_dir / "eval.json").read_text())
        assert out["tasks"]["heldout"]["loss"] > 0
    # the shuffle is per seed, the sort is shared by both seeds
    assert (root / "runs/mini/data/shuffle/seed0").is_dir() and (root / "runs/mini/data/shuffle/seed1").is_dir()
    assert (root / "runs/mini/data/sort/manifest.json").exists()
    text = (root / "results" / "mini.md").read_text()
    assert "5 of 5 runs finished" in text
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            rows.setdefault(line.split(" | ")[0], line)  # the first table: one row per cell
    assert "| random order | 2 |" in rows["| `shuffle`"] and "| 1 |" in rows["| `gfold`"]
    for name in ("grid", "domains", "loss", "scores", "order"):
        assert (root / "results" / f"mini-{name}.png").stat().st_size > 5000


def test_a_rerun_skips_finished_work_and_a_changed_command_is_refused(finished):
    root, config, _ = finished
    exp = load_experiment(config, work_root=root / "runs")
    assert "0 shared step(s) and 0 of 5 training run(s) to do" in estimate(exp, 2)
    stamp = root / "runs/mini/stamps/train-sort-seed0.json"
    before = stamp.stat().st_mtime_ns
    rerun = reproduce(config, "--work", root / "runs", "-o", root / "results" / "again.md", cwd=root)
    assert rerun.returncode == 0, rerun.stderr
    assert stamp.stat().st_mtime_ns == before and "start" not in rerun.stderr
    changed = root / "changed.yaml"
    changed.write_text(config.read_text().replace("--max-steps 3", "--max-steps 4"))
    refused = reproduce(changed, "--work", root / "runs", cwd=root)
    assert refused.returncode == 1 and "command of train-" in refused.stderr and "changed since it ran" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_failing_step_names_its_log_and_a_rerun_retries_it(tmp_path):
    pool = corpus(tmp_path / "pool", n=8)
    config = tmp_path / "bad.yaml"
    config.write_text(CONFIG.format(pool=pool).replace("--method length", "--method nosuch"))
    exp = load_experiment(config, work_root=tmp_path / "runs")
    with pytest.raises(DeltError, match=r"step-scored failed \(exit 2\); log .*step-scored.log.*nosuch"):
        run_experiment(exp, jobs=1)
    assert not (tmp_path / "runs/mini/stamps/step-scored.json").exists()
    # the shuffle cells do not read the failed step and may have finished; the report says what is missing
    path = write_results(exp, tmp_path / "r.md")
    assert "| `sort` | longest last | not run yet |" in path.read_text()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.replace("name: mini", "name: mini\nbogus: 1"), "unknown key(s) bogus"),
        (lambda c: c.replace("{{out}} --method length", "{{out}} --method {{nope}}"), "unknown placeholder {nope}"),
        (lambda c: c.replace("seeds: [0]}", "seed: [0]}"), "cells.gfold: unknown key(s) seed"),
        (lambda c: c.replace("train: >-", "training: >-"), "unknown key(s) training"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, edit, message):
    config = tmp_path / "bad.yaml"
    config.write_text(edit(CONFIG).format(pool=tmp_path))
    with pytest.raises(UsageError) as err:
        load_experiment(config, work_root=tmp_path)
    assert message in str(err.value)
    result = reproduce(config, "--dry-run", cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_chosen_cells_bring_only_the_steps_they_need(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(pool=tmp_path))
    assert [c.key for c in load_experiment(config, cells=["shuffle"]).steps] == []
    assert [c.key for c in load_experiment(config, cells=["sort"]).steps] == ["step-scored", "data-sort"]
    assert [(u.cell, u.seed) for u in load_experiment(config, cells=["gfold", "shuffle"], seeds=[1]).units] == [("shuffle", 1)]


def test_unknown_cell_and_missing_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(pool=tmp_path))
    with pytest.raises(UsageError, match="--cells: unknown cell"):
        load_experiment(config, cells=["nope"])
    with pytest.raises(UsageError, match="no such experiment config"):
        load_experiment(tmp_path / "missing.yaml")


def test_the_shipped_experiments_expand(tmp_path):
    paths = [p for p in sorted((REPO / "configs" / "experiments").glob("*.yaml")) if not p.name.endswith("-train.yaml")]
    assert {p.stem for p in paths} >= {"delt", "gotd"}  # the loop below checks something
    for path in paths:
        exp = load_experiment(path, work_root=tmp_path)
        assert exp.units and all(c.cmd.startswith(("delt ", "python ")) for c in exp.steps)
