"""Run an expanded experiment: shared steps in order, then (cell, seed) units on a few workers.

Every finished command leaves a stamp `runs/<name>/stamps/<key>.json` with the command line and
its wall time. A rerun skips stamped commands, so an interrupted `make reproduce-*` continues
where it stopped; a command whose output exists without a stamp (it was killed) is removed and
run again. A stamped command whose line changed in the config is refused: delete its output (or
the whole work directory) to rerun it on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Optional

from delt_cli.infra.console import info
from delt_cli.dataset.provenance import write_json_atomic
from delt_cli.infra.errors import DeltError
from experiment.plan import Command, Experiment, Unit


class StepFailed(DeltError):
    pass


def _stamp_path(exp: Experiment, cmd: Command) -> Path:
    return exp.work / "stamps" / f"{cmd.key}.json"


def is_done(exp: Experiment, cmd: Command) -> bool:
    stamp = _stamp_path(exp, cmd)
    if not stamp.exists():
        return False
    recorded = json.loads(stamp.read_text())["cmd"]
    if recorded != cmd.cmd:
        raise DeltError(
            f"{exp.path}: the command of {cmd.key} changed since it ran (was: {recorded!r}); "
            f"delete {cmd.out} and {stamp} to rerun it with the new one"
        )
    return True


def _environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)  # `delt` and `python` of this interpreter's environment
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_command(exp: Experiment, cmd: Command, *, threads: int) -> float:
    """Run one command (skipping a finished one); returns its wall seconds (0 when skipped)."""
    if is_done(exp, cmd):
        return 0.0
    if cmd.out.exists():  # left over from a killed run: start it again
        shutil.rmtree(cmd.out) if cmd.out.is_dir() else cmd.out.unlink()
    log = exp.work / "logs" / f"{cmd.key}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        fh.write(f"$ {cmd.cmd}\n")
        fh.flush()
        rc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd.cmd], stdout=fh, stderr=subprocess.STDOUT, env=_environment(threads)).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise StepFailed(f"{cmd.key} failed (exit {rc}); log {log}: {' | '.join(tail)}")
    stamp = _stamp_path(exp, cmd)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamp, {"cmd": cmd.cmd, "seconds": round(seconds, 2)})
    return seconds


def pending_units(exp: Experiment) -> list[Unit]:
    return [u for u in exp.units if not all(is_done(exp, c) for c in u.commands)]


def seconds_per_unit(exp: Experiment) -> float:
    """Median wall time of finished units (train + eval), or the config's run_seconds guess."""
    done = []
    for u in exp.units:
        stamps = [_stamp_path(exp, c) for c in u.commands]
        if all(s.exists() for s in stamps):
            done.append(sum(json.loads(s.read_text())["seconds"] for s in stamps))
    return statistics.median(done) if done else exp.run_seconds


def estimate(exp: Experiment, jobs: int) -> str:
    steps = [c for c in exp.steps if not is_done(exp, c)]
    units = pending_units(exp)
    per = seconds_per_unit(exp)
    minutes = per * len(units) / max(1, jobs) / 60
    return (
        f"{exp.name}: {len(steps)} shared step(s) and {len(units)} of {len(exp.units)} training run(s) to do; "
        f"runs take ~{per:.0f} s each, so ~{minutes:.0f} min on {jobs} worker(s) after the shared steps"
    )


def run_experiment(exp: Experiment, *, jobs: Optional[int] = None, cores: Optional[int] = None) -> None:
    """Run every unfinished step and unit, up to `jobs` at a time, each as soon as the shared
    steps it reads are finished (a shuffle baseline trains while the scorers still run)."""
    jobs = max(1, jobs or exp.jobs)
    threads = max(1, (cores or os.cpu_count() or 1) // jobs)
    info(estimate(exp, jobs))
    nodes: list[tuple[str, tuple[str, ...], list[Command], str]] = []  # key, deps, commands, label
    for cmd in exp.steps:
        nodes.append((cmd.key, cmd.deps, [cmd], cmd.key))
    for unit in exp.units:
        nodes.append((f"unit-{unit.cell}-seed{unit.seed}", unit.deps, unit.commands, f"{unit.cell} seed {unit.seed}"))
    done = {key for key, _, commands, _ in nodes if all(is_done(exp, c) for c in commands)}
    todo = [n for n in nodes if n[0] not in done]
    total, finished = len([n for n in todo if n[0].startswith("unit-")]), 0

    def work(commands: list[Command]) -> float:
        return sum(run_command(exp, c, threads=threads) for c in commands)

    running: dict = {}
    error: Optional[BaseException] = None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while todo or running:
            if error is None:
                for node in list(todo):
                    if len(running) >= jobs:
                        break
                    key, deps, commands, label = node
                    if all(d in done for d in deps):
                        todo.remove(node)
                        shown = next((c.cmd for c in commands if c.key.startswith("train-")), commands[0].cmd)
                        info(f"{exp.name}: start {label}: {shown}")
                        running[pool.submit(work, commands)] = node
                if not running:
                    missing = sorted({d for _, deps, _, _ in todo for d in deps if d not in done})
                    raise DeltError(f"{exp.path}: nothing can run; waiting for {', '.join(missing)}")
            elif not running:
                break
            finished_now, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished_now:
                key, _, _, label = running.pop(future)
                if future.exception() is not None:
                    error = error or future.exception()
                    continue
                done.add(key)
                if key.startswith("unit-"):
                    finished += 1
                    info(f"{exp.name}: {label}: done in {future.result():.0f} s ({finished}/{total} runs)")
                else:
                    info(f"{exp.name}: {label}: done in {future.result():.0f} s")
    if error is not None:
        raise error
