"""One place that every model step loads models and tokenizers through."""

from __future__ import annotations

import os
from pathlib import Path

from delt_cli.errors import DeltError


def load_tokenizer(spec: str | os.PathLike):
    """A Hugging Face tokenizer from a local directory or a hub id that is in the local cache."""
    from transformers import AutoTokenizer

    path = Path(spec)
    try:
        if path.exists():
            return AutoTokenizer.from_pretrained(str(path))
        return AutoTokenizer.from_pretrained(str(spec), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DeltError(f"--tokenizer {spec}: cannot load a tokenizer ({str(exc).splitlines()[0]})") from exc


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
    config = AutoConfig.for_model(config_dict.pop("model_type"), **{k: v for k, v in config_dict.items() if k != "transformers_version"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def load_encoder(spec: str | os.PathLike, *, dtype=None, device="cpu", flag: str = "--model"):
    """A Hugging Face encoder and its tokenizer, from a model directory or a cached hub id.

    Sentence-transformers directories work too: the transformer is found through
    ``modules.json``, and its ``sentence_bert_config.json`` (max_seq_length) and the
    presence of a Normalize module are returned as defaults in the third value
    (``{"max_length": int | None, "normalize": bool, "pooling": str | None}``).
    """
    import json

    import torch
    from transformers import AutoModel, AutoTokenizer

    root = Path(spec)
    local = root.is_dir()
    where = root
    defaults = {"max_length": None, "normalize": False, "pooling": None}
    if local and (root / "modules.json").is_file():
        modules = json.loads((root / "modules.json").read_text())
        for module in modules:
            kind = module.get("type", "")
            path = root / module.get("path", "")
            if kind.endswith(".Transformer"):
                where = path
                for cfg_name in ("sentence_bert_config.json", "sentence_transformers_config.json"):
                    if (path / cfg_name).is_file():
                        defaults["max_length"] = json.loads((path / cfg_name).read_text()).get("max_seq_length")
                        break
            elif kind.endswith(".Pooling") and (path / "config.json").is_file():
                pooling = json.loads((path / "config.json").read_text())
                defaults["pooling"] = next((k[len("pooling_mode_"):] for k, v in pooling.items() if k.startswith("pooling_mode_") and v), None)
            elif kind.endswith(".Normalize"):
                defaults["normalize"] = True
    kwargs = {} if local else {"local_files_only": True}
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr carries our own progress, not transformers' loading bars
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(where if local else spec), **kwargs)
        model = AutoModel.from_pretrained(str(where if local else spec), dtype=dtype or torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise DeltError(f"{flag} {spec}: cannot load an encoder ({str(exc).splitlines()[0]})") from exc
    if defaults["max_length"] is None:
        limit = getattr(tokenizer, "model_max_length", None)
        defaults["max_length"] = limit if isinstance(limit, int) and limit < 100_000 else getattr(model.config, "max_position_embeddings", 512)
    return model.to(device).eval(), tokenizer, defaults
