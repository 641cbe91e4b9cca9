"""One place that every model step loads models, tokenizers and encoders through.

A model, tokenizer or encoder spec is one of, in this order:

* an existing local path: a Hugging Face model or tokenizer directory (config.json +
  safetensors weights), or a GGUF file (``*.gguf``, loaded with transformers'
  ``gguf_file=`` and dequantised; `convert_gguf` turns it once into a safetensors directory);
* a short name for an offline asset (`SHORT_NAMES`): ``smollm2`` (SmolLM2-135M-Instruct,
  Q4_1 GGUF dequantised to fp32), ``gpt2`` (GPT-2's BPE tokenizer, no weights),
  ``minilm`` (all-MiniLM-L6-v2); the first use builds them in the asset cache;
* a model config: a JSON/YAML file, or the name of one in ``configs/models/``
  (e.g. ``llama-tiny``), giving a fresh random-init model (seeded);
* a hub id (``org/name``), used only when it is already in the local Hugging Face
  cache. delt never downloads: a missing one is a one-line error that says how to
  fetch it, and no network call is made (every load runs with HF_HUB_OFFLINE set).

`resolve` turns a spec into what is loaded (a local path or a config name);
`load_causal_lm`, `load_tokenizer`, `load_encoder` and `fingerprint` all go through it.
Weights are read from safetensors only; remote code runs only with
``trust_remote_code=True`` (``--trust-remote-code``). Default dtype: float32 on
CPU, bfloat16 on GPU (``--dtype`` to choose).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from delt_cli.infra.errors import DeltError

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


# -- names -> what is loaded -------------------------------------------------------------------

USES = ("model", "tokenizer", "encoder")


@dataclass(frozen=True)
class ShortName:
    """An offline asset that a short name stands for (built by `asset`, a function of delt_cli.infra.assets)."""

    asset: str
    uses: tuple[str, ...]
    what: str


SHORT_NAMES = {
    "smollm2": ShortName("smollm2_dir", ("model", "tokenizer", "encoder"), "SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to fp32"),
    "gpt2": ShortName("gpt2_tokenizer_dir", ("tokenizer",), "GPT-2's byte-level BPE tokenizer (50,257 tokens, no weights)"),
    "minilm": ShortName("minilm_dir", ("encoder", "tokenizer"), "the all-MiniLM-L6-v2 sentence encoder"),
}
# Other spellings of the same assets (the names `delt assets` and the cache directories use).
SHORT_ALIASES = {"smollm2-135m": "smollm2", "gpt2-tokenizer": "gpt2", "all-minilm-l6-v2": "minilm"}
_FILE_SUFFIXES = (".gguf", ".json", ".yaml", ".yml", ".safetensors", ".bin", ".pt", ".pth", ".model")


def short_name(spec: str) -> Optional[str]:
    """The canonical short name `spec` spells (case-insensitive), or None."""
    key = str(spec).lower()
    key = SHORT_ALIASES.get(key, key)
    return key if key in SHORT_NAMES else None


def resolve(spec: str | os.PathLike, *, use: Optional[str] = "model", flag: str = "--model") -> Path | str:
    """What a model/tokenizer/encoder spec names, found without any network call.

    Returns a local path (an existing file or directory, an offline asset's directory for a
    short name, or the snapshot directory of a hub id in the local Hugging Face cache) or,
    for a model config, the spec itself (see `find_model_config`). `use` (model, tokenizer,
    encoder; None: any) picks the error for a short name that cannot serve it. Raises a
    one-line DeltError naming `flag` otherwise.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if text and path.exists():
        return path
    name = short_name(text)
    if name is not None:
        entry = SHORT_NAMES[name]
        if use is not None and use not in entry.uses:
            raise DeltError(f"{flag} {text}: {entry.what} is usable as {' or '.join(entry.uses)} only, not as a {use}")
        from delt_cli.infra import assets

        return Path(getattr(assets, entry.asset)())
    if find_model_config(text) is not None:
        if use not in (None, "model"):
            raise DeltError(f"{flag} {text}: a model config (random init, no weights or tokenizer) cannot be used as a {use}")
        return text
    if not text or _names_local_path(text):
        raise DeltError(f"{flag} {text}: no such file or directory")
    if not _valid_hub_id(text):
        raise DeltError(f"{flag} {text}: no such file or directory, and not a short name ({', '.join(SHORT_NAMES)}), configs/models name or hub id")
    snapshot = cached_snapshot(text, use)
    if snapshot is not None:
        return snapshot
    where = "no such directory, and" if "/" in text else f"no such file or directory, not a short name ({', '.join(SHORT_NAMES)}) or configs/models name, and"
    raise DeltError(
        f"{flag} {text}: {where} '{text}' is not in the local Hugging Face cache "
        f"(delt never downloads; fetch it with `hf download {text}` or `huggingface-cli download {text}`)"
    )


def _names_local_path(text: str) -> bool:
    """Whether a string that names nothing on disk can only be meant as a local path (not a hub id)."""
    if text.startswith((".", "/", "~")) or text.endswith(("/", os.sep)) or "\\" in text or text.count("/") > 1:
        return True
    if text.lower().endswith(_FILE_SUFFIXES):
        return True
    head = text.split("/", 1)[0]
    return "/" in text and Path(head).is_dir()  # models/typo while ./models exists


def _valid_hub_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (HF_HUB_CACHE, HF_HOME), not at import."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str, use: Optional[str] = "model") -> Optional[Path]:
    """The local snapshot directory of a hub model in the cache (None when it is not there); no network."""
    from huggingface_hub import try_to_load_from_cache

    files = ("tokenizer_config.json", "tokenizer.json", "config.json") if use == "tokenizer" else ("config.json",)
    for name in files:
        hit = try_to_load_from_cache(repo_id, name, cache_dir=hub_cache_dir())
        if isinstance(hit, str):
            return Path(hit).parent
    return None


