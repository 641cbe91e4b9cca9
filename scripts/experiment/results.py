"""Tables and plots of a finished (or partly finished) experiment: results/<name>.md and PNGs.

Per cell: held-out token loss (mean +- sd over seeds), the paired difference to the baseline
cell (same seed = same initial weights, so the per-seed difference removes most init noise),
held-out loss per group (domain), and the multiple-choice tasks' primary metric. Cells whose
runs have not finished are listed as such, so a partial grid is reported honestly.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from delt_cli.infra.atomic import write_text_atomic
from experiment.plan import Experiment
from delt_cli.infra.figures import pyplot, save_figure


def _mean_sd(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")


def _fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    mean, sd = _mean_sd(values)
    return f"{mean:.{digits}f}" if math.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def load_eval(path: Path, domain_eval: Optional[str] = None) -> dict:
    """An eval.json; with `domain_eval` (results.domain_eval in the config), the held-out loss per
    group is taken from that second results file beside it (e.g. the general held-out set by
    domain, while eval.json's held-out set is the target domain's)."""
    result = json.loads(path.read_text())
    if domain_eval:
        second = path.parent / domain_eval
        if second.exists() and _heldout(result) is not None:
            result["tasks"]["heldout"]["groups"] = (_heldout(json.loads(second.read_text())) or {}).get("groups", {})
    return result


def collect(exp: Experiment) -> dict[str, dict[int, dict]]:
    """cell -> seed -> eval.json contents, for the runs whose evaluation finished."""
    out: dict[str, dict[int, dict]] = {c: {} for c in exp.cells}
    for unit in exp.units:
        path = unit.run_dir / "eval.json"
        stamp = exp.work / "stamps" / f"eval-{unit.cell}-seed{unit.seed}.json"
        if path.exists() and stamp.exists():
            out[unit.cell][unit.seed] = load_eval(path, exp.results.get("domain_eval"))
    return out


def _heldout(result: dict) -> Optional[dict]:
    return result.get("tasks", {}).get("heldout")


def _groups(runs: dict[str, dict[int, dict]]) -> list[str]:
    names: set[str] = set()
    for seeds in runs.values():
        for r in seeds.values():
            names |= set((_heldout(r) or {}).get("groups", {}))
    return sorted(names)


def _label(exp: Experiment, cell: str) -> str:
    return str(exp.cells[cell].get("label", cell))


@dataclass
class CellRow:
    """One cell's numbers over its finished seeds (lists, one value per seed)."""

    cell: str
    label: str
    seeds: int  # finished runs
    losses: list[float]
    groups: dict[str, list[float]]  # group -> held-out loss per seed
    tasks: dict[str, list[float]]  # task -> primary metric in % per seed
    paired: Optional[dict[str, list[float]]] = None  # with a baseline: "pooled" and group -> per-seed difference


@dataclass
class ReferenceRow:
    """A results.extra row: an eval.json outside the grid; values None when it has not run."""

    label: str
    loss: Optional[float] = None
    groups: dict[str, Optional[float]] = field(default_factory=dict)
    tasks: dict[str, Optional[float]] = field(default_factory=dict)  # in %

    @property
    def finished(self) -> bool:
        return self.loss is not None


@dataclass
class Summary:
    """What results/<name>.md reports, computed from the collected eval.json files."""

    metric: str
    baseline: Optional[str]
    groups: list[str]
    tasks: list[str]
    finished: int
    cells: list[CellRow]
    reference: list[ReferenceRow]


def write_results(exp: Experiment, output: Optional[Path] = None, *, command: str = "") -> Path:
    """Collect the finished evaluations, compute the tables, draw the figures, write the Markdown."""
    output = Path(output or exp.results.get("output") or f"results/{exp.name}.md")
    output.parent.mkdir(parents=True, exist_ok=True)
    runs = collect(exp)
    summary = summarize(exp, runs, collect_reference(exp))
    figures = _plots(exp, runs, output, summary.baseline, summary.groups)
    write_text_atomic(output, render(exp, summary, figures, command=command))
    return output


