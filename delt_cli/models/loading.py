"""One place that every model step loads models and tokenizers through.

A model spec is one of:

* a local Hugging Face model directory (config.json + safetensors weights);
* a GGUF file (``*.gguf``), loaded with transformers' ``gguf_file=`` (dequantised);
  `convert_gguf` turns it once into a safetensors directory;
* a model config: a JSON/YAML file, or the name of one in ``configs/models/``
  (e.g. ``llama-tiny``), giving a fresh random-init model (seeded);
* a hub id (``org/name``), used only when it is in the local Hugging Face cache;
  with ``HF_HUB_OFFLINE=1`` (or no network) a missing one is a clear error.

Weights are read from safetensors only; remote code runs only with
``trust_remote_code=True`` (``--trust-remote-code``). Default dtype: float32 on
CPU, bfloat16 on GPU (``--dtype`` to choose).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from delt_cli.errors import DeltError

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}
REPO_ROOT = Path(__file__).resolve().parents[2]


def quiet_transformers() -> None:
    """No tqdm bars or info logs from transformers / huggingface_hub on our stderr (we draw our own)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: Optional[str], device: Any = None):
    """torch dtype for a --dtype value; 'auto' is float32 on CPU and bfloat16 on GPU."""
    import torch

    name = _ALIASES.get(str(name or "auto").lower(), str(name or "auto").lower())
    if name not in DTYPE_NAMES:
        raise DeltError(f"--dtype {name}: expected one of {', '.join(DTYPE_NAMES)}")
    if name == "auto":
        device = str(device or default_device())
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def find_model_config(spec: str | os.PathLike) -> Optional[Path]:
    """The config file a spec names: a .json/.yaml path, or configs/models/<spec>.{json,yaml}."""
    path = Path(spec)
    if path.is_file() and path.suffix in (".json", ".yaml", ".yml") and path.name != "config.json":
        return path
    if path.suffix or "/" in str(spec):
        return None
    for base in (Path.cwd() / "configs" / "models", REPO_ROOT / "configs" / "models"):
        for suffix in (".json", ".yaml", ".yml"):
            candidate = base / f"{spec}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def read_model_config(path: Path) -> dict:
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            import yaml

            data = yaml.safe_load(path.read_text())
    except (OSError, ValueError) as exc:
        raise DeltError(f"{path}: cannot read model config ({exc})") from exc
    if not isinstance(data, dict) or "model_type" not in data:
        raise DeltError(f"{path}: a model config needs a mapping with 'model_type'")
    return {k: v for k, v in data.items() if not k.startswith("_")}


def model_from_config(spec: str | os.PathLike, *, vocab_size: Optional[int] = None, seed: int = 0, dtype=None, **overrides):
    """A fresh random-init causal LM from a config file or a configs/models name (seeded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = find_model_config(spec)
    if path is None:
        raise DeltError(f"model config {spec}: not found (a .json/.yaml file or a name in configs/models/)")
    cfg = read_model_config(path)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    if vocab_size is not None:
        cfg["vocab_size"] = int(vocab_size)
    elif "vocab_size" not in cfg:
        raise DeltError(f"{path}: no vocab_size; pass a tokenizer so the vocabulary size is known")
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    finally:
        torch.random.set_rng_state(state)
    return model


def _is_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not spec.startswith((".", "/")) and not Path(spec).exists()


def load_causal_lm(
    spec: str | os.PathLike,
    *,
    dtype: Optional[str] = "auto",
    device: Any = None,
    trust_remote_code: bool = False,
    vocab_size: Optional[int] = None,
    seed: int = 0,
):
    """Load (or build) a causal LM from any model spec (see the module docstring), in eval mode, on `device`."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    path = Path(spec)
    if find_model_config(spec) is not None:
        model = model_from_config(spec, vocab_size=vocab_size, seed=seed, dtype=torch_dtype)
    elif path.is_file() and path.suffix == ".gguf":
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch_dtype)
        except (OSError, ValueError, ImportError) as exc:
            raise DeltError(f"--model {spec}: cannot load GGUF ({str(exc).splitlines()[0]})") from exc
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise DeltError(f"--model {spec}: directory has no config.json (not a Hugging Face model directory)")
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError, KeyError) as exc:
            raise DeltError(f"--model {spec}: cannot load ({str(exc).splitlines()[0]})") from exc
    elif _is_hub_id(str(spec)):
        model = _from_hub(AutoModelForCausalLM, str(spec), dtype=torch_dtype, trust_remote_code=trust_remote_code)
    else:
        raise DeltError(f"--model {spec}: no such model directory, GGUF file, model config or hub id")
    return model.to(device).eval()


def _from_hub(auto_cls, spec: str, **kwargs):
    """from_pretrained on a hub id: the local cache first; the network only when allowed and reachable."""
    try:
        return auto_cls.from_pretrained(spec, local_files_only=True, use_safetensors=True, **kwargs)
    except (OSError, ValueError) as cached_exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        if offline:
            raise DeltError(f"--model {spec}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set") from cached_exc
        try:
            return auto_cls.from_pretrained(spec, use_safetensors=True, **kwargs)
        except (OSError, ValueError) as exc:
            raise DeltError(
                f"--model {spec}: not in the local Hugging Face cache and could not be downloaded ({str(exc).splitlines()[0]})"
            ) from exc


