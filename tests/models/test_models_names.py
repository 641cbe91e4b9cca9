"""Model, tokenizer and encoder names (delt_cli.models.loading.resolve).

* A path that does not exist and a hub id that is not in the local Hugging Face cache give one
  `error:` line at once, and no HTTP request is made: HF_ENDPOINT points at a local listener that
  counts connections, and it must count none.
* The short names (smollm2, gpt2, minilm and their aliases; configs/models names) resolve to the
  offline assets in every command that takes a model, tokenizer or encoder.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import read_rows, write_dataset
from delt_cli.infra.errors import DeltError
from delt_cli.models.loading import SHORT_NAMES, fingerprint, load_tokenizer, resolve


class ConnectionCounter:
    """A TCP listener on 127.0.0.1 that accepts and counts connections (a stand-in for the Hub)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.count = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def close(self):
        self.stopped.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def hub():
    counter = ConnectionCounter()
    yield counter
    counter.close()


def run_delt(args, *, env_extra: dict, cwd: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")}
    env.update(env_extra, OMP_NUM_THREADS="1")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "delt_cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=180)
    return proc, time.monotonic() - started


MISSING = [
    # (command line after `delt`, with {data} and {out}; the start of the one error line)
    ("score {data} -o {out} --method perplexity --model models/typo", "error: --model models/typo: no such directory, and 'models/typo' is not in the local Hugging Face cache"),
    ("score {data} -o {out} --method perplexity --model ./models/typo", "error: --model ./models/typo: no such file or directory"),
    ("score {data} -o {out} --method perplexity --model someorg/some-model", "error: --model someorg/some-model: no such directory, and 'someorg/some-model' is not in the local Hugging Face cache"),
    ("score {data} -o {out} --method length --tokenizer someorg/some-tokenizer", "error: --tokenizer someorg/some-tokenizer: no such directory"),
    ("select {data} -o {out} --by score --budget-tokens 100 --tokenizer bert-base-typo", "error: --tokenizer bert-base-typo: no such file or directory, not a short name"),
    ("eval someorg/some-model -o {out} --tasks heldout --heldout {data}", "error: MODEL someorg/some-model: no such directory"),
    ("embed {data} -o {out} --model runs/x/model", "error: --model runs/x/model: no such file or directory"),
    ("distill {data} -o {out} --column score --encoder someorg/some-encoder", "error: --encoder someorg/some-encoder: no such directory"),
    ("train {data} -o {out} --model llama-tiny --tokenizer someorg/some-tokenizer", "error: --tokenizer someorg/some-tokenizer: no such directory"),
]


@pytest.mark.parametrize("command, message", MISSING, ids=[m.split(":")[1].strip() for _, m in MISSING])
def test_missing_names_fail_in_one_line_without_network(tmp_path, hub, command, message):
    data = write_dataset(tmp_path / "data", 12, shards=1)
    out = tmp_path / "out"
    proc, seconds = run_delt(
        command.format(data=data, out=out).split(),
        env_extra={"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")},
        cwd=tmp_path,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert hub.count == 0, f"{hub.count} connection(s) to HF_ENDPOINT"
    assert seconds < 15, f"{seconds:.1f} s"  # python start-up and imports; it took ~23 s of Hub retries before
    assert proc.stdout == "" and not out.exists()


def test_uncached_hub_id_mentions_how_to_download_and_resolves_at_once(tmp_path, monkeypatch, hub):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    resolve("llama-tiny")  # warm the imports
    started = time.monotonic()
    with pytest.raises(DeltError) as info:
        resolve("HuggingFaceTB/SmolLM2-360M")
    assert time.monotonic() - started < 1.0
    message = str(info.value)
    assert "\n" not in message and "`hf download HuggingFaceTB/SmolLM2-360M`" in message and "huggingface-cli download" in message
    assert hub.count == 0


def test_names_that_can_only_be_paths_say_no_such_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for spec in ("models/typo", "./x", "~/nowhere-delt", "a/b/c", "model.gguf", "cfg.yaml", "dir/"):
        with pytest.raises(DeltError, match=f"^--model {spec}: no such file or directory$"):
            resolve(spec)


def test_a_hub_id_in_the_local_cache_resolves_to_its_snapshot(tmp_path, monkeypatch, hub):
    """A cached hub id loads from the cache's snapshot directory, with no request to the Hub."""
    from scoring_data import small_tokenizer, tiny_model_dir

    source = tiny_model_dir(tmp_path / "tiny", small_tokenizer(str(tmp_path / "bpe")), seed=3)
    repo = tmp_path / "hf" / "hub" / "models--someorg--tiny"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for f in source.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert resolve("someorg/tiny") == snapshot
    assert resolve("someorg/tiny", use="tokenizer", flag="--tokenizer") == snapshot
    assert fingerprint("someorg/tiny") == fingerprint(source)
    from delt_cli.models.loading import load_lm_with_tokenizer

    model, tok = load_lm_with_tokenizer("someorg/tiny", device="cpu")
    assert len(tok) <= model.config.vocab_size
    assert hub.count == 0


@pytest.mark.parametrize(
    "spec, use, message",
    [
        ("gpt2", "model", "--model gpt2: GPT-2's byte-level BPE tokenizer .* is usable as tokenizer only"),
        ("minilm", "model", "--model minilm: the all-MiniLM-L6-v2 sentence encoder is usable as encoder or tokenizer only"),
        ("GPT2-Tokenizer", "encoder", "usable as tokenizer only"),
        ("llama-tiny", "tokenizer", "--model llama-tiny: a model config .* cannot be used as a tokenizer"),
    ],
)
def test_short_names_used_for_what_they_are_not(spec, use, message):
    with pytest.raises(DeltError, match=message):
        resolve(spec, use=use)


def test_a_local_directory_wins_over_a_short_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpt2").mkdir()
    assert resolve("gpt2", use="tokenizer") == Path("gpt2")
    assert resolve("llama-tiny") == "llama-tiny"


# -- the short names in every command (real offline assets) ------------------------------------


@pytest.mark.assets
@pytest.mark.parametrize(
    "name, use, asset",
    [
        ("smollm2", "model", "smollm2_dir"),
        ("SmolLM2-135M", "tokenizer", "smollm2_dir"),
        ("gpt2", "tokenizer", "gpt2_tokenizer_dir"),
        ("gpt2-tokenizer", "tokenizer", "gpt2_tokenizer_dir"),
        ("minilm", "encoder", "minilm_dir"),
        ("all-MiniLM-L6-v2", "tokenizer", "minilm_dir"),
    ],
)
def test_short_names_are_the_offline_assets(name, use, asset):
    from delt_cli.infra import assets

    assert set(SHORT_NAMES) == {"smollm2", "gpt2", "minilm"}
    assert resolve(name, use=use) == Path(getattr(assets, asset)())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("names") / "data", 60, shards=2)


