"""`delt train` end to end on a tiny random-init Llama with GPT-2's tokenizer, on real text."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainkit import REPO, corpus, run_delt  # noqa: E402

from delt_cli.cli.app import app  # noqa: E402
from delt_cli.infra.errors import DeltError  # noqa: E402
from delt_cli.training import checkpoint as ckpt  # noqa: E402
from delt_cli.training.config import TrainConfig  # noqa: E402
from delt_cli.training.loop import train_run  # noqa: E402
from delt_cli.training.runlog import read_log  # noqa: E402

pytestmark = pytest.mark.assets

TINY = ["--model", "llama-tiny", "--tokenizer", "gpt2", "--seq-len", "32", "--batch-size", "4", "--grad-accum", "1", "--lr", "3e-3", "--warmup-steps", "2", "--log-every", "0"]


def tiny(**overrides) -> TrainConfig:
    base = dict(model="llama-tiny", tokenizer="gpt2", seq_len=32, batch_size=4, grad_accum=1, lr=3e-3, warmup_steps=2, max_steps=8)
    return TrainConfig(**{**base, **overrides})


def invoke(*args):
    result = CliRunner().invoke(app, list(args))
    return result


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_log(run_dir / "metrics.jsonl")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return corpus(tmp_path_factory.mktemp("corpus") / "data", n=60)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    result = invoke("train", str(data), "-o", str(run_dir), *TINY, "--max-steps", "8", "--save-every", "4", "--log-order")
    assert result.exit_code == 0, result.output
    return run_dir


def test_a_run_writes_metrics_order_plot_model_and_manifest(finished, data):
    records = read_log(finished / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))
    assert set(records[0]) >= {"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s"}
    assert records[-1]["tokens"] == 8 * 4 * 32
    assert records[-1]["loss"] < records[0]["loss"]
    assert records[0]["lr"] == 0.0 and records[2]["lr"] == pytest.approx(3e-3)
    assert (finished / "loss.png").stat().st_size > 1000
    manifest = json.loads((finished / "manifest.json").read_text())
    assert manifest["command"] == "train"
    assert manifest["training"]["steps"] == 8 and manifest["training"]["global_batch"] == 4
    assert manifest["inputs"]["fingerprint"] and manifest["model"]["fingerprint"]
    assert manifest["run"]["lr"] == 3e-3 and manifest["versions"]["torch"] == torch.__version__
    assert (finished / "checkpoints" / "step-00000004" / "optimizer.pt").is_file()


def test_order_log_follows_the_dataset_order(finished, data):
    from delt_cli.dataset import open_dataset

    ids = open_dataset(data).read_column("id").to_pylist()
    logged = [json.loads(line)["ids"] for line in (finished / "order.jsonl").read_text().splitlines()]
    assert len(logged) == 8
    seen = []
    for step_ids in logged:  # consecutive steps share the document that spans their boundary
        seen.extend(step_ids[1:] if seen and step_ids[0] == seen[-1] else step_ids)
    assert seen == ids[: len(seen)] and len(seen) >= 4


def test_final_model_loads_in_plain_transformers(finished):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from delt_cli.models.loading import load_causal_lm

    model = AutoModelForCausalLM.from_pretrained(finished / "model")
    tok = AutoTokenizer.from_pretrained(finished / "model")
    ids = tok("The quick brown fox", return_tensors="pt").input_ids
    assert tok("Hello world")["input_ids"] == [15496, 995]
    ours = load_causal_lm(finished / "model", dtype="float32", device="cpu")
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ours(ids).logits)
    # the final model is the checkpointed model trained 4 more steps: it differs from step 4
    step4 = AutoModelForCausalLM.from_pretrained(finished / "checkpoints" / "step-00000004")
    with torch.no_grad():
        assert not torch.allclose(step4(ids).logits, model(ids).logits)


def test_same_seed_gives_identical_runs(data, tmp_path):
    a = train_run(data, tmp_path / "a", tiny(max_steps=3), save_every=0)
    b = train_run(data, tmp_path / "b", tiny(max_steps=3), save_every=0)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert a["model"]["fingerprint"] == b["model"]["fingerprint"]
    train_run(data, tmp_path / "c", tiny(max_steps=3, seed=1), save_every=0)
    assert losses(tmp_path / "c") != losses(tmp_path / "a")


def test_training_summary_counts_the_speed_from_the_resumed_step():
    from types import SimpleNamespace

    from delt_cli.training.batches import Layout
    from delt_cli.training.loop import training_summary

    layout = Layout(seq_len=32, batch_size=4, grad_accum=2, processes=1, sequences_per_epoch=100, max_steps=10)
    cache = SimpleNamespace(num_tokens=3300)  # training_summary reads only the token count
    facts = dict(warmup=2, precision="fp32", processes=1, parameters=123)
    resumed = training_summary(layout, cache, records=[{"loss": 2.0}, {"loss": 1.5}], start_step=4, train_seconds=3.0, **facts)
    assert (resumed["steps"], resumed["tokens"], resumed["global_batch"], resumed["dataset_tokens"]) == (10, 2560, 8, 3300)
    assert resumed["tokens_per_s"] == 512.0  # 6 steps of 256 tokens in 3 s: the steps before the resume do not count
    assert resumed["resumed_from_step"] == 4 and resumed["final_loss"] == 1.5
    fresh = training_summary(layout, cache, records=[], start_step=0, train_seconds=0.0, **facts)
    assert fresh["resumed_from_step"] is None and fresh["tokens_per_s"] is None and fresh["final_loss"] is None


def test_resume_on_a_finished_run_is_a_no_op(finished, data):
    before = (finished / "manifest.json").read_text()
    result = invoke("train", str(data), "-o", str(finished), *TINY, "--max-steps", "8", "--save-every", "4", "--log-order", "--resume")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(finished)
    assert (finished / "manifest.json").read_text() == before


def test_resume_with_a_different_config_names_the_keys(finished, data):
    result = invoke("train", str(data), "-o", str(finished), *TINY, "--max-steps", "8", "--resume", "--lr", "1e-3", "--seq-len", "16")
    assert result.exit_code == 1
    assert "different configuration" in result.output and "lr (0.003 -> 0.001)" in result.output and "seq-len (32 -> 16)" in result.output


def test_an_existing_run_dir_needs_resume_or_overwrite(finished, data, tmp_path):
    result = invoke("train", str(data), "-o", str(finished), *TINY, "--max-steps", "8")
    assert result.exit_code == 2 and "pass --resume" in result.output
    stranger = tmp_path / "notarun"
    stranger.mkdir()
    (stranger / "precious.txt").write_text("keep me")
    result = invoke("train", str(data), "-o", str(stranger), *TINY, "--overwrite")
    assert result.exit_code == 2 and "holds files delt did not write (precious.txt)" in result.output
    assert (stranger / "precious.txt").read_text() == "keep me"
    # a run directory with a file of the user's inside: --overwrite refuses too, deleting nothing
    (finished / "notes.txt").write_text("mine")
    before = sorted(p.name for p in finished.iterdir())
    result = invoke("train", str(data), "-o", str(finished), *TINY, "--max-steps", "8", "--overwrite")
    assert result.exit_code == 2 and "holds files delt did not write (notes.txt)" in result.output
    assert sorted(p.name for p in finished.iterdir()) == before
    (finished / "notes.txt").unlink()


def test_fewer_tokens_than_one_batch_is_an_error(tmp_path):
    small = corpus(tmp_path / "small", n=2, shards=1)
    result = invoke("train", str(small), "-o", str(tmp_path / "r"), *TINY, "--batch-size", "64")
    assert result.exit_code == 1
    assert "fewer than one batch of 64 sequences" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # no partial output


def test_tokenizer_that_does_not_fit_the_model_is_an_error(data, tmp_path):
    from delt_cli.models.loading import model_from_config

    small = model_from_config("llama-tiny", vocab_size=1000)
    small.save_pretrained(tmp_path / "small-vocab")
    result = invoke("train", str(data), "-o", str(tmp_path / "r"), *TINY[2:], "--model", str(tmp_path / "small-vocab"), "--tokenizer", "gpt2")
    assert result.exit_code == 1
    assert "50,257 tokens do not fit the model's vocabulary of 1,000" in result.output
    assert not (tmp_path / "r").exists()


def test_continue_training_from_a_model_directory(finished, data, tmp_path):
    result = invoke("train", str(data), "-o", str(tmp_path / "more"), "--model", str(finished / "model"), "--seq-len", "32", "--batch-size", "4", "--grad-accum", "1", "--max-steps", "2", "--warmup-steps", "0", "--lr", "1e-4")
    assert result.exit_code == 0, result.output
    first = losses(tmp_path / "more")[0]
    assert first < losses(finished)[0] - 0.3  # starts from the trained weights, not from scratch (ln 50257 = 10.8)


def test_a_failed_checkpoint_write_leaves_the_previous_one_valid(data, tmp_path, monkeypatch):
    run_dir = tmp_path / "full"
    real_save = torch.save

    def save_until_disk_full(obj, path, *a, **k):
        target = Path(getattr(path, "name", path))  # checkpoint.torch_save passes an open file
        if "step-00000004" in str(target) and target.name == "scheduler.pt":
            real_save(obj, path, *a, **k)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", save_until_disk_full)
    with pytest.raises(DeltError, match=r"No space left on device.*previous checkpoint step-00000002 is intact"):
        train_run(data, run_dir, tiny(max_steps=5), save_every=2)
    assert ckpt.latest_checkpoint(run_dir).name == "step-00000002"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest.json", "step-00000002"]
    monkeypatch.setattr(torch, "save", real_save)
    train_run(data, run_dir, tiny(max_steps=5), save_every=2, resume=True)
    train_run(data, tmp_path / "clean", tiny(max_steps=5), save_every=0)
    assert losses(run_dir) == losses(tmp_path / "clean")


@pytest.mark.slow
def test_killed_and_resumed_run_has_the_same_loss_curve(data, tmp_path):
    args = ["train", str(data), *TINY, "--max-steps", "12", "--save-every", "3", "--log-order"]
    env = {"OMP_NUM_THREADS": "1"}
    assert run_delt(*args, "-o", str(tmp_path / "whole"), env=env).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "delt_cli", *args, "-o", str(killed)],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        latest = killed / "checkpoints" / "latest.json"
        if latest.is_file() and json.loads(latest.read_text())["step"] >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.json").exists(), "the run finished before it could be killed"
    resumed = run_delt(*args, "-o", str(killed), "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert losses(killed) == losses(tmp_path / "whole")
    assert (killed / "order.jsonl").read_text() == (tmp_path / "whole" / "order.jsonl").read_text()


@pytest.mark.slow
def test_two_processes_see_the_same_batches_and_loss_curve(data, tmp_path):
    one = run_delt("train", str(data), "-o", str(tmp_path / "one"), *TINY, "--max-steps", "6", "--save-every", "3", "--log-order", env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr
    with socket.socket() as s:  # a free port for the rendezvous, so parallel test runs do not collide
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port, "-m", "delt_cli",
         "train", str(data), "-o", str(tmp_path / "two"), *TINY, "--batch-size", "2", "--max-steps", "6", "--save-every", "3", "--log-order"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}, timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["training"]["processes"] == 2 and manifest["training"]["global_batch"] == 4
    assert (tmp_path / "two" / "order.jsonl").read_text() == (tmp_path / "one" / "order.jsonl").read_text()
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)
