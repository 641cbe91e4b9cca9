"""Multiple-choice and LAMBADA metrics, defined as lm-evaluation-harness defines them.

Multiple choice: ``pred = argmax_i ll_i`` gives acc; ``argmax_i ll_i / len(choice_i)`` (length
in characters of the harness's choice string, without the leading space) gives acc_norm; ties
go to the first choice (numpy's argmax). LAMBADA: acc is whether greedy decoding yields the
whole last word; perplexity is ``exp(-mean ll)`` over passages. Standard errors are
``sample std / sqrt(n)`` like the harness's.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from delt_cli.evaluation.tasks import Task


def item_metrics(task: Task, item: dict, scores: Sequence[tuple[float, bool]]) -> dict:
    lls = np.array([s[0] for s in scores], dtype=np.float64)
    if task.kind == "lambada":
        return {"acc": float(scores[0][1]), "ll": float(lls[0])}
    lengths = np.array([float(len(c)) for c in item["choices"]])
    gold = int(item["gold"])
    out = {"acc": float(int(np.argmax(lls)) == gold), "pred": int(np.argmax(lls))}
    if "acc_norm" in task.metrics:
        out["acc_norm"] = float(int(np.argmax(lls / lengths)) == gold)
    return out


def _stderr(values: np.ndarray) -> float:
    if len(values) < 2:
        return float("nan")
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def aggregate(task: Task, per_item: list[dict]) -> dict:
    out: dict = {"items": len(per_item)}
    for metric in task.metrics:
        if metric == "perplexity":
            lls = np.array([r["ll"] for r in per_item])
            out["perplexity"] = float(math.exp(-lls.mean())) if len(lls) else float("nan")
            continue
        values = np.array([r[metric] for r in per_item], dtype=np.float64)
        out[metric] = float(values.mean()) if len(values) else float("nan")
        out[f"{metric}_stderr"] = _stderr(values)
    out["primary"] = task.primary
    out["score"] = out[task.primary]
    return out