def load_tokenizer(spec: str | os.PathLike, *, trust_remote_code: bool = False):
    """A Hugging Face tokenizer from a directory, a GGUF file or a cached hub id."""
    from transformers import AutoTokenizer

    path = Path(spec)
    try:
        if path.is_file() and path.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        if path.is_dir():
            return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise DeltError(f"--tokenizer {spec}: cannot load a tokenizer ({str(exc).splitlines()[0]})") from exc
    if _is_hub_id(str(spec)):
        try:
            return AutoTokenizer.from_pretrained(str(spec), local_files_only=True, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise DeltError(f"--tokenizer {spec}: not in the local Hugging Face cache ({str(exc).splitlines()[0]})") from exc
    raise DeltError(f"--tokenizer {spec}: no such tokenizer directory, GGUF file or cached hub id")


def load_encoder(spec: str | os.PathLike, *, dtype: Optional[str] = "auto", device: Any = None, trust_remote_code: bool = False):
    """(encoder model, tokenizer) for embeddings: a sentence-transformers or Hugging Face encoder directory."""
    from transformers import AutoModel

    quiet_transformers()
    device = device or default_device()
    path = Path(spec)
    kwargs = dict(dtype=resolve_dtype(dtype, device), trust_remote_code=trust_remote_code)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DeltError(f"--model {spec}: directory has no config.json (not a Hugging Face model directory)")
        try:
            model = AutoModel.from_pretrained(str(path), use_safetensors=True, **kwargs)
        except (OSError, ValueError) as exc:
            raise DeltError(f"--model {spec}: cannot load ({str(exc).splitlines()[0]})") from exc
    elif _is_hub_id(str(spec)):
        model = _from_hub(AutoModel, str(spec), **kwargs)
    else:
        raise DeltError(f"--model {spec}: no such encoder directory or cached hub id")
    return model.to(device).eval(), load_tokenizer(spec, trust_remote_code=trust_remote_code)


def fingerprint(spec: str | os.PathLike, *, seed: Optional[int] = None) -> str:
    """A content fingerprint of a model spec for provenance (config + weight files, or the config and seed)."""
    h = hashlib.sha256()
    config = find_model_config(spec)
    path = Path(spec)
    if config is not None:
        h.update(json.dumps(read_model_config(config), sort_keys=True).encode())
        h.update(f"seed={seed}".encode())
    elif path.is_file():
        _hash_file(h, path)
    elif path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file() and (f.suffix in (".json", ".safetensors", ".txt", ".model") or f.name.endswith(".jinja")):
                h.update(f.name.encode())
                _hash_file(h, f)
    else:
        h.update(str(spec).encode())
    return h.hexdigest()[:32]


def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)


def convert_gguf(gguf_file: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Load a GGUF checkpoint with transformers (dequantised to fp32) and save it as a safetensors model dir.

    transformers refuses to `save_pretrained` a model loaded from GGUF (it carries a
    quantization_config), so the weights are moved into a plain model built from the
    same config, which is saved together with the tokenizer embedded in the GGUF file.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    out_dir = Path(out_dir)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    except (OSError, ValueError, ImportError) as exc:
        raise DeltError(f"{gguf_file}: cannot load GGUF ({str(exc).splitlines()[0]})") from exc
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **{k: v for k, v in config_dict.items() if k != "transformers_version"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def load_lm_with_tokenizer(
    model: str | os.PathLike,
    tokenizer: Optional[str | os.PathLike] = None,
    *,
    dtype: Optional[str] = "auto",
    device: Any = None,
    trust_remote_code: bool = False,
    seed: int = 0,
    flag: str = "--model",
):
    """(causal LM, tokenizer): the tokenizer comes from --tokenizer, else from the model directory / GGUF file.

    A model built from a config (random init) needs --tokenizer; its vocabulary size is the tokenizer's.
    """
    if model is None:
        raise DeltError(f"{flag}: required (a model directory, GGUF file, configs/models name or cached hub id)")
    from_config = find_model_config(model) is not None
    path = Path(model)
    if not (from_config or path.is_dir() or (path.is_file() and path.suffix == ".gguf") or _is_hub_id(str(model))):
        raise DeltError(f"{flag} {model}: no such model directory, GGUF file, model config or hub id")
    if tokenizer is None and from_config:
        raise DeltError(f"{flag} {model} is a model config (random init); pass --tokenizer too")
    if tokenizer is None:
        try:
            tok = load_tokenizer(model, trust_remote_code=trust_remote_code)
        except DeltError as exc:
            raise DeltError(f"{flag} {model}: no usable tokenizer with the model ({exc}); pass --tokenizer") from exc
    else:
        tok = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
    lm = load_causal_lm(
        model,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        vocab_size=len(tok) if from_config else None,
        seed=seed,
    )
    vocab = lm.get_output_embeddings().weight.shape[0] if lm.get_output_embeddings() is not None else None
    if vocab is not None and len(tok) > vocab:
        raise DeltError(f"{flag} {model}: the tokenizer has {len(tok)} tokens but the model's vocabulary has {vocab}")
    return lm, tok
