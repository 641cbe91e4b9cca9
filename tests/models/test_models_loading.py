"""delt_cli.models.loading: local directories, GGUF, configs, cached hub ids, dtype, safety."""

import os
import subprocess
import sys

import pytest
import torch

from delt_cli.infra.errors import DeltError
from delt_cli.models.loading import (
    fingerprint,
    load_causal_lm,
    load_lm_with_tokenizer,
    load_tokenizer,
    model_from_config,
    resolve_dtype,
)

from scoring_data import tiny_model_dir, small_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return small_tokenizer(str(tmp_path_factory.mktemp("tok") / "bpe"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tok_dir):
    return tiny_model_dir(tmp_path_factory.mktemp("m") / "tiny", tok_dir, seed=11)


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("auto", "cuda:0") is torch.bfloat16
    assert resolve_dtype("bf16", "cpu") is torch.bfloat16 and resolve_dtype("float16") is torch.float16
    with pytest.raises(DeltError, match="--dtype int8"):
        resolve_dtype("int8")


def test_config_models_are_seeded_and_sized_by_the_tokenizer(tok_dir):
    a = model_from_config("llama-tiny", vocab_size=500, seed=1)
    b = model_from_config("llama-tiny", vocab_size=500, seed=1)
    c = model_from_config("llama-tiny", vocab_size=500, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    model, tok = load_lm_with_tokenizer("llama-tiny", tok_dir, seed=3)
    assert model.get_output_embeddings().weight.shape[0] == len(tok) and not model.training
    assert fingerprint("llama-tiny", seed=3) != fingerprint("llama-tiny", seed=4)


def test_local_directory_roundtrip_and_dtype(tiny_dir):
    model = load_causal_lm(tiny_dir)
    assert next(model.parameters()).dtype is torch.float32
    assert next(load_causal_lm(tiny_dir, dtype="bfloat16").parameters()).dtype is torch.bfloat16
    again = model_from_config("llama-tiny", vocab_size=model.config.vocab_size, seed=11)
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, again.model.layers[0].mlp.up_proj.weight)
    assert fingerprint(tiny_dir) == fingerprint(tiny_dir)


def test_weights_only_from_safetensors(tmp_path, tiny_dir):
    """A directory with pickled weights only (pytorch_model.bin) is refused, never unpickled."""
    d = tmp_path / "pickled"
    d.mkdir()
    for f in tiny_dir.iterdir():
        if f.suffix != ".safetensors":
            (d / f.name).write_bytes(f.read_bytes())
    torch.save(model_from_config("llama-tiny", vocab_size=load_tokenizer(tiny_dir).__len__(), seed=0).state_dict(), d / "pytorch_model.bin")
    with pytest.raises(DeltError, match="cannot load"):
        load_causal_lm(d)


def copy_with_remote_code(src, dst, marker, model_type):
    import json

    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    config = json.loads((dst / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    config["model_type"] = model_type
    (dst / "config.json").write_text(json.dumps(config))
    (dst / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    return dst


def test_remote_code_is_not_run_without_the_flag(tmp_path, tiny_dir):
    """Modelling code shipped in a model directory never runs unless --trust-remote-code is given."""
    marker = tmp_path / "ran"
    known = copy_with_remote_code(tiny_dir, tmp_path / "known", marker, "llama")
    assert type(load_causal_lm(known)).__name__ == "LlamaForCausalLM"  # the built-in class, not evil.py
    unknown = copy_with_remote_code(tiny_dir, tmp_path / "unknown", marker, "evil-arch")
    with pytest.raises(DeltError, match="cannot load"):
        load_causal_lm(unknown)
    assert not marker.exists()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("/no/such/dir", "no such file or directory"),
        ("configs", "no config.json"),
        ("no-such-config-name", "not in the local Hugging Face cache"),
    ],
)
def test_bad_specs(spec, message, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    if spec == "configs":
        spec = str(tmp_path)
    with pytest.raises(DeltError, match=message):
        load_causal_lm(spec)


def test_offline_hub_id_fails_fast_without_network(tmp_path):
    """A hub id not in the cache: a one-line error and no hub request (HF_HUB_OFFLINE)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    code = "from delt_cli.models.loading import load_causal_lm\nload_causal_lm('someorg/some-model')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0 and "'someorg/some-model' is not in the local Hugging Face cache" in proc.stderr
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.safetensors"))


@pytest.mark.slow
@pytest.mark.assets
def test_gguf_loads_and_matches_the_converted_directory():
    from delt_cli.infra.assets import smollm2_dir, smollm2_gguf

    gguf = load_causal_lm(smollm2_gguf())
    converted = load_causal_lm(smollm2_dir())
    tok = load_tokenizer(smollm2_dir())
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        a, b = gguf(ids).logits, converted(ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert tok.decode(int(a[0, -1].argmax())).strip() == "Paris"