@pytest.mark.assets
def test_score_length_and_select_take_tokenizer_short_names(cli, data, tmp_path):
    from delt_cli.infra.assets import gpt2_tokenizer_dir

    scored = cli("score", data, "-o", tmp_path / "len", "--method", "length", "--tokenizer", "gpt2")
    assert scored.exit_code == 0, scored.output
    rows = read_rows(tmp_path / "len")
    tok = load_tokenizer(gpt2_tokenizer_dir())
    assert rows.column("n_tokens").to_pylist() == [len(tok(t, add_special_tokens=False)["input_ids"]) for t in rows.column("text").to_pylist()]
    selected = cli("select", data, "-o", tmp_path / "sel", "--by", "score", "--budget-tokens", "200", "--tokenizer", "gpt2")
    assert selected.exit_code == 0, selected.output
    kept = read_rows(tmp_path / "sel")
    counts = dict(zip(rows.column("id").to_pylist(), rows.column("n_tokens").to_pylist()))
    assert 0 < kept.num_rows < 60 and sum(counts[i] for i in kept.column("id").to_pylist()) <= 200


@pytest.mark.assets
@pytest.mark.slow
def test_score_perplexity_and_eval_take_smollm2(cli, data, tmp_path):
    from delt_cli.infra.assets import smollm2_dir

    scored = cli("score", data, "-o", tmp_path / "ppl", "--method", "perplexity", "--model", "smollm2", "--max-length", "16")
    assert scored.exit_code == 0, scored.output
    ppl = read_rows(tmp_path / "ppl").column("ppl").to_pylist()
    assert len(ppl) == 60 and all(math.isfinite(x) and x > 1 for x in ppl)
    manifest = json.loads((tmp_path / "ppl" / "manifest.json").read_text())
    assert manifest["scorer"]["model"] == "smollm2" and manifest["scorer"]["model_fingerprint"] == fingerprint(smollm2_dir())
    evaluated = cli("eval", "smollm2", "-o", tmp_path / "e.json", "--tasks", "heldout", "--heldout", data, "--limit", "4", "--max-length", "32")
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["model"]["fingerprint"] == fingerprint(smollm2_dir())


@pytest.mark.assets
def test_embed_and_distill_take_minilm(cli, data, tmp_path):
    embedded = cli("embed", data, "-o", tmp_path / "emb", "--model", "minilm")
    assert embedded.exit_code == 0, embedded.output
    assert len(read_rows(tmp_path / "emb").column("emb")[0]) == 384
    distilled = cli("distill", data, "-o", tmp_path / "scorer", "--column", "score", "--encoder", "minilm", "--freeze-encoder")
    assert distilled.exit_code == 0, distilled.output


@pytest.mark.assets
def test_train_takes_tokenizer_aliases(cli, data, tmp_path):
    trained = cli(
        "train", data, "-o", tmp_path / "run", "--model", "llama-tiny", "--tokenizer", "gpt2-tokenizer",
        "--seq-len", "16", "--batch-size", "2", "--grad-accum", "1", "--max-steps", "2", "--save-every", "0",
    )
    assert trained.exit_code == 0, trained.output
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["vocab_size"] == 50257  # sized by GPT-2's tokenizer