def collect_reference(exp: Experiment) -> dict[str, Optional[dict]]:
    """label -> eval.json contents of each results.extra row (None when the file is not there)."""
    out: dict[str, Optional[dict]] = {}
    for label, template in (exp.results.get("extra") or {}).items():
        path = Path(str(template).format(**exp.vars))
        out[label] = load_eval(path, exp.results.get("domain_eval")) if path.exists() else None
    return out


def summarize(exp: Experiment, runs: dict[str, dict[int, dict]], reference: Optional[dict[str, Optional[dict]]] = None) -> Summary:
    """The per-cell numbers (and the paired differences to results.baseline) from `collect`'s runs."""
    cfg = exp.results
    baseline = cfg.get("baseline")
    groups = _groups(runs)
    tasks = list(cfg.get("tasks") or [])
    base_runs = runs.get(baseline, {}) if baseline else {}
    rows = []
    for cell in exp.cells:
        seeds = runs[cell]
        paired = None
        if baseline:
            paired = {"pooled": [_heldout(r)["loss"] - _heldout(base_runs[s])["loss"] for s, r in seeds.items() if s in base_runs and _heldout(r)]}
            for g in groups:
                paired[g] = [_heldout(r)["groups"][g]["loss"] - _heldout(base_runs[s])["groups"][g]["loss"] for s, r in seeds.items() if s in base_runs and g in _heldout(r).get("groups", {})]
        rows.append(
            CellRow(
                cell=cell,
                label=_label(exp, cell),
                seeds=len(seeds),
                losses=[_heldout(r)["loss"] for r in seeds.values() if _heldout(r)],
                groups={g: [_heldout(r)["groups"][g]["loss"] for r in seeds.values() if g in (_heldout(r) or {}).get("groups", {})] for g in groups},
                tasks={t: [100 * r["tasks"][t]["score"] for r in seeds.values() if t in r.get("tasks", {})] for t in tasks},
                paired=paired,
            )
        )
    refs = []
    for label, r in (reference or {}).items():
        if r is None:
            refs.append(ReferenceRow(label))
            continue
        h = _heldout(r)
        refs.append(
            ReferenceRow(
                label,
                loss=h["loss"],
                groups={g: h["groups"][g]["loss"] if g in h.get("groups", {}) else None for g in groups},
                tasks={t: 100 * r["tasks"][t]["score"] if t in r.get("tasks", {}) else None for t in tasks},
            )
        )
    return Summary(
        metric=str(cfg.get("metric", "held-out loss")),
        baseline=baseline,
        groups=groups,
        tasks=tasks,
        finished=sum(len(s) for s in runs.values()),
        cells=rows,
        reference=refs,
    )


