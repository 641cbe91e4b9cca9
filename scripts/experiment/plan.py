"""An experiment config (configs/experiments/*.yaml) expanded into shell commands.

The config names every step as a `delt` command line with `{placeholders}`:

    name: delt                      # work directory runs/<name>, results/<name>.md
    seeds: [0, 1, 2]
    vars: {corpus: data/corpus/demo}
    steps:                          # shared steps, run once, in this order; {out} is the step's directory
      ppl: delt score {corpus}/train -o {out} --method perplexity ...
    cells:                          # one data recipe per cell: {out} is the training dataset
      shuffle: {data: "delt order {corpus}/train -o {out} --method shuffle --seed {seed}"}
      sort: {data: "delt order {ppl} -o {out} --method sort --by ppl_nll", label: "ppl, sort"}
    train: delt train {data} -o {run} --config ... --seed {seed}
    eval: delt eval {run} --tasks heldout --heldout {corpus}/heldout --group-by domain

A cell's data command that mentions {seed} is run once per seed (a shuffle), otherwise once for
all seeds. Every (cell, seed) gets its own run directory `runs/<name>/runs/<cell>/seed<k>`.
Placeholders: the vars, the names of earlier steps (their output directories), {out}, {seed},
{data}, {run}, {work} and {python}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from delt_cli.infra.config import load_config
from delt_cli.infra.errors import UsageError

TOP_KEYS = {"name", "description", "seeds", "jobs", "run_seconds", "vars", "steps", "cells", "train", "eval", "results"}
CELL_KEYS = {"data", "label", "seeds", "train", "eval", "base"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
FIELD = re.compile(r"{([A-Za-z0-9_.-]+)}")


@dataclass(frozen=True)
class Command:
    """One shell command and the directory (or file) it produces."""

    key: str  # unique name, also the name of its stamp and log
    cmd: str
    out: Path
    deps: tuple[str, ...] = ()  # keys of the shared steps whose outputs it reads


@dataclass
class Unit:
    """The commands of one (cell, seed) run, in order: data (when per-seed), train, eval."""

    cell: str
    seed: int
    commands: list[Command]
    run_dir: Path
    data_dir: Path

    @property
    def deps(self) -> tuple[str, ...]:
        own = {c.key for c in self.commands}
        return tuple(sorted({d for c in self.commands for d in c.deps} - own))


@dataclass
class Experiment:
    name: str
    path: Path
    work: Path
    seeds: list[int]
    jobs: int
    run_seconds: float
    vars: dict[str, str]
    steps: list[Command]  # shared steps and per-cell shared data, in order
    units: list[Unit]  # per (cell, seed), seed-major: every cell's first seed comes first
    cells: dict[str, dict]
    results: dict = field(default_factory=dict)
    description: str = ""


def _deps(template: str, step_keys: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted({step_keys[m.group(1)] for m in FIELD.finditer(str(template)) if m.group(1) in step_keys}))


def _fill(template: str, values: dict[str, str], where: str) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in values:
            raise UsageError(f"{where}: unknown placeholder {{{name}}} (known: {', '.join(sorted(values))})")
        return str(values[name])

    return FIELD.sub(sub, " ".join(str(template).split()))


def load_experiment(path: str | Path, *, work_root: Path = Path("runs"), seeds: Optional[list[int]] = None, cells: Optional[list[str]] = None) -> Experiment:
    """Read and check an experiment config; expand every command (nothing is run).

    In order: the config's keys and name, the variables, the shared steps, the cells (only the
    chosen ones with --cells), the commands of every (cell, seed) unit, and, with --cells, only
    the shared steps those units need."""
    path = Path(path)
    raw = read_config(path)
    name = str(raw["name"])
    work = work_root / name
    values = expand_vars(raw.get("vars") or {}, work, where=str(path))
    steps, values, step_keys = shared_steps(raw.get("steps") or {}, work, values, where=str(path))
    all_seeds = [int(s) for s in (seeds if seeds is not None else raw.get("seeds") or [0])]
    table = check_cells(raw["cells"], where=str(path), chosen=cells)
    steps += shared_data_steps(table, work, values, step_keys, where=str(path))
    units = expand_units(table, all_seeds, work, values, step_keys, train=raw["train"], evaluate=raw.get("eval"), where=str(path))
    if cells:
        steps = needed_steps(steps, units)
    return Experiment(
        name=name,
        path=path,
        work=work,
        seeds=all_seeds,
        jobs=int(raw.get("jobs", 1)),
        run_seconds=float(raw.get("run_seconds", 120)),
        vars=values,
        steps=steps,
        units=units,
        cells=table,
        results=dict(raw.get("results") or {}),
        description=str(raw.get("description", "")).strip(),
    )


def read_config(path: Path) -> dict:
    """The config's mapping, after checking its top-level keys, the required ones and the name."""
    if not path.is_file():
        raise UsageError(f"{path}: no such experiment config")
    raw = load_config(path)
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(TOP_KEYS))})")
    for key in ("name", "cells", "train"):
        if key not in raw:
            raise UsageError(f"{path}: missing key '{key}'")
    name = str(raw["name"])
    if not NAME.match(name):
        raise UsageError(f"{path}: name {name!r} must be letters, digits, '-', '_' or '.'")
    return raw


def expand_vars(variables: dict, work: Path, *, where: str) -> dict[str, str]:
    """{work}, {python} and the config's vars, each filled in with the ones before it."""
    values: dict[str, str] = {"work": str(work), "python": "python"}
    for k, v in variables.items():
        values[k] = _fill(str(v), values, f"{where}: vars.{k}")
    return values


