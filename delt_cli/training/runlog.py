"""What a run leaves behind for people and scripts: metrics.jsonl, order.jsonl, loss.png.

Both logs have one JSON object per optimizer step. On resume, lines past the step of the
checkpoint are dropped first, so a killed-and-resumed run ends with the same lines (loss,
lr, grad norm, order) as an uninterrupted one; only timings differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from delt_cli.infra.atomic import open_atomic

METRICS = "metrics.jsonl"
ORDER = "order.jsonl"
LOSS_PLOT = "loss.png"


class StepLog:
    """An append-only JSON-lines file of per-step records (written by the main process)."""

    def __init__(self, path: Path, *, keep_until: int | None = None):
        self.path = Path(path)
        if keep_until is None:
            self.path.unlink(missing_ok=True)
        else:
            truncate_after(self.path, keep_until)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_log(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash
            break
    return out


def truncate_after(path: Path, step: int) -> None:
    """Keep only records with record['step'] <= step (atomically)."""
    kept = [r for r in read_log(path) if r.get("step", 0) <= step]
    with open_atomic(path) as fh:
        for r in kept:
            fh.write(json.dumps(r, separators=(",", ":")) + "\n")


def dedupe_consecutive(values: Iterable) -> list:
    out: list = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out


def plot_loss(records: list[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Training loss against tokens seen (with the learning rate on a second axis)."""
    from delt_cli.infra.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    tokens = [r["tokens"] for r in records]
    ax.plot(tokens, [r["loss"] for r in records], lw=1.2, color="tab:blue", label="train loss")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)", color="tab:blue")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(tokens, [r["lr"] for r in records], lw=0.8, color="tab:orange", alpha=0.7)
    lr_ax.set_ylabel("learning rate", color="tab:orange")
    ax.set_title(title or "training loss")
    fig.tight_layout()
    return save_figure(fig, path)
