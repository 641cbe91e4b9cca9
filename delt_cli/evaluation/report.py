"""Several evaluated runs side by side: a markdown table and a grouped bar plot.

Inputs are `delt eval` results files, or run directories holding ``eval.json``. Columns
are the tasks' primary metrics in percent (DELT's tables), DELT's average over the
benchmark tasks, and held-out loss (per group too) when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from delt_cli.atomic import write_text_atomic
from delt_cli.errors import DeltError
from delt_cli.evaluation.results import load_results
from delt_cli.evaluation.tasks import DELT_TASKS


def locate(spec: str | Path) -> Path:
    path = Path(spec)
    if path.is_dir():
        for candidate in (path / "eval.json", path.parent / "eval.json" if path.name == "model" else None):
            if candidate is not None and candidate.is_file():
                return candidate
        raise DeltError(f"{spec}: no eval.json in this directory; run `delt eval {spec}` first or pass the results file")
    if not path.is_file():
        raise DeltError(f"{spec}: no such results file or run directory")
    return path


def _label(path: Path) -> str:
    return path.parent.name if path.name == "eval.json" else path.stem


def collect(specs: Sequence[str | Path], labels: Optional[Sequence[str]] = None) -> list[tuple[str, dict]]:
    paths = [locate(s) for s in specs]
    if labels and len(labels) != len(paths):
        raise DeltError(f"--labels: {len(labels)} label(s) for {len(paths)} input(s)")
    return [(labels[i] if labels else _label(p), load_results(p)) for i, p in enumerate(paths)]


def columns(runs: list[tuple[str, dict]]) -> tuple[list[str], list[str]]:
    """(benchmark tasks in DELT's order then others, held-out columns)."""
    present = {name for _, r in runs for name in r["tasks"] if name != "heldout"}
    tasks = [t for t in DELT_TASKS if t in present] + sorted(present - set(DELT_TASKS))
    heldout: list[str] = []
    for _, r in runs:
        h = r["tasks"].get("heldout")
        if h:
            heldout.append("heldout")
            heldout.extend(f"heldout:{g}" for g in h.get("groups", {}))
    return tasks, list(dict.fromkeys(heldout))


def _cell(result: dict, column: str) -> Optional[float]:
    if column.startswith("heldout"):
        h = result["tasks"].get("heldout")
        if not h:
            return None
        if column == "heldout":
            return h["loss"]
        return h.get("groups", {}).get(column.split(":", 1)[1], {}).get("loss")
    t = result["tasks"].get(column)
    return None if t is None or t.get("score") is None else 100.0 * t["score"]


def markdown(runs: list[tuple[str, dict]]) -> str:
    tasks, heldout = columns(runs)
    primary = {t: next(r["tasks"][t].get("primary", "") for _, r in runs if t in r["tasks"]) for t in tasks}
    header = ["run", *[f"{t} ({primary[t]})" for t in tasks]]
    if tasks:
        header.append("avg")
    header += [f"{h} loss" for h in heldout]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for label, result in runs:
        cells = [label]
        for t in tasks:
            v = _cell(result, t)
            cells.append("-" if v is None else f"{v:.2f}")
        if tasks:
            avg = [_cell(result, t) for t in tasks]
            cells.append(f"{sum(avg) / len(avg):.2f}" if all(v is not None for v in avg) else "-")
        for h in heldout:
            v = _cell(result, h)
            cells.append("-" if v is None else f"{v:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    items = sorted({r["tasks"][t].get("items") for _, r in runs for t in tasks if r["tasks"].get(t, {}).get("items")})
    note = f"\nBenchmark columns: primary metric in percent (acc_norm, or acc for LAMBADA and WinoGrande); avg is their unweighted mean. Items per task: {', '.join(map(str, items))}.\n" if tasks else "\n"
    return "\n".join(lines) + "\n" + note


def bar_plot(runs: list[tuple[str, dict]], path: Path) -> Path:
    import numpy as np

    from delt_cli.figures import pyplot, save_figure

    plt = pyplot()
    tasks, heldout = columns(runs)
    panels = [("benchmarks (%)", tasks + (["avg"] if tasks else []))] if tasks else []
    if heldout:
        panels.append(("held-out loss (nats/token)", heldout))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6, 1.1 * sum(len(c) for _, c in panels) + 2), 4), dpi=110, squeeze=False)
    width = 0.8 / max(len(runs), 1)
    for ax, (title, cols) in zip(axes[0], panels):
        x = np.arange(len(cols))
        for i, (label, result) in enumerate(runs):
            values = []
            for c in cols:
                if c == "avg":
                    vals = [_cell(result, t) for t in tasks]
                    values.append(sum(vals) / len(vals) if all(v is not None for v in vals) else np.nan)
                else:
                    v = _cell(result, c)
                    values.append(np.nan if v is None else v)
            ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, label=label)
        ax.set_xticks(x, cols, rotation=30, ha="right")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(specs: Sequence[str | Path], output: Path, *, labels: Optional[Sequence[str]] = None) -> tuple[Path, Path]:
    runs = collect(specs, labels)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    png = output.with_suffix(".png")
    text = f"# Evaluation report\n\n![bar plot]({png.name})\n\n" + markdown(runs)
    write_text_atomic(output, text)
    bar_plot(runs, png)
    return output, png
