"""The results JSON of `delt eval`, its terminal table, and reading results back (for `delt report`).

A results file is self-describing::

    {"command": "eval", "args": {...}, "model": {"path", "fingerprint", "parameters", "run": {...}},
     "tasks": {"hellaswag": {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "items", "primary", "score", ...},
               "heldout": {"loss", "loss_stderr", "perplexity", "bits_per_byte", "bits_per_byte_stderr", "tokens",
                           "documents", "sample": {...}, "groups": {...}}},
     "average": <unweighted mean of the benchmark tasks' primary metric, DELT's "Avg">, ...}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from rich.table import Table

from delt_cli.infra.console import console
from delt_cli.infra.errors import DeltError


def benchmark_average(tasks: dict[str, dict]) -> Optional[float]:
    scores = [t["score"] for name, t in tasks.items() if name != "heldout" and isinstance(t.get("score"), (int, float))]
    return float(sum(scores) / len(scores)) if scores else None


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _docs(metrics: dict) -> str:
    docs = f"{metrics['documents']:,} docs, " if "documents" in metrics else ""
    return f"{docs}{metrics['tokens']:,} tok"


def print_table(results: dict) -> None:
    table = Table(title=f"{results['model'].get('path', '')}", title_style="bold", show_lines=False)
    for column in ("task", "metric", "value", "stderr", "items"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for name, metrics in results["tasks"].items():
        if name == "heldout":
            table.add_row(name, "loss", _fmt(metrics["loss"]), _fmt(metrics.get("loss_stderr")), _docs(metrics))
            table.add_row("", "perplexity", _fmt(metrics["perplexity"]), "", "")
            table.add_row("", "bits_per_byte", _fmt(metrics["bits_per_byte"]), _fmt(metrics.get("bits_per_byte_stderr")), "")
            for group, g in metrics.get("groups", {}).items():
                table.add_row(f"  {metrics.get('group_by')}={group}", "loss", _fmt(g["loss"]), _fmt(g.get("loss_stderr")), _docs(g))
            continue
        first = True
        for metric in ("acc", "acc_norm", "perplexity"):
            if metric in metrics:
                marker = "*" if metric == metrics.get("primary") else ""
                table.add_row(name if first else "", metric + marker, _fmt(metrics[metric]), _fmt(metrics.get(f"{metric}_stderr")), _fmt(metrics.get("items")) if first else "")
                first = False
    if results.get("average") is not None:
        table.add_row("average", "primary*", _fmt(results["average"]), "", "")
    console.print(table)


def load_results(path: Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DeltError(f"{path}: cannot read results JSON ({exc})") from exc
    if not isinstance(data, dict) or "tasks" not in data:
        raise DeltError(f"{path}: not a `delt eval` results file (no 'tasks')")
    return data
