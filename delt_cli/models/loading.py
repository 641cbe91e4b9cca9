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