def shared_steps(spec: dict, work: Path, values: dict[str, str], *, where: str) -> tuple[list[Command], dict[str, str], dict[str, str]]:
    """(the shared steps in config order, the values plus each step's output directory under its
    name, placeholder -> key of the step that writes it)."""
    values = dict(values)
    steps: list[Command] = []
    step_keys: dict[str, str] = {}
    for key, cmd in spec.items():
        if not NAME.match(key):
            raise UsageError(f"{where}: step name {key!r} must be letters, digits, '-', '_' or '.'")
        if key in values:
            raise UsageError(f"{where}: step {key!r} shadows a variable of the same name")
        out = work / "steps" / key
        steps.append(Command(f"step-{key}", _fill(cmd, {**values, "out": out}, f"{where}: steps.{key}"), out, _deps(cmd, step_keys)))
        values[key] = str(out)
        step_keys[key] = f"step-{key}"
    return steps, values, step_keys


def check_cells(spec: dict, *, where: str, chosen: Optional[list[str]] = None) -> dict[str, dict]:
    """cell -> its spec (a bare string is the data command); with `chosen` (--cells), only those
    cells, in config order."""
    table: dict[str, dict] = {}
    for cell, cell_spec in spec.items():
        if not NAME.match(cell):
            raise UsageError(f"{where}: cell name {cell!r} must be letters, digits, '-', '_' or '.'")
        cell_spec = {"data": cell_spec} if isinstance(cell_spec, str) else dict(cell_spec or {})
        bad = set(cell_spec) - CELL_KEYS
        if bad:
            raise UsageError(f"{where}: cells.{cell}: unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(CELL_KEYS))})")
        if "data" not in cell_spec:
            raise UsageError(f"{where}: cells.{cell}: missing 'data' (the command that writes the training dataset to {{out}})")
        table[cell] = cell_spec
    if chosen:
        missing = [c for c in chosen if c not in table]
        if missing:
            raise UsageError(f"--cells: unknown cell(s) {', '.join(missing)} (known: {', '.join(table)})")
        table = {c: table[c] for c in table if c in chosen}
    return table


def shared_data_steps(table: dict[str, dict], work: Path, values: dict[str, str], step_keys: dict[str, str], *, where: str) -> list[Command]:
    """One `data-<cell>` step for each cell whose data command does not mention {seed}: its
    dataset is written once and shared by all seeds."""
    steps = []
    for cell, spec in table.items():
        if "{seed}" not in spec["data"]:
            out = work / "data" / cell
            steps.append(Command(f"data-{cell}", _fill(spec["data"], {**values, "out": out}, f"{where}: cells.{cell}.data"), out, _deps(spec["data"], step_keys)))
    return steps


def expand_units(
    table: dict[str, dict],
    seeds: list[int],
    work: Path,
    values: dict[str, str],
    step_keys: dict[str, str],
    *,
    train: str,
    evaluate: Optional[str],
    where: str,
) -> list[Unit]:
    """The (cell, seed) units, seed-major; a cell with its own `seeds` runs only those of `seeds`.
    `train` and `evaluate` are the config's commands, which a cell's own train/eval replace."""
    per_cell_seeds = {c: [s for s in seeds if s in [int(x) for x in spec.get("seeds", seeds)]] for c, spec in table.items()}
    return [
        _unit(cell, spec, seed, work, values, step_keys, train=train, evaluate=evaluate, where=where)
        for seed in seeds
        for cell, spec in table.items()
        if seed in per_cell_seeds[cell]
    ]


def _unit(cell: str, spec: dict, seed: int, work: Path, values: dict[str, str], step_keys: dict[str, str], *, train: str, evaluate: Optional[str], where: str) -> Unit:
    """The commands of one (cell, seed): its data (when the data command is per seed), train, eval."""
    where = f"{where}: cells.{cell}"
    commands = []
    if "{seed}" in spec["data"]:
        data = work / "data" / cell / f"seed{seed}"
        commands.append(Command(f"data-{cell}-seed{seed}", _fill(spec["data"], {**values, "out": data, "seed": seed}, where + ".data"), data, _deps(spec["data"], step_keys)))
        data_dep: tuple[str, ...] = ()
    else:
        data = work / "data" / cell
        data_dep = (f"data-{cell}",)
    run = work / "runs" / cell / f"seed{seed}"
    local = {**values, "data": data, "run": run, "seed": seed, "cell": cell}
    train, evaluate = spec.get("train", train), spec.get("eval", evaluate)
    commands.append(Command(f"train-{cell}-seed{seed}", _fill(train, local, where + ".train"), run, _deps(train, step_keys) + data_dep))
    if evaluate:
        commands.append(Command(f"eval-{cell}-seed{seed}", _fill(evaluate, local, where + ".eval"), run / "eval.json", _deps(evaluate, step_keys)))
    return Unit(cell, seed, commands, run, data)


def needed_steps(steps: list[Command], units: list[Unit]) -> list[Command]:
    """Only the steps the units need, directly or through other steps, plus every shared data
    step (used when --cells chose some of the cells); config order is kept."""
    by_key = {c.key: c for c in steps}
    needed: set[str] = set()
    stack = [d for u in units for d in u.deps] + [c.key for c in steps if c.key.startswith("data-")]
    while stack:
        key = stack.pop()
        if key in needed or key not in by_key:
            continue
        needed.add(key)
        stack.extend(by_key[key].deps)
    return [c for c in steps if c.key in needed]
