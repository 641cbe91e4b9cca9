"""Saving matplotlib figures: headless backend, atomic write, figure closed."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write `fig` to `path` under a temporary name, then rename; always close it."""
    from delt_cli.infra.atomic import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png")
    finally:
        pyplot().close(fig)
    return path
