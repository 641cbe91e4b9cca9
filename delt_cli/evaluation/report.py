"""Several evaluated runs side by side: a markdown table and a grouped bar plot.

Inputs are `delt eval` results files, or run directories holding ``eval.json``. Columns
are the tasks' primary metrics in percent (DELT's tables), DELT's average over the
benchmark tasks, and held-out loss (per group too) when present. Every number carries its
standard error and n, and a number of a later run that is within noise of the first run's
(the difference is under twice its standard error) is marked, in the table and the plot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

from delt_cli.infra.atomic import describe_os_error, write_text_atomic
from delt_cli.infra.errors import DeltError
from delt_cli.infra.guard import OutputGuard
from delt_cli.evaluation.results import load_results
from delt_cli.evaluation.tasks import DELT_TASKS

NOISE_Z = 2.0  # a difference under NOISE_Z standard errors of the difference is flagged as noise
NOISE_MARK = "≈"


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


class Cell(NamedTuple):
    """One number of the report: value, its standard error (None when the results file has none) and n."""

    value: float
    se: Optional[float]
    n: Optional[int]


def _se(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _cell(result: dict, column: str) -> Optional[Cell]:
    if column.startswith("heldout"):
        h = result["tasks"].get("heldout")
        if not h:
            return None
        if column != "heldout":
            h = h.get("groups", {}).get(column.split(":", 1)[1])
            if h is None:
                return None
        return Cell(h["loss"], _se(h.get("loss_stderr")), h.get("documents"))
    t = result["tasks"].get(column)
    if t is None or t.get("score") is None:
        return None
    se = _se(t.get(f"{t.get('primary')}_stderr"))
    return Cell(100.0 * t["score"], None if se is None else 100.0 * se, t.get("items"))


def _average(cells: list[Optional[Cell]]) -> Optional[Cell]:
    """The unweighted mean of the tasks; its standard error as for independent tasks."""
    if not cells or any(c is None for c in cells):
        return None
    ses = [c.se for c in cells]
    se = math.sqrt(sum(x * x for x in ses)) / len(cells) if all(x is not None for x in ses) else None
    return Cell(sum(c.value for c in cells) / len(cells), se, None)


def table_cells(runs: list[tuple[str, dict]]) -> tuple[list[str], list[list[Optional[Cell]]]]:
    """(column names, one row of cells per run): the tasks, avg when there are tasks, held-out losses."""
    tasks, heldout = columns(runs)
    names = tasks + (["avg"] if tasks else []) + heldout
    rows = []
    for _, result in runs:
        task_cells = [_cell(result, t) for t in tasks]
        rows.append(task_cells + ([_average(task_cells)] if tasks else []) + [_cell(result, h) for h in heldout])
    return names, rows


def within_noise(cell: Optional[Cell], reference: Optional[Cell]) -> bool:
    """Whether two numbers differ by less than twice the standard error of their difference,
    sqrt(se1^2 + se2^2) (about a 95% interval; unpaired, so conservative for runs scored on the
    same items)."""
    if cell is None or reference is None or cell.se is None or reference.se is None:
        return False
    return abs(cell.value - reference.value) < NOISE_Z * math.sqrt(cell.se**2 + reference.se**2)


def noise_flags(rows: list[list[Optional[Cell]]]) -> list[list[bool]]:
    """For every run after the first, which of its cells are within noise of the first run's."""
    return [[False] * len(rows[0])] + [[within_noise(c, r) for c, r in zip(row, rows[0])] for row in rows[1:]] if rows else []


def markdown(runs: list[tuple[str, dict]]) -> str:
    tasks, _ = columns(runs)
    primary = {t: next(r["tasks"][t].get("primary", "") for _, r in runs if t in r["tasks"]) for t in tasks}
    names, rows = table_cells(runs)
    flags = noise_flags(rows)
    header = ["run"]
    per_cell_n = []  # n differs between runs: shown in each cell instead of the header
    for j, name in enumerate(names):
        ns = {row[j].n for row in rows if row[j] is not None and row[j].n is not None}
        shared = f"n={next(iter(ns))}" if len(ns) == 1 else None
        per_cell_n.append(len(ns) > 1)
        if name in primary:
            header.append(f"{name} ({primary[name]}, {shared})" if shared else f"{name} ({primary[name]})")
        else:
            label = f"{name} loss" if name.startswith("heldout") else name
            header.append(f"{label} ({shared})" if shared else label)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for (label, _), row, row_flags in zip(runs, rows, flags):
        cells = [label]
        for j, (cell, flag) in enumerate(zip(row, row_flags)):
            if cell is None:
                cells.append("-")
                continue
            digits = 4 if names[j].startswith("heldout") else 2
            text = f"{cell.value:.{digits}f}" + ("" if cell.se is None else f" ± {cell.se:.{digits}f}")
            if per_cell_n[j] and cell.n is not None:
                text += f" (n={cell.n})"
            cells.append(text + (f" {NOISE_MARK}" if flag else ""))
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if tasks:
        notes.append("Benchmark columns: primary metric in percent (acc_norm, or acc for LAMBADA and WinoGrande); avg is their unweighted mean.")
    notes.append(
        "± is one standard error: sample std / √n over the n items for accuracies, over the tasks for avg (as independent), and "
        "for held-out loss (nats per token) the delta-method standard error of the token-weighted mean over the n documents; "
        "about ±2 standard errors is a 95% interval."
    )
    if any(c is not None and c.se is None for row in rows for c in row):
        notes.append("A number without ± comes from a results file that has no standard error (written by an older delt eval; evaluate again to get one).")
    if len(runs) > 1:
        notes.append(
            f"{NOISE_MARK} marks a number within noise of the first row ({runs[0][0]}): the two differ by less than "
            f"{NOISE_Z:g} × √(SE₁² + SE₂²), so this table cannot tell them apart."
        )
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def bar_plot(runs: list[tuple[str, dict]], path: Path) -> Path:
    from delt_cli.infra.figures import save_figure

    return save_figure(figure(runs), path)


