"""YAML configuration files whose keys are a command's flag names.

``delt select raw -o sel --config configs/select/top-half.yaml``: the file's
keys are the long flag names of the command (``top-r`` or ``top_r``); values
fill every flag that was not given on the command line (command-line flags
win); an unknown key is an error that names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from delt_cli.errors import DeltError


def normalize_key(key: str) -> str:
    return str(key).strip().lstrip("-").replace("-", "_")


def load_config(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; keys are normalised to Python parameter names (dashes to underscores)."""
    path = Path(path)
    if not path.is_file():
        raise DeltError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DeltError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DeltError(f"--config {path}: expected a mapping of flag names to values, got {type(data).__name__}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = normalize_key(key)
        if name in out:
            raise DeltError(f"--config {path}: key '{key}' is given twice")
        out[name] = value
    return out


def check_keys(config: dict[str, Any], allowed: set[str], path: Path, flag_names: dict[str, str]) -> None:
    unknown = sorted(set(config) - allowed)
    if unknown:
        valid = ", ".join(sorted(flag_names[a] for a in allowed))
        raise DeltError(f"--config {path}: unknown key '{unknown[0].replace('_', '-')}' (valid keys: {valid})")