@contextmanager
def hub_offline():
    """HF_HUB_OFFLINE for the loads inside: transformers and huggingface_hub make no HTTP request."""
    from huggingface_hub import constants

    before_env, before = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
        if before_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before_env


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# -- loading -----------------------------------------------------------------------------------


def load_causal_lm(
    spec: str | os.PathLike,
    *,
    dtype: Optional[str] = "auto",
    device: Any = None,
    trust_remote_code: bool = False,
    vocab_size: Optional[int] = None,
    seed: int = 0,
    flag: str = "--model",
):
    """Load (or build) a causal LM from any model spec (see the module docstring), in eval mode, on `device`."""
    where = resolve(spec, use="model", flag=flag)
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    path = Path(where)
    with hub_offline():
        if find_model_config(where) is not None:
            model = model_from_config(where, vocab_size=vocab_size, seed=seed, dtype=torch_dtype)
        elif path.is_file() and path.suffix == ".gguf":
            try:
                model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch_dtype, local_files_only=True)
            except (OSError, ValueError, ImportError) as exc:
                raise DeltError(f"{flag} {spec}: cannot load GGUF ({_first_line(exc)})") from exc
        elif path.is_dir():
            if not (path / "config.json").is_file():
                raise DeltError(f"{flag} {spec}: directory has no config.json (not a Hugging Face model directory)")
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    str(path), dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code, local_files_only=True
                )
            except (OSError, ValueError, KeyError) as exc:
                raise DeltError(f"{flag} {spec}: cannot load ({_first_line(exc)})") from exc
        else:
            raise DeltError(f"{flag} {spec}: not a model directory, GGUF file or model config")
    return model.to(device).eval()


def load_tokenizer(spec: str | os.PathLike, *, trust_remote_code: bool = False, flag: str = "--tokenizer"):
    """A Hugging Face tokenizer from a directory, a GGUF file, a short name or a cached hub id."""
    path = Path(resolve(spec, use="tokenizer", flag=flag))
    from transformers import AutoTokenizer

    if not (path.is_dir() or (path.is_file() and path.suffix == ".gguf")):
        raise DeltError(f"{flag} {spec}: not a tokenizer directory or GGUF file")
    try:
        with hub_offline():
            if path.is_file():
                return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
            return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeltError(f"{flag} {spec}: cannot load a tokenizer ({_first_line(exc)})") from exc


def load_encoder(
    spec: str | os.PathLike, *, dtype: Optional[str] = "auto", device: Any = None, trust_remote_code: bool = False, flag: str = "--model"
):
    """(encoder model, tokenizer) for embeddings: a sentence-transformers or Hugging Face encoder directory."""
    path = Path(resolve(spec, use="encoder", flag=flag))
    from transformers import AutoModel

    quiet_transformers()
    device = device or default_device()
    if not path.is_dir():
        raise DeltError(f"{flag} {spec}: not an encoder directory")
    if not (path / "config.json").is_file():
        raise DeltError(f"{flag} {spec}: directory has no config.json (not a Hugging Face model directory)")
    try:
        with hub_offline():
            model = AutoModel.from_pretrained(
                str(path), use_safetensors=True, dtype=resolve_dtype(dtype, device), trust_remote_code=trust_remote_code, local_files_only=True
            )
    except (OSError, ValueError) as exc:
        raise DeltError(f"{flag} {spec}: cannot load ({_first_line(exc)})") from exc
    return model.to(device).eval(), load_tokenizer(path, trust_remote_code=trust_remote_code, flag=flag)


def fingerprint(spec: str | os.PathLike, *, seed: Optional[int] = None) -> str:
    """A content fingerprint of a model spec for provenance (config + weight files, or the config and seed)."""
    h = hashlib.sha256()
    where = resolve(spec, use=None)
    config = find_model_config(where)
    path = Path(where)
    if config is not None:
        h.update(json.dumps(read_model_config(config), sort_keys=True).encode())
        h.update(f"seed={seed}".encode())
    elif path.is_file():
        _hash_file(h, path)
    else:
        for f in sorted(path.iterdir()):
            if f.is_file() and (f.suffix in (".json", ".safetensors", ".txt", ".model") or f.name.endswith(".jinja")):
                h.update(f.name.encode())
                _hash_file(h, f)
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
        with hub_offline():
            loaded = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, local_files_only=True)
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
        raise DeltError(f"{flag}: required (a model directory, GGUF file, short name such as smollm2, configs/models name or cached hub id)")
    where = resolve(model, use="model", flag=flag)
    from_config = find_model_config(where) is not None
    if tokenizer is None and from_config:
        raise DeltError(f"{flag} {model} is a model config (random init); pass --tokenizer too (e.g. --tokenizer gpt2)")
    if tokenizer is None:
        try:
            tok = load_tokenizer(where, trust_remote_code=trust_remote_code, flag=flag)
        except DeltError as exc:
            raise DeltError(f"{flag} {model}: no usable tokenizer with the model ({exc}); pass --tokenizer") from exc
    else:
        tok = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
    lm = load_causal_lm(
        where,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        vocab_size=len(tok) if from_config else None,
        seed=seed,
        flag=flag,
    )
    vocab = lm.get_output_embeddings().weight.shape[0] if lm.get_output_embeddings() is not None else None
    if vocab is not None and len(tok) > vocab:
        raise DeltError(f"{flag} {model}: the tokenizer has {len(tok)} tokens but the model's vocabulary has {vocab}")
    return lm, tok