def figure(runs: list[tuple[str, dict]]):
    """The grouped bar plot (a matplotlib figure): ±1 standard error bars, hatched bars within noise of the first run."""
    import numpy as np
    from matplotlib.patches import Patch

    from delt_cli.infra.figures import pyplot

    plt = pyplot()
    names, rows = table_cells(runs)
    flags = noise_flags(rows)
    tasks, heldout = columns(runs)
    panels = [("benchmarks (%)", tasks + ["avg"])] if tasks else []
    if heldout:
        panels.append(("held-out loss (nats/token)", heldout))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6, 1.1 * sum(len(c) for _, c in panels) + 2), 4.6), dpi=110, squeeze=False)
    width = 0.8 / max(len(runs), 1)
    flagged_any = False
    colors: dict[int, tuple] = {}  # run -> bar colour, for a legend free of the hatching
    for ax, (title, cols) in zip(axes[0], panels):
        x = np.arange(len(cols))
        index = [names.index(c) for c in cols]
        for i, (label, _) in enumerate(runs):
            cells = [rows[i][j] for j in index]
            values = [np.nan if c is None else c.value for c in cells]
            errors = [0.0 if c is None or c.se is None else c.se for c in cells]
            bars = ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, yerr=errors, capsize=3, error_kw={"elinewidth": 1}, color=colors.get(i))
            colors.setdefault(i, bars[0].get_facecolor())
            for bar, j in zip(bars, index):
                if flags[i][j]:
                    bar.set_hatch("//")
                    bar.set_edgecolor("0.25")
                    flagged_any = True
        ax.set_xticks(x, cols, rotation=30, ha="right")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    handles = [Patch(facecolor=colors[i]) for i in range(len(runs))]
    labels = [label for label, _ in runs]
    if flagged_any:
        handles.append(Patch(facecolor="white", edgecolor="0.25", hatch="//"))
        labels.append(f"within noise of {runs[0][0]}")
    rows_of_legend = -(-len(labels) // 4)
    bottom = 0.05 + 0.045 * rows_of_legend
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.035), ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.text(0.01, 0.008, f"error bars: ±1 standard error; hatched: differs from the first run by < {NOISE_Z:g} × √(SE₁² + SE₂²)", fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


REPORT_HEADING = "# Evaluation report\n\n![bar plot]("


def write_report(specs: Sequence[str | Path], output: Path, *, labels: Optional[Sequence[str]] = None) -> tuple[Path, Path]:
    """The markdown table at `output` and the bar plot beside it (.png). A report replaces an
    earlier report; a file delt report did not write is never replaced (delt_cli/infra/guard.py)."""
    runs = collect(specs, labels)
    output = Path(output)
    png = output.with_suffix(".png")
    with OutputGuard(output, overwrite=True, foreign=_foreign_report):
        text = f"{REPORT_HEADING}{png.name})\n\n" + markdown(runs)
        try:
            write_text_atomic(output, text)
        except OSError as exc:
            raise DeltError(f"--output {output}: cannot write ({describe_os_error(exc)})") from exc
        bar_plot(runs, png)
    return output, png


def _foreign_report(output: Path) -> list[str]:
    """An existing --output (and its .png) that an earlier `delt report` did not write."""
    try:
        with open(output, encoding="utf-8", errors="replace") as fh:
            ours = fh.read(len(REPORT_HEADING)) == REPORT_HEADING
    except OSError:
        ours = False
    png = output.with_suffix(".png")
    return [] if ours else [output.name] + ([png.name] if png.exists() else [])