def render(exp: Experiment, summary: Summary, figures: list[tuple[str, Path]] = (), *, command: str = "") -> str:
    """results/<name>.md: the grid table, the per-domain differences, reference rows, figures, notes."""
    s = summary
    baseline, groups, tasks, metric = s.baseline, s.groups, s.tasks, s.metric
    lines = [f"# Results: {exp.name}", ""]
    if exp.description:
        lines += [exp.description, ""]
    lines += [
        f"Config `{exp.path}`; {s.finished} of {len(exp.units)} runs finished; seeds {', '.join(map(str, exp.seeds))}. "
        f"Written {datetime.date.today().isoformat()} by `{command or 'python scripts/reproduce.py ' + str(exp.path)}`.",
        "",
        f"{metric[:1].upper() + metric[1:]} is the mean token loss in nats (lower is better), mean ± sd over seeds. "
        + (f"Δ is the paired per-seed difference to `{baseline}` (same seed = same initial weights), mean ± sd; negative = better than `{baseline}`." if baseline else ""),
        "",
    ]
    head = ["cell", "recipe", "seeds", metric] + (["Δ loss"] if baseline else []) + [f"{g}" for g in groups] + tasks
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in s.cells:
        row = [f"`{c.cell}`", c.label, str(c.seeds) if c.seeds else "not run yet", _fmt(c.losses)]
        if baseline:
            row.append("–" if c.cell == baseline else (f"{_fmt(c.paired['pooled'], 3)}" if c.paired["pooled"] else "–"))
        row += [_fmt(c.groups[g]) for g in groups]
        row += [_fmt(c.tasks[t], 1) for t in tasks]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if tasks:
        lines += ["Task columns: the task's primary metric in % (acc_norm or acc as lm-evaluation-harness defines them), on the items `delt eval` was given.", ""]

    if baseline and groups:
        lines += [f"### Per-domain Δ held-out loss vs `{baseline}` (paired by seed, mean ± sd)", ""]
        head = ["cell", "pooled"] + groups
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in s.cells:
            if c.cell == baseline or not c.paired["pooled"]:
                continue
            lines.append("| " + " | ".join([f"`{c.cell}`", _fmt(c.paired["pooled"])] + [_fmt(c.paired[g]) for g in groups]) + " |")
        lines.append("")

    if s.reference:
        lines += ["### Reference rows", "", "| model | " + " | ".join([metric] + groups + tasks) + " |", "|---|---|" + "---|" * (len(groups) + len(tasks))]
        for ref in s.reference:
            if not ref.finished:
                lines.append(f"| {ref.label} | not run yet |" + " |" * (len(groups) + len(tasks)))
                continue
            cells = [f"{ref.loss:.3f}"] + ["–" if ref.groups[g] is None else f"{ref.groups[g]:.3f}" for g in groups]
            cells += ["–" if ref.tasks[t] is None else f"{ref.tasks[t]:.1f}" for t in tasks]
            lines.append(f"| {ref.label} | " + " | ".join(cells) + " |")
        lines.append("")

    if figures:
        lines += ["### Figures", ""] + [f"![{name}]({path.name})" for name, path in figures] + [""]
    if exp.results.get("notes"):
        lines += [str(exp.results["notes"]).strip(), ""]
    return "\n".join(lines)


def _plots(exp: Experiment, runs, output: Path, baseline, groups) -> list[tuple[str, Path]]:
    plt = pyplot()
    stem = output.with_suffix("")
    made: list[tuple[str, Path]] = []
    cells = [c for c in exp.cells if runs[c]]
    if not cells:
        return made

    # the grid: pooled held-out loss per cell with the seed spread
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(cells) + 2), 4))
    means = [_mean_sd([_heldout(r)["loss"] for r in runs[c].values()]) for c in cells]
    ax.bar(range(len(cells)), [m for m, _ in means], yerr=[0 if math.isnan(s) else s for _, s in means], capsize=3, color=["#888" if c == baseline else "#3a7" for c in cells])
    ax.set_xticks(range(len(cells)), cells, rotation=45, ha="right", fontsize=8)
    lo = min(m - (0 if math.isnan(s) else s) for m, s in means)
    hi = max(m + (0 if math.isnan(s) else s) for m, s in means)
    ax.set_ylim(lo - 0.1 * (hi - lo + 1e-3), hi + 0.1 * (hi - lo + 1e-3))
    metric = str(exp.results.get("metric", "held-out loss"))
    ax.set_ylabel(f"{metric} (nats)")
    ax.set_title(f"{exp.name}: {metric} per cell (mean ± sd over seeds)", fontsize=9)
    fig.tight_layout()
    made.append(("held-out loss per cell", save_figure(fig, stem.with_name(stem.name + "-grid.png"))))

    # per-domain paired deltas against the baseline
    if baseline and groups and runs.get(baseline):
        others = [c for c in cells if c != baseline]
        if others:
            fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(others) + 2), 4))
            width = 0.8 / len(groups)
            for i, g in enumerate(groups):
                vals = []
                for c in others:
                    d = [
                        _heldout(r)["groups"][g]["loss"] - _heldout(runs[baseline][s])["groups"][g]["loss"]
                        for s, r in runs[c].items()
                        if s in runs[baseline] and g in _heldout(r).get("groups", {}) and g in _heldout(runs[baseline][s]).get("groups", {})
                    ]  # a run without that domain (an eval on other data) adds nothing to its bar
                    vals.append(float(np.mean(d)) if d else 0.0)
                ax.bar(np.arange(len(others)) + (i - (len(groups) - 1) / 2) * width, vals, width, label=g)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xticks(range(len(others)), others, rotation=45, ha="right", fontsize=8)
            ax.set_ylabel(f"Δ held-out loss vs {baseline} (nats)")
            ax.legend(fontsize=7, ncol=len(groups))
            ax.set_title("per-domain change (negative = better)")
            fig.tight_layout()
            made.append(("per-domain Δ", save_figure(fig, stem.with_name(stem.name + "-domains.png"))))

    # training loss curves, first finished seed of each cell
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in cells:
        seed = sorted(runs[c])[0]
        metrics = next(u.run_dir for u in exp.units if u.cell == c and u.seed == seed) / "metrics.jsonl"
        if not metrics.exists():
            continue
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        steps = np.array([r["step"] for r in rows if "loss" in r])
        loss = np.array([r["loss"] for r in rows if "loss" in r])
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, label=c, linewidth=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (moving average)")
    ax.legend(fontsize=6, ncol=2)
    ax.set_title("training loss along the data order (first seed)")
    fig.tight_layout()
    made.append(("training loss", save_figure(fig, stem.with_name(stem.name + "-loss.png"))))

    made += _score_plots(exp, stem, plt)
    return made


