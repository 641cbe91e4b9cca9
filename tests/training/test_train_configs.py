"""configs/train/*.yaml: every key is a `delt train` flag, values convert, and the CPU demo config trains."""

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainkit import REPO, corpus  # noqa: E402

from delt_cli.cli.app import app  # noqa: E402
from delt_cli.infra.config import load_config  # noqa: E402
from delt_cli.training.config import TrainConfig  # noqa: E402

CONFIGS = sorted((REPO / "configs" / "train").glob("*.yaml"))


def test_there_are_the_three_configs():
    assert {p.stem for p in CONFIGS} >= {"paper-160m", "cpu-small", "cpu-demo"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_keys_are_train_flags(path, tmp_path):
    # the config is applied before the input is opened: an unknown key or a bad value fails first
    result = CliRunner().invoke(app, ["train", str(tmp_path / "missing"), "-o", str(tmp_path / "r"), "--config", str(path)])
    assert result.exit_code == 1
    assert "no such file or directory" in result.output and "--config" not in result.output


# DELT's setup (paper section 5 and its train.yaml; ../shared/research/delt.md, "Training"): written
# once here, and the shipped config and TrainConfig's defaults are both checked against it.
PAPER = {"seq_len": 1024, "lr": 6e-4, "warmup_steps": 2000, "min_lr_ratio": 0.1, "beta1": 0.9, "beta2": 0.98,
         "eps": 1e-6, "weight_decay": 0.01, "grad_clip": 1.0, "epochs": 1}
PAPER_SEQUENCES_PER_STEP = 256


def test_paper_config_is_the_paper_setup():
    cfg = load_config(REPO / "configs" / "train" / "paper-160m.yaml")
    assert {k: cfg[k] for k in PAPER} == PAPER
    assert cfg["batch_size"] * cfg["grad_accum"] == PAPER_SEQUENCES_PER_STEP
    defaults = TrainConfig()
    assert {k: getattr(defaults, k) for k in PAPER} == PAPER  # the defaults are the paper's too
    assert defaults.batch_size * defaults.grad_accum == PAPER_SEQUENCES_PER_STEP


@pytest.mark.assets
def test_cpu_demo_config_trains_with_small_overrides(tmp_path):
    data = corpus(tmp_path / "data", n=40)
    args = ["train", str(data), "-o", str(tmp_path / "run"), "--config", str(REPO / "configs" / "train" / "cpu-demo.yaml"),
            "--model", "llama-tiny", "--seq-len", "32", "--batch-size", "2", "--max-steps", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
