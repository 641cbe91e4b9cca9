"""A real model scores well above chance (SmolLM2-135M from the offline assets).

The 200-item figures in docs/evaluation.md come from
`delt eval <cache>/models/smollm2-135m --tasks hellaswag,piqa,arc_easy --limit 200`;
this test scores the first 20-30 items of each task to keep the suite fast (HellaSwag needs 30:
its first 20 items give only 0.30 acc_norm).
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainkit import task_dir  # noqa: E402

from delt_cli.infra import assets  # noqa: E402
from delt_cli.evaluation import choice  # noqa: E402
from delt_cli.evaluation.loglik import LoglikScorer  # noqa: E402
from delt_cli.evaluation.tasks import TASKS, load_task  # noqa: E402
from delt_cli.models.loading import load_causal_lm, load_tokenizer  # noqa: E402

pytestmark = [pytest.mark.assets, pytest.mark.slow]


@pytest.fixture(scope="module")
def scorer():
    model_dir = assets.smollm2_dir()
    return LoglikScorer(load_causal_lm(model_dir, dtype="float32", device="cpu"), load_tokenizer(model_dir), batch_size=32)


@pytest.mark.parametrize(
    ("task", "n", "metric", "chance", "at_least"),
    [("arc_easy", 20, "acc", 0.25, 0.40), ("piqa", 20, "acc_norm", 0.5, 0.60), ("hellaswag", 30, "acc_norm", 0.25, 0.40)],
)
def test_smollm2_is_well_above_chance(scorer, task, n, metric, chance, at_least):
    items = load_task(task_dir(task), task, n)
    scores = scorer.score([[tuple(r) for r in it["requests"]] for it in items])
    result = choice.aggregate(TASKS[task], [choice.item_metrics(TASKS[task], it, s) for it, s in zip(items, scores)])
    assert result["items"] == n
    assert result[metric] >= at_least > chance
