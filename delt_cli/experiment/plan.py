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

from delt_cli.config import load_config
from delt_cli.errors import UsageError

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
    """Read and check an experiment config; expand every command (nothing is run)."""
    path = Path(path)
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
    work = work_root / name
    values: dict[str, str] = {"work": str(work), "python": "python"}
    for k, v in (raw.get("vars") or {}).items():
        values[k] = _fill(str(v), values, f"{path}: vars.{k}")

    steps: list[Command] = []
    step_keys: dict[str, str] = {}  # placeholder -> key of the step that writes it
    for key, cmd in (raw.get("steps") or {}).items():
        if not NAME.match(key):
            raise UsageError(f"{path}: step name {key!r} must be letters, digits, '-', '_' or '.'")
        if key in values:
            raise UsageError(f"{path}: step {key!r} shadows a variable of the same name")
        out = work / "steps" / key
        steps.append(Command(f"step-{key}", _fill(cmd, {**values, "out": out}, f"{path}: steps.{key}"), out, _deps(cmd, step_keys)))
        values[key] = str(out)
        step_keys[key] = f"step-{key}"

    all_seeds = [int(s) for s in (seeds if seeds is not None else raw.get("seeds") or [0])]
    table: dict[str, dict] = {}
    for cell, spec in raw["cells"].items():
        if not NAME.match(cell):
            raise UsageError(f"{path}: cell name {cell!r} must be letters, digits, '-', '_' or '.'")
        spec = {"data": spec} if isinstance(spec, str) else dict(spec or {})
        bad = set(spec) - CELL_KEYS
        if bad:
            raise UsageError(f"{path}: cells.{cell}: unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(CELL_KEYS))})")
        if "data" not in spec:
            raise UsageError(f"{path}: cells.{cell}: missing 'data' (the command that writes the training dataset to {{out}})")
        table[cell] = spec
    if cells:
        missing = [c for c in cells if c not in table]
        if missing:
            raise UsageError(f"--cells: unknown cell(s) {', '.join(missing)} (known: {', '.join(table)})")
        table = {c: table[c] for c in table if c in cells}

    units: list[Unit] = []
    per_cell_seeds = {c: [s for s in all_seeds if s in [int(x) for x in spec.get("seeds", all_seeds)]] for c, spec in table.items()}
    for cell, spec in table.items():
        if "{seed}" not in spec["data"]:
            out = work / "data" / cell
            steps.append(Command(f"data-{cell}", _fill(spec["data"], {**values, "out": out}, f"{path}: cells.{cell}.data"), out, _deps(spec["data"], step_keys)))
    for seed in all_seeds:
        for cell, spec in table.items():
            if seed not in per_cell_seeds[cell]:
                continue
            where = f"{path}: cells.{cell}"
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
            train, evaluate = spec.get("train", raw["train"]), spec.get("eval", raw.get("eval"))
            commands.append(Command(f"train-{cell}-seed{seed}", _fill(train, local, where + ".train"), run, _deps(train, step_keys) + data_dep))
            if evaluate:
                commands.append(Command(f"eval-{cell}-seed{seed}", _fill(evaluate, local, where + ".eval"), run / "eval.json", _deps(evaluate, step_keys)))
            units.append(Unit(cell, seed, commands, run, data))
    if cells:  # only the shared steps the chosen cells need (directly or through other steps)
        by_key = {c.key: c for c in steps}
        needed: set[str] = set()
        stack = [d for u in units for d in u.deps] + [c.key for c in steps if c.key.startswith("data-")]
        while stack:
            key = stack.pop()
            if key in needed or key not in by_key:
                continue
            needed.add(key)
            stack.extend(by_key[key].deps)
        steps = [c for c in steps if c.key in needed]
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
