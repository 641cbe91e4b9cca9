"""`delt distill` and `delt score --method scorer`; the cheap compression scorer."""

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from delt_cli.cli.app import app
from delt_cli.scoring.compression import CompressionScorer
from delt_cli.scoring.distill import pearson, spearman

from scoring_data import drama, news, science, write_dataset

torch.set_num_threads(1)
runner = CliRunner()


def test_rank_correlations():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a ** 3) == pytest.approx(1.0) and pearson(a, a ** 3) < 1.0
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(0.8660254037844387)
    assert pearson(a, np.ones(5)) == 0.0


def labelled_rows(n_per=40):
    """A learnable label: science paragraphs score high, news middle, drama low (plus one empty and one null label)."""
    rows = []
    for label, texts in ((1.0, science()), (0.0, news()), (-1.0, drama())):
        rows.extend({"text": t, "label": label} for t in texts[:n_per])
    rows.append({"text": "", "label": 0.5})
    rows.append({"text": "an unlabelled row", "label": None})
    return [{"id": f"x{i}", **r} for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def frozen_scorer(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    data = write_dataset(root / "ann", labelled_rows(), shards=2)
    result = runner.invoke(app, ["distill", str(data), "-o", str(root / "scorer"), "--column", "label", "--freeze-encoder", "--max-length", "64"])
    assert result.exit_code == 0, result.output
    return data, root / "scorer"


@pytest.mark.assets
def test_frozen_distillation_writes_a_scorer_with_heldout_metrics(frozen_scorer):
    _, scorer = frozen_scorer
    for name in ("scorer.json", "head.safetensors", "manifest.json", "encoder/config.json", "encoder/model.safetensors", "encoder/tokenizer.json"):
        assert (scorer / name).is_file(), name
    config = json.loads((scorer / "scorer.json").read_text())
    assert config["train_rows"] + config["heldout_rows"] == 120 and config["heldout_rows"] == 12
    assert config["heldout_spearman"] > 0.7 and config["heldout_pearson"] > 0.7
    manifest = json.loads((scorer / "manifest.json").read_text())
    assert manifest["scorer"]["heldout_spearman"] == config["heldout_spearman"]


@pytest.mark.assets
def test_scorer_inference_over_a_corpus(frozen_scorer, tmp_path):
    _, scorer = frozen_scorer
    rows = [{"id": f"s{i}", "text": t} for i, t in enumerate(science()[200:210])]
    rows += [{"id": f"d{i}", "text": t} for i, t in enumerate(drama()[300:310])]
    rows += [{"id": "empty", "text": ""}]
    data = write_dataset(tmp_path / "raw", rows, shards=3)
    result = runner.invoke(app, ["score", str(data), "-o", str(tmp_path / "out"), "--method", "scorer", "--scorer", str(scorer)])
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(sorted((tmp_path / "out").glob("*.parquet")))
    assert df.filter(pl.col("id") == "empty")["label_pred"][0] is None
    sci = df.filter(pl.col("id").str.starts_with("s"))["label_pred"].mean()
    dra = df.filter(pl.col("id").str.starts_with("d"))["label_pred"].mean()
    assert sci > dra + 0.5
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["scorer"]["heldout_spearman"] > 0.7 and manifest["summary"]["empty (null)"] == 1


@pytest.mark.slow
@pytest.mark.assets
def test_fine_tuning_keeps_the_best_epoch(tmp_path):
    data = write_dataset(tmp_path / "ann", labelled_rows(12), shards=1)
    result = runner.invoke(app, ["distill", str(data), "-o", str(tmp_path / "scorer"), "--column", "label", "--epochs", "2", "--max-length", "32", "--batch-size", "8", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "scorer" / "scorer.json").read_text())
    assert len(config["history"]) == 2 and config["best_epoch"] in (1, 2)
    best = max(h["heldout_spearman"] for h in config["history"])
    assert config["heldout_spearman"] == best


@pytest.mark.parametrize(
    "args, message",
    [
        (["--column", "nope"], "--column 'nope': no such column"),
        (["--column", "text"], "not a number"),
        (["--heldout", "1.5"], "--heldout 1.5"),
    ],
)
def test_distill_bad_input(tmp_path, args, message):
    data = write_dataset(tmp_path / "ann", labelled_rows(4))
    result = runner.invoke(app, ["distill", str(data), "-o", str(tmp_path / "s"), *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "s").exists()


def test_distill_needs_enough_labelled_rows(tmp_path):
    data = write_dataset(tmp_path / "ann", [{"id": "a", "text": "x", "label": 1.0}, {"id": "b", "text": "y", "label": None}])
    result = runner.invoke(app, ["distill", str(data), "-o", str(tmp_path / "s"), "--column", "label"])
    assert result.exit_code == 1 and "only 1 row(s)" in result.output


def test_scorer_method_needs_a_scorer_directory(tmp_path):
    data = write_dataset(tmp_path / "raw", [{"id": "a", "text": "x"}])
    for args, message in (([], "--method scorer needs --scorer"), (["--scorer", str(tmp_path)], "not a scorer directory")):
        result = runner.invoke(app, ["score", str(data), "-o", str(tmp_path / "o"), "--method", "scorer", *args])
        assert result.exit_code != 0 and message in result.output, result.output


def test_compression_ratio_orders_repetitive_below_prose():
    scorer = CompressionScorer()
    table = pa.table({"text": ["the cat sat. " * 50, science()[0], "", None]})
    out = scorer.transform(table)["compression_ratio"].to_pylist()
    assert out[0] < 0.15 < out[1] < 1.0 and out[2] is None and out[3] is None
    assert scorer.summary() == {"empty (null)": 2}


@pytest.mark.assets
def test_a_small_distillation_holds_out_enough_rows_for_a_correlation(tmp_path):
    """12 rows at --heldout 0.1 held out 1 row, whose 'Spearman 0.000' was undefined and chose the best epoch."""
    data = write_dataset(tmp_path / "ann", labelled_rows(4), shards=1)
    result = runner.invoke(app, ["distill", str(data), "-o", str(tmp_path / "scorer"), "--column", "label", "--freeze-encoder", "--max-length", "32"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "scorer" / "scorer.json").read_text())
    assert config["heldout_rows"] == 3 and config["train_rows"] == 9
