"""`delt eval` and `delt report` end to end on a tiny trained run; held-out loss; bad input."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainkit import corpus, task_dir  # noqa: E402

from delt_cli.cli.app import app  # noqa: E402
from delt_cli.dataset import open_dataset, read_shard  # noqa: E402
from delt_cli.evaluation.heldout import heldout_loss, sample_rows, windows  # noqa: E402
from delt_cli.models.loading import load_causal_lm, load_tokenizer  # noqa: E402
from delt_cli.training.config import TrainConfig  # noqa: E402
from delt_cli.training.loop import train_run  # noqa: E402

pytestmark = pytest.mark.assets


def invoke(*args, input=None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    data = corpus(root / "data", n=40)
    config = TrainConfig(model="llama-tiny", tokenizer="gpt2", seq_len=32, batch_size=4, grad_accum=1, lr=3e-3, warmup_steps=1, max_steps=3)
    train_run(data, root / "run", config, save_every=0)
    return root / "run", data


@pytest.fixture(scope="module")
def tasks():
    return task_dir("arc_easy", "winogrande", "lambada")


def test_eval_a_run_directory_writes_results_beside_it(run, tasks):
    run_dir, data = run
    result = invoke("eval", run_dir, "--tasks", "arc_easy,winogrande,lambada,heldout", "--heldout", data, "--group-by", "domain", "--limit", "6", "--tasks-dir", tasks, "--log-samples")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(run_dir / "eval.json")
    out = json.loads((run_dir / "eval.json").read_text())
    assert set(out["tasks"]) == {"arc_easy", "winogrande", "lambada", "heldout"}
    arc = out["tasks"]["arc_easy"]
    assert arc["items"] == 6 and 0 <= arc["acc"] <= 1 and arc["primary"] == "acc_norm" and arc["score"] == arc["acc_norm"]
    assert out["tasks"]["lambada"]["perplexity"] > 1
    assert out["average"] == pytest.approx((arc["acc_norm"] + out["tasks"]["winogrande"]["acc"] + out["tasks"]["lambada"]["acc"]) / 3)
    assert out["model"]["run"]["config"]["seq_len"] == 32 and out["model"]["path"].endswith("model")
    h = out["tasks"]["heldout"]
    assert set(h["groups"]) == {"news", "fiction"}
    assert h["tokens"] == sum(g["tokens"] for g in h["groups"].values())
    pooled = sum(g["loss"] * g["tokens"] for g in h["groups"].values()) / h["tokens"]
    assert h["loss"] == pytest.approx(pooled) and h["perplexity"] == pytest.approx(math.exp(h["loss"]))
    samples = (run_dir / "eval.samples.jsonl").read_text().splitlines()
    assert len(samples) == 18 and len(json.loads(samples[0])["lls"]) == 4
    # rerun: --resume keeps identical results, no flag refuses, --overwrite recomputes
    before = (run_dir / "eval.json").read_text()
    args = ["eval", run_dir, "--tasks", "arc_easy,winogrande,lambada,heldout", "--heldout", data, "--group-by", "domain", "--limit", "6", "--tasks-dir", tasks, "--log-samples"]
    assert invoke(*args, "--resume").exit_code == 0 and (run_dir / "eval.json").read_text() == before
    refused = invoke(*args)
    assert refused.exit_code == 2 and "--overwrite" in refused.output


def test_model_path_from_stdin_as_in_a_pipe(run, tasks, tmp_path):
    run_dir, _ = run
    result = invoke("eval", "-", "-o", tmp_path / "piped.json", "--tasks", "arc_easy", "--limit", "2", "--tasks-dir", tasks, input=f"{run_dir}\n")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "piped.json").read_text())["model"]["path"] == str(run_dir / "model")


def test_heldout_loss_equals_a_direct_computation(run):
    run_dir, data = run
    model = load_causal_lm(run_dir / "model", dtype="float32", device="cpu")
    tok = load_tokenizer(run_dir / "model")
    # --limit 3 scores a sample stratified by domain (sample_rows), not the first three documents
    ds = open_dataset(data)
    picked = sample_rows(ds, 3, stratify="domain")
    texts = [t for shard, rows in zip(ds.shards, picked) for t in read_shard(shard.path, ["text"]).column(0).take(rows).to_pylist()]
    assert len(texts) == 3 and texts != ds.read_column("text").to_pylist()[:3]
    nats = tokens = 0.0
    with torch.no_grad():
        for text in texts:
            ids = [tok.eos_token_id, *tok(text)["input_ids"], tok.eos_token_id]
            for w in windows(ids, 24):
                logits = model(torch.tensor([w[:-1]])).logits[0]
                nats += torch.nn.functional.cross_entropy(logits, torch.tensor(w[1:]), reduction="sum").item()
                tokens += len(w) - 1
    got = heldout_loss(model, tok, str(data), max_len=24, batch_size=3, limit=3)
    assert got["tokens"] == tokens == sum(len(tok(t)["input_ids"]) + 1 for t in texts)
    assert got["loss"] == pytest.approx(nats / tokens, rel=1e-5)
    assert got["bits_per_byte"] == pytest.approx(nats / math.log(2) / sum(len(t.encode()) for t in texts), rel=1e-5)


def test_windows_predict_every_token_once():
    assert windows(list(range(10)), 4) == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8], [8, 9]]
    assert windows([1, 2], 4) == [[1, 2]]


def test_report_puts_runs_side_by_side(run, tasks, tmp_path):
    run_dir, data = run
    # its own results file: the test must not depend on another test having run first (xdist splits modules)
    evaluated = invoke("eval", run_dir, "-o", tmp_path / "first.json", "--tasks", "arc_easy,winogrande,lambada,heldout", "--heldout", data, "--limit", "4", "--tasks-dir", tasks)
    assert evaluated.exit_code == 0, evaluated.output
    first = json.loads((tmp_path / "first.json").read_text())
    second = json.loads(json.dumps(first))
    second["tasks"]["arc_easy"]["score"] = 0.5
    (tmp_path / "other.json").write_text(json.dumps(second))
    result = invoke("report", tmp_path / "first.json", tmp_path / "other.json", "-o", tmp_path / "rep" / "report.md")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "rep" / "report.md").read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| run | arc_easy (acc_norm, n=4) | lambada (acc, n=4) | winogrande (acc, n=4) | avg | heldout loss (n=4)")
    arc = first["tasks"]["arc_easy"]
    assert lines[1].startswith(f"| first | {100 * arc['score']:.2f} ± {100 * arc['acc_norm_stderr']:.2f} |")
    assert lines[2].startswith(f"| other | 50.00 ± {100 * arc['acc_norm_stderr']:.2f}")
    assert (tmp_path / "rep" / "report.png").stat().st_size > 5000
    assert invoke("report", tmp_path / "first.json", "-o", tmp_path / "x.md", "--labels", "a,b").exit_code == 1
    # a second report replaces the first; a markdown file of the user's is never replaced
    assert invoke("report", tmp_path / "first.json", "-o", tmp_path / "rep" / "report.md").exit_code == 0
    (tmp_path / "README.md").write_text("# my notes\n")
    result = invoke("report", tmp_path / "first.json", "-o", tmp_path / "README.md")
    assert result.exit_code == 2 and "holds files delt did not write (README.md)" in result.stderr
    assert (tmp_path / "README.md").read_text() == "# my notes\n"


def test_bad_input_is_one_line(run, tmp_path):
    run_dir, data = run
    missing = invoke("eval", run_dir / "model", "-o", tmp_path / "r.json", "--tasks", "piqa", "--tasks-dir", tmp_path)
    assert missing.exit_code == 1 and "delt tasks build" in missing.output and "Traceback" not in missing.output
    assert invoke("eval", run_dir / "model", "--tasks", "arc_easy").exit_code == 2  # -o needed for a plain model dir
    assert "needs --heldout" in invoke("eval", run_dir, "-o", tmp_path / "h.json", "--tasks", "heldout").output
    assert "unknown task" in invoke("eval", run_dir, "-o", tmp_path / "u.json", "--tasks", "mmlu").output
    no_report = invoke("report", tmp_path, "-o", tmp_path / "r.md")
    assert no_report.exit_code == 1 and "no eval.json" in no_report.output


def test_harness_is_an_optional_extra_with_a_clear_error(run, tasks, tmp_path, monkeypatch):
    run_dir, _ = run
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if lm-eval were not installed
    result = invoke("eval", run_dir, "-o", tmp_path / "h.json", "--tasks", "arc_easy", "--harness", "--tasks-dir", tasks)
    assert result.exit_code == 1
    assert "pip install 'delt_cli[harness]'" in result.output


def test_eval_output_is_guarded(run, tasks, tmp_path):
    """--overwrite never replaces a file delt eval did not write; a directory is not a results file."""
    run_dir, _ = run
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}')
    result = invoke("eval", run_dir, "--tasks", "arc_easy", "--limit", "2", "--tasks-dir", tasks, "-o", mine, "--overwrite")
    assert result.exit_code == 2 and "holds files delt did not write (notes.json)" in result.stderr
    assert mine.read_text() == '{"my": "notes"}'
    result = invoke("eval", run_dir, "--tasks", "arc_easy", "--limit", "2", "--tasks-dir", tasks, "-o", tmp_path)
    assert result.exit_code == 2 and "is a directory" in result.stderr
    out = tmp_path / "r.json"
    assert invoke("eval", run_dir, "--tasks", "arc_easy", "--limit", "2", "--tasks-dir", tasks, "-o", out).exit_code == 0
    result = invoke("eval", run_dir, "--tasks", "arc_easy", "--limit", "3", "--tasks-dir", tasks, "-o", out, "--overwrite")
    assert result.exit_code == 0 and json.loads(out.read_text())["tasks"]["arc_easy"]["items"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json", "r.json"]  # no lock or temporary left
