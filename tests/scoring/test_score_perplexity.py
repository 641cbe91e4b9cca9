"""`delt score --method perplexity`: values, padding, windows, empty texts, errors, OOM back-off."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from delt_cli.cli.app import app
from delt_cli.infra.distributed import Dist
from delt_cli.models.causal_lm import split_lm, token_nll
from delt_cli.models.loading import load_tokenizer, model_from_config
from delt_cli.scoring.backoff import Backoff
from delt_cli.scoring.lqs.losses import pad_batch
from delt_cli.scoring.perplexity import PerplexityScorer
from delt_cli.scoring.tokens import encode, windows

from scoring_data import tiny_model_dir, news, noise, science, small_tokenizer, write_dataset

torch.set_num_threads(1)
runner = CliRunner()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return small_tokenizer(str(tmp_path_factory.mktemp("tok") / "bpe"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tok_dir):
    return tiny_model_dir(tmp_path_factory.mktemp("m") / "tiny", tok_dir, seed=7)


def docs_table(n=9):
    texts = list(science()[:n // 3]) + list(news()[:n // 3]) + noise(n - 2 * (n // 3))
    return [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)]


def hf_loop_nll(model, ids_list):
    """Reference: one document at a time through the plain transformers forward with labels."""
    out = []
    with torch.no_grad():
        for ids in ids_list:
            x = torch.as_tensor(ids, dtype=torch.long)[None]
            out.append(float(model(input_ids=x, labels=x).loss))
    return np.asarray(out)


def test_token_nll_equals_one_document_at_a_time(tok_dir):
    tok = load_tokenizer(tok_dir)
    model = model_from_config("llama-tiny", vocab_size=len(tok), seed=1, dtype=torch.float64).eval()
    docs = [d[:40 + 17 * i] for i, d in enumerate(encode(tok, [r["text"] for r in docs_table(6)], prefix=tok.bos_token_id))]
    ids, lengths = pad_batch(docs, 0)
    with torch.no_grad():
        sums, counts = token_nll(split_lm(model), ids, lengths, chunk_rows=37)
    assert counts.tolist() == [len(d) - 1 for d in docs]  # padding never counted
    assert np.allclose(sums.numpy() / counts.numpy(), hf_loop_nll(model, docs), rtol=1e-6)  # transformers upcasts logits to float32


def test_windows_predict_every_token_once():
    doc = np.arange(23)
    rows, truncated = windows([doc], max_length=8, stride=3)
    predicted = []
    for k, w in enumerate(rows):
        start = int(w.ids[0])  # doc is arange, so a token is its own position
        assert len(w.ids) <= 8 and (k == 0 or w.score_from >= 8 - 3)  # every later target has >= 5 tokens of context
        predicted.extend(start + j for j in range(w.score_from, len(w.ids)))
    assert sorted(predicted) == list(range(1, 23)) and truncated[0] == 0
    rows, truncated = windows([doc, doc[:1]], max_length=8, stride=0)
    assert len(rows) == 1 and len(rows[0].ids) == 8 and truncated.tolist() == [15, 0]


def run_scorer(tiny_dir, rows, **kwargs):
    scorer = PerplexityScorer(model=str(tiny_dir), **kwargs)

    class DS:  # the two methods of Dataset that prepare() needs
        def require(self, column, flag):
            return None

    scorer.fit_prepare(DS(), Dist())
    return scorer, scorer.transform(pa.Table.from_pylist(rows))


def test_empty_texts_get_null_and_are_counted(tiny_dir):
    rows = docs_table(3) + [{"id": "empty", "text": ""}, {"id": "none", "text": None}]
    scorer, out = run_scorer(tiny_dir, rows, max_length=64)
    assert out["ppl"].null_count == 2 and out["ppl_nll"].null_count == 2
    assert out["ppl_tokens"].to_pylist()[-2:] == [0, 0]
    assert scorer.summary()["empty (null)"] == 2 and scorer.summary()["scored"] == 3
    nll = out["ppl_nll"].to_numpy(zero_copy_only=False)[:3]
    assert np.allclose(out["ppl"].to_numpy(zero_copy_only=False)[:3], np.exp(nll))


def test_truncation_and_stride(tiny_dir):
    rows = docs_table(3)
    _, cut = run_scorer(tiny_dir, rows, max_length=16)
    assert cut["ppl_tokens"].to_pylist() == [15, 15, 15]
    scorer, strided = run_scorer(tiny_dir, rows, max_length=16, stride=8)
    n_tokens = [len(x) for x in encode(scorer.tokenizer, [r["text"] for r in rows], prefix=scorer.prefix_id)]
    assert strided["ppl_tokens"].to_pylist() == [n - 1 for n in n_tokens]
    assert scorer.summary()["windows"] > 3


def test_oom_halves_the_batch_and_gives_the_same_scores(tiny_dir, monkeypatch):
    import delt_cli.models.causal_lm as causal

    rows = docs_table(9)
    _, expected = run_scorer(tiny_dir, rows, max_length=64)
    real = causal.token_nll
    seen = []

    def limited(parts, ids, *args, **kwargs):  # an accelerator that holds at most 2 rows
        seen.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(parts, ids, *args, **kwargs)

    monkeypatch.setattr(causal, "token_nll", limited)
    scorer, got = run_scorer(tiny_dir, rows, max_length=64)
    assert max(seen) > 2 and scorer.summary()["out-of-memory retries"] >= 1
    assert np.allclose(got["ppl_nll"].to_numpy(), expected["ppl_nll"].to_numpy(), rtol=1e-6)


def test_backoff_splits_recursively_and_keeps_every_row():
    calls = []

    def fn(batch):
        calls.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("out of memory")
        return batch * 10

    b = Backoff("test")
    out = b.run([np.arange(8), np.arange(8, 10)], fn)
    assert sorted(np.concatenate([r for _, r in out]).tolist()) == [10 * i for i in range(10)]
    assert b.events == 2 and b.cap == 2
    with pytest.raises(ValueError):
        Backoff().run([np.arange(2)], lambda batch: (_ for _ in ()).throw(ValueError("not an OOM")))


def test_cli_perplexity_deterministic_with_provenance(tmp_path, tiny_dir):
    data = write_dataset(tmp_path / "raw", docs_table(9) + [{"id": "e", "text": ""}], shards=2)
    outs = []
    for name in ("a", "b"):
        result = runner.invoke(app, ["score", str(data), "-o", str(tmp_path / name), "--method", "perplexity", "--model", str(tiny_dir), "--max-length", "64", "--batch-tokens", "128"])
        assert result.exit_code == 0, result.output
        outs.append(tmp_path / name)
    for shard in ("part-00000.parquet", "part-00001.parquet"):
        assert (outs[0] / shard).read_bytes() == (outs[1] / shard).read_bytes()
    manifest = json.loads((outs[0] / "manifest.json").read_text())
    assert manifest["scorer"]["model_fingerprint"] and manifest["scorer"]["max_length"] == 64
    assert manifest["summary"]["empty (null)"] == 1 and manifest["summary"]["documents"] == 10
    table = pq.read_table(outs[0] / "part-00000.parquet")
    assert {"id", "text", "ppl", "ppl_nll", "ppl_tokens"} <= set(table.column_names)


def test_cli_nan_loss_names_the_document(tmp_path, tiny_dir):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    state = load_file(str(broken / "model.safetensors"))
    key = next(k for k in state if k.endswith("norm.weight") and "layers" not in k)
    state[key][:] = float("nan")
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    data = write_dataset(tmp_path / "raw", docs_table(3))
    result = runner.invoke(app, ["score", str(data), "-o", str(tmp_path / "out"), "--method", "perplexity", "--model", str(broken)])
    assert result.exit_code == 1
    assert "non-finite loss for document id 'd" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "part-00000.parquet").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/no/such/model"], "no such file or directory"),
        ([], "--model: required"),
        (["--model", "llama-tiny"], "pass --tokenizer too"),
        (["--model", "TINY", "--max-length", "1"], "--max-length 1"),
        (["--model", "TINY", "--stride", "99", "--max-length", "16"], "--stride 99"),
        (["--model", "TINY", "--prefix-token", "<nope>"], "--prefix-token <nope>"),
    ],
)
def test_cli_bad_input(tmp_path, tiny_dir, args, message):
    data = write_dataset(tmp_path / "raw", docs_table(3))
    args = [str(tiny_dir) if a == "TINY" else a for a in args]
    result = runner.invoke(app, ["score", str(data), "-o", str(tmp_path / "out"), "--method", "perplexity", *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.slow
@pytest.mark.assets
def test_smollm2_prefers_prose_and_matches_the_transformers_loop(tmp_path):
    from delt_cli.infra.assets import smollm2_dir
    from delt_cli.models.loading import load_causal_lm

    rows = [{"id": f"s{i}", "text": t} for i, t in enumerate(science()[:3])] + [{"id": f"n{i}", "text": t} for i, t in enumerate(noise(3))]
    scorer = PerplexityScorer(model=str(smollm2_dir()), max_length=48)

    class DS:
        def require(self, column, flag):
            return None

    scorer.fit_prepare(DS(), Dist())
    out = scorer.transform(pa.Table.from_pylist(rows))
    nll = out["ppl_nll"].to_numpy()
    assert nll[:3].max() < nll[3:].min()  # real prose is far more likely than random letters
    model = load_causal_lm(smollm2_dir())
    docs = [d[:48] for d in encode(scorer.tokenizer, [r["text"] for r in rows], prefix=scorer.prefix_id)]
    assert np.allclose(nll, hf_loop_nll(model, docs), rtol=1e-4)
    assert math.isclose(float(out["ppl"][0].as_py()), math.exp(nll[0]))


def subprocess_env():
    import os
    from pathlib import Path

    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory, tiny_dir):
    """8 shards and the uninterrupted single-process perplexity output for them."""
    root = tmp_path_factory.mktemp("shards")
    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(list(science()[:120]) + list(news()[:120]))]
    data = write_dataset(root / "raw", rows, shards=8)
    args = ["--method", "perplexity", "--model", str(tiny_dir), "--max-length", "256"]
    result = runner.invoke(app, ["score", str(data), "-o", str(root / "ref"), *args])
    assert result.exit_code == 0, result.output
    return data, root / "ref", args


@pytest.mark.slow
def test_killed_run_resumes_to_exactly_the_uninterrupted_scores(many_shards, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    data, ref, args = many_shards
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "delt_cli", "score", str(data), "-o", str(out), *args]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(out.glob("part-*.parquet")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(out.glob("part-*.parquet")))
    assert 1 <= done_before < 8 and not (out / "manifest.json").exists()
    resumed = subprocess.run([*cmd, "--resume"], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("already finished, skipped (--resume)") == done_before
    for shard in sorted(ref.glob("part-*.parquet")):
        assert (out / shard.name).read_bytes() == shard.read_bytes(), shard.name


@pytest.mark.slow
def test_processes_flag_splits_shards_and_gives_identical_shards(many_shards, tmp_path):
    import subprocess
    import sys

    data, ref, args = many_shards
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "delt_cli", "score", str(data), "-o", str(out), *args, "--processes", "2"],
        env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(out)
    assert json.loads((out / "manifest.json").read_text())["processes"] == 2
    for shard in sorted(ref.glob("part-*.parquet")):
        assert (out / shard.name).read_bytes() == shard.read_bytes(), shard.name


def test_peak_memory_does_not_grow_with_the_number_of_batches(tmp_path, tok_dir):
    """Regression: small per-batch tensors kept until the end of a shard pinned the freed logits
    of every batch (glibc heap), so peak RSS grew ~25 MB per batch: 4 GB for 1,000 documents."""
    import subprocess
    import sys
    from pathlib import Path

    from delt_cli.models.loading import load_tokenizer

    model = tmp_path / "wide"  # llama-tiny with an 8k vocabulary: 16 MB of logits per batch of 8 x 64
    model_from_config("llama-tiny", vocab_size=8192, seed=1).save_pretrained(str(model))
    load_tokenizer(tok_dir).save_pretrained(str(model))
    child = r'''
import sys
sys.path.insert(0, sys.argv[3])
import pyarrow as pa
from delt_cli.infra.distributed import Dist
from delt_cli.scoring.perplexity import PerplexityScorer
from scoring_data import news, science
import pyarrow.parquet as pq
from delt_cli.dataset import open_dataset
texts = (list(science()) + list(news()))[: int(sys.argv[2])]
table = pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
pq.write_table(table, sys.argv[4])
scorer = PerplexityScorer(model=sys.argv[1], max_length=64)
scorer.fit_prepare(open_dataset(sys.argv[4]), Dist())
scorer.transform(table)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec from the parent, so under a
# large pytest worker both runs would report the worker's peak and the check could not fail
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) // 1024)
'''
    peaks = {}
    for n in (80, 640):
        out = subprocess.run([sys.executable, "-c", child, str(model), str(n), str(Path(__file__).resolve().parents[1]), str(tmp_path / f"{n}.parquet")],
                             capture_output=True, text=True, env=subprocess_env(), timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        peaks[n] = int(out.stdout.split()[-1])
    assert peaks[640] - peaks[80] < 250, peaks  # 70 more batches: ~1.7 GB more before the fix
