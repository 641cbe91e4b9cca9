"""`delt stats`: what is in a dataset and how a score runs along its order.

`dataset_stats` computes a JSON-able summary from thin columns only (text
lengths, numeric columns, a group column), shard by shard. `render` prints it
as rich tables with terminal histograms and sparklines; `plot` draws the same
as a PNG with matplotlib: histograms, the value of ``--by`` along the dataset
order (folding shows its L ascending ramps) and the group mix along the order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa

from delt_cli.dataset import Dataset, open_dataset
from delt_cli.infra.errors import DeltError

SPARK = "▁▂▃▄▅▆▇█"
QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)


def _summary(values: np.ndarray, bins: int = 20) -> dict:
    finite = values[np.isfinite(values)]
    out = {"count": int(len(values)), "non_finite": int(len(values) - len(finite))}
    if len(finite):
        qs = np.quantile(finite, QUANTILES)
        out.update(
            mean=float(finite.mean()),
            std=float(finite.std()),
            min=float(qs[0]),
            p10=float(qs[1]),
            p50=float(qs[2]),
            p90=float(qs[3]),
            max=float(qs[4]),
        )
        counts, edges = np.histogram(finite, bins=bins)
        out["histogram"] = {"counts": counts.tolist(), "edges": edges.tolist()}
    return out


def along_order(values: np.ndarray, bins: int = 64) -> dict:
    """Mean of `values` in `bins` consecutive slices of the dataset order."""
    if len(values) == 0:
        return {"bins": 0, "mean": []}
    bins = min(bins, len(values))
    edges = np.linspace(0, len(values), bins + 1).astype(np.int64)
    sums = np.add.reduceat(np.nan_to_num(values.astype(np.float64)), edges[:-1])
    counts = np.diff(edges)
    return {"bins": int(bins), "mean": (sums / counts).tolist()}


def group_mix(codes: np.ndarray, names: list, bins: int = 10) -> dict:
    """Share of each group in `bins` consecutive slices of the dataset order."""
    n = len(codes)
    bins = max(1, min(bins, n)) if n else 0
    edges = np.linspace(0, n, bins + 1).astype(np.int64) if n else np.zeros(1, np.int64)
    shares = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        c = np.bincount(codes[lo:hi], minlength=len(names))
        shares.append((c / max(1, hi - lo)).tolist())
    totals = np.bincount(codes, minlength=len(names)) if n else np.zeros(len(names), np.int64)
    return {
        "groups": [str(x) for x in names],
        "counts": totals.tolist(),
        "bins": int(bins),
        "shares": shares,
    }


def dataset_stats(ds: Dataset, *, by: Optional[str] = None, group_by: Optional[str] = None, bins: int = 64) -> dict:
    out: dict = {
        "dataset": ds.spec,
        "rows": ds.num_rows,
        "shards": len(ds.shards),
        "bytes": ds.num_bytes,
        "columns": {f.name: str(f.type) for f in ds.schema},
    }
    if ds.text_column in ds.schema.names:
        from delt_cli.dataset.textlen import char_lengths

        lengths = char_lengths(ds)
        out["text_chars"] = _summary(lengths.astype(np.float64))
        out["text_chars"]["total"] = int(lengths.sum())
    else:
        out["text_column_missing"] = ds.text_column
    numeric = {}
    for f in ds.schema:
        if f.name == ds.id_column:
            continue
        if pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
            col = ds.read_column(f.name)
            vals = col.cast(pa.float64()).fill_null(np.nan).to_numpy()
            numeric[f.name] = _summary(vals)
            numeric[f.name]["nulls"] = int(col.null_count)
            if f.name == by:
                out["along_order"] = {"column": by, **along_order(vals, bins)}
    out["numeric"] = numeric
    if by is not None:
        ds.require_numeric(by, flag="--by")
    group_col = group_by or ("domain" if "domain" in ds.schema.names else None)
    if group_col is not None:
        codes, names = ds.read_groups(group_col)
        out["group_mix"] = {"column": group_col, **group_mix(codes, names)}
    if "text_column_missing" in out:
        _say_text_missing(ds, nothing_else=not numeric and group_col is None)
    return out


def _say_text_missing(ds: Dataset, *, nothing_else: bool) -> None:
    """No text column: a warning, or the error when nothing else would be shown (not an empty table)."""
    from delt_cli.infra.console import warn

    what = f"no text column '{ds.text_column}' in {ds.spec}, so no text lengths; columns are: {ds.describe_columns()}{ds.text_hint()}"
    if nothing_else:
        raise DeltError(f"{what}; nothing else to summarise (no numeric or --group-by column)")
    warn(what)


def sparkline(values: list[float]) -> str:
    arr = np.asarray(values, dtype=np.float64)
    if not len(arr):
        return ""
    lo, hi = np.nanmin(arr), np.nanmax(arr)
    if not np.isfinite(lo) or hi <= lo:
        return SPARK[0] * len(arr)
    idx = np.clip(((arr - lo) / (hi - lo) * (len(SPARK) - 1)).round().astype(int), 0, len(SPARK) - 1)
    return "".join(SPARK[i] for i in idx)


def _fmt(x: float) -> str:
    if abs(x) >= 1e5 or (x != 0 and abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:,.3f}".rstrip("0").rstrip(".") if not float(x).is_integer() else f"{int(x):,}"


def render(stats: dict) -> None:
    """Print the summary as rich tables on stderr."""
    from rich.table import Table

    from delt_cli.infra.console import console

    head = Table(title=f"[bold]{stats['dataset']}[/bold]", show_header=False, box=None)
    head.add_row("rows", f"{stats['rows']:,}")
    head.add_row("shards", f"{stats['shards']:,}")
    head.add_row("bytes", f"{stats['bytes']:,}")
    head.add_row("columns", ", ".join(f"{k} ({v})" for k, v in stats["columns"].items()))
    console.print(head)
    table = Table(title="distributions", show_lines=False)
    rows = []
    if "text_chars" in stats:
        rows.append(("text chars", stats["text_chars"]))
    rows.extend(stats.get("numeric", {}).items())
    names_width = max([len("column"), *(len(name) for name, _ in rows)])
    for col in ("column", "mean", "std", "min", "p10", "p50", "p90", "max", "nulls", "histogram"):
        # names are never wrapped or cut, whatever width the console has (a narrow terminal shrinks the numbers)
        extra = {"min_width": names_width, "no_wrap": True} if col == "column" else {}
        table.add_column(col, justify="right" if col not in ("column", "histogram") else "left", **extra)
    for name, s in rows:
        if "mean" not in s:
            table.add_row(name, *["-"] * 7, str(s.get("nulls", 0)), "")
            continue
        hist = sparkline(s["histogram"]["counts"]) if "histogram" in s else ""
        table.add_row(name, *[_fmt(s[k]) for k in ("mean", "std", "min", "p10", "p50", "p90", "max")], str(s.get("nulls", 0)), hist)
    console.print(table)
    if "along_order" in stats:
        a = stats["along_order"]
        console.print(f"[bold]{a['column']} along the dataset order[/bold] ({a['bins']} bins, first → last)")
        console.print("  " + sparkline(a["mean"]))
    if "group_mix" in stats:
        g = stats["group_mix"]
        mix = Table(title=f"{g['column']}: rows and share along the order (10 slices, first → last)")
        mix.add_column(g["column"])
        mix.add_column("rows", justify="right")
        mix.add_column("share", justify="right")
        mix.add_column("share along order")
        total = max(1, sum(g["counts"]))
        for i, name in enumerate(g["groups"]):
            along = [row[i] for row in g["shares"]]
            cells = " ".join(f"{100 * x:3.0f}" for x in along)
            mix.add_row(name, f"{g['counts'][i]:,}", f"{100 * g['counts'][i] / total:.1f}%", cells)
        console.print(mix)


def plot(stats: dict, path: Path) -> Path:
    """Histograms, the --by value along the order and the group mix along the order, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if "text_chars" in stats and "histogram" in stats["text_chars"]:
        panels.append(("hist", "text length (chars)", stats["text_chars"]))
    for name, s in stats.get("numeric", {}).items():
        if "histogram" in s:
            panels.append(("hist", name, s))
    if "along_order" in stats:
        panels.append(("along", stats["along_order"]["column"], stats["along_order"]))
    if "group_mix" in stats:
        panels.append(("mix", stats["group_mix"]["column"], stats["group_mix"]))
    if not panels:
        raise DeltError(f"--plot {path}: nothing to plot (no text or numeric columns)")
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.4 * nrows), squeeze=False)
    for ax, (kind, name, s) in zip(axes.flat, panels):
        if kind == "hist":
            edges = np.asarray(s["histogram"]["edges"])
            ax.bar(edges[:-1], s["histogram"]["counts"], width=np.diff(edges), align="edge", color="#4c72b0")
            ax.set_title(name)
            ax.set_ylabel("rows")
        elif kind == "along":
            x = (np.arange(s["bins"]) + 0.5) / max(1, s["bins"])
            ax.plot(x, s["mean"], color="#c44e52")
            ax.set_title(f"{name} along the dataset order")
            ax.set_xlabel("position in dataset order (fraction)")
            ax.set_ylabel(f"mean {name}")
        else:
            shares = np.asarray(s["shares"]).T
            x = (np.arange(s["bins"]) + 0.5) / max(1, s["bins"])
            ax.stackplot(x, shares, labels=s["groups"])
            ax.set_ylim(0, 1)
            ax.set_title(f"{name} mix along the dataset order")
            ax.set_xlabel("position in dataset order (fraction)")
            ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise DeltError(f"--plot {path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        plt.close(fig)
    return path


def stats_command(
    input: str, *, by: Optional[str], group_by: Optional[str], id_column: str, text_column: str, allow_incomplete: bool = False
) -> tuple[Dataset, dict]:
    ds = open_dataset(input, id_column=id_column, text_column=text_column, allow_incomplete=allow_incomplete or None)
    return ds, dataset_stats(ds, by=by, group_by=group_by)
