"""scripts/reproduce.py and experiment: a small experiment end to end, reruns, bad configs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainkit import REPO, corpus  # noqa: E402

from delt_cli.infra.errors import DeltError, UsageError  # noqa: E402
from experiment.plan import check_cells, expand_units, expand_vars, load_experiment, needed_steps, shared_data_steps, shared_steps  # noqa: E402
from experiment.results import render, summarize, write_results  # noqa: E402
from experiment.runner import estimate, run_experiment  # noqa: E402

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


# the pieces of load_experiment and write_results, on their own (no commands are run)

def test_variables_and_shared_steps_expand_in_order_and_record_what_they_read():
    work = Path("W/e")
    values = expand_vars({"corpus": "/c", "scratch": "{work}/tmp"}, work, where="x.yaml")
    assert values == {"work": "W/e", "python": "python", "corpus": "/c", "scratch": "W/e/tmp"}
    steps, filled, keys = shared_steps({"a": "delt score {corpus} -o {out}", "b": "delt order {a} -o {out}"}, work, values, where="x.yaml")
    assert [(c.key, c.cmd, c.out, c.deps) for c in steps] == [
        ("step-a", "delt score /c -o W/e/steps/a", work / "steps/a", ()),
        ("step-b", "delt order W/e/steps/a -o W/e/steps/b", work / "steps/b", ("step-a",)),
    ]
    assert filled == {**values, "a": "W/e/steps/a", "b": "W/e/steps/b"} and keys == {"a": "step-a", "b": "step-b"}
    assert "a" not in values  # the caller's values are left alone
    with pytest.raises(UsageError, match=r"x.yaml: steps.a: unknown placeholder \{b\}"):  # a step reads only earlier steps
        shared_steps({"a": "delt order {b} -o {out}", "b": "delt score {corpus} -o {out}"}, work, values, where="x.yaml")
    with pytest.raises(UsageError, match="x.yaml: step 'corpus' shadows a variable"):
        shared_steps({"corpus": "delt score /c -o {out}"}, work, values, where="x.yaml")
    with pytest.raises(UsageError, match=r"x.yaml: vars.b: unknown placeholder \{a\}"):  # a variable reads only earlier ones
        expand_vars({"b": "{a}/x", "a": "/a"}, work, where="x.yaml")


def test_cells_units_and_the_steps_they_need():
    work = Path("W/e")
    steps, values, keys = shared_steps({"a": "delt score /c -o {out}", "b": "delt score /c -o {out}"}, work, expand_vars({}, work, where="x"), where="x")
    spec = {
        "shuf": "delt order /c -o {out} --seed {seed}",  # a bare string is the data command; per seed
        "sort": {"data": "delt order {a} -o {out}", "seeds": [1], "eval": None},  # shared data; seed 1 only; no eval
        "mine": {"data": "delt order /c -o {out}", "train": "delt train {data} -o {run} --from {b}"},
    }
    table = check_cells(spec, where="x")
    assert table["shuf"] == {"data": spec["shuf"]} and list(table) == ["shuf", "sort", "mine"]
    assert list(check_cells(spec, where="x", chosen=["mine", "shuf"])) == ["shuf", "mine"]  # config order
    data = shared_data_steps(table, work, values, keys, where="x")
    assert [(c.key, c.deps) for c in data] == [("data-sort", ("step-a",)), ("data-mine", ())]
    units = expand_units(table, [0, 1], work, values, keys, train="delt train {data} -o {run} --seed {seed}", evaluate="delt eval {run}", where="x")
    assert [(u.cell, u.seed, [c.key for c in u.commands]) for u in units] == [
        ("shuf", 0, ["data-shuf-seed0", "train-shuf-seed0", "eval-shuf-seed0"]),
        ("mine", 0, ["train-mine-seed0", "eval-mine-seed0"]),
        ("shuf", 1, ["data-shuf-seed1", "train-shuf-seed1", "eval-shuf-seed1"]),
        ("sort", 1, ["train-sort-seed1"]),
        ("mine", 1, ["train-mine-seed1", "eval-mine-seed1"]),
    ]
    shuf0, mine0, sort1 = units[0], units[1], units[3]
    assert shuf0.data_dir == work / "data/shuf/seed0" and shuf0.commands[0].cmd == "delt order /c -o W/e/data/shuf/seed0 --seed 0"
    assert shuf0.deps == () and sort1.deps == ("data-sort",) and mine0.deps == ("data-mine", "step-b")
    assert mine0.commands[0].cmd == "delt train W/e/data/mine -o W/e/runs/mine/seed0 --from W/e/steps/b"
    # pruning: the chosen units' steps, the steps those read, and the shared data steps
    assert [c.key for c in needed_steps(steps + data, [shuf0])] == ["step-a", "data-sort", "data-mine"]
    assert [c.key for c in needed_steps(steps + data[1:], [shuf0])] == ["data-mine"]
    assert [c.key for c in needed_steps(steps + data[1:], [mine0])] == ["step-b", "data-mine"]


def heldout(loss, **groups):
    return {"tasks": {"heldout": {"loss": loss, "groups": {g: {"loss": v} for g, v in groups.items()}}}}


def test_summary_pairs_each_seed_with_the_baseline_and_the_table_reports_unrun_cells(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(pool=tmp_path))
    exp = load_experiment(config, work_root=tmp_path / "runs")
    exp.results["tasks"] = ["arc"]
    runs = {
        "shuffle": {0: heldout(3.0, a=3.5, b=2.5), 1: heldout(3.2, a=3.7, b=2.7)},
        "sort": {0: heldout(2.9, a=3.0, b=2.8), 1: heldout(3.4, a=3.6)},  # seed 1 has no group b
        "gfold": {},
    }
    runs["sort"][0]["tasks"]["arc"] = {"score": 0.25}
    ref = heldout(2.5, a=2.4)
    ref["tasks"]["arc"] = {"score": 0.5}
    s = summarize(exp, runs, {"big model": ref, "later": None})
    assert (s.baseline, s.groups, s.tasks, s.finished) == ("shuffle", ["a", "b"], ["arc"], 4)
    shuffle, sort, gfold = s.cells
    assert sort.paired["pooled"] == pytest.approx([-0.1, 0.2]) and sort.paired["a"] == pytest.approx([-0.5, -0.1]) and sort.paired["b"] == pytest.approx([0.3])
    assert shuffle.paired["pooled"] == [0.0, 0.0] and sort.tasks == {"arc": [25.0]} and sort.groups["b"] == [2.8]
    assert (gfold.seeds, gfold.losses, gfold.paired["pooled"]) == (0, [], [])
    assert [(r.label, r.finished, r.loss, r.groups, r.tasks) for r in s.reference] == [("big model", True, 2.5, {"a": 2.4, "b": None}, {"arc": 50.0}), ("later", False, None, {}, {})]

    text = render(exp, s, [("grid", tmp_path / "c-grid.png")], command="make it")
    lines = text.splitlines()
    assert "4 of 5 runs finished; seeds 0, 1" in text and "by `make it`" in text
    assert "| cell | recipe | seeds | held-out loss | Δ loss | a | b | arc |" in lines
    assert "| `shuffle` | random order | 2 | 3.100 ± 0.141 | – | 3.600 ± 0.141 | 2.600 ± 0.141 | – |" in lines
    assert "| `sort` | longest last | 2 | 3.150 ± 0.354 | 0.050 ± 0.212 | 3.300 ± 0.424 | 2.800 | 25.0 |" in lines
    assert "| `gfold` | gfold | not run yet | – | – | – | – | – |" in lines
    assert "| `sort` | 0.050 ± 0.212 | -0.300 ± 0.283 | 0.300 |" in lines  # the per-domain table; no row for gfold or the baseline
    assert sum(line.startswith("| `shuffle`") for line in lines) == 1
    assert "| big model | 2.500 | 2.400 | – | 50.0 |" in lines and "| later | not run yet | | | |" in lines
    assert "![grid](c-grid.png)" in lines


def test_the_per_domain_plot_takes_runs_that_lack_a_domain(tmp_path):
    from experiment.results import _plots

    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(pool=tmp_path))
    exp = load_experiment(config, work_root=tmp_path / "runs")
    runs = {
        "shuffle": {0: heldout(3.0, a=3.5, b=2.5), 1: heldout(3.2, a=3.7, b=2.7)},
        "sort": {0: heldout(2.9, a=3.0, b=2.8), 1: heldout(3.4, a=3.6)},  # seed 1 has no group b (it raised KeyError)
        "gfold": {},
    }
    made = dict(_plots(exp, runs, tmp_path / "r.md", "shuffle", ["a", "b"]))
    assert made["per-domain Δ"].stat().st_size > 1000
