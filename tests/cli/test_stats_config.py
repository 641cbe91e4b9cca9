"""`delt stats` and YAML configuration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_dataset
from delt_cli.dataset import open_dataset
from delt_cli.ordering import folding_order
from delt_cli.dataset.stats import along_order, group_mix, sparkline


def test_stats_summary_and_plot(cli, tmp_path):
    d = write_dataset(tmp_path / "in", 90, shards=2)
    res = cli("order", d, "-o", tmp_path / "o", "--method", "folding", "--by", "score", "--folds", "3")
    assert res.exit_code == 0
    res = cli("stats", tmp_path / "o", "--by", "score", "--plot", tmp_path / "p.png", "--json", tmp_path / "s.json")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(tmp_path / "o")
    assert (tmp_path / "p.png").stat().st_size > 10_000
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["rows"] == 90 and stats["shards"] == 2
    assert stats["numeric"]["score"]["count"] == 90
    assert stats["group_mix"]["counts"] == [30, 30, 30]
    assert "score along the dataset order" in res.stderr and "domain" in res.stderr


def test_along_order_shows_folding_ramps():
    values = np.random.default_rng(0).normal(size=3000)
    folded = values[folding_order(values, 3)]
    means = np.asarray(along_order(folded, bins=30)["mean"])
    # three ascending ramps: two drops, everything else rising
    assert (np.diff(means) < 0).sum() == 2


def test_group_mix_shares():
    codes = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    mix = group_mix(codes, ["a", "b"], bins=2)
    assert mix["counts"] == [4, 4] and mix["shares"] == [[0.5, 0.5], [0.5, 0.5]]


def test_sparkline():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([1, 1]) == "▁▁"


def test_stats_bad_by(cli, tmp_path):
    d = write_dataset(tmp_path / "in", 10)
    res = cli("stats", d, "--by", "text")
    assert res.exit_code == 1 and "not a number" in res.stderr


@pytest.mark.parametrize(
    "text, message",
    [
        ("- a\n- b\n", "expected a mapping"),
        ("folds: [1, 2]\n", "expected a single value"),
        ("folds: many\n", "key 'folds'"),
        ("method: fold\n", "key 'method'"),
        ("folds: 2\nfolds: 3\n", "folds"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_config(cli, tmp_path, text, message):
    d = write_dataset(tmp_path / "in", 10)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    res = cli("order", d, "-o", tmp_path / "o", "--config", cfg)
    assert res.exit_code != 0 and message in res.stderr, res.stderr
    assert not (tmp_path / "o").exists()


def test_missing_config_file(cli, tmp_path):
    d = write_dataset(tmp_path / "in", 10)
    res = cli("order", d, "-o", tmp_path / "o", "--config", tmp_path / "nope.yaml")
    assert res.exit_code == 1 and "no such file" in res.stderr


def test_config_enum_and_bool_values(cli, tmp_path):
    d = write_dataset(tmp_path / "in", 30)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: sort\nby: score\ndescending: true\n")
    assert cli("order", d, "-o", tmp_path / "o", "--config", cfg).exit_code == 0
    score = open_dataset(tmp_path / "o").read_column("score").to_numpy()
    assert np.all(np.diff(score) <= 0)


def test_version_and_help(cli):
    res = cli("--version")
    assert res.exit_code == 0 and res.stdout.startswith("delt ")
    for command in ("prepare", "select", "order", "stats", "score", "assets"):
        res = cli(command, "--help")
        assert res.exit_code == 0 and "Examples" in res.stdout


@pytest.mark.parametrize("command", ["select", "order"])
def test_example_configs_are_valid(cli, tmp_path, command):
    from pathlib import Path

    import pyarrow as pa

    n = 60
    d = write_dataset(
        tmp_path / "in",
        n,
        extra={
            "lqs": pa.array(np.linspace(-1, 1, n)),
            "ppl": pa.array(np.linspace(5, 50, n)),
            "gotd": pa.array(np.linspace(-2, 2, n)),
            "n_tokens": pa.array(np.full(n, 100_000, dtype=np.int64)),
        },
    )
    configs = sorted((Path(__file__).resolve().parents[2] / "configs" / command).glob("*.yaml"))
    assert configs
    for i, cfg in enumerate(configs):
        res = cli(command, d, "-o", tmp_path / f"o{i}", "--config", cfg)
        assert res.exit_code == 0, (cfg.name, res.output)
