"""`delt score --method lqs` end to end: planted corpus, bad input, resume after a kill, two processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from delt_cli.cli.app import app

from scoring_data import planted, small_tokenizer, write_dataset

torch.set_num_threads(1)
runner = CliRunner()
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("lqs")
    pool, target = planted(root, per_domain=12, target_size=16, shards=4)
    tok = small_tokenizer(str(root / "tok"))
    return root, pool, target, tok


def lqs_args(pool, target, tok, out, *extra):
    return [
        "score", str(pool), "-o", str(out), "--method", "lqs", "--model", "llama-tiny", "--tokenizer", tok,
        "--target", str(target), "--target-size", "16", "--proxy-size", "48", "--proxy-steps", "12",
        "--proxy-batch-size", "8", "--interval", "4", "--max-length", "96", *extra,
    ]


@pytest.fixture(scope="module")
def annotated(corpus):
    root, pool, target, tok = corpus
    out = root / "ann"
    result = runner.invoke(app, lqs_args(pool, target, tok, out))
    assert result.exit_code == 0, result.output
    return out


def read(out):
    return pl.read_parquet(sorted(Path(out).glob("part-*.parquet"))).sort("id")


@pytest.mark.slow
def test_planted_corpus_ranks_the_target_domain_first(annotated):
    df = read(annotated)
    assert df["lqs"].null_count() == 0 and df.height == 48
    assert set(["lqs", "pds", "quality", "learnability", "lqs_z"]) <= set(df.columns)
    means = df.group_by("domain").agg(pl.col("lqs_z").mean()).sort("lqs_z", descending=True)
    assert means["domain"][0] == "science", means
    rank = df["lqs"].rank().to_numpy()
    sci = (df["domain"] == "science").to_numpy()
    auc = (rank[sci].mean() - (sci.sum() + 1) / 2) / (~sci).sum()  # P(science doc outranks another doc)
    assert auc > 0.8, auc
    z = df["lqs_z"].to_numpy()
    assert abs(z.mean()) < 0.2 and z.min() >= -3 and z.max() <= 3
    manifest = json.loads((annotated / "manifest.json").read_text())
    assert manifest["scorer"]["proxy_lr"] == 0.008 and manifest["scorer"]["target_fingerprint"]
    assert manifest["report"]["per_sample_method"] == "hooks" and manifest["summary"]["annotated"] == 48


def test_rows_outside_the_proxy_sample_get_null(corpus, tmp_path):
    root, pool, target, tok = corpus
    args = lqs_args(pool, target, tok, tmp_path / "out")
    args[args.index("--proxy-size") + 1] = "10"
    args[args.index("--proxy-steps") + 1] = "2"
    args[args.index("--interval") + 1] = "1"
    result = runner.invoke(app, [*args, "--last-norm", "one", "--per-sample", "loop"])
    assert result.exit_code == 0, result.output
    df = read(tmp_path / "out")
    assert df["lqs"].null_count() == 38 and df["lqs_z"].null_count() == 38 and df.height == 48
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["summary"]["not in proxy (null)"] == 38


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--target": "/no/such/target"}, "--target /no/such/target: no such file or directory"),
        ({"--target": "EMPTY"}, "the target set is empty"),
        ({"--target": "BLANK"}, "no target document has a token to predict"),
        ({"--model": None}, "needs --model"),
        ({"--target": None}, "needs --target"),
        ({"--proxy-lr": "-1"}, "--proxy-lr -1.0"),
        ({"--per-sample": "magic"}, "--per-sample magic"),
        ({"--column": "x"}, "--column"),
    ],
)
def test_bad_input(corpus, tmp_path, change, message):
    root, pool, target, tok = corpus
    (tmp_path / "empty").mkdir()
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), tmp_path / "empty" / "part-00000.parquet")
    blank = write_dataset(tmp_path / "blank", [{"id": "a", "text": ""}, {"id": "b", "text": None}])
    args = lqs_args(pool, target, tok, tmp_path / "out")
    for flag, value in change.items():
        value = {"EMPTY": str(tmp_path / "empty"), "BLANK": str(blank)}.get(value, value)
        if flag in args:
            i = args.index(flag)
            del args[i : i + 2]
        if value is not None:
            args += [flag, value]
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "manifest.json").exists() and not list((tmp_path / "out").glob("part-*"))


def env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DELT_CACHE": os.environ.get("DELT_CACHE", str(Path.home() / ".cache" / "delt_cli"))}


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_scores(corpus, annotated, tmp_path):
    root, pool, target, tok = corpus
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "delt_cli", *lqs_args(pool, target, tok, out)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    fit = out / ".delt-fit" / "fit.json"  # the annotation, kept by the runner inside the output
    while not fit.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert fit.exists(), proc.stderr.read().decode()[-2000:]
    if (out / "manifest.json").exists():
        # Scoring after the annotation takes only milliseconds, so the run can end between two
        # polls: leave what a kill just before its end leaves (no manifest, the last shard unwritten).
        (out / "manifest.json").unlink()
        sorted(out.glob("*.parquet"))[-1].unlink()
    resumed = subprocess.run([*cmd, "--resume"], env=env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "lqs: fit reused from" in resumed.stderr
    a, b = read(annotated), read(out)
    assert a.equals(b)


@pytest.mark.slow
def test_two_processes_match_one(corpus, annotated, tmp_path):
    """torchrun with 2 CPU processes (gloo): proxy samples and target batches split, scores as one process."""
    root, pool, target, tok = corpus
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "delt_cli", *lqs_args(pool, target, tok, out)]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith(str(out))
    a, b = read(annotated), read(out)
    assert a["id"].equals(b["id"])
    for c in ("lqs", "pds", "quality", "learnability", "lqs_z"):
        assert np.allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=1e-3, atol=1e-5 * float(np.abs(a[c].to_numpy()).max())), c
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["summary"]["annotated"] == 48  # counted once, not per process
