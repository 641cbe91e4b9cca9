"""`delt embed`: chunking, mean pooling over real tokens, chunk averaging, the command, bad input,
and equality with sentence-transformers on real text with the real all-MiniLM-L6-v2."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from delt_cli.infra.assets import minilm_dir
from delt_cli.cli.app import app
from delt_cli.dataset import open_dataset
from delt_cli.scoring.gotd.embedding import Encoder, split_chunks
from delt_cli.infra.errors import DeltError
from delt_cli.scoring.gotd.vectors import to_numpy

runner = CliRunner()

TEXTS = [
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The quick brown fox jumps over the lazy dog.",
    "Mitochondria are the powerhouse of the cell, producing ATP through respiration. " * 3,
    "",
    "Short.",
]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A 2-layer, 32-wide random-init BERT with the real MiniLM WordPiece tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, max_position_embeddings=128)
    path = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def test_split_chunks():
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa " * 5
    for size in (1, 7, 20, 64, 1000):
        chunks = split_chunks(text, size)
        assert "".join(chunks) == text
        assert all(0 < len(c) <= size for c in chunks)
    chunks = split_chunks(text, 20)
    assert all(c.endswith(" ") for c in chunks[:-1])  # broken after whitespace, not inside words
    assert split_chunks("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]  # no whitespace: hard cut
    assert split_chunks(None, 10) == [""] and split_chunks("short", 10) == ["short"]


def test_mean_pooling_excludes_padding(tiny_encoder):
    enc = Encoder(tiny_encoder, normalize=False, batch_size=8)
    alone = enc.encode([TEXTS[1]])
    padded = enc.encode([TEXTS[2], TEXTS[1]])  # batched with a much longer text: TEXTS[1] gets padding
    np.testing.assert_allclose(padded[1], alone[0], atol=1e-5)
    # and it is the plain mean of the hidden states of the real tokens
    ids = enc.tokenizer(TEXTS[1], return_tensors="pt")
    with torch.no_grad():
        hidden = enc.model(**ids).last_hidden_state[0]
    np.testing.assert_allclose(alone[0], hidden.mean(0).numpy(), atol=1e-5)
    # what the published notebooks did (padding included) is different
    with torch.no_grad():
        batch = enc.tokenizer([TEXTS[2], TEXTS[1]], padding=True, return_tensors="pt")
        with_pad = enc.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state[1].mean(0)
    assert np.abs(with_pad.numpy() - alone[0]).max() > 1e-3


def test_chunk_embeddings_are_averaged_by_characters(tiny_encoder):
    long = TEXTS[2] * 4  # ~1000 characters
    for normalize in (False, True):
        enc = Encoder(tiny_encoder, normalize=normalize)
        chunks = split_chunks(long, 300)
        assert len(chunks) > 2
        vectors = enc.encode(chunks)
        w = np.array([len(c) for c in chunks], dtype=np.float64)
        expect = (vectors * w[:, None]).sum(0) / w.sum()
        if normalize:
            expect /= np.linalg.norm(expect)
        got = enc.embed_documents([TEXTS[0], long], chunk_chars=300)
        np.testing.assert_allclose(got[1], expect, atol=1e-5)
        np.testing.assert_allclose(got[0], enc.encode([TEXTS[0]])[0], atol=1e-6)
        if normalize:
            np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def write_texts(path, texts, **extra):
    path.mkdir(parents=True, exist_ok=True)
    cols = {"id": [f"d{i}" for i in range(len(texts))], "text": texts, **extra}
    pq.write_table(pa.table(cols), path / "part-00000.parquet")
    return path


def test_embed_command(tiny_encoder, tmp_path):
    data = write_texts(tmp_path / "raw", TEXTS, domain=["a", "b", "a", "b", "a"])
    out = tmp_path / "emb"
    args = ["embed", str(data), "-o", str(out), "--model", str(tiny_encoder), "--chunk-chars", "100", "--batch-size", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    ds = open_dataset(out)
    assert ds.columns == ["id", "text", "domain", "emb"]
    assert ds.schema.field("emb").type == pa.list_(pa.float32(), 32)
    vectors = to_numpy(ds.read_column("emb"), column="emb", where="out")
    expect = Encoder(tiny_encoder, batch_size=7).embed_documents(TEXTS, chunk_chars=100)
    np.testing.assert_allclose(vectors, expect, atol=1e-5)  # batch size does not change the result
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "embed" and manifest["scorer"]["method"] == "embed"
    assert manifest["scorer"]["dim"] == 32 and manifest["scorer"]["chunk_chars"] == 100
    assert manifest["scorer"]["normalize"] is False  # a plain HF dir has no Normalize module
    # --resume skips finished shards; a second run elsewhere gives byte-identical shards
    result = runner.invoke(app, args + ["--resume"])
    assert result.exit_code == 0 and "already finished" in result.output
    again = tmp_path / "again"
    assert runner.invoke(app, [args[0], args[1], "-o", str(again), *args[4:]]).exit_code == 0
    assert (again / "part-00000.parquet").read_bytes() == (out / "part-00000.parquet").read_bytes()
    # float16 and a custom column name
    result = runner.invoke(app, ["embed", str(data), "-o", str(tmp_path / "e16"), "--model", str(tiny_encoder), "--dtype", "float16", "--column", "vec", "--normalize"])
    assert result.exit_code == 0, result.output
    ds16 = open_dataset(tmp_path / "e16")
    assert ds16.schema.field("vec").type == pa.list_(pa.float16(), 32)
    v16 = to_numpy(ds16.read_column("vec"), column="vec", where="out")
    np.testing.assert_allclose(np.linalg.norm(v16, axis=1), 1.0, atol=2e-3)


def test_embed_bad_input(tiny_encoder, tmp_path):
    data = write_texts(tmp_path / "raw", TEXTS)
    result = runner.invoke(app, ["embed", str(data), "-o", str(tmp_path / "o"), "--model", str(tiny_encoder), "--text-column", "body"])
    assert result.exit_code == 1 and "--text-column 'body'" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["embed", str(data), "-o", str(tmp_path / "o"), "--model", str(tiny_encoder), "--dtype", "int8"])
    assert result.exit_code == 2 and "--dtype int8" in result.output
    result = runner.invoke(app, ["embed", str(data), "-o", str(tmp_path / "o"), "--model", str(tiny_encoder), "--chunk-chars", "0"])
    assert result.exit_code == 2 and "--chunk-chars" in result.output
    result = runner.invoke(app, ["embed", str(data), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "--model" in result.output
    numbers = tmp_path / "num"
    numbers.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": [3]}), numbers / "part-00000.parquet")
    result = runner.invoke(app, ["embed", str(numbers), "-o", str(tmp_path / "o"), "--model", str(tiny_encoder)])
    assert result.exit_code == 1 and "not text" in result.output
    assert not (tmp_path / "o").exists()


def test_to_numpy_rejects_bad_vectors():
    good = pa.array([[1.0, 2.0], [3.0, 4.0]], type=pa.list_(pa.float32(), 2))
    assert to_numpy(good, column="emb", where="x").shape == (2, 2)
    with pytest.raises(DeltError, match="null row"):
        to_numpy(pa.array([[1.0, 2.0], None], type=pa.list_(pa.float32(), 2)), column="emb", where="x")
    with pytest.raises(DeltError, match="different lengths"):
        to_numpy(pa.array([[1.0, 2.0], [3.0]], type=pa.list_(pa.float32())), column="emb", where="x")
    with pytest.raises(DeltError, match="not a list of floats"):
        to_numpy(pa.array(["a", "b"]), column="emb", where="x")


@pytest.mark.slow
def test_matches_sentence_transformers_on_real_text():
    """Mean pooling + normalisation over all-MiniLM-L6-v2 reproduces SentenceTransformer.encode."""
    from sentence_transformers import SentenceTransformer

    from gotd_corpus import domain_texts

    texts, _ = domain_texts(6, limit=900)
    docs = [t for name in texts for t in texts[name]] + TEXTS
    ours = Encoder(minilm_dir(), batch_size=16).embed_documents(docs, chunk_chars=1000)
    ref = SentenceTransformer(str(minilm_dir()), device="cpu").encode(docs, batch_size=16, convert_to_numpy=True)
    assert ours.shape == ref.shape == (len(docs), 384)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