def _read_columns(path: Path, columns: list[str]):
    import polars as pl

    from delt_cli.dataset import open_dataset

    import pyarrow as pa

    ds = open_dataset(str(path))
    present = [c for c in columns if c in ds.schema.names]
    return pl.from_arrow(pa.concat_tables([t for _, t in ds.iter_tables(present)]))


def _score_plots(exp: Experiment, stem: Path, plt) -> list[tuple[str, Path]]:
    cfg = exp.results
    made = []
    group = cfg.get("group_column", "domain")
    scores = cfg.get("scores") or {}
    if scores:
        fig, axes = plt.subplots(1, len(scores), figsize=(5 * len(scores), 3.5), squeeze=False)
        for ax, (label, spec) in zip(axes[0], scores.items()):
            data = Path(exp.vars.get(spec["data"], spec["data"]))
            if not data.exists():
                continue
            frame = _read_columns(data, [spec["column"], group]).drop_nulls()
            for g in sorted(frame[group].unique().to_list()) if group in frame.columns else [None]:
                vals = (frame.filter(frame[group] == g) if g is not None else frame)[spec["column"]].to_numpy()
                ax.hist(vals, bins=40, histtype="step", label=str(g))
            ax.set_title(f"{label} ({spec['column']})")
            ax.legend(fontsize=7)
        fig.tight_layout()
        made.append(("score distributions by domain", save_figure(fig, stem.with_name(stem.name + "-scores.png"))))
    order = cfg.get("order_plots") or {}
    if order:
        fig, axes = plt.subplots(len(order), 1, figsize=(8, 1.8 * len(order) + 0.5), squeeze=False)
        for ax, (cell, column) in zip(axes[:, 0], order.items()):
            unit = next((u for u in exp.units if u.cell == cell), None)
            if unit is None or not unit.data_dir.exists():
                continue
            frame = _read_columns(unit.data_dir, [column, group])
            pos = np.arange(len(frame))
            if group in frame.columns:
                for g in sorted(frame[group].unique().to_list()):
                    mask = (frame[group] == g).to_numpy()
                    ax.scatter(pos[mask], frame[column].to_numpy()[mask], s=1, label=str(g))
            else:
                ax.scatter(pos, frame[column].to_numpy(), s=1)
            ax.set_ylabel(column, fontsize=7)
            ax.set_title(f"{cell}: {column} along the training order", fontsize=8)
        axes[0, 0].legend(fontsize=6, markerscale=5, ncol=5)
        axes[-1, 0].set_xlabel("position in the training dataset")
        fig.tight_layout()
        made.append(("scores along the training order", save_figure(fig, stem.with_name(stem.name + "-order.png"))))
    return made
