"""`delt score --method kenlm`: an ARPA bigram model computed by hand from counts (tests/kenlm_data.py),
its scores through KenLM equal the hand computation, the document perplexity formula, empty text,
normalisation, and bad input (a file that is not a model, a missing package): one line, nothing written."""

import importlib.util
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from delt_cli.cli.app import app
from delt_cli.dataset import open_dataset
from delt_cli.scoring.kenlm import normalise
from kenlm_data import corpus_model

runner = CliRunner()
TRAIN = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat saw the dog",
    "the dog saw a cat on the mat",
    "year 1999 was 2000 minus 1",
]
DOCS = [
    ("d0", "the cat sat on the log"),
    ("d1", "the dog saw the cat\n\na mat sat on a dog"),  # two lines (the blank one is skipped)
    ("d2", "zebra quantum the"),  # unknown words
    ("d3", ""),
    ("d4", None),
    ("d5", "year 2024 was “great” — the cat"),  # digits and typographic punctuation, normalised
]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return corpus_model([normalise(t) for t in TRAIN], tmp_path_factory.mktemp("lm") / "bigram.arpa")


def write_docs(directory):
    directory.mkdir()
    pq.write_table(pa.table({"id": [d[0] for d in DOCS], "text": [d[1] for d in DOCS]}), directory / "part-00000.parquet")
    return directory


def test_kenlm_reads_the_hand_computed_model(lm):
    kenlm = pytest.importorskip("kenlm")
    model, path = lm
    loaded = kenlm.Model(str(path))
    assert loaded.order == 2
    for line in ("the cat sat on the mat", "a dog saw the log", "zebra the cat", "cat"):
        assert loaded.score(line, bos=True, eos=True) == pytest.approx(model.score(line), abs=1e-5)


def test_document_perplexity_follows_the_formula(lm, tmp_path):
    pytest.importorskip("kenlm")
    model, path = lm
    data = write_docs(tmp_path / "d")
    result = runner.invoke(app, ["score", str(data), "-o", str(tmp_path / "out"), "--method", "kenlm", "--model", str(path)])
    assert result.exit_code == 0, result.output
    table = open_dataset(tmp_path / "out").read_column
    ppl, nll, tokens = (table(c).to_pylist() for c in ("kenlm", "kenlm_nll", "kenlm_tokens"))
    for i, (_, text) in enumerate(DOCS):
        lines = [normalise(line) for line in (text or "").splitlines() if line.strip()]
        if not lines:
            assert ppl[i] is None and nll[i] is None and tokens[i] == 0
            continue
        log10 = sum(model.score(line) for line in lines)
        n = sum(len(line.split()) + 1 for line in lines)
        assert tokens[i] == n
        assert nll[i] == pytest.approx(-log10 * math.log(10) / n, abs=1e-5)
        assert ppl[i] == pytest.approx(10 ** (-log10 / n), rel=1e-5)  # CCNet's document perplexity
    assert ppl[0] < ppl[2]  # a sentence of the training text is likelier than unknown words
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["scorer"]["model_fingerprint"] and manifest["summary"]["empty (null)"] == 2


def test_ccnet_normalisation():
    assert normalise("Year 2024 was “great” — isn’t it…  ok") == "Year 0000 was \"great\" - isn't it... ok"
    assert normalise("tab\there\u200bzero-width") == "tab herezero-width"
    assert normalise("Keep 42", "none") == "Keep 42"


def test_a_file_that_is_not_a_model(tmp_path):
    pytest.importorskip("kenlm")
    data = write_docs(tmp_path / "d")
    (tmp_path / "notes.txt").write_text("just some text\n")
    (tmp_path / "broken.arpa").write_text("\\data\\\nngram 1=2\n\n\\1-grams:\nnot a number\n")
    for model, message in (
        (tmp_path / "notes.txt", "not a KenLM model (an ARPA file starts with \\data\\"),
        (tmp_path / "broken.arpa", "KenLM cannot load it"),
        (tmp_path / "missing.arpa", "no such file"),
    ):
        result = runner.invoke(app, ["score", str(data), "-o", str(tmp_path / "o"), "--method", "kenlm", "--model", str(model)])
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    result = runner.invoke(app, ["score", str(data), "-o", str(tmp_path / "o"), "--method", "kenlm"])
    assert result.exit_code == 2 and "needs --model FILE" in result.output


def test_missing_package_is_one_line(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kenlm" else find_spec(name, *a))
    data = write_docs(tmp_path / "d")
    (tmp_path / "m.arpa").write_text("\\data\\\n")
    result = runner.invoke(app, ["score", str(data), "-o", str(tmp_path / "o"), "--method", "kenlm", "--model", str(tmp_path / "m.arpa")])
    assert result.exit_code == 1 and "pip install 'delt_cli[kenlm]'" in result.output and not (tmp_path / "o").exists()
